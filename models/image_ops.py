"""Pure image and mask maths of ComfyUI's post-processing and mask nodes.

IMAGE is [B, H, W, C] floats in 0..1, MASK [B, H, W]; every function returns a new tensor.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")
MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def blend_mode(base: torch.Tensor, layer: torch.Tensor, mode: str) -> torch.Tensor:
    """The blended layer of ImageBlend's modes (soft light: the W3C formula ComfyUI uses)."""
    if mode == "normal":
        return layer
    if mode == "multiply":
        return base * layer
    if mode == "screen":
        return 1 - (1 - base) * (1 - layer)
    if mode == "overlay":
        return torch.where(base <= 0.5, 2 * base * layer, 1 - 2 * (1 - base) * (1 - layer))
    if mode == "soft_light":
        lift = torch.where(base <= 0.25, ((16 * base - 12) * base + 4) * base, torch.sqrt(base))
        return torch.where(layer <= 0.5, base - (1 - 2 * layer) * base * (1 - base), base + (2 * layer - 1) * (lift - base))
    if mode == "difference":
        return base - layer
    raise ValueError(f"unknown blend_mode {mode!r}; valid: {', '.join(BLEND_MODES)}")


def gaussian_kernel(size: int, sigma: float, device=None) -> torch.Tensor:
    """A [size, size] Gaussian over coordinates spanning -1..1 (not pixels: ComfyUI's kernel),
    summing to 1."""
    axis = torch.linspace(-1, 1, size, device=device)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    kernel = torch.exp(-(rows * rows + cols * cols) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _filter(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-channel convolution of [B, H, W, C] with reflected borders."""
    channels = image.shape[-1]
    pixels = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), mode="reflect")
    weights = kernel.to(pixels).expand(channels, 1, *kernel.shape)
    return F.conv2d(pixels, weights, groups=channels).movedim(1, -1)


def blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    if radius == 0:
        return image
    return _filter(image, gaussian_kernel(2 * radius + 1, sigma, image.device), radius)


def sharpen(image: torch.Tensor, radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """Unsharp mask as one kernel: -10 * alpha times the Gaussian, with the centre raised so the
    kernel sums to 1; clamped to 0..1."""
    if radius == 0:
        return image
    kernel = gaussian_kernel(2 * radius + 1, sigma, image.device) * -(alpha * 10)
    kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
    return _filter(image, kernel, radius).clamp(0, 1)


def bayer_matrix(level: int) -> np.ndarray:
    """The normalised 2^level x 2^level ordered-dither matrix, values centred on 0."""
    if level == 0:
        return np.zeros((1, 1), np.float32)
    scale = 4 ** level
    inner = scale * bayer_matrix(level - 1)
    return np.block([[inner - 1.5, inner + 0.5], [inner + 1.5, inner - 0.5]]) / scale


def quantize(image: torch.Tensor, colors: int, dither: str) -> torch.Tensor:
    """Pillow's median-cut palette of `colors` per image, then the image mapped onto it with no,
    Floyd-Steinberg or ordered (Bayer) dithering (ComfyUI's ImageQuantize)."""
    if dither not in DITHERS:
        raise ValueError(f"unknown dither {dither!r}; valid: {', '.join(DITHERS)}")
    out = image.clone()  # an alpha channel passes through
    for index in range(image.shape[0]):
        # truncation to 8 bits, as ComfyUI converts
        picture = Image.fromarray((image[index, ..., :3] * 255).to(torch.uint8).cpu().numpy(), mode="RGB")
        palette = picture.quantize(colors=colors)  # Pillow needs a palette image to map onto (its #5836)
        if dither == "none":
            mapped = picture.quantize(palette=palette, dither=Image.Dither.NONE)
        elif dither == "floyd-steinberg":
            mapped = picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        else:
            order = int(dither.split("-")[-1])
            spread = 2 * 256 / (len(palette.getpalette()) // 3)
            matrix = torch.from_numpy(spread * bayer_matrix(int(math.log2(order))) + 0.5)
            pixels = torch.from_numpy(np.array(picture).astype(np.float32))
            tiles = (math.ceil(pixels.shape[0] / order), math.ceil(pixels.shape[1] / order))
            offsets = matrix.tile(tiles)[:pixels.shape[0], :pixels.shape[1]].unsqueeze(-1)
            shifted = (pixels + offsets).clamp(0, 255).to(torch.uint8)
            mapped = Image.fromarray(shifted.numpy()).quantize(palette=palette, dither=Image.Dither.NONE)
        out[index, ..., :3] = torch.from_numpy(np.array(mapped.convert("RGB"))).float().to(out) / 255
    return out


def as_masks(mask: torch.Tensor) -> torch.Tensor:
    """A MASK of any rank as [B, H, W]."""
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


def feather_mask(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """FeatherMask: the outer lines of each side scaled by (t + 1) / size. ComfyUI indexes the
    right and bottom ramps from -0, so their first factor lands on the first column / row and
    the ramp ends one line short of the edge; kept, so masks match ComfyUI's."""
    out = as_masks(mask).clone()
    height, width = out.shape[-2], out.shape[-1]
    left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
    for t in range(left):
        out[:, :, t] *= (t + 1.0) / left
    for t in range(right):
        out[:, :, -t] *= (t + 1) / right
    for t in range(top):
        out[:, t, :] *= (t + 1) / top
    for t in range(bottom):
        out[:, -t, :] *= (t + 1) / bottom
    return out


def mask_composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> torch.Tensor:
    """MaskComposite: `operation` of the destination and the source placed at (x, y), clipped,
    then clamped to 0..1 (logical operations on masks rounded to 0/1)."""
    if operation not in MASK_OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; valid: {', '.join(MASK_OPERATIONS)}")
    out = as_masks(destination).clone()
    source = as_masks(source)
    right, bottom = min(x + source.shape[-1], out.shape[-1]), min(y + source.shape[-2], out.shape[-2])
    if right <= x or bottom <= y:  # placed wholly outside: nothing overlaps
        return out.clamp(0.0, 1.0)
    part = source[:, :bottom - y, :right - x]
    region = out[:, y:bottom, x:right]
    if operation == "multiply":
        value = region * part
    elif operation == "add":
        value = region + part
    elif operation == "subtract":
        value = region - part
    else:
        logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
        value = logical(region.round().bool(), part.round().bool()).float()
    out[:, y:bottom, x:right] = value
    return out.clamp(0.0, 1.0)
