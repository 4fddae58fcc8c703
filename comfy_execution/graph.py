"""ComfyUI's `comfy_execution.graph`: ExecutionBlocker (our executor's own class)."""
from comfy_compat import missing_attribute
from graph.executor import ExecutionBlocker
from graph.validation import is_link

__getattr__ = missing_attribute("comfy_execution.graph")
__all__ = ["ExecutionBlocker", "is_link"]
