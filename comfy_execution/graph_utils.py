"""ComfyUI's `comfy_execution.graph_utils`: GraphBuilder for node expansion, is_link."""
from __future__ import annotations

import itertools

from comfy_compat import missing_attribute
from graph import context as graph_context
from graph.builder import GraphBuilder as _OurBuilder
from graph.builder import NodeRef
from graph.validation import is_link

__getattr__ = missing_attribute("comfy_execution.graph_utils")
_calls = itertools.count()  # makes default prefixes unique, as ComfyUI's alloc_prefix does


class Node(NodeRef):
    def __init__(self, builder: "GraphBuilder", node_id: str) -> None:
        super().__init__(node_id)
        self.builder = builder

    def set_input(self, key: str, value) -> None:
        self.builder.nodes[self.id]["inputs"][key] = value.out() if isinstance(value, NodeRef) else value

    def get_input(self, key: str):
        return self.builder.nodes[self.id]["inputs"].get(key)


class GraphBuilder(_OurBuilder):
    """ComfyUI's builder: node(class_type, id=None, **inputs) -> Node with .out(i)/.set_input;
    without a prefix, ids start with the running node's id, so expansions never collide."""

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            try:
                root = graph_context.current().node_id
            except RuntimeError:
                root = "graph"
            prefix = f"{root}.{next(_calls)}."
        super().__init__(prefix)

    def node(self, class_type: str, id: str | None = None, **inputs) -> Node:
        ref = super().node(class_type, None if id is None else f"{self.prefix}{id}", **inputs)
        return Node(self, ref.id)

    def lookup_node(self, id: str) -> Node | None:
        full = f"{self.prefix}{id}"
        return Node(self, full) if full in self.nodes else None


__all__ = ["GraphBuilder", "Node", "is_link"]
