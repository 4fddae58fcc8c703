"""ComfyUI's conditioning nodes: combine, concat, average, area / mask / strength / timestep range.

CONDITIONING is a list of [tokens, extras] entries. These nodes only edit that list; what the keys
mean while sampling (`area`, `mask`, `strength`, `start_percent`, ...) lives in
models/sampling/areas.py, which the sampler core applies to every entry.
"""
from __future__ import annotations

import logging

import torch

from .latents import MAX_RESOLUTION

log = logging.getLogger(__name__)

_STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
_AREA_PX = ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8})
_OFFSET_PX = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})


def set_values(conditioning, values: dict) -> list:
    """A copy of `conditioning` with `values` set in every entry's extras (inputs stay unchanged)."""
    return [[tokens, {**extras, **values}] for tokens, extras in conditioning]


def _first_of(conditioning_from, node: str):
    if not conditioning_from:
        raise ValueError(f"{node}: conditioning_from is empty")
    if len(conditioning_from) > 1:  # ComfyUI's rule too: only the first entry is used
        log.warning("%s: conditioning_from has %d entries; only the first is applied", node, len(conditioning_from))
    return conditioning_from[0]


class ConditioningCombine:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    def combine(self, conditioning_1, conditioning_2):
        # both lists' entries are evaluated by the sampler and averaged (areas: weighted) per pixel
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningAverage:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",),
                             "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0,
                                                                    "step": 0.01})}}

    def addWeighted(self, conditioning_to, conditioning_from, conditioning_to_strength):
        source_tokens, source_extras = _first_of(conditioning_from, "ConditioningAverage")
        source_pooled = source_extras.get("pooled_output")
        weight = float(conditioning_to_strength)
        out = []
        for tokens, extras in conditioning_to:
            # the source is cut or zero-padded to the target's token count, then mixed linearly
            source = source_tokens[:, :tokens.shape[1]]
            if source.shape[1] < tokens.shape[1]:
                pad = torch.zeros(source.shape[0], tokens.shape[1] - source.shape[1], tokens.shape[2],
                                  dtype=source.dtype, device=source.device)
                source = torch.cat([source, pad], dim=1)
            extras = dict(extras)
            pooled = extras.get("pooled_output", source_pooled)
            if source_pooled is not None and pooled is not None:
                extras["pooled_output"] = pooled * weight + source_pooled * (1.0 - weight)
            elif source_pooled is not None:
                extras["pooled_output"] = source_pooled
            out.append([tokens * weight + source * (1.0 - weight), extras])
        return (out,)


class ConditioningConcat:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    def concat(self, conditioning_to, conditioning_from):
        source_tokens = _first_of(conditioning_from, "ConditioningConcat")[0]
        return ([[torch.cat([tokens, source_tokens.to(tokens)], dim=1), dict(extras)]
                 for tokens, extras in conditioning_to],)


class ConditioningSetArea:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "width": _AREA_PX, "height": _AREA_PX,
                             "x": _OFFSET_PX, "y": _OFFSET_PX, "strength": _STRENGTH}}

    def append(self, conditioning, width, height, x, y, strength):
        # (h, w, y, x) in latent pixels, ComfyUI's layout of the key
        return (set_values(conditioning, {"area": (height // 8, width // 8, y // 8, x // 8),
                                          "strength": float(strength), "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        fraction = {"min": 0, "max": 1.0, "step": 0.01}
        return {"required": {"conditioning": ("CONDITIONING",),
                             "width": ("FLOAT", {"default": 1.0, **fraction}),
                             "height": ("FLOAT", {"default": 1.0, **fraction}),
                             "x": ("FLOAT", {"default": 0, **fraction}), "y": ("FLOAT", {"default": 0, **fraction}),
                             "strength": _STRENGTH}}

    def append(self, conditioning, width, height, x, y, strength):
        # resolved against the latent's size when sampling
        return (set_values(conditioning, {"area": ("percentage", float(height), float(width), float(y), float(x)),
                                          "strength": float(strength), "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "strength": _STRENGTH}}

    def append(self, conditioning, strength):
        return (set_values(conditioning, {"strength": float(strength)}),)


class ConditioningSetMask:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "mask": ("MASK",), "strength": _STRENGTH,
                             "set_cond_area": (["default", "mask bounds"],)}}

    def append(self, conditioning, mask, set_cond_area, strength):
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return (set_values(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                          "mask_strength": float(strength)}),)


class ConditioningZeroOut:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    def zero_out(self, conditioning):
        out = []
        for tokens, extras in conditioning:
            extras = dict(extras)
            if extras.get("pooled_output") is not None:
                extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
            out.append([torch.zeros_like(tokens), extras])
        return (out,)


class ConditioningSetTimestepRange:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"

    @classmethod
    def INPUT_TYPES(cls):
        fraction = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {"required": {"conditioning": ("CONDITIONING",), "start": ("FLOAT", {"default": 0.0, **fraction}),
                             "end": ("FLOAT", {"default": 1.0, **fraction})}}

    def set_range(self, conditioning, start, end):
        # fractions of the trajectory; the sampler turns them into sigmas with the model's schedule
        return (set_values(conditioning, {"start_percent": float(start), "end_percent": float(end)}),)


NODE_CLASS_MAPPINGS = {
    "ConditioningCombine": ConditioningCombine, "ConditioningAverage": ConditioningAverage,
    "ConditioningConcat": ConditioningConcat, "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength, "ConditioningSetMask": ConditioningSetMask,
    "ConditioningZeroOut": ConditioningZeroOut, "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}
# ComfyUI's display-name table keys ConditioningAverage with a trailing space, so its frontend
# shows the class name; the others without an entry there show their class name too.
NODE_DISPLAY_NAME_MAPPINGS = {
    "ConditioningCombine": "Conditioning (Combine)", "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetMask": "Conditioning (Set Mask)",
}
