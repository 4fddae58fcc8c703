"""V3 nodes (comfy_api.latest.io.ComfyNode) adapted into V1 classes, so they register through
our one node schema (graph.schema.NodeSchema.from_v1) like every other node.

The adapter's INPUT_TYPES/RETURN_TYPES/... are rendered from the node's io.Schema; its FUNCTION
calls the node's classmethod execute on a per-call subclass whose `hidden` holds the hidden
values (so concurrent or nested calls never share them), awaiting it when it is async.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect

from comfy_api.latest import io
from graph.executor import ExecutionBlocker

HIDDEN_PREFIX = "hidden_"  # our V1 names of V3 hidden inputs: hidden_unique_id, hidden_prompt, ...


def run_coroutine(awaitable):
    """The result of an awaitable from synchronous code: on this thread when no event loop runs
    here (the worker thread), else on a short-lived thread of its own (App built inside a loop)."""
    async def wrapper():
        return await awaitable
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapper())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()


def is_v3_node(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, io.ComfyNode)


def _overrides(node_cls, name: str) -> bool:
    """Whether the node defines an optional V3 hook (io.ComfyNode itself defines none of them)."""
    return callable(getattr(node_cls, name, None))


def _forward(function):
    """A staticmethod calling `function`, with its signature (graph.schema reads which inputs
    VALIDATE_INPUTS takes from it)."""
    def call(**kwargs):
        return function(**kwargs)
    call.__signature__ = inspect.signature(function)
    return staticmethod(call)


def adapt(node_cls: type) -> tuple[str, type, str | None]:
    """(node id, V1 class, display name) of a V3 node class."""
    schema = node_cls.GET_SCHEMA()
    if not isinstance(schema, io.Schema):
        raise TypeError(f"{node_cls.__name__}.define_schema() returned {type(schema).__name__}, not io.Schema")
    declared = {"required": {}, "optional": {}}
    for spec in schema.inputs:
        declared["optional" if spec.optional else "required"][spec.id] = spec.as_v1()
    hidden = {HIDDEN_PREFIX + io.Hidden(h).name: io.Hidden(h).value for h in schema.hidden}
    if hidden:
        declared["hidden"] = hidden
    outputs = schema.outputs

    def execute(self, **kwargs):
        values = {name[len(HIDDEN_PREFIX):]: kwargs.pop(name)
                  for name in list(kwargs) if name.startswith(HIDDEN_PREFIX)}
        call_cls = type(node_cls.__name__, (node_cls,), {"hidden": io.HiddenHolder(**values)})
        result = call_cls.execute(**kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        return _to_v1(result, len(outputs))

    attrs = {
        "INPUT_TYPES": classmethod(lambda cls: {k: dict(v) for k, v in declared.items()}),
        "RETURN_TYPES": tuple(o.io_type for o in outputs),
        "RETURN_NAMES": tuple(o.name for o in outputs),
        "OUTPUT_IS_LIST": tuple(bool(o.is_output_list) for o in outputs),
        "FUNCTION": "execute_v3",
        "execute_v3": execute,
        "CATEGORY": schema.category,
        "DESCRIPTION": schema.description,
        "OUTPUT_NODE": schema.is_output_node,
        "NOT_IDEMPOTENT": schema.not_idempotent,
        "INPUT_IS_LIST": schema.is_input_list,
        "V3_CLASS": node_cls,
        "__module__": node_cls.__module__,
    }
    if any(o.tooltip for o in outputs):
        attrs["OUTPUT_TOOLTIPS"] = tuple(o.tooltip or "" for o in outputs)
    if schema.is_deprecated:
        attrs["DEPRECATED"] = True
    if schema.is_experimental:
        attrs["EXPERIMENTAL"] = True
    if _overrides(node_cls, "validate_inputs"):
        attrs["VALIDATE_INPUTS"] = _forward(node_cls.validate_inputs)
    if _overrides(node_cls, "fingerprint_inputs"):
        attrs["IS_CHANGED"] = _forward(node_cls.fingerprint_inputs)
    if _overrides(node_cls, "check_lazy_status"):
        attrs["check_lazy_status"] = lambda self, **kwargs: node_cls.check_lazy_status(**kwargs)
    return schema.node_id, type(node_cls.__name__, (), attrs), schema.display_name


def _to_v1(result, n_outputs: int):
    """A V3 return value as our executor takes V1 ones: a tuple, or {"ui", "result", "expand"}."""
    if result is None:
        return ()
    if not isinstance(result, io.NodeOutput):
        return result
    if result.block_execution is not None:
        blocker = ExecutionBlocker(result.block_execution)
        return tuple(blocker for _ in range(n_outputs))
    out = {"result": tuple(result.args)}
    if result.ui is not None:
        out["ui"] = result.ui.as_dict() if hasattr(result.ui, "as_dict") else dict(result.ui)
    if result.expand is not None:
        out["expand"] = result.expand
    return out if len(out) > 1 else tuple(result.args)
