"""ComfyUI's mask nodes beyond the inpaint ones: solid, feather, crop, composite and threshold.
MASK is [B, H, W] floats; the maths is in models/image_ops.py."""
from __future__ import annotations

import torch

from models import image_ops

from .latents import MAX_RESOLUTION

_SIZE = ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1})
_OFFSET = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})


class SolidMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "width": _SIZE, "height": _SIZE}}

    def solid(self, value, width, height):
        return (torch.full((1, height, width), float(value), dtype=torch.float32),)


class FeatherMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "left": _OFFSET, "top": _OFFSET, "right": _OFFSET, "bottom": _OFFSET}}

    def feather(self, mask, left, top, right, bottom):
        return (image_ops.feather_mask(mask, left, top, right, bottom),)


class CropMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "x": _OFFSET, "y": _OFFSET, "width": _SIZE, "height": _SIZE}}

    def crop(self, mask, x, y, width, height):
        return (image_ops.as_masks(mask)[:, y:y + height, x:x + width],)


class MaskComposite:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": ("MASK",), "source": ("MASK",), "x": _OFFSET, "y": _OFFSET,
                             "operation": (list(image_ops.MASK_OPERATIONS),)}}

    def combine(self, destination, source, x, y, operation):
        return (image_ops.mask_composite(destination, source, x, y, operation),)


class ThresholdMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",),
                             "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def image_to_mask(self, mask, value):
        return ((mask > value).float(),)


NODE_CLASS_MAPPINGS = {"SolidMask": SolidMask, "FeatherMask": FeatherMask, "CropMask": CropMask,
                       "MaskComposite": MaskComposite, "ThresholdMask": ThresholdMask}
