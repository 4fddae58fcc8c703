"""Fooocus's structural-control preprocessors (spec fooocus_pipeline.md §10.3-10.4), on uint8 RGB arrays.

OpenCV computes both, as in Fooocus: the Canny edges, the area/linear resizes of the pyramid and
the contrast-preserving decolorisation (Lu et al., `cv2.decolor`) of CPDS exist nowhere else
with the same numbers.
"""
from __future__ import annotations

import cv2
import numpy as np

PYRAMID_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_CANNY_LOW, DEFAULT_CANNY_HIGH = 64, 128
CPDS_BLUR_SIGMA = 0.8


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")


def canny(gray_or_rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV Canny (uint8 0/255) of a uint8 image; an RGB image is first turned to luminance."""
    if gray_or_rgb.ndim == 3:
        gray_or_rgb = cv2.cvtColor(gray_or_rgb, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(gray_or_rgb, low, high)


def percentile_normalize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map the `low` percentile to 0 and the `high` one to 255 (not clipped)."""
    values = values.astype(np.float32)
    v_min, v_max = np.percentile(values, low), np.percentile(values, high)
    values -= v_min
    values /= max(v_max - v_min, 1e-6)  # equal percentiles (an image without edges): no 0/0 NaNs
    return values * 255.0


def _channel_edges(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """Canny of each RGB channel on its own, as floats 0/1, [H, W, 3]."""
    return np.stack([cv2.Canny(image[..., c], low, high).astype(np.float32) / 255.0 for c in range(3)], axis=2)


def pyramid_canny_edges(image: np.ndarray, low: int = DEFAULT_CANNY_LOW, high: int = DEFAULT_CANNY_HIGH) -> np.ndarray:
    """The float accumulator over the pyramid: edges of the 0.2 scale first, then at each larger
    scale A = 0.75 * linear_resize(A) + 0.25 * edges (area-downscaled image per scale)."""
    height, width = image.shape[:2]
    accumulated = None
    for k in PYRAMID_SCALES:
        small = cv2.resize(image, (int(width * k), int(height * k)), interpolation=cv2.INTER_AREA)
        edges = _channel_edges(small, int(low), int(high))
        if accumulated is None:
            accumulated = edges
        else:
            accumulated = cv2.resize(accumulated, (edges.shape[1], edges.shape[0]), interpolation=cv2.INTER_LINEAR)
            accumulated = accumulated * 0.75 + edges * 0.25
    return accumulated


def pyracanny(image: np.ndarray, low: int = DEFAULT_CANNY_LOW, high: int = DEFAULT_CANNY_HIGH) -> np.ndarray:
    """Fooocus's PyraCanny: [H, W] uint8 from a uint8 RGB image."""
    _check_rgb(image)
    if not (1 <= low <= 255 and 1 <= high <= 255):
        raise ValueError(f"canny thresholds must be within 1..255 (got low {low}, high {high})")
    summed = np.sum(pyramid_canny_edges(image, low, high), axis=2)
    return percentile_normalize(summed, 1, 99).clip(0, 255).astype(np.uint8)


def cpds(image: np.ndarray) -> np.ndarray:
    """Fooocus's CPDS: blur, decolorise to (density, colour boost), add the per-pixel distance of
    the blurred image from the boost, percentile-normalise; [H, W] uint8 from uint8 RGB."""
    _check_rgb(image)
    blurred = cv2.GaussianBlur(image, (0, 0), CPDS_BLUR_SIGMA)
    density, boost = cv2.decolor(blurred)
    offset = np.sum((blurred.astype(np.float32) - boost.astype(np.float32)) ** 2.0, axis=2) ** 0.5
    result = density.astype(np.float32) + offset
    return percentile_normalize(result, 4, 96).clip(0, 255).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """[H, W] -> [H, W, 3] (the hint Fooocus feeds a ControlNet)."""
    return np.repeat(gray[..., None], 3, axis=2)
