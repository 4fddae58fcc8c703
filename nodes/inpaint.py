"""ComfyUI's inpaint and mask nodes, with ComfyUI's names, inputs and outputs.

MASK is [B, H, W] floats with 1 = repaint; a LATENT's "noise_mask" makes KSampler keep what lies
outside it; InpaintModelConditioning puts an inpainting checkpoint's extra input (mask and
masked-image latent) on the conditioning, as ComfyUI does.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .images import LoadImage
from .latents import MAX_RESOLUTION, encode_images
from .runtime import services

MASK_CHANNELS = ["alpha", "red", "green", "blue"]
IMAGE_CHANNELS = ["red", "green", "blue", "alpha"]


def _pixel_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """MASK -> [B, 1, H, W] at the image's size (bilinear, as ComfyUI)."""
    if mask.ndim not in (2, 3, 4):
        raise ValueError(f"mask: expected [H, W] or [B, H, W], got shape {tuple(mask.shape)}")
    mask = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    return F.interpolate(mask, size=(height, width), mode="bilinear")


def _crop_to_8(pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre crop of image [B, H, W, C] and mask [B, 1, H, W] to multiples of 8."""
    height, width = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
    top, left = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
    return (pixels[:, top:top + height, left:left + width], mask[:, :, top:top + height, left:left + width])


def gray_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels where the rounded mask is 1 set to 0.5 gray (what an inpainting model's masked image is)."""
    keep = (1.0 - mask.round()).movedim(1, -1)
    return (pixels[..., :3] - 0.5) * keep + 0.5


class VAEEncodeForInpaint:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})}}

    def encode(self, vae, pixels, mask, grow_mask_by=6):
        pixels, mask = _crop_to_8(pixels, _pixel_mask(mask, pixels.shape[1], pixels.shape[2]))
        if grow_mask_by:  # a few pixels more keep the seam clean in latent space
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            grown = F.conv2d(mask.round(), kernel, padding=math.ceil((grow_mask_by - 1) / 2)).clamp(0, 1)
            grown = grown[:, :, :mask.shape[2], :mask.shape[3]]
        else:
            grown = mask
        latent = encode_images(vae, gray_out(pixels, mask))
        return ({"samples": latent, "noise_mask": grown.round()},)


class SetLatentNoiseMask:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    def set_mask(self, samples, mask):
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        return (out,)


class InpaintModelConditioning:
    CATEGORY = "conditioning/inpaint"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                             "pixels": ("IMAGE",), "mask": ("MASK",),
                             "noise_mask": ("BOOLEAN", {"default": True, "tooltip": (
                                 "Add a noise mask to the latent so sampling only changes what lies inside the "
                                 "mask. Might improve results or completely break things depending on the model.")})}}

    def encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
        mask = _pixel_mask(mask, pixels.shape[1], pixels.shape[2])
        original = pixels
        pixels, mask = _crop_to_8(pixels, mask)
        concat_latent = encode_images(vae, gray_out(pixels, mask))
        latent = {"samples": encode_images(vae, original)}
        if noise_mask:
            latent["noise_mask"] = mask
        conditioned = []
        for conditioning in (positive, negative):
            conditioned.append([[tokens, {**extras, "concat_latent_image": concat_latent, "concat_mask": mask}]
                                for tokens, extras in conditioning])
        return (conditioned[0], conditioned[1], latent)


class LoadImageMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("COMBO", {"folder": "__input__", "image_upload": True}),
                             "channel": (MASK_CHANNELS,)}}

    @classmethod
    def IS_CHANGED(cls, image=None, channel=None):
        return LoadImage.IS_CHANGED(image)

    def load_image(self, image, channel):
        base = Path(services().input_dir).resolve()
        path = (base / image).resolve()
        if base not in path.parents or not path.is_file():
            raise FileNotFoundError(f"input image {image!r} not found in the input folder")
        try:
            with Image.open(path) as opened:
                picture = ImageOps.exif_transpose(opened)
                if picture.mode == "I":
                    picture = picture.point(lambda value: value * (1 / 255))
                picture = picture.convert("RGBA")
        except OSError as error:
            raise ValueError(f"image: {image!r} is not an image ({error})") from None
        band = channel[0].upper()
        values = torch.from_numpy(np.asarray(picture.getchannel(band), dtype=np.float32) / 255.0)
        return ((1.0 - values if band == "A" else values)[None],)


class ImagePadForOutpaint:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"

    @classmethod
    def INPUT_TYPES(cls):
        side = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {"required": {"image": ("IMAGE",), "left": side, "top": side, "right": side, "bottom": side,
                             "feathering": ("INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1})}}

    def expand_image(self, image, left, top, right, bottom, feathering):
        batch, height, width, channels = image.shape
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5)
        padded[:, top:top + height, left:left + width] = image
        mask = torch.ones(height + top + bottom, width + left + right)
        inner = torch.zeros(height, width)
        if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
            rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
            cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
            far_rows, far_cols = torch.full_like(rows, height), torch.full_like(cols, width)
            # distance to each padded side (a side not padded counts as far away)
            distance = torch.stack([rows if top else far_rows, height - rows if bottom else far_rows,
                                    cols if left else far_cols, width - cols if right else far_cols]).amin(0)
            ramp = ((feathering - distance) / feathering) ** 2
            inner = torch.where(distance < feathering, ramp, inner)
        mask[top:top + height, left:left + width] = inner
        return (padded, mask[None])


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None,
              resize_source: bool) -> torch.Tensor:
    """ComfyUI's composite on [B, C, H, W]: source (masked) pasted at (x, y), clipped to the destination."""
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = _to_batch(source, destination.shape[0])
    x = max(-source.shape[3], min(x, destination.shape[3]))
    y = max(-source.shape[2], min(y, destination.shape[2]))
    left, top = x, y
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = F.interpolate(mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1]), size=source.shape[2:],
                             mode="bilinear")
        mask = _to_batch(mask, source.shape[0])
    visible_width, visible_height = destination.shape[3] - left + min(0, x), destination.shape[2] - top + min(0, y)
    mask = mask[:, :, :visible_height, :visible_width]
    source_part = mask * source[:, :, :visible_height, :visible_width]
    top, left = max(0, top), max(0, left)
    destination_part = (1.0 - mask) * destination[:, :, top:bottom, left:right]
    destination[:, :, top:bottom, left:right] = source_part + destination_part
    return destination


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    if tensor.shape[0] < batch:
        tensor = tensor.repeat(-(-batch // tensor.shape[0]), *([1] * (tensor.ndim - 1)))
    return tensor[:batch]


class ImageCompositeMasked:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {"required": {"destination": ("IMAGE",), "source": ("IMAGE",), "x": position, "y": position,
                             "resize_source": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK",)}}

    def composite(self, destination, source, x, y, resize_source, mask=None):
        if destination.shape[-1] != source.shape[-1]:
            raise ValueError(f"source has {source.shape[-1]} channels, destination {destination.shape[-1]}")
        out = composite(destination.clone().movedim(-1, 1), source.movedim(-1, 1), x, y, mask, resize_source)
        return (out.movedim(1, -1),)


class ImageToMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channel": (IMAGE_CHANNELS,)}}

    def image_to_mask(self, image, channel):
        index = IMAGE_CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"channel: the image has no {channel} channel ({image.shape[-1]} channels)")
        return (image[:, :, :, index],)


class MaskToImage:
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        return (mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1).expand(-1, -1, -1, 3),)


class InvertMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def invert(self, mask):
        return (1.0 - mask,)


class GrowMask:
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",),
                             "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
                             "tapered_corners": ("BOOLEAN", {"default": True})}}

    def expand_mask(self, mask, expand, tapered_corners):
        corner = 0 if tapered_corners else 1
        kernel = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]], dtype=np.uint8)
        operation = cv2.dilate if expand > 0 else cv2.erode
        masks = mask.reshape(-1, mask.shape[-2], mask.shape[-1]).float().numpy()
        out = [torch.from_numpy(operation(np.ascontiguousarray(m), kernel, iterations=abs(expand)) if expand else m)
               for m in masks]
        return (torch.stack(out),)


NODE_CLASS_MAPPINGS = {
    "VAEEncodeForInpaint": VAEEncodeForInpaint, "SetLatentNoiseMask": SetLatentNoiseMask,
    "InpaintModelConditioning": InpaintModelConditioning, "LoadImageMask": LoadImageMask,
    "ImagePadForOutpaint": ImagePadForOutpaint, "ImageCompositeMasked": ImageCompositeMasked,
    "ImageToMask": ImageToMask, "MaskToImage": MaskToImage, "InvertMask": InvertMask, "GrowMask": GrowMask,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)", "SetLatentNoiseMask": "Set Latent Noise Mask",
    "InpaintModelConditioning": "InpaintModelConditioning", "LoadImageMask": "Load Image (as Mask)",
    "ImagePadForOutpaint": "Pad Image for Outpainting", "ImageCompositeMasked": "ImageCompositeMasked",
    "ImageToMask": "Convert Image to Mask", "MaskToImage": "Convert Mask to Image", "InvertMask": "InvertMask",
    "GrowMask": "GrowMask",
}
