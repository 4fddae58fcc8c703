"""PyraCanny and CPDS against a direct transcription of the spec's steps (§10.3-10.4), exact on uint8."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.preprocessors import cpds, pyracanny
from nodes.fooocus.controlnet import FooocusCPDS, FooocusPyraCanny


def _images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:120, 0:80]
    shapes = np.zeros((120, 80, 3), np.uint8)
    shapes[..., 0] = ((xx - 40) ** 2 + (yy - 60) ** 2 < 900) * 220
    shapes[..., 1] = (xx > 30) * 180
    shapes[..., 2] = (yy * 2).clip(0, 255)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3.0)
    flat = np.full((64, 64, 3), 128, np.uint8)  # no edges at all: equal percentiles
    return {"noise": noise, "shapes": shapes, "smooth": smooth, "flat": flat}


def spec_pyracanny(image, low, high):
    """§10.3 step by step: scales 0.2..1.0, area resize, Canny per RGB channel -> {0,1},
    A <- 0.75 * linear_resize(A) + 0.25 * edges (A starts as the first scale's edges), sum of the
    channels, 1st percentile -> 0 and 99th -> 255, clip, uint8."""
    h, w = image.shape[:2]
    acc = None
    for k in [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        small = cv2.resize(image, (int(w * k), int(h * k)), interpolation=cv2.INTER_AREA)
        edges = np.zeros(small.shape, np.float32)
        for channel in range(3):
            edges[..., channel] = (cv2.Canny(small[..., channel], low, high) > 0).astype(np.float32)
        if acc is None:
            acc = edges
        else:
            acc = 0.75 * cv2.resize(acc, (edges.shape[1], edges.shape[0]), interpolation=cv2.INTER_LINEAR) \
                + 0.25 * edges
    total = acc[..., 0] + acc[..., 1] + acc[..., 2]
    lo, hi = np.percentile(total, 1), np.percentile(total, 99)
    return np.clip((total - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def spec_cpds(image):
    """§10.4: Gaussian blur sigma 0.8, decolor -> density, boost; offset = L2 over RGB of
    (blurred - boost); density + offset; 4th -> 0, 96th -> 255; clip; uint8."""
    blurred = cv2.GaussianBlur(image, (0, 0), 0.8)
    density, boost = cv2.decolor(blurred)
    diff = blurred.astype(np.float32) - boost.astype(np.float32)
    offset = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)
    result = density.astype(np.float32) + offset
    lo, hi = np.percentile(result, 4), np.percentile(result, 96)
    return np.clip((result - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["noise", "shapes", "smooth", "flat"])
@pytest.mark.parametrize("thresholds", [(64, 128), (20, 60)])
def test_pyracanny_equals_spec(name, thresholds):
    image = _images()[name]
    ours = pyracanny(image, *thresholds)
    assert ours.shape == image.shape[:2] and ours.dtype == np.uint8
    assert np.array_equal(ours, spec_pyracanny(image, *thresholds))
    assert ours.max() == (0 if name == "flat" else 255)


@pytest.mark.parametrize("name", ["noise", "shapes", "smooth"])
def test_cpds_equals_spec(name):
    image = _images()[name]
    ours = cpds(image)
    assert ours.dtype == np.uint8
    assert np.array_equal(ours, spec_cpds(image))


def test_thresholds_change_pyracanny():
    image = _images()["smooth"]
    assert not np.array_equal(pyracanny(image, 10, 30), pyracanny(image, 100, 200))
    with pytest.raises(ValueError, match="1..255"):
        pyracanny(image, 0, 128)


def test_nodes_run_per_image_and_skip_returns_raw():
    images = torch.from_numpy(np.stack([_images()["noise"][:80, :80], _images()["shapes"][:80, :80]])).float() / 255
    (edges,) = FooocusPyraCanny().preprocess(images, 64, 128)
    assert edges.shape == (2, 80, 80, 3)
    expected = spec_pyracanny((images[1].numpy() * 255 + 0.5).astype(np.uint8), 64, 128)
    assert np.array_equal((edges[1, ..., 0].numpy() * 255).round().astype(np.uint8), expected)
    (density,) = FooocusCPDS().preprocess(images)
    assert torch.equal(density[..., 0], density[..., 2])
    assert FooocusCPDS().preprocess(images, skipping_cn_preprocessor=True)[0] is images
    assert FooocusPyraCanny().preprocess(images, 64, 128, skipping_cn_preprocessor=True)[0] is images
