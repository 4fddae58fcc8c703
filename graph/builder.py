"""Build API-format workflows in code (tests, benchmarks, parameterised workflows)."""
from __future__ import annotations

from typing import Any


class NodeRef:
    def __init__(self, node_id: str) -> None:
        self.id = node_id

    def out(self, index: int = 0) -> list:
        return [self.id, index]


class GraphBuilder:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: dict[str, dict] = {}
        self._counter = 0

    def node(self, class_type: str, node_id: str | None = None, **inputs: Any) -> NodeRef:
        if node_id is None:
            self._counter += 1
            node_id = f"{self.prefix}{self._counter}"
        self.nodes[node_id] = {"class_type": class_type,
                               "inputs": {k: (v.out() if isinstance(v, NodeRef) else v) for k, v in inputs.items()}}
        return NodeRef(node_id)

    def finalize(self) -> dict[str, dict]:
        return {nid: {"class_type": n["class_type"], "inputs": dict(n["inputs"])} for nid, n in self.nodes.items()}
