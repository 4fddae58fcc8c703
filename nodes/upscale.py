"""Upscaling nodes, named and shaped as ComfyUI's: super-resolution models (any architecture
spandrel knows) and plain resampling of images and latents."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from graph import context as graph_context
from models.upscaler import load_upscaler, upscale_image

from .images import tensor_to_pil
from .latents import MAX_RESOLUTION
from .runtime import manage, services, use

UPSCALE_FOLDER = "upscale_models"
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]


@dataclass(frozen=True)
class UpscaleModelSocket:
    """UPSCALE_MODEL: the spandrel descriptor (scale, tiling, call padding) and the handle under
    which the model manager holds its network."""

    descriptor: object  # spandrel.ImageModelDescriptor
    handle: object
    name: str

    @property
    def scale(self) -> int:
        return self.descriptor.scale


class UpscaleModelLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load_model"
    DESCRIPTION = ("Loads a super-resolution model from upscale_models/: any architecture spandrel knows "
                   "(ESRGAN/RealESRGAN, SwinIR, HAT, DAT, OmniSR, ...), Fooocus' own upscaler included.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": ("COMBO", {"folder": UPSCALE_FOLDER})}}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        # A name missing from the folder is not refused here: the node fails when it runs, with a
        # message naming the file and the folder (the Fooocus routes name the preset's default).
        return True

    def load_model(self, model_name):
        folders = services().folders
        try:
            path = folders.path(UPSCALE_FOLDER, model_name)
        except FileNotFoundError:
            folder = folders.directories(UPSCALE_FOLDER)[0]
            raise FileNotFoundError(f"upscale model {model_name!r} not found in the {UPSCALE_FOLDER} folder "
                                    f"({folder}); put the file there") from None
        descriptor = load_upscaler(path)
        handle = manage(descriptor.model, f"{model_name} upscaler", keep_float32=not descriptor.supports_half)
        return (UpscaleModelSocket(descriptor, handle, model_name),)


class ImageUpscaleWithModel:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    DESCRIPTION = "Upscales by the model's own factor in 512-pixel tiles (halved on out-of-memory down to 128)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)}}

    def upscale(self, upscale_model, image):
        context = graph_context.current()
        with use(upscale_model.handle):
            upscaled = upscale_image(upscale_model.descriptor, image, check_interrupt=context.check_interrupt,
                                     progress=lambda done, total: context.progress(done, total))
        return (upscaled,)


class ImageScaleBy:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (IMAGE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, image, upscale_method, scale_by):
        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        return (resample(image.movedim(-1, 1), width, height, upscale_method).movedim(1, -1),)


class ImageScaleToTotalPixels:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        # resolution_steps came later to ComfyUI; optional so that older workflows still validate
        return {"required": {"image": ("IMAGE",), "upscale_method": (IMAGE_METHODS,),
                             "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01})},
                "optional": {"resolution_steps": ("INT", {"default": 1, "min": 1, "max": 256})}}

    def upscale(self, image, upscale_method, megapixels, resolution_steps=1):
        width, height = total_pixels_size(int(image.shape[2]), int(image.shape[1]), megapixels, resolution_steps)
        return (resample(image.movedim(-1, 1), width, height, upscale_method).movedim(1, -1),)


def total_pixels_size(width: int, height: int, megapixels: float, steps: int = 1) -> tuple[int, int]:
    """ComfyUI's ImageScaleToTotalPixels size: megapixels of 1024*1024, aspect kept, each side
    rounded to a multiple of `steps`."""
    scale = math.sqrt(megapixels * 1024 * 1024 / (width * height))
    return round(width * scale / steps) * steps, round(height * scale / steps) * steps


class LatentUpscale:
    CATEGORY = "latent"
    upscale_methods = LATENT_METHODS  # ComfyUI's class attributes, read by custom-node packs
    crop_methods = CROP_METHODS
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_METHODS,),
                             "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
                             "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
                             "crop": (CROP_METHODS,)}}

    def upscale(self, samples, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (samples,)
        latent = samples["samples"]
        # ComfyUI: pixel sizes of at least 64, a zero side follows the aspect ratio
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[3] * height / latent.shape[2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[2] * width / latent.shape[3]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = resample(latent, width // 8, height // 8, upscale_method, crop)
        return (out,)


class LatentUpscaleBy:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, samples, upscale_method, scale_by):
        latent = samples["samples"]
        out = dict(samples)
        out["samples"] = resample(latent, round(latent.shape[3] * scale_by), round(latent.shape[2] * scale_by),
                                  upscale_method)
        return (out,)


# --- resampling (ComfyUI's common_upscale behaviour) -----------------------------------------

def resample(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """[B, C, H, W] -> [B, C, height, width]: torch interpolation for nearest-exact / bilinear /
    area / bicubic (unclamped, as ComfyUI), Pillow's Lanczos on 8-bit images, or bislerp
    (spherical interpolation of the channel vectors, for latents). crop="center" first cuts the
    source to the target aspect ratio."""
    if width < 1 or height < 1:
        raise ValueError(f"target size {width}x{height} must be at least 1x1")
    if crop == "center":
        samples = _center_crop(samples, width / height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method not in ("nearest-exact", "bilinear", "area", "bicubic"):
        raise ValueError(f"unknown upscale_method {method!r}")
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=method)


def _center_crop(samples: torch.Tensor, aspect: float) -> torch.Tensor:
    old_height, old_width = samples.shape[-2:]
    old_aspect = old_width / old_height
    x = y = 0
    if old_aspect > aspect:
        x = round((old_width - old_width * (aspect / old_aspect)) / 2)
    elif old_aspect < aspect:
        y = round((old_height - old_height * (old_aspect / aspect)) / 2)
    return samples[..., y:old_height - y, x:old_width - x]


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    resized = []
    for image in samples:
        pil = tensor_to_pil(image.movedim(0, -1)).resize((width, height), resample=Image.LANCZOS)
        array = np.asarray(pil, dtype=np.float32) / 255.0
        resized.append(torch.from_numpy(array.reshape(height, width, -1)).movedim(-1, 0))
    return torch.stack(resized).to(samples.device, samples.dtype)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resampling whose blend of two neighbours is a slerp of their channel vectors
    (direction interpolated on the sphere, length linearly): width first, then height."""
    dtype = samples.dtype
    out = _slerp_axis(samples.float(), width, axis=3)
    return _slerp_axis(out, height, axis=2).to(dtype)


def _slerp_axis(samples: torch.Tensor, new_length: int, axis: int) -> torch.Tensor:
    """Resample [B, C, H, W] along `axis` (2: height, 3: width)."""
    vectors = samples.movedim(1, -1)  # channels last: [B, H, W, C]
    axis -= 1
    old_length = vectors.shape[axis]
    # source coordinate of each target pixel centre (align_corners=False), clamped to the edges
    position = (torch.arange(new_length, dtype=torch.float32) + 0.5) * old_length / new_length - 0.5
    position = position.clamp(0, old_length - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=old_length - 1)
    shape = [1, 1, 1, 1]
    shape[axis] = new_length
    blended = _slerp(vectors.index_select(axis, low), vectors.index_select(axis, high),
                     (position - low).reshape(shape))
    return blended.movedim(-1, 1)


def _slerp(first: torch.Tensor, second: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Per-vector slerp over the last axis. Nearly parallel or opposite vectors (sine ~0) get the
    linear blend, the slerp's limit there (ComfyUI keeps the first vector when parallel)."""
    norm_first = first.norm(dim=-1, keepdim=True)
    norm_second = second.norm(dim=-1, keepdim=True)
    unit_first = first / norm_first.clamp_min(1e-12)
    unit_second = second / norm_second.clamp_min(1e-12)
    dot = (unit_first * unit_second).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sine = torch.sin(omega)
    safe = sine.abs() > 1e-6
    sine = torch.where(safe, sine, torch.ones_like(sine))
    direction = (torch.sin((1.0 - ratio) * omega) / sine) * unit_first + (torch.sin(ratio * omega) / sine) * unit_second
    result = direction * (norm_first * (1.0 - ratio) + norm_second * ratio)
    linear = first * (1.0 - ratio) + second * ratio
    return torch.where((dot.abs() > 1 - 1e-5) | ~safe, linear, result)


NODE_CLASS_MAPPINGS = {"UpscaleModelLoader": UpscaleModelLoader, "ImageUpscaleWithModel": ImageUpscaleWithModel,
                       "ImageScaleBy": ImageScaleBy, "ImageScaleToTotalPixels": ImageScaleToTotalPixels,
                       "LatentUpscale": LatentUpscale, "LatentUpscaleBy": LatentUpscaleBy}
NODE_DISPLAY_NAME_MAPPINGS = {"UpscaleModelLoader": "Load Upscale Model",
                              "ImageUpscaleWithModel": "Upscale Image (using Model)",
                              "ImageScaleBy": "Upscale Image By", "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
                              "LatentUpscale": "Upscale Latent", "LatentUpscaleBy": "Upscale Latent By"}
