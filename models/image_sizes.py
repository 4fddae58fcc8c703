"""Fooocus' image-size rules for Vary, Upscale and Inpaint (specs/fooocus_pipeline.md §8, §9.6).

"Shape ceil" is the side of the square with the image's area, rounded up to the latent-friendly
multiple of 64. Fooocus brings images to a target shape ceil by repeated rescaling, each side
rounded to a multiple of 64; the sizes are computed here, the resampling is the caller's
(Lanczos, from the previous step's image, as Fooocus does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SHAPE_MULTIPLE = 64
MAX_SHAPE_CEIL_ITERATIONS = 256
VARY_MIN_SHAPE_CEIL, VARY_MAX_SHAPE_CEIL = 1024, 2048
UPSCALE_MIN_SHAPE_CEIL = 1024
# Above this shape ceil an upscale is returned as the super-resolution result, without diffusion.
UPSCALE_DIRECT_RETURN_SHAPE_CEIL = 2800


def shape_ceil(height: float, width: float) -> int:
    return int(math.ceil(math.sqrt(height * width) / SHAPE_MULTIPLE) * SHAPE_MULTIPLE)


def shape_ceil_steps(height: int, width: int, target: float) -> list[tuple[int, int]]:
    """The (height, width) of each rescale Fooocus makes to bring an image to shape ceil `target`;
    empty when it is there already (or when rounding leaves the size unchanged)."""
    target = float(target)
    original = (height, width)
    current = original
    steps: list[tuple[int, int]] = []
    for _ in range(MAX_SHAPE_CEIL_ITERATIONS):
        ceil_now = shape_ceil(*current)
        if abs(ceil_now - target) < 0.1:
            break
        k = target / ceil_now
        # Fooocus scales the running H, W (not the previous step's rounded image size) by k
        # a side never rounds below 64 (Fooocus would divide by zero on a very elongated strip)
        h = max(SHAPE_MULTIPLE, int(round(float(current[0]) * k / SHAPE_MULTIPLE) * SHAPE_MULTIPLE))
        w = max(SHAPE_MULTIPLE, int(round(float(current[1]) * k / SHAPE_MULTIPLE) * SHAPE_MULTIPLE))
        if (h, w) == original:
            return []
        current = (h, w)
        steps.append(current)
    return steps


def size_after_shape_ceil(height: int, width: int, target: float) -> tuple[int, int]:
    steps = shape_ceil_steps(height, width, target)
    return steps[-1] if steps else (height, width)


def vary_shape_ceil(height: int, width: int) -> int:
    """Vary works at the input's shape ceil clamped to 1024..2048."""
    return min(max(shape_ceil(height, width), VARY_MIN_SHAPE_CEIL), VARY_MAX_SHAPE_CEIL)


@dataclass(frozen=True)
class UpscaleTarget:
    """Where the super-resolved image goes: exactly `size` (width, height), or, for small results,
    to shape ceil `shape_ceil` (then `size` is the size that gives)."""

    size: tuple[int, int]
    shape_ceil: int | None
    direct_return: bool  # no diffusion: the resized super-resolution image is the result


def upscale_target(width: int, height: int, factor: float, fast: bool = False, sr_scale: int = 4) -> UpscaleTarget:
    """Fooocus' upscale size rule for an input of `width` x `height` and upscale `factor`.

    Small results are brought to shape ceil 1024 starting from the super-resolution output, whose
    size is the input's times the network's scale `sr_scale` (4 for Fooocus' own upscaler)."""
    ceil = shape_ceil(height * factor, width * factor)
    if ceil < UPSCALE_MIN_SHAPE_CEIL:
        h, w = size_after_shape_ceil(height * sr_scale, width * sr_scale, UPSCALE_MIN_SHAPE_CEIL)
        return UpscaleTarget((w, h), UPSCALE_MIN_SHAPE_CEIL, direct_return=fast)
    size = (int(width * factor), int(height * factor))
    return UpscaleTarget(size, None, direct_return=fast or ceil > UPSCALE_DIRECT_RETURN_SHAPE_CEIL)
