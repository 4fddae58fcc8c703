"""Exception types of the engine. Messages read "node X, input Y: reason"."""
from __future__ import annotations


class GraphError(Exception):
    """Base class of every error the engine raises on purpose."""


class Interrupted(GraphError):
    """Raised inside a run when an interrupt was requested (cancel is an exception, not a flag poll)."""

    def __init__(self, message: str = "interrupted by request") -> None:
        super().__init__(message)


class NodeRegistrationError(GraphError):
    """A node class whose declaration cannot be turned into a schema."""


class DependencyCycleError(GraphError):
    """The nodes named in `node_ids` depend on each other in a loop."""

    def __init__(self, node_ids: list[str]) -> None:
        self.node_ids = node_ids
        super().__init__("dependency cycle between nodes " + " -> ".join(node_ids))
