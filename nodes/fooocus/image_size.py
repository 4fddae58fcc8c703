"""Fooocus' image resizing for Vary and Upscale as nodes (sizes: models/image_sizes.py).

Fooocus resamples with Pillow's Lanczos filter on 8-bit images; so do these nodes, one image of
the batch at a time.
"""
from __future__ import annotations

import torch
from PIL import Image

from models.image_sizes import shape_ceil_steps, upscale_target

from ..images import UPSCALE_METHODS, ImageScale, pil_to_tensor, tensor_to_pil

LATENT_CELL = 8  # pixels per latent cell of the SD/SDXL VAEs


def lanczos(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One [H, W, C] image resampled to width x height."""
    if (int(image.shape[1]), int(image.shape[0])) == (width, height):
        return image
    return pil_to_tensor(tensor_to_pil(image).resize((int(width), int(height)), Image.LANCZOS))


def set_shape_ceil(image: torch.Tensor, target: int) -> torch.Tensor:
    """One [H, W, C] image brought to shape ceil `target`, step by step as Fooocus does."""
    for height, width in shape_ceil_steps(int(image.shape[0]), int(image.shape[1]), target):
        image = lanczos(image, width, height)
    return image


class FooocusImageShapeCeil:
    """Rescale to a shape ceil (the side of the equal-area square, rounded up to 64 px)."""

    CATEGORY = "fooocus/image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "shape_ceil": ("INT", {"default": 1024, "min": 64, "max": 16384, "step": 64})}}

    def resize(self, image, shape_ceil):
        return (torch.stack([set_shape_ceil(single, shape_ceil) for single in image]),)


class FooocusUpscaleResize:
    """Bring a super-resolution result to `factor` times the original's size: exactly
    (W*factor, H*factor), or, when that is smaller than shape ceil 1024, to shape ceil 1024."""

    CATEGORY = "fooocus/image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "the super-resolution output"}),
                             "original": ("IMAGE", {"tooltip": "the image before super-resolution"}),
                             "factor": ("FLOAT", {"default": 2.0, "min": 1.0, "max": 5.0, "step": 0.01})}}

    def resize(self, image, original, factor):
        height, width = int(original.shape[1]), int(original.shape[2])
        target = upscale_target(width, height, factor)
        if target.shape_ceil is not None:
            return (torch.stack([set_shape_ceil(single, target.shape_ceil) for single in image]),)
        return (torch.stack([lanczos(single, *target.size) for single in image]),)


class FooocusImageScaleToLatent:
    """An image resized to the pixel size of a latent (8 px per latent cell): the hint of an image
    prompt when the generation size is only known inside the graph (vary, upscale, inpaint),
    as Fooocus resizes ControlNet images to the size it generates at."""

    CATEGORY = "fooocus/image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "latent": ("LATENT", {"tooltip": "the latent to match"}),
                             "upscale_method": (UPSCALE_METHODS, {"default": "lanczos"}),
                             "crop": (["disabled", "center"], {"default": "center"})}}

    def resize(self, image, latent, upscale_method="lanczos", crop="center"):
        height, width = (int(side) * LATENT_CELL for side in latent["samples"].shape[-2:])
        return ImageScale().upscale(image, upscale_method, width, height, crop)


NODE_CLASS_MAPPINGS = {"FooocusImageShapeCeil": FooocusImageShapeCeil, "FooocusUpscaleResize": FooocusUpscaleResize,
                       "FooocusImageScaleToLatent": FooocusImageScaleToLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"FooocusImageShapeCeil": "Fooocus image shape ceil",
                              "FooocusUpscaleResize": "Fooocus upscale resize",
                              "FooocusImageScaleToLatent": "Fooocus image scale to latent size"}
