"""Latent, image and mask nodes against direct computations of ComfyUI's formulas (written here
per pixel or with plain torch/numpy/Pillow calls)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodes.image_ops import (EmptyImage, ImageBatch, ImageBlend, ImageBlur, ImageCrop, ImageFromBatch, ImageInvert,
                             ImageQuantize, ImageSharpen, RepeatImageBatch)
from nodes.latent_ops import (LatentAdd, LatentBatch, LatentBlend, LatentComposite, LatentCompositeMasked,
                              LatentCrop, LatentFlip, LatentFromBatch, LatentMultiply, LatentRotate, LatentSubtract,
                              RepeatLatentBatch)
from nodes.mask_ops import CropMask, FeatherMask, MaskComposite, SolidMask, ThresholdMask


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_latent_composite_pastes_and_feathers_inner_edges():
    to, source = {"samples": rand(2, 4, 8, 16), "batch_index": [3, 4]}, {"samples": rand(2, 4, 8, 8, seed=1)}
    (out,) = LatentComposite().composite(to, source, x=32, y=0, feather=16)  # latent x 4, feather 2
    weight = torch.ones(8, 8)
    weight[:, 0] = 0.5  # left edge inside the destination: (t + 1) / 2 for t = 0, 1
    weight[:, 7] = 0.5  # right edge (4 + 8 < 16) too; top and bottom are the border
    expected = to["samples"].clone()
    expected[:, :, :, 4:12] = source["samples"] * weight + to["samples"][:, :, :, 4:12] * (1 - weight)
    torch.testing.assert_close(out["samples"], expected)
    assert out["batch_index"] == [3, 4] and torch.equal(to["samples"], to["samples"])
    (clipped,) = LatentComposite().composite(to, source, x=96, y=0, feather=0)  # latent x 12: 4 columns fit
    assert torch.equal(clipped["samples"][:, :, :, 12:], source["samples"][:, :, :, :4])
    assert torch.equal(clipped["samples"][:, :, :, :12], to["samples"][:, :, :, :12])


def test_latent_composite_masked_blends_with_the_resized_mask():
    destination, source = {"samples": rand(1, 4, 8, 8)}, {"samples": rand(1, 4, 4, 4, seed=1)}
    mask = rand(16, 16, seed=2)
    (out,) = LatentCompositeMasked().composite(destination, source, x=16, y=8, resize_source=False, mask=mask)
    small = F.interpolate(mask[None, None], size=(4, 4), mode="bilinear")
    expected = destination["samples"].clone()
    expected[:, :, 1:5, 2:6] = small * source["samples"] + (1 - small) * destination["samples"][:, :, 1:5, 2:6]
    torch.testing.assert_close(out["samples"], expected)


def test_latent_blend_arithmetic_and_batches():
    first, second = {"samples": rand(2, 4, 8, 8)}, {"samples": rand(1, 4, 4, 4, seed=1)}
    (blended,) = LatentBlend().blend(first, second, 0.3)
    resized = F.interpolate(second["samples"], size=(8, 8), mode="bicubic")
    torch.testing.assert_close(blended["samples"], first["samples"] * 0.3 + resized * 0.7)
    bilinear = F.interpolate(second["samples"], size=(8, 8), mode="bilinear").repeat(2, 1, 1, 1)
    torch.testing.assert_close(LatentAdd().op(first, second)[0]["samples"], first["samples"] + bilinear)
    torch.testing.assert_close(LatentSubtract().op(first, second)[0]["samples"], first["samples"] - bilinear)
    torch.testing.assert_close(LatentMultiply().op(first, -2.5)[0]["samples"], first["samples"] * -2.5)
    (batch,) = LatentBatch().batch(first, second)
    assert batch["samples"].shape == (3, 4, 8, 8) and batch["batch_index"] == [0, 1, 0]
    torch.testing.assert_close(batch["samples"][2:], bilinear[:1])
    (repeated,) = RepeatLatentBatch().repeat({"samples": first["samples"], "batch_index": [2, 3],
                                              "noise_mask": torch.ones(2, 1, 8, 8)}, 3)
    assert torch.equal(repeated["samples"], torch.cat([first["samples"]] * 3))
    assert repeated["batch_index"] == [2, 3, 4, 5, 6, 7] and repeated["noise_mask"].shape == (6, 1, 8, 8)
    four = {"samples": rand(4, 4, 2, 2), "noise_mask": torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 2, 2)}
    (picked,) = LatentFromBatch().frombatch(four, batch_index=1, length=2)
    assert torch.equal(picked["samples"], four["samples"][1:3]) and picked["batch_index"] == [1, 2]
    assert picked["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 0.0]  # masks repeated over the batch first
    (last,) = LatentFromBatch().frombatch(four, batch_index=9, length=5)
    assert torch.equal(last["samples"], four["samples"][3:]) and last["batch_index"] == [3]


def test_latent_crop_flip_rotate():
    latent = {"samples": torch.arange(2 * 16 * 16.0).view(1, 2, 16, 16)}
    (crop,) = LatentCrop().crop(latent, width=64, height=64, x=200, y=8)  # x clamped to 16 - 8 latent px
    assert torch.equal(crop["samples"], latent["samples"][:, :, 1:9, 8:16])
    (flipped,) = LatentFlip().flip(latent, "x-axis: vertically")
    assert torch.equal(flipped["samples"][:, :, 0], latent["samples"][:, :, 15])
    (mirrored,) = LatentFlip().flip(latent, "y-axis: horizontally")
    assert torch.equal(mirrored["samples"][..., 0], latent["samples"][..., 15])
    wide = {"samples": torch.arange(6.0).view(1, 1, 2, 3)}
    (turned,) = LatentRotate().rotate(wide, "90 degrees")
    source = wide["samples"][0, 0]
    clockwise = torch.tensor([[float(source[1 - j, i]) for j in range(2)] for i in range(3)])
    assert torch.equal(turned["samples"][0, 0], clockwise)
    (half,) = LatentRotate().rotate(wide, "180 degrees")
    assert torch.equal(half["samples"][0, 0], source.flip(0).flip(1))
    assert torch.equal(LatentRotate().rotate(wide, "none")[0]["samples"], wide["samples"])


@pytest.mark.parametrize("mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"])
def test_image_blend_modes(mode):
    a, b = rand(1, 3, 4, 3).numpy(), rand(1, 3, 4, 3, seed=1).numpy()
    layer = {"normal": b, "multiply": a * b, "screen": 1 - (1 - a) * (1 - b),
             "overlay": np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
             "soft_light": np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a),
                                    a + (2 * b - 1) * (np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, np.sqrt(a)) - a)),
             "difference": a - b}[mode]
    (out,) = ImageBlend().blend_images(torch.from_numpy(a), torch.from_numpy(b), 0.4, mode)
    np.testing.assert_allclose(out.numpy(), np.clip(a * 0.6 + layer * 0.4, 0, 1), rtol=1e-5, atol=1e-6)


def _direct_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    radius = kernel.shape[0] // 2
    padded = np.pad(image, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    out = np.zeros_like(image)
    for i in range(image.shape[1]):
        for j in range(image.shape[2]):
            window = padded[:, i:i + 2 * radius + 1, j:j + 2 * radius + 1, :]
            out[:, i, j, :] = (window * kernel[None, :, :, None]).sum(axis=(1, 2))
    return out


def _gaussian(radius: int, sigma: float) -> np.ndarray:
    u = np.linspace(-1, 1, 2 * radius + 1)
    kernel = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def test_blur_and_sharpen_equal_direct_convolutions():
    image = rand(2, 7, 6, 3, seed=3)
    (blurred,) = ImageBlur().blur(image, blur_radius=2, sigma=0.8)
    np.testing.assert_allclose(blurred.numpy(), _direct_filter(image.numpy(), _gaussian(2, 0.8)), atol=1e-5)
    kernel = _gaussian(1, 1.5) * -(0.7 * 10)
    kernel[1, 1] += 1.0 - kernel.sum()
    (sharp,) = ImageSharpen().sharpen(image, sharpen_radius=1, sigma=1.5, alpha=0.7)
    np.testing.assert_allclose(sharp.numpy(), np.clip(_direct_filter(image.numpy(), kernel), 0, 1), atol=1e-5)


def test_quantize_maps_onto_pillows_palette():
    image = rand(1, 8, 8, 3, seed=4)
    (out,) = ImageQuantize().quantize(image, colors=4, dither="none")
    picture = Image.fromarray((image[0] * 255).to(torch.uint8).numpy(), mode="RGB")
    expected = picture.quantize(palette=picture.quantize(colors=4), dither=Image.Dither.NONE).convert("RGB")
    np.testing.assert_allclose(out[0].numpy(), np.asarray(expected) / 255.0, atol=1e-6)
    for dither in ("floyd-steinberg", "bayer-4"):
        (dithered,) = ImageQuantize().quantize(image, colors=4, dither=dither)
        assert len(torch.unique(dithered.reshape(-1, 3), dim=0)) <= 4


def test_image_basics():
    image = rand(2, 4, 6, 3)
    assert torch.equal(ImageInvert().invert(image)[0], 1.0 - image)
    (batch,) = ImageBatch().batch(image, rand(1, 2, 3, 3, seed=1))
    assert batch.shape == (3, 4, 6, 3)
    torch.testing.assert_close(batch[2:], F.interpolate(rand(1, 2, 3, 3, seed=1).movedim(-1, 1), size=(4, 6),
                                                        mode="bilinear").movedim(1, -1))
    (mixed,) = ImageBatch().batch(image, rand(1, 4, 6, 4, seed=2))
    assert mixed.shape == (3, 4, 6, 4) and torch.all(mixed[:2, ..., 3] == 1)
    (empty,) = EmptyImage().generate(5, 3, batch_size=2, color=0x336699)
    assert empty.shape == (2, 3, 5, 3)
    torch.testing.assert_close(empty[1, 2, 4], torch.tensor([0x33, 0x66, 0x99]) / 255.0)
    (crop,) = ImageCrop().crop(image, width=4, height=2, x=100, y=1)
    assert torch.equal(crop, image[:, 1:3, 5:6])
    assert torch.equal(RepeatImageBatch().repeat(image, 3)[0], torch.cat([image] * 3))
    assert torch.equal(ImageFromBatch().frombatch(image, batch_index=1, length=4)[0], image[1:])


def test_mask_nodes():
    (solid,) = SolidMask().solid(0.25, width=5, height=3)
    assert solid.shape == (1, 3, 5) and torch.all(solid == 0.25)
    (feathered,) = FeatherMask().feather(torch.ones(1, 4, 6), left=2, top=0, right=2, bottom=0)
    # left: columns 0, 1 x 1/2, 2/2; right as ComfyUI indexes it: columns -0 (= 0), -1 x 1/2, 2/2
    assert feathered[0, 0].tolist() == [0.25, 1.0, 1.0, 1.0, 1.0, 1.0]
    (top,) = FeatherMask().feather(torch.ones(4, 6), left=0, top=4, right=0, bottom=0)
    assert top[0, :, 0].tolist() == [0.25, 0.5, 0.75, 1.0]
    mask = rand(2, 5, 6)
    assert torch.equal(CropMask().crop(mask, x=1, y=2, width=3, height=10)[0], mask[:, 2:, 1:4])
    destination, source = rand(1, 4, 4, seed=1), rand(1, 3, 3, seed=2)
    expected = {"multiply": lambda d, s: d * s, "add": lambda d, s: d + s, "subtract": lambda d, s: d - s,
                "and": lambda d, s: ((d.round() > 0) & (s.round() > 0)).float(),
                "or": lambda d, s: ((d.round() > 0) | (s.round() > 0)).float(),
                "xor": lambda d, s: ((d.round() > 0) ^ (s.round() > 0)).float()}
    for operation, formula in expected.items():
        (out,) = MaskComposite().combine(destination, source, x=2, y=1, operation=operation)
        want = destination.clone()
        want[:, 1:4, 2:4] = formula(destination[:, 1:4, 2:4], source[:, :3, :2])
        torch.testing.assert_close(out, want.clamp(0, 1))
    assert torch.equal(ThresholdMask().image_to_mask(mask, 0.5)[0], (mask > 0.5).float())
