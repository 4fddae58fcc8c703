"""ComfyUI's image nodes: invert, batch, empty, crop, blend, blur, sharpen, quantize and batch
picking. IMAGE is [B, H, W, C] floats in 0..1; the maths is in models/image_ops.py."""
from __future__ import annotations

import torch

from models import image_ops

from .latents import MAX_RESOLUTION
from .upscale import resample

_SIZE = ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1})
_OFFSET = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})


def _resized_like(image: torch.Tensor, like: torch.Tensor, method: str) -> torch.Tensor:
    """`image` at `like`'s height and width (centre-cropped to its aspect first, as ComfyUI)."""
    return resample(image.movedim(-1, 1), like.shape[2], like.shape[1], method, "center").movedim(1, -1)


def _with_alpha(image: torch.Tensor) -> torch.Tensor:
    return torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)


class ImageInvert:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image):
        return (1.0 - image,)


class ImageBatch:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1, image2):
        if image1.shape[-1] != image2.shape[-1]:  # RGB with RGBA: the RGB one gets an opaque alpha
            image1, image2 = (_with_alpha(image) if image.shape[-1] == 3 else image for image in (image1, image2))
        if image1.shape[1:] != image2.shape[1:]:
            image2 = _resized_like(image2, image1, "bilinear")
        return (torch.cat([image1, image2], dim=0),)


class EmptyImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": _SIZE, "height": _SIZE,
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                             "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"})}}

    def generate(self, width, height, batch_size=1, color=0):
        # color is 0xRRGGBB
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 0xFF
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageCrop:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "width": _SIZE, "height": _SIZE, "x": _OFFSET, "y": _OFFSET}}

    def crop(self, image, width, height, x, y):
        # the offset stays inside the image, so at least one pixel remains
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageBlend:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend_images"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",),
                             "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "blend_mode": (list(image_ops.BLEND_MODES),)}}

    def blend_images(self, image1, image2, blend_factor, blend_mode):
        image2 = image2.to(image1.device)
        if image1.shape != image2.shape:
            image2 = _resized_like(image2, image1, "bicubic")
        blended = image_ops.blend_mode(image1, image2, blend_mode)
        return ((image1 * (1 - blend_factor) + blended * blend_factor).clamp(0, 1),)


class ImageBlur:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                             "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})}}

    def blur(self, image, blur_radius, sigma):
        return (image_ops.blur(image, blur_radius, sigma),)


class ImageSharpen:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                             "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                             "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01})}}

    def sharpen(self, image, sharpen_radius, sigma, alpha):
        return (image_ops.sharpen(image, sharpen_radius, sigma, alpha),)


class ImageQuantize:
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "quantize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "colors": ("INT", {"default": 256, "min": 1, "max": 256, "step": 1}),
                             "dither": (list(image_ops.DITHERS),)}}

    def quantize(self, image, colors, dither):
        return (image_ops.quantize(image, colors, dither),)


class RepeatImageBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def repeat(self, image, amount):
        return (image.repeat(amount, 1, 1, 1),)


class ImageFromBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def frombatch(self, image, batch_index, length):
        start = min(image.shape[0] - 1, batch_index)
        return (image[start:start + min(image.shape[0] - start, length)].clone(),)


NODE_CLASS_MAPPINGS = {
    "ImageInvert": ImageInvert, "ImageBatch": ImageBatch, "EmptyImage": EmptyImage, "ImageCrop": ImageCrop,
    "ImageBlend": ImageBlend, "ImageBlur": ImageBlur, "ImageSharpen": ImageSharpen, "ImageQuantize": ImageQuantize,
    "RepeatImageBatch": RepeatImageBatch, "ImageFromBatch": ImageFromBatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ImageInvert": "Invert Image", "ImageBatch": "Batch Images", "ImageCrop": "Image Crop",
    "ImageBlend": "Image Blend", "ImageBlur": "Image Blur", "ImageQuantize": "Image Quantize",
    "ImageSharpen": "Image Sharpen",
}
