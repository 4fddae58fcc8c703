"""ComfyUI's comfy_extras.nodes_post_processing: its classes we have (see comfy_extras/__init__.py)."""
from comfy_extras import module_getattr

__getattr__ = module_getattr("nodes_post_processing")
