"""ComfyUI's `latent_preview`: a sampler callback with progress and step previews."""
from __future__ import annotations

from comfy_compat import missing_attribute
from graph import context as graph_context

__getattr__ = missing_attribute("latent_preview")
MAX_PREVIEW_RESOLUTION = 512


def get_previewer(device=None, latent_format=None, family: str = "sdxl"):
    """A callable denoised-latent -> PIL image following the prompt's preview method (or None
    when previews are off). latent_format is ComfyUI's; we key the map by model family."""
    from nodes.previews import make_previewer

    return make_previewer(family)


def prepare_callback(model, steps: int, x0_output_dict: dict | None = None):
    """ComfyUI's callback(step, x0, x, total_steps): progress of the running node, with a
    preview of x0 drawn only when someone watches; the interrupt raises from inside it."""
    from nodes.previews import make_previewer

    context = graph_context.current()
    family = getattr(model, "family", "sdxl")
    previewer = make_previewer(family, getattr(model, "info", None))

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = (lambda: previewer(x0)) if previewer is not None and x0 is not None else None
        context.progress(step + 1, total_steps, preview)

    return callback
