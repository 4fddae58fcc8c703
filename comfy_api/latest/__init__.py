"""ComfyUI's V3 node API: `io` (socket types, Schema, ComfyNode, NodeOutput), `ui`, ComfyExtension.

A pack exports `async def comfy_entrypoint() -> ComfyExtension`; the loader awaits it, then the
extension's `on_load()` and `get_node_list()`, and registers each ComfyNode through our one node
schema (comfy_compat.v3 adapts it into a V1 class, so validation, caching and /object_info treat
V3 and V1 nodes alike).
"""
from __future__ import annotations

from . import io, ui
from .io import ComfyNode, NodeOutput, Schema


class ComfyExtension:
    async def on_load(self) -> None:
        """Called once before get_node_list (ComfyUI's hook for set-up work)."""

    async def get_node_list(self) -> list[type[ComfyNode]]:
        raise NotImplementedError(f"{type(self).__name__}.get_node_list must return the pack's ComfyNode classes")


__all__ = ["io", "ui", "ComfyExtension", "ComfyNode", "NodeOutput", "Schema"]
