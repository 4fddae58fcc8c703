"""Fooocus's structural image prompt as nodes: PyraCanny and CPDS preprocessors, and a ControlNet
applied with Fooocus's weight, stop and softness (spec fooocus_pipeline.md §10.3-10.5)."""
from __future__ import annotations

import numpy as np
import torch

from models.preprocessors import DEFAULT_CANNY_HIGH, DEFAULT_CANNY_LOW, cpds, gray_to_rgb, pyracanny

from ..controlnet import ControlNetApplyAdvanced


def _per_image(image: torch.Tensor, preprocess) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> each image through `preprocess` (uint8 RGB -> uint8 gray) -> IMAGE."""
    out = []
    for item in image:
        rgb = np.clip(item[..., :3].cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out.append(torch.from_numpy(gray_to_rgb(preprocess(rgb)).astype(np.float32) / 255.0))
    return torch.stack(out)


class FooocusPyraCanny:
    CATEGORY = "fooocus/controlnet"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preprocess"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "canny_low_threshold": ("INT", {"default": DEFAULT_CANNY_LOW, "min": 1, "max": 255}),
                             "canny_high_threshold": ("INT", {"default": DEFAULT_CANNY_HIGH, "min": 1, "max": 255}),
                             "skipping_cn_preprocessor": ("BOOLEAN", {"default": False})}}

    def preprocess(self, image, canny_low_threshold, canny_high_threshold, skipping_cn_preprocessor=False):
        if skipping_cn_preprocessor:
            return (image,)
        return (_per_image(image, lambda rgb: pyracanny(rgb, canny_low_threshold, canny_high_threshold)),)


class FooocusCPDS:
    CATEGORY = "fooocus/controlnet"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preprocess"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "skipping_cn_preprocessor": ("BOOLEAN", {"default": False})}}

    def preprocess(self, image, skipping_cn_preprocessor=False):
        if skipping_cn_preprocessor:
            return (image,)
        return (_per_image(image, cpds),)


class FooocusControlNetApply:
    """Fooocus's application: strength = weight, active from the start while sigma >= sigma(1 - stop),
    the residuals scaled per level by 1 - softness * (1 - i / 9); positive and negative both."""

    CATEGORY = "fooocus/controlnet"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.001}),
                             "stop": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.001}),
                             "controlnet_softness": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0,
                                                               "step": 0.001})},
                "optional": {"control_net": ("CONTROL_NET",), "image": ("IMAGE",)}}

    def apply(self, positive, negative, weight, stop, controlnet_softness, control_net=None, image=None):
        # Without a hint or a network the conditioning passes through, so a workflow can chain
        # the four Fooocus image-prompt slots statically and leave unused ones unconnected.
        if control_net is None or image is None or stop <= 0:
            return (positive, negative)
        return ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image, weight, 0.0, stop,
                                                          softness=controlnet_softness)


NODE_CLASS_MAPPINGS = {
    "FooocusPyraCanny": FooocusPyraCanny,
    "FooocusCPDS": FooocusCPDS,
    "FooocusControlNetApply": FooocusControlNetApply,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FooocusPyraCanny": "Fooocus PyraCanny",
    "FooocusCPDS": "Fooocus CPDS",
    "FooocusControlNetApply": "Fooocus Apply ControlNet (stop, softness)",
}
