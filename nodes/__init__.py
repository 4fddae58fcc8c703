"""Built-in nodes: thin glue from graph types to models/."""
from __future__ import annotations


def builtin_packs():
    """(module name, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) of every built-in pack."""
    import importlib

    packs = []
    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        packs.append((module_name, module.NODE_CLASS_MAPPINGS, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {})))
    return packs


BUILTIN_MODULES: tuple[str, ...] = ("nodes.loaders", "nodes.text", "nodes.latents", "nodes.images", "nodes.sampling",
                                     "nodes.lora", "nodes.upscale", "nodes.inpaint", "nodes.fooocus.inpaint",
                                     "nodes.fooocus.nodes", "nodes.fooocus.image_size",
                                     "nodes.describe", "nodes.controlnet", "nodes.fooocus.controlnet",
                                     "nodes.clip_vision", "nodes.fooocus.image_prompt")


def register_builtin_nodes(registry) -> None:
    for module_name, mappings, display in builtin_packs():
        registry.register_mappings(mappings, display, python_module=module_name, builtin=True)
