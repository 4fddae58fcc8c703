"""Built-in nodes: thin glue from graph types to models/.

This package is also what a ComfyUI custom-node pack finds when it does `import nodes`: it
exposes ComfyUI's names (MAX_RESOLUTION, every built-in class by its ComfyUI name, found lazily
through the module __getattr__ so nothing is imported until a pack asks, NODE_CLASS_MAPPINGS,
common_ksampler). See comfy_compat for the rest of the ComfyUI surface.
"""
from __future__ import annotations

import threading
import types

MAX_RESOLUTION = 16384


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
                                     "nodes.clip_vision", "nodes.fooocus.image_prompt",
                                     "nodes.custom_sampling", "nodes.guiders", "nodes.model_patches",
                                     "nodes.conditioning", "nodes.latent_ops", "nodes.loaders_extra",
                                     "nodes.face_detection", "nodes.image_ops", "nodes.mask_ops")


def register_builtin_nodes(registry) -> None:
    for module_name, mappings, display in builtin_packs():
        registry.register_mappings(mappings, display, python_module=module_name, builtin=True)


def _builtin_class(name: str):
    """The built-in class registered under ComfyUI name `name` (every BUILTIN_MODULES pack), or None."""
    import importlib

    for module_name in BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings and name in mappings:
            return mappings[name]
    return None


def _registered_mappings() -> tuple[dict, dict]:
    """(classes, display names) the bound server has registered (custom packs too, as ComfyUI's
    nodes.NODE_CLASS_MAPPINGS), else the built-in ones."""
    import comfy_compat

    if comfy_compat.is_bound():
        registry = comfy_compat.bound().app.registry
        schemas = [registry.get(name) for name in registry.names()]
        classes, display = {s.name: s.node_class for s in schemas}, {s.name: s.display_name for s in schemas}
    else:
        classes, display = {}, {}
        for _, mappings, names in builtin_packs():
            classes.update(mappings)
            display.update(names)
    # read-only views: a pack writing into them would change nothing (packs export their own mappings)
    return types.MappingProxyType(classes), types.MappingProxyType(display)


_lookup = threading.local()  # a lookup imports node modules, whose own imports must not recurse into it


def __getattr__(name: str):
    import importlib.util

    if name.startswith("_") or getattr(_lookup, "active", False) or \
            importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    _lookup.active = True
    try:
        if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
            return _registered_mappings()[name == "NODE_DISPLAY_NAME_MAPPINGS"]
        found = _builtin_class(name)
    finally:
        _lookup.active = False
    if found is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}: no built-in node class of that name "
                             "(sdxl-node-server's ComfyUI compatibility, see README)")
    return found


def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0,
                    disable_noise=False, start_step=None, last_step=None, force_full_denoise=False):
    """ComfyUI's nodes.common_ksampler over our sampler: returns (LATENT,). Progress and
    interrupt follow the running node."""
    from graph import context as graph_context

    from .sampler_core import Guidance, sample

    return (sample(model, positive, negative, latent, seed=seed, steps=steps, guidance=Guidance(cfg),
                   sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, add_noise=not disable_noise,
                   start_step=start_step or 0, last_step=last_step, force_full_denoise=force_full_denoise,
                   progress=graph_context.current().progress),)
