"""Area, mask and timestep-range conditioning through the sampler core, against a direct
computation of ComfyUI's blending on a toy UNet whose prediction is a constant per prompt, so
each output pixel shows the weights its prompts got there."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.sampling.areas import (calc_cond_batch, mask_bounds, pair_opposite_areas, pair_sides, RegionCond,
                                   resolve_area)
from models.sampling.model_sampling import DiscreteModelSampling
from models.tiny import tiny_sd15_spec
from nodes.conditioning import (ConditioningAverage, ConditioningCombine, ConditioningConcat, ConditioningSetArea,
                                ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                                ConditioningSetTimestepRange, ConditioningZeroOut)
from nodes.runtime import Unmanaged
from nodes.sampler_core import Guidance, build_denoiser
from nodes.sockets import ModelSocket

SIZE = 16  # latent pixels (128 px images)


@pytest.fixture(scope="module")
def model():
    from models.checkpoint import split_checkpoint
    from models.detection import detect_checkpoint
    from models.tiny import tiny_checkpoint_state_dict

    spec = tiny_sd15_spec()
    info = detect_checkpoint(split_checkpoint(tiny_checkpoint_state_dict(spec)), "tiny-sd15")
    return ModelSocket(Unmanaged(None), info, "tiny-sd15")


class ToyUNet:
    """eps = 0.25 * x_in + (the prompt's value): x0 depends on each pixel's own x and the prompt."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x, timesteps, context, y=None, transformer_options=None):
        self.shapes.append(tuple(x.shape))
        return 0.25 * x + context.mean(dim=1)[:, :1, None, None].expand(-1, x.shape[1], -1, -1)


def prompt(value: float, tokens: int = 3):
    return [[torch.full((1, tokens, 32), float(value)), {}]]


def toy_x0(x, sigma, value):
    """The toy's x0 for one prompt over the whole latent (discrete eps: x - sigma * eps(c_in * x))."""
    c_in = 1.0 / (sigma ** 2 + 1.0) ** 0.5
    return x - sigma * (0.25 * c_in * x + value)


def area_weight(area, strength=1.0):
    """ComfyUI's weight of an area entry, written per pixel: 1 inside, x (t+1)/8 over the 8 rows or
    columns next to an edge that is not the latent's border, 0 outside."""
    h, w, y, x = area
    weight = torch.zeros(SIZE, SIZE)
    for r in range(h):
        for c in range(w):
            value = strength
            if y != 0 and r < 8:
                value *= (r + 1) / 8
            if y + h < SIZE and r >= h - 8:
                value *= (h - r) / 8
            if x != 0 and c < 8:
                value *= (c + 1) / 8
            if x + w < SIZE and c >= w - 8:
                value *= (w - c) / 8
            weight[y + r, x + c] = value
    return weight


def blend(x, sigma, parts):
    """sum(w * x0(value)) / (sum(w) + 1e-37) over (weight map, prompt value) parts."""
    total = sum(weight * toy_x0(x, sigma, value) for weight, value in parts)
    return total / (sum(weight for weight, _ in parts) + 1e-37)


def denoise(model, unet, positive, negative, cfg, x, sigma):
    denoiser = build_denoiser(model, unet, positive, negative, Guidance(cfg), SIZE * 8, SIZE * 8,
                              DiscreteModelSampling(), torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        return denoiser(x, torch.tensor([sigma] * x.shape[0]))


def latent(batch=1, seed=0):
    return torch.randn(batch, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_areas_blend_with_feathered_weights_and_get_same_area_negatives(model):
    set_area = ConditioningSetArea().append
    (a,) = set_area(prompt(3.0), width=64, height=64, x=0, y=0, strength=1.0)  # (8, 8, 0, 0)
    (b,) = set_area(prompt(-2.0), width=64, height=64, x=64, y=64, strength=0.7)  # (8, 8, 8, 8)
    (positive,) = ConditioningCombine().combine(*ConditioningCombine().combine(prompt(1.0), a), b)
    (n,) = set_area(prompt(-1.0), width=128, height=64, x=0, y=0, strength=1.0)  # (8, 16, 0, 0)
    (negative,) = ConditioningCombine().combine(prompt(0.5), n)
    x, sigma, cfg = latent(), 2.0, 4.0
    unet = ToyUNet()
    out = denoise(model, unet, positive, negative, cfg, x, sigma)

    full = torch.ones(SIZE, SIZE)
    wa, wb, wn = area_weight((8, 8, 0, 0)), area_weight((8, 8, 8, 8), 0.7), area_weight((8, 16, 0, 0))
    # each side gets the other's areas: a's negative from the smallest negative entry holding it (n),
    # b's from the whole-latent one; n's positive from the whole-latent positive prompt
    cond = blend(x, sigma, [(full, 1.0), (wa, 3.0), (wb, -2.0), (wn, 1.0)])
    uncond = blend(x, sigma, [(full, 0.5), (wn, -1.0), (wa, -1.0), (wb, 0.5)])
    torch.testing.assert_close(out, uncond + cfg * (cond - uncond), rtol=1e-5, atol=1e-5)
    # one call per crop size: both whole-latent entries, the four 8x8 ones, the two 8x16 ones
    assert sorted(unet.shapes) == sorted([(2, 4, 16, 16), (4, 4, 8, 8), (2, 4, 8, 16)])


def test_combined_prompts_average_and_plain_prompts_keep_one_cfg_call(model):
    x, sigma = latent(batch=2, seed=1), 1.5
    unet = ToyUNet()
    plain = denoise(model, unet, prompt(1.0), prompt(0.25), 6.0, x, sigma)
    assert unet.shapes == [(4, 4, 16, 16)]  # the unchanged fast path: one [x; x] call
    expected = toy_x0(x, sigma, 0.25) + 6.0 * (toy_x0(x, sigma, 1.0) - toy_x0(x, sigma, 0.25))
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    (both,) = ConditioningCombine().combine(prompt(1.0), prompt(3.0, tokens=6))  # token counts: lcm
    unet = ToyUNet()
    out = denoise(model, unet, both, None, 1.0, x, sigma)
    torch.testing.assert_close(out, (toy_x0(x, sigma, 1.0) + toy_x0(x, sigma, 3.0)) / 2, rtol=1e-5, atol=1e-5)
    assert unet.shapes == [(4, 4, 16, 16)]


def test_masks_weight_per_pixel_and_mask_bounds_crop_the_call(model):
    mask = torch.zeros(1, SIZE * 8, SIZE * 8)
    mask[:, 20:70, 30:100] = 1.0
    mask[:, 40:50, 60:80] = 0.5
    x, sigma = latent(seed=2), 3.0
    resized = F.interpolate(mask.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    expected = blend(x, sigma, [(torch.ones(SIZE, SIZE), 1.0), (resized * 0.6, 2.0)])
    outputs = {}
    for mode in ("default", "mask bounds"):
        (masked,) = ConditioningSetMask().append(prompt(2.0), mask, mode, strength=0.6)
        (positive,) = ConditioningCombine().combine(prompt(1.0), masked)
        unet = ToyUNet()
        outputs[mode] = denoise(model, unet, positive, None, 1.0, x, sigma)
        torch.testing.assert_close(outputs[mode], expected, rtol=1e-5, atol=1e-5)
        outputs[mode + " shapes"] = sorted(unet.shapes)
    assert outputs["default shapes"] == [(2, 4, 16, 16)]
    rows = torch.nonzero(resized.amax(1) > 0).flatten()
    cols = torch.nonzero(resized.amax(0) > 0).flatten()
    box = (max(8, int(rows[-1] - rows[0] + 1)), max(8, int(cols[-1] - cols[0] + 1)))  # at least 8 x 8
    assert outputs["mask bounds shapes"] == sorted([(1, 4, 16, 16), (1, 4, *box)])
    assert mask_bounds(torch.zeros(1, 4, 4)) == (8, 8, 0, 0)


def test_timestep_ranges_switch_prompts_by_sigma(model):
    sampling = DiscreteModelSampling()
    (early,) = ConditioningSetTimestepRange().set_range(prompt(1.0), 0.0, 0.5)
    (late,) = ConditioningSetTimestepRange().set_range(prompt(3.0), 0.5, 1.0)
    (positive,) = ConditioningCombine().combine(early, late)
    x = latent(seed=3)
    switch = sampling.percent_to_sigma(0.5)
    for sigma, value in ((switch * 2, 1.0), (switch / 2, 3.0)):
        out = denoise(model, ToyUNet(), positive, None, 1.0, x, sigma)
        torch.testing.assert_close(out, toy_x0(x, sigma, value), rtol=1e-5, atol=1e-5)
    # outside every range a side predicts 0, as in ComfyUI
    out = denoise(model, ToyUNet(), late, None, 1.0, x, switch * 2)
    assert torch.count_nonzero(out) == 0


def test_strength_percentage_areas_and_batches(model):
    assert resolve_area(("percentage", 0.5, 0.25, 0.5, 0.25), (SIZE, SIZE)) == (8, 4, 8, 4)
    (by_fraction,) = ConditioningSetAreaPercentage().append(prompt(2.0), width=0.25, height=0.5, x=0.25, y=0.5,
                                                           strength=1.0)
    (by_pixels,) = ConditioningSetArea().append(prompt(2.0), width=32, height=64, x=32, y=64, strength=1.0)
    (by_pixels,) = ConditioningSetAreaStrength().append(by_pixels, 2.5)
    x, sigma = latent(batch=2, seed=4), 1.0
    fraction = denoise(model, ToyUNet(), ConditioningCombine().combine(prompt(1.0), by_fraction)[0], None, 1.0, x,
                       sigma)
    torch.testing.assert_close(fraction, blend(x, sigma, [(torch.ones(SIZE, SIZE), 1.0),
                                                          (area_weight((8, 4, 8, 4)), 2.0)]), rtol=1e-5, atol=1e-5)
    pixels = denoise(model, ToyUNet(), ConditioningCombine().combine(prompt(1.0), by_pixels)[0], None, 1.0, x, sigma)
    torch.testing.assert_close(pixels, blend(x, sigma, [(torch.ones(SIZE, SIZE), 1.0),
                                                        (area_weight((8, 4, 8, 4), 2.5), 2.0)]), rtol=1e-5, atol=1e-5)


def test_max_batch_splits_the_calls_without_changing_the_blend():
    x, sigma = latent(seed=5), torch.tensor([2.0])
    calls = []

    def toy(crop, sigma, context):
        calls.append(crop.shape[0])
        return crop * 0.5 + context.view(-1, 1, 1, 1)

    sides = [[RegionCond({"context": torch.full((1,), float(v))}, area=(8, 8, 0, 8 * (v % 2))) for v in range(4)],
             [RegionCond({"context": torch.zeros(1)})]]
    whole = calc_cond_batch(toy, sides, x, sigma)
    assert calls == [4, 1]
    calls.clear()
    split = calc_cond_batch(toy, sides, x, sigma, max_batch=3)
    assert calls == [3, 1, 1]
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b)


def test_pairing_keeps_an_existing_same_area_opposite_and_pairs_guider_sides():
    area = RegionCond({"context": torch.zeros(1)}, area=(8, 8, 0, 0))
    opposite = RegionCond({"context": torch.ones(1)}, area=(8, 8, 0, 0))
    positive, negative = pair_opposite_areas([[area], [opposite, RegionCond({"context": torch.ones(1)})]])
    assert len(positive) == 1 and len(negative) == 2
    plain = {"context": torch.full((1,), 2.0)}
    assert pair_sides([plain, plain, None]) == [plain, plain, None]  # nothing to pair: the fast path stays
    first, middle, last = pair_sides([[area], plain, None])
    assert first == [area] and last is None
    assert [entry.area for entry in middle] == [None, (8, 8, 0, 0)]
    assert middle[1].inputs["context"] is plain["context"]


def test_conditioning_edits_equal_comfyui_formulas():
    to = [[torch.randn(1, 6, 8), {"pooled_output": torch.randn(1, 4)}]]
    source = [[torch.randn(1, 4, 8), {"pooled_output": torch.randn(1, 4)}]]
    (mixed,) = ConditioningAverage().addWeighted(to, source, 0.3)
    padded = torch.cat([source[0][0], torch.zeros(1, 2, 8)], dim=1)
    torch.testing.assert_close(mixed[0][0], to[0][0] * 0.3 + padded * 0.7)
    torch.testing.assert_close(mixed[0][1]["pooled_output"], to[0][1]["pooled_output"] * 0.3
                               + source[0][1]["pooled_output"] * 0.7)
    (joined,) = ConditioningConcat().concat(to, source)
    assert torch.equal(joined[0][0], torch.cat([to[0][0], source[0][0]], dim=1))
    (zero,) = ConditioningZeroOut().zero_out(to)
    assert torch.count_nonzero(zero[0][0]) == 0 and torch.count_nonzero(zero[0][1]["pooled_output"]) == 0
    assert torch.count_nonzero(to[0][0]) > 0  # inputs untouched
    (ranged,) = ConditioningSetTimestepRange().set_range(to, 0.2, 0.8)
    assert ranged[0][1]["start_percent"] == 0.2 and ranged[0][1]["end_percent"] == 0.8
    (masked,) = ConditioningSetMask().append(to, torch.ones(4, 4), "mask bounds", 0.5)
    assert masked[0][1]["mask"].shape == (1, 4, 4) and masked[0][1]["set_area_to_bounds"]
    assert masked[0][1]["mask_strength"] == 0.5 and "mask" not in to[0][1]
