"""The node-graph engine (torch-free): schema, registry, validation, cache, executor, context."""
from .cache import ClassicCache, LRUCache, make_cache
from .context import EventSink, InterruptFlag, NodeContext, NullSink, current
from .errors import DependencyCycleError, GraphError, Interrupted, NodeRegistrationError
from .executor import ExecutionBlocker, ExecutionOutcome, Executor
from .registry import NodeRegistry
from .schema import NodeSchema, types_compatible
from .validation import ValidationResult, is_link, validate_prompt
from .builder import GraphBuilder

__all__ = [
    "ClassicCache", "LRUCache", "make_cache", "EventSink", "InterruptFlag", "NodeContext", "NullSink", "current",
    "DependencyCycleError", "GraphError", "Interrupted", "NodeRegistrationError", "ExecutionBlocker",
    "ExecutionOutcome", "Executor", "NodeRegistry", "NodeSchema", "types_compatible", "ValidationResult",
    "is_link", "validate_prompt", "GraphBuilder",
]
