"""ComfyUI's `comfy.utils`: file loading, resampling, state-dict helpers, ProgressBar."""
from __future__ import annotations

import torch

from comfy_compat import missing_attribute
from graph import context as graph_context

__getattr__ = missing_attribute("comfy.utils")
PROGRESS_BAR_ENABLED = True


def load_torch_file(ckpt, safe_load: bool = False, device=None, return_metadata: bool = False):
    """All tensors of a .safetensors or pickle file. Pickles always load weights-only (ComfyUI's
    safe_load=True): a file that needs code to unpickle is refused, whatever safe_load says."""
    from models.checkpoint import read_state_dict

    state = read_state_dict(ckpt)
    if device is not None and torch.device(device).type != "cpu":
        state = {key: value.to(device) for key, value in state.items()}
    if return_metadata:
        metadata = None
        if str(ckpt).lower().endswith((".safetensors", ".sft")):
            from safetensors import safe_open
            with safe_open(str(ckpt), framework="pt") as handle:
                metadata = handle.metadata()
        return state, metadata
    return state


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    """Renames keys starting with each old prefix to the new one (in place unless filter_keys)."""
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


def state_dict_key_replace(state_dict: dict, keys_to_replace: dict) -> dict:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """[B, C, H, W] resampled to height x width: nearest-exact, bilinear, area, bicubic, lanczos,
    bislerp; crop "center" cuts to the target aspect first (our LatentUpscale/ImageScale maths)."""
    from nodes.upscale import resample

    return resample(samples, int(width), int(height), upscale_method, crop)


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED  # ComfyUI's console-bar switch; our bars are websocket events
    PROGRESS_BAR_ENABLED = enabled


class ProgressBar:
    """Progress of the node that creates it, sent as websocket `progress` events.

    The running node is captured at construction (graph.context), so updates from a thread the
    node starts still reach its prompt. Outside a node there is no prompt to report to: updates
    are counted only, as ComfyUI does without a progress hook. An update raises the interrupt
    exception after /interrupt, as ComfyUI's hook does."""

    def __init__(self, total: int, node_id=None) -> None:
        self.total = total
        self.current = 0
        try:
            self._context = graph_context.current()
        except RuntimeError:
            self._context = None
        self.node_id = node_id if node_id is not None else getattr(self._context, "node_id", None)

    def update_absolute(self, value, total=None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        context = self._context
        if context is None:
            return
        if self.node_id is None or str(self.node_id) == context.node_id:
            context.progress(self.current, self.total, _preview_image(preview))
        else:  # ComfyUI lets a node report for another node id (its expanded children)
            context.check_interrupt()
            context.sink.send("progress", {"value": self.current, "max": self.total, "prompt_id": context.prompt_id,
                                           "node": str(self.node_id)})

    def update(self, value) -> None:
        self.update_absolute(self.current + value)


def _preview_image(preview):
    """ComfyUI hands previews as (format, PIL image, max size); our sink takes the image."""
    if isinstance(preview, (tuple, list)) and len(preview) >= 2:
        return preview[1]
    return preview
