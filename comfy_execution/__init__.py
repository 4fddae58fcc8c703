"""ComfyUI's `comfy_execution` (the parts packs touch: graph.ExecutionBlocker, graph_utils.GraphBuilder)."""
