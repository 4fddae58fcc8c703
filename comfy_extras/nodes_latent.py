"""ComfyUI's comfy_extras.nodes_latent: its classes we have (see comfy_extras/__init__.py)."""
from comfy_extras import module_getattr

__getattr__ = module_getattr("nodes_latent")
