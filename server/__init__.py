"""The HTTP server. Also what ComfyUI custom-node packs find with `from server import PromptServer`:
PromptServer and BinaryEventTypes come (lazily) from comfy_compat.prompt_server."""


def __getattr__(name: str):
    if name in ("PromptServer", "BinaryEventTypes"):
        from comfy_compat import prompt_server

        return getattr(prompt_server, name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")
