"""ComfyUI's custom-sampling nodes: schedulers against diffusers or their published formulas, the
sigma tools, sampler options, the guiders' rules on a toy denoiser, and SamplerCustomAdvanced
(CFGGuider + euler + normal + RandomNoise) giving KSampler's image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image
from scipy.stats import beta as beta_distribution

from graph import validate_prompt
from models.detection import CheckpointInfo
from models.unet import UNetConfig
from models.sampling.guiders import DualCFGDenoiser, PerpNegDenoiser, make_rescale_cfg
from nodes.custom_sampling import (AlignYourStepsScheduler, BasicScheduler, BetaSamplingScheduler,
                                   ExponentialScheduler, FlipSigmas, KarrasScheduler, KSamplerSelect,
                                   PolyexponentialScheduler, SamplerDPMPP_2M_SDE, SamplerDPMPP_SDE,
                                   SamplerEulerAncestral, SamplerLMS, SDTurboScheduler, SplitSigmas,
                                   SplitSigmasDenoise)
from nodes.model_patches import ModelSamplingDiscrete
from nodes.sockets import ModelSocket

SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642


def _table() -> np.ndarray:
    """SD's 1000 trained sigmas, in float64 from the scaled-linear betas."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    return np.sqrt((1 - abar) / abar)


@pytest.fixture(scope="module")
def model():
    """A MODEL socket whose schedule is SD's (the schedulers read only its model sampling)."""
    info = CheckpointInfo(family="sdxl", unet=UNetConfig(), latent_scale_factor=0.13025, text_encoders=())
    return ModelSocket(network=None, info=info, name="schedule-only")


def _close(ours: torch.Tensor, expected, rtol=1e-6):
    expected = np.asarray(expected, dtype=np.float64)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(ours.numpy().astype(np.float64), expected, rtol=rtol, atol=1e-7)


def _diffusers_sigmas(convert: str, steps: int) -> np.ndarray:
    scheduler = EulerDiscreteScheduler()
    ends = torch.tensor([SIGMA_MAX, SIGMA_MIN], dtype=torch.float64)
    return np.append(np.asarray(getattr(scheduler, convert)(in_sigmas=ends, num_inference_steps=steps)), 0.0)


@pytest.mark.parametrize("steps", [1, 4, 13])
def test_karras_and_exponential_equal_diffusers(steps):
    (karras,) = KarrasScheduler().get_sigmas(steps, SIGMA_MAX, SIGMA_MIN, 7.0)
    _close(karras, _diffusers_sigmas("_convert_to_karras", steps))
    (exponential,) = ExponentialScheduler().get_sigmas(steps, SIGMA_MAX, SIGMA_MIN)
    _close(exponential, _diffusers_sigmas("_convert_to_exponential", steps))
    # polyexponential with rho 1 is the exponential schedule
    (poly,) = PolyexponentialScheduler().get_sigmas(steps, SIGMA_MAX, SIGMA_MIN, 1.0)
    _close(poly, _diffusers_sigmas("_convert_to_exponential", steps))


def test_polyexponential_formula():
    (sigmas,) = PolyexponentialScheduler().get_sigmas(6, 10.0, 0.1, 2.5)
    ramp = np.linspace(1, 0, 6) ** 2.5  # k-diffusion's get_sigmas_polyexponential
    _close(sigmas, np.append(np.exp(ramp * (math.log(10.0) - math.log(0.1)) + math.log(0.1)), 0.0))


def test_basic_scheduler_normal_karras_and_denoise(model):
    table = _table()
    (normal,) = BasicScheduler().get_sigmas(model, "normal", 5, 1.0)
    t = np.linspace(999, 0, 5)  # ComfyUI's normal: timesteps evenly from t(sigma_max) to t(sigma_min)
    _close(normal, np.append(np.exp(np.interp(t, np.arange(1000), np.log(table))), 0.0))
    (karras,) = BasicScheduler().get_sigmas(model, "karras", 4, 1.0)
    ends = torch.tensor([table[-1], table[0]], dtype=torch.float64)
    expected = np.append(np.asarray(EulerDiscreteScheduler()._convert_to_karras(ends, 4)), 0.0)
    _close(karras, expected)
    # denoise 0.5: int(4 / 0.5) = 8 steps scheduled, the last 5 sigmas kept
    (full,) = BasicScheduler().get_sigmas(model, "karras", 8, 1.0)
    (partial,) = BasicScheduler().get_sigmas(model, "karras", 4, 0.5)
    assert torch.equal(partial, full[-5:])
    assert BasicScheduler().get_sigmas(model, "normal", 4, 0.0)[0].numel() == 0


def test_sd_turbo_beta_and_align_your_steps_formulas(model):
    table = _table()
    (turbo,) = SDTurboScheduler().get_sigmas(model, 3, 1.0)
    _close(turbo, [table[999], table[899], table[799], 0.0])
    (half,) = SDTurboScheduler().get_sigmas(model, 4, 0.5)  # starts at the 6th timestep, 499
    _close(half, [table[499], table[399], table[299], table[199], 0.0])

    (beta,) = BetaSamplingScheduler().get_sigmas(model, 6, 0.6, 0.6)
    picked = np.rint(beta_distribution.ppf(1 - np.linspace(0, 1, 6, endpoint=False), 0.6, 0.6) * 999)
    _close(beta, np.append(table[picked.astype(int)], 0.0))

    levels = np.array([14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
                       0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582])
    (ays10,) = AlignYourStepsScheduler().get_sigmas("SDXL", 10, 1.0)
    _close(ays10, np.append(levels[:-1], 0.0))
    # other step counts: log-linear interpolation of the table (NVIDIA's loglinear_interp)
    resampled = np.exp(np.interp(np.linspace(0, 1, 7), np.linspace(0, 1, 11), np.log(levels[::-1])))[::-1].copy()
    resampled[-1] = 0.0
    (ays6,) = AlignYourStepsScheduler().get_sigmas("SDXL", 6, 1.0)
    _close(ays6, resampled)
    (ays_half,) = AlignYourStepsScheduler().get_sigmas("SDXL", 6, 0.5)  # the last round(6 * 0.5) steps
    _close(ays_half, resampled[-4:])
    assert AlignYourStepsScheduler().get_sigmas("SD1", 10, 1.0)[0][1] == pytest.approx(6.4745760956)


def test_sigma_tools():
    sigmas = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.0])
    high, low = SplitSigmas().get_sigmas(sigmas, 2)
    assert high.tolist() == [5, 3, 2] and low.tolist() == [2, 1, 0]
    high, low = SplitSigmasDenoise().get_sigmas(sigmas, 0.5)  # round(4 * 0.5) = 2 low steps
    assert high.tolist() == [5, 3, 2] and low.tolist() == [2, 1, 0]  # they share sigma 2
    high, low = SplitSigmasDenoise().get_sigmas(sigmas, 0.0)  # ComfyUI's slices at denoise 0
    assert high.numel() == 0 and low.tolist() == [0]
    (flipped,) = FlipSigmas().get_sigmas(sigmas)
    assert flipped.tolist() == pytest.approx([0.0001, 1, 2, 3, 5]) and sigmas[-1] == 0  # input kept
    assert FlipSigmas().get_sigmas(torch.zeros(0))[0].numel() == 0


def test_sampler_nodes_carry_comfyui_options():
    assert KSamplerSelect().get_sampler("dpmpp_2m")[0].name == "dpmpp_2m"
    (ancestral,) = SamplerEulerAncestral().get_sampler(0.5, 0.9)
    assert ancestral.name == "euler_ancestral" and ancestral.options == {"eta": 0.5, "s_noise": 0.9}
    assert SamplerLMS().get_sampler(3)[0].options == {"order": 3}
    (sde,) = SamplerDPMPP_2M_SDE().get_sampler("heun", 1.0, 1.0, "cpu")
    assert sde.name == "dpmpp_2m_sde" and sde.options["solver_type"] == "heun"
    (gpu,) = SamplerDPMPP_SDE().get_sampler(1.0, 1.0, 0.3, "gpu")
    assert gpu.name == "dpmpp_sde_gpu" and gpu.brownian_on_device and gpu.options["r"] == 0.3
    # the options reach the sampling function: eta 0 makes the ancestral sampler plain euler
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    toy = lambda x, sigma: x * 0.5  # noqa: E731 (x0 = x / 2)
    (no_eta,) = SamplerEulerAncestral().get_sampler(0.0, 1.0)
    euler = KSamplerSelect().get_sampler("euler")[0]
    torch.testing.assert_close(no_eta.sample(toy, x, sigmas, seed=1), euler.sample(toy, x, sigmas, seed=1))


def _toy():
    """A denoiser x0 = x * a + b and three prompts' inputs (a, b) that differ."""
    def denoiser(x, sigma, a, b):
        return x * a + b

    sides = [{"a": torch.full((1, 1, 1, 1), a), "b": torch.full((1, 1, 1, 1), b)}
             for a, b in ((0.5, 0.1), (0.3, -0.2), (0.1, 0.05))]
    return denoiser, sides


def test_dual_cfg_and_perp_neg_rules():
    denoiser, (pos, mid, neg) = _toy()
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([2.0, 2.0])
    p, m, n = (denoiser(x, sigma, **side) for side in (pos, mid, neg))
    regular = DualCFGDenoiser(denoiser, pos, mid, neg, 3.0, 5.0)(x, sigma)
    torch.testing.assert_close(regular, n + 5.0 * (m - n) + 3.0 * (p - m))
    nested = DualCFGDenoiser(denoiser, pos, mid, neg, 3.0, 5.0, nested=True)(x, sigma)
    torch.testing.assert_close(nested, n + 5.0 * (m + 3.0 * (p - m) - n))
    torch.testing.assert_close(DualCFGDenoiser(denoiser, pos, mid, neg, 1.0, 1.0)(x, sigma), p)
    torch.testing.assert_close(DualCFGDenoiser(denoiser, pos, mid, neg, 2.0, 1.0)(x, sigma), m + 2.0 * (p - m))

    perp = PerpNegDenoiser(denoiser, pos, mid, neg, 7.0, 0.8)(x, sigma)
    a, b = p - n, m - n  # neg is the empty prompt here, mid the negative
    b_perp = b - (b * a).sum() / (a * a).sum() * a  # the negative's part orthogonal to the positive
    torch.testing.assert_close(perp, n + 7.0 * (a - 0.8 * b_perp))
    torch.testing.assert_close(PerpNegDenoiser(denoiser, pos, mid, neg, 7.0, 0.0)(x, sigma), n + 7.0 * a)
    torch.testing.assert_close(PerpNegDenoiser(denoiser, pos, mid, neg, 1.0, 0.0)(x, sigma), p)


def test_rescale_cfg_by_hand():
    g = torch.Generator().manual_seed(2)
    x, cond, uncond = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    sigma = torch.tensor([1.5, 0.7])
    out = make_rescale_cfg(0.7)(x, sigma, cond, uncond, 6.0)
    s = sigma.view(-1, 1, 1, 1)
    # Lin et al. 2023 eq. 15-16 on v-predictions v = sqrt(1 + s^2) (x / (1 + s^2) - x0) / s
    v_c = ((x / (1 + s * s)) - cond) * (1 + s * s).sqrt() / s
    v_u = ((x / (1 + s * s)) - uncond) * (1 + s * s).sqrt() / s
    v_cfg = v_u + 6.0 * (v_c - v_u)
    v_res = v_cfg * v_c.std(dim=(1, 2, 3), keepdim=True) / v_cfg.std(dim=(1, 2, 3), keepdim=True)
    v_final = 0.7 * v_res + 0.3 * v_cfg
    torch.testing.assert_close(out, x / (1 + s * s) - v_final * s / (1 + s * s).sqrt())
    # multiplier 0 is plain CFG
    torch.testing.assert_close(make_rescale_cfg(0.0)(x, sigma, cond, uncond, 6.0), uncond + 6.0 * (cond - uncond),
                               rtol=1e-5, atol=1e-5)


def test_model_sampling_discrete_x0_v_and_zsnr(model):
    (x0,) = ModelSamplingDiscrete().patch(model, "x0", False)
    output, x = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    assert torch.equal(x0.model_sampling().calculate_denoised(torch.tensor([3.0]), output, x), output)
    (v,) = ModelSamplingDiscrete().patch(model, "v_prediction", True)
    assert v.model_sampling().prediction == "v" and v.model_sampling().sigma_max == pytest.approx(4500, rel=0.01)
    (lcm,) = ModelSamplingDiscrete().patch(model, "lcm", False)
    assert len(lcm.model_sampling().sigmas) == 50 and model.sampling_override is None  # the input is kept


def _graph(custom: bool, seed: int = 11) -> dict:
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "fog", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "custom"}},
    }
    if custom:
        prompt.update({
            "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                              "negative": ["neg", 0], "cfg": 4.5}},
            "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                                   "steps": 2, "denoise": 1.0}},
            "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
            "sample": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
                "latent_image": ["latent", 0]}},
        })
    else:
        prompt["sample"] = {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": 2, "cfg": 4.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    return prompt


def _run(app, prompt):
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(prompt, "p", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error and outcome.error["exception_message"]
    image = outcome.outputs["save"]["images"][0]
    return np.asarray(Image.open(app.config.output_dir / image["filename"])).astype(int)


def test_sampler_custom_advanced_gives_the_ksampler_image(demo_app_factory):
    app = demo_app_factory()
    ksampler = _run(app, _graph(custom=False))
    custom = _run(app, _graph(custom=True))
    np.testing.assert_array_equal(custom, ksampler)
    other_seed = _run(app, _graph(custom=True, seed=12))
    assert np.abs(other_seed - ksampler).max() > 0  # the seed reaches the noise
