"""ComfyUI's versioned node API; `comfy_api.latest` is the V3 schema API (see comfy_compat)."""
