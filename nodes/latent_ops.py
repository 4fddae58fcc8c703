"""ComfyUI's latent nodes beyond the VAE and upscaling: composite, blend, arithmetic, batches,
crop, flip and rotate. LATENT is {"samples": [B, C, h, w], "noise_mask"?, "batch_index"?}; pixel
inputs are divided by 8 as ComfyUI does."""
from __future__ import annotations

import math

import torch

from models.latent_ops import extend_batch_index, paste, repeat_to_batch

from .inpaint import composite
from .latents import MAX_RESOLUTION
from .upscale import resample

_PIXELS_8 = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
_SIZE_8 = ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8})


def _with_samples(latent: dict, samples: torch.Tensor) -> dict:
    out = dict(latent)
    out["samples"] = samples
    return out


def reshape_latent_to(shape, latent: torch.Tensor, repeat_batch: bool = True) -> torch.Tensor:
    """`latent` resized (bilinear, centre crop) to `shape`'s channels-and-size and, unless told
    otherwise, fitted to its batch: how ComfyUI lines up a second latent operand."""
    if tuple(latent.shape[1:]) != tuple(shape[1:]):
        latent = resample(latent, shape[3], shape[2], "bilinear", "center")
    return repeat_to_batch(latent, shape[0]) if repeat_batch else latent


class LatentComposite:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples_to": ("LATENT",), "samples_from": ("LATENT",), "x": _PIXELS_8, "y": _PIXELS_8,
                             "feather": _PIXELS_8}}

    def composite(self, samples_to, samples_from, x, y, feather=0):
        return (_with_samples(samples_to, paste(samples_to["samples"], samples_from["samples"], x // 8, y // 8,
                                                feather // 8)),)


class LatentCompositeMasked:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": ("LATENT",), "source": ("LATENT",), "x": _PIXELS_8, "y": _PIXELS_8,
                             "resize_source": ("BOOLEAN", {"default": False})},
                "optional": {"mask": ("MASK",)}}

    def composite(self, destination, source, x, y, resize_source, mask=None):
        # ComfyUI's masked paste at latent resolution: offsets in pixels / 8, the mask resized to the source
        samples = composite(destination["samples"].clone(), source["samples"], x // 8, y // 8, mask, resize_source)
        return (_with_samples(destination, samples),)


class LatentBlend:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",),
                             "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01})}}

    def blend(self, samples1, samples2, blend_factor):
        first, second = samples1["samples"], samples2["samples"]
        if first.shape != second.shape:  # ComfyUI: bicubic, centre-cropped to the first's size
            second = resample(second, first.shape[3], first.shape[2], "bicubic", "center")
        return (_with_samples(samples1, first * blend_factor + second * (1 - blend_factor)),)


class _TwoLatents:
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",)}}

    def op(self, samples1, samples2):
        first = samples1["samples"]
        return (_with_samples(samples1, self.apply(first, reshape_latent_to(first.shape, samples2["samples"]))),)


class LatentAdd(_TwoLatents):
    @staticmethod
    def apply(first, second):
        return first + second


class LatentSubtract(_TwoLatents):
    @staticmethod
    def apply(first, second):
        return first - second


class LatentMultiply:
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "multiplier": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})}}

    def op(self, samples, multiplier):
        return (_with_samples(samples, samples["samples"] * multiplier),)


class LatentBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",)}}

    def batch(self, samples1, samples2):
        first, second = samples1["samples"], samples2["samples"]
        second = reshape_latent_to(first.shape, second, repeat_batch=False)
        out = _with_samples(samples1, torch.cat([first, second], dim=0))
        # each half keeps its own noise indices, so its images keep their seeds
        out["batch_index"] = (list(samples1.get("batch_index", range(first.shape[0])))
                              + list(samples2.get("batch_index", range(second.shape[0]))))
        return (out,)


class RepeatLatentBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def repeat(self, samples, amount):
        out = _with_samples(samples, samples["samples"].repeat(amount, 1, 1, 1))
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:  # a single mask already covers any batch
            out["noise_mask"] = mask.repeat(amount, *([1] * (mask.ndim - 1)))
        if "batch_index" in samples:
            out["batch_index"] = extend_batch_index(list(samples["batch_index"]), amount)
        return (out,)


class LatentFromBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def frombatch(self, samples, batch_index, length):
        latent = samples["samples"]
        start = min(latent.shape[0] - 1, batch_index)
        length = min(latent.shape[0] - start, length)
        out = _with_samples(samples, latent[start:start + length].clone())
        mask = samples.get("noise_mask")
        if mask is not None:
            if mask.shape[0] == 1:
                out["noise_mask"] = mask.clone()
            else:
                if mask.shape[0] < latent.shape[0]:
                    mask = mask.repeat(math.ceil(latent.shape[0] / mask.shape[0]), *([1] * (mask.ndim - 1)))
                out["noise_mask"] = mask[start:start + length].clone()
        # the picked images keep the noise they had in the whole batch
        out["batch_index"] = (list(samples["batch_index"])[start:start + length] if "batch_index" in samples
                              else list(range(start, start + length)))
        return (out,)


class LatentCrop:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "width": _SIZE_8, "height": _SIZE_8, "x": _PIXELS_8,
                             "y": _PIXELS_8}}

    def crop(self, samples, width, height, x, y):
        latent = samples["samples"]
        # ComfyUI keeps at least 8 latent pixels (64 px) after the offset
        x = max(0, min(x // 8, latent.shape[3] - 8))
        y = max(0, min(y // 8, latent.shape[2] - 8))
        return (_with_samples(samples, latent[:, :, y:y + height // 8, x:x + width // 8]),)


class LatentFlip:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "flip_method": (["x-axis: vertically", "y-axis: horizontally"],)}}

    def flip(self, samples, flip_method):
        dim = 2 if flip_method.startswith("x") else 3
        return (_with_samples(samples, torch.flip(samples["samples"], dims=[dim])),)


class LatentRotate:
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "rotate"
    ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "rotation": (cls.ROTATIONS,)}}

    def rotate(self, samples, rotation):
        # clockwise quarter turns, as ComfyUI (rot90 from the width axis to the height axis)
        turns = self.ROTATIONS.index(rotation)
        return (_with_samples(samples, torch.rot90(samples["samples"], k=turns, dims=[3, 2])),)


NODE_CLASS_MAPPINGS = {
    "LatentComposite": LatentComposite, "LatentCompositeMasked": LatentCompositeMasked, "LatentBlend": LatentBlend,
    "LatentAdd": LatentAdd, "LatentSubtract": LatentSubtract, "LatentMultiply": LatentMultiply,
    "LatentBatch": LatentBatch, "RepeatLatentBatch": RepeatLatentBatch, "LatentFromBatch": LatentFromBatch,
    "LatentCrop": LatentCrop, "LatentFlip": LatentFlip, "LatentRotate": LatentRotate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LatentComposite": "Latent Composite", "LatentBlend": "Latent Blend", "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch", "LatentCrop": "Crop Latent", "LatentFlip": "Flip Latent",
    "LatentRotate": "Rotate Latent",
}
