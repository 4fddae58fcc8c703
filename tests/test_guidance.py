"""CFG batching, Fooocus sharpness / adaptive CFG, ADM guidance, refiner switching and FreeU,
against direct hand computations of the spec's formulas (fooocus_pipeline.md §3-6, §12)."""
import math

import numpy as np
import torch

from models.sampling import samplers
from models.sampling.adaptive_cfg import cfg_mimicking
from models.sampling.adm import (emphasized_adm_active, fooocus_adm_y, refiner_adm_y, sdxl_adm_halves,
                                 select_adm)
from models.sampling.freeu import make_freeu_patch
from models.sampling.guidance import CFGDenoiser, FooocusGuidance, standard_cfg
from models.sampling.model_sampling import DiscreteModelSampling
from models.sampling.refiner import JointRefinerSwitch, refiner_switch_step, split_sigmas_for_refiner
from models.sampling.sharpness import adaptive_anisotropic_filter, sharpen_positive_eps


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class RecordingDenoiser:
    """x0 = 0.9 x + mean over tokens of context (invariant to repeating the tokens)."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, context):
        self.batches.append((x.shape[0], context.shape[1]))
        return 0.9 * x + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) + 0 * sigma.reshape(-1, 1, 1, 1)


def test_cfg_batches_cond_and_uncond_in_one_call():
    x, sigma = rand(2, 4, 8, 8), torch.tensor([3.0, 3.0])
    pos, neg = rand(2, 77, 16, seed=1), rand(1, 154, 16, seed=2)  # different lengths, batch-1 negative
    inner = RecordingDenoiser()
    cfg = CFGDenoiser(inner, {"context": pos}, {"context": neg}, cfg=4.0)
    out = cfg(x, sigma)
    assert inner.batches == [(4, 154)]  # one call, batch 2B, contexts repeated to a common length
    cond = RecordingDenoiser()(x, sigma, pos)
    uncond = RecordingDenoiser()(x, sigma, neg.expand(2, -1, -1))
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))


def test_cfg_one_skips_the_uncond_pass_and_sampler_calls_once_per_step():
    x = rand(1, 4, 8, 8)
    sigmas = torch.tensor([5.0, 2.0, 1.0, 0.0])
    for scale, expected_batch in ((1.0, 1), (7.0, 2)):
        inner = RecordingDenoiser()
        cfg = CFGDenoiser(inner, {"context": rand(1, 77, 8)}, {"context": rand(1, 77, 8, seed=3)}, cfg=scale)
        samplers.sample_euler(cfg, x, sigmas)
        assert [b for b, _ in inner.batches] == [expected_batch] * 3


def naive_joint_bilateral(x, guide, size=13, sigma_space=3.0, sigma_color=3.0):
    """Spec §3 step 3 written as loops over pixels (float64, numpy)."""
    x, g = x.double().numpy(), guide.double().numpy()
    half = size // 2
    offsets = np.arange(size) - half
    g1 = np.exp(-offsets ** 2 / (2 * sigma_space ** 2))
    g1 /= g1.sum()
    spatial = np.outer(g1, g1)
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (half, half), (half, half)), mode="reflect")
    gp = np.pad(g, ((0, 0), (0, 0), (half, half), (half, half)), mode="reflect")
    out = np.zeros_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                window_g = gp[n, :, i:i + size, j:j + size]
                dist = np.abs(window_g - g[n, :, i, j][:, None, None]).sum(0)
                weights = spatial * np.exp(-0.5 * dist ** 2 / sigma_color ** 2)
                out[n, :, i, j] = (xp[n, :, i:i + size, j:j + size] * weights).sum((1, 2)) / weights.sum()
    return torch.from_numpy(out)


def test_sharpness_filter_matches_the_spec_by_hand():
    eps_pos, x0_pos = rand(2, 4, 9, 10, seed=4), rand(2, 4, 9, 10, seed=5) * 2 + 0.5
    g = x0_pos.double()
    mean = g.mean(dim=(1, 2, 3), keepdim=True)
    std = g.std(dim=(1, 2, 3), keepdim=True)
    expected_blur = naive_joint_bilateral(eps_pos, (g - mean) / (std + 1e-5))
    torch.testing.assert_close(adaptive_anisotropic_filter(eps_pos, x0_pos).double(), expected_blur,
                               rtol=1e-5, atol=1e-5)
    alpha = 0.001 * 2.0 * 0.75
    torch.testing.assert_close(sharpen_positive_eps(eps_pos, x0_pos, 2.0, 0.75).double(),
                               alpha * expected_blur + (1 - alpha) * eps_pos.double(), rtol=1e-5, atol=1e-5)
    assert sharpen_positive_eps(eps_pos, x0_pos, 0.0, 0.75) is eps_pos


def test_adaptive_cfg_mimicking_by_hand():
    e_neg, e_pos = rand(1, 4, 4, 4, seed=6), rand(1, 4, 4, 4, seed=7)
    p = 0.3
    real = e_neg + 9.0 * (e_pos - e_neg)
    mimic = e_neg + 7.0 * (e_pos - e_neg)
    torch.testing.assert_close(cfg_mimicking(e_neg, e_pos, 9.0, 7.0, p), p * real + (1 - p) * mimic)
    torch.testing.assert_close(cfg_mimicking(e_neg, e_pos, 4.0, 7.0, p), e_neg + 4.0 * (e_pos - e_neg))


def test_fooocus_guidance_combines_sharpness_and_mimicking():
    ms = DiscreteModelSampling()
    x = rand(1, 4, 16, 16, seed=8) * 3
    cond, uncond = rand(1, 4, 16, 16, seed=9), rand(1, 4, 16, 16, seed=10)
    sigma = ms.sigma(torch.tensor([600.0]))
    p = 1 - 600 / 999
    combined = FooocusGuidance(ms, sharpness=5.0, adaptive_cfg=7.0)(x, sigma, cond, uncond, 10.0)
    e_pos = sharpen_positive_eps(x - cond, cond, 5.0, p)
    expected = x - cfg_mimicking(x - uncond, e_pos, 10.0, 7.0, p)
    torch.testing.assert_close(combined, expected)
    # no sharpness and CFG below the mimic value: plain CFG
    plain = FooocusGuidance(ms, sharpness=0.0, adaptive_cfg=7.0)(x, sigma, cond, uncond, 4.0)
    torch.testing.assert_close(plain, standard_cfg(x, sigma, cond, uncond, 4.0), rtol=1e-5, atol=1e-5)


def _embed(values):
    freqs = np.exp(-math.log(10000) * np.arange(128) / 128)
    return np.concatenate([np.concatenate([np.cos(v * freqs), np.sin(v * freqs)]) for v in values])


def test_adm_vectors_and_switch_by_hand():
    pooled = rand(1, 1280, seed=11)
    # the embedding runs in float32 like the reference: v*f for v ~ 1700 carries ~1e-4 rad of rounding
    tol = 3e-4
    emphasized, consistent = sdxl_adm_halves(pooled, width=1152, height=896, scaler=1.5)
    np.testing.assert_allclose(emphasized[0, 1280:].numpy(), _embed([1344, 1728, 0, 0, 896, 1152]), atol=tol)
    np.testing.assert_allclose(consistent[0, 1280:].numpy(), _embed([896, 1152, 0, 0, 896, 1152]), atol=tol)
    assert torch.equal(emphasized[:, :1280], pooled)
    y = fooocus_adm_y(pooled, 1152, 896, 0.8)
    assert y.shape == (1, 5632)
    # emphasized while t > 999 * (1 - end) (first 30 %), consistent afterwards
    both = y.expand(3, -1)
    picked = select_adm(both, torch.tensor([999.0, 700.0, 699.0]), 0.3)
    assert torch.equal(picked[0], y[0, :2816]) and torch.equal(picked[1], y[0, :2816])
    assert torch.equal(picked[2], y[0, 2816:])
    assert emphasized_adm_active(0.1, 0.3) and not emphasized_adm_active(0.5, 0.3)
    assert not emphasized_adm_active(0.0, 0.0)  # restricted modes: end 0 switches it off
    refiner = refiner_adm_y(rand(1, 1280), 1024, 768, 6.0)
    np.testing.assert_allclose(refiner[0, 1280:].numpy(), _embed([768, 1024, 0, 0, 6.0]), atol=tol)


def test_refiner_switch_step_split_and_joint_swap():
    assert refiner_switch_step(30, 0.8) == 24 and refiner_switch_step(30, 0.5) == 15
    sigmas = torch.linspace(10, 0, 11)
    base, ref = split_sigmas_for_refiner(sigmas, 6, "separate")
    assert torch.equal(base, sigmas[:7]) and torch.equal(ref, sigmas[6:])
    base, ref = split_sigmas_for_refiner(sigmas, 6, "vae")
    assert base[-1] == 0 and torch.allclose(ref, sigmas[6:] * 1.4)
    calls = []

    def base_model(x, s):
        calls.append("base")
        return x * 0.5

    def refiner_model(x, s):
        calls.append("refiner")
        return x * 0.5

    switch = JointRefinerSwitch(base_model, refiner_model, switch=3)
    samplers.sample_heun(switch.denoiser, rand(1, 4, 4, 4), torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0]),
                         callback=switch.callback)
    # heun: steps 0-3 evaluate twice (except the last step); the swap happens after step 3's callback
    assert calls == ["base"] * 7 + ["refiner"] * 2


def test_freeu_v2_by_hand():
    patch = make_freeu_patch(b1=1.3, b2=1.4, s1=0.9, s2=0.2, model_channels=4)
    h, skip = rand(2, 16, 6, 8, seed=12), rand(2, 16, 6, 8, seed=13)
    new_h, new_skip = patch(h.clone(), skip.clone(), 0)
    mean = h.mean(1, keepdim=True)
    lo = mean.amin(dim=(2, 3), keepdim=True)
    hi = mean.amax(dim=(2, 3), keepdim=True)
    expected_h = h.clone()
    expected_h[:, :8] *= (1.3 - 1) * (mean - lo) / (hi - lo) + 1
    torch.testing.assert_close(new_h, expected_h)
    spectrum = np.fft.fftshift(np.fft.fft2(skip.double().numpy()), axes=(-2, -1))
    spectrum[..., 3 - 1:3 + 1, 4 - 1:4 + 1] *= 0.9
    expected_skip = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real
    np.testing.assert_allclose(new_skip.numpy(), expected_skip, atol=1e-5)
    # 640-channel analogue uses (b2, s2); other widths pass through untouched
    h8, skip8 = rand(1, 8, 4, 4), rand(1, 8, 4, 4, seed=1)
    out_h, _ = patch(h8.clone(), skip8.clone(), 1)
    assert not torch.equal(out_h[:, :4], h8[:, :4]) and torch.equal(out_h[:, 4:], h8[:, 4:])
    h3 = rand(1, 3, 4, 4)
    assert patch(h3, skip8, 2)[0] is h3
    v1_h, _ = make_freeu_patch(1.3, 1.4, 0.9, 0.2, model_channels=4, version=1)(h.clone(), skip.clone(), 0)
    torch.testing.assert_close(v1_h[:, :8], h[:, :8] * 1.3)
