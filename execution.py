"""ComfyUI's `execution`: prompt validation against the bound server's nodes, ExecutionBlocker."""
from __future__ import annotations

from comfy_compat import bound, missing_attribute
from graph.executor import ExecutionBlocker
from graph.validation import validate_prompt as _validate

__getattr__ = missing_attribute("execution")
__all__ = ["ExecutionBlocker", "validate_prompt"]


def validate_prompt(prompt_id_or_prompt, prompt=None, partial_execution_list=None):
    """ComfyUI's (valid, error, outputs, node_errors) of a prompt, checked against every node the
    server has. Takes ComfyUI's old (prompt) and new (prompt_id, prompt, partial list) forms."""
    if prompt is None:
        prompt = prompt_id_or_prompt
    result = _validate(prompt, bound("execution.validate_prompt").app.registry, partial_execution_list)
    return result.ok, result.error, list(result.outputs), result.node_errors
