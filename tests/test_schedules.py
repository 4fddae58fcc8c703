"""Sigma tables, schedules and the registry's sigma rules, against diffusers' schedulers and
hand-computed values (spec fooocus_pipeline.md §2, comfyui_protocol.md §6.8)."""
import math

import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       LCMScheduler)

from models.sampling import schedules
from models.sampling.model_sampling import (ContinuousEDMModelSampling, DiscreteModelSampling,
                                            DistilledModelSampling, make_denoiser,
                                            model_sampling_for_scheduler)
from models.sampling.noise import prepare_noise
from models.sampling.registry import (SAMPLER_NAMES, SCHEDULER_NAMES, UnknownNameError, get_sampler,
                                      make_sigmas)

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def ms():
    return DiscreteModelSampling()


def _hand_table() -> np.ndarray:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    return np.sqrt((1 - abar) / abar)


def _hand_sigma_at(t) -> np.ndarray:
    """Log-linear interpolation of the float64 table at (fractional) timesteps."""
    return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(1000), np.log(_hand_table())))


def test_sigma_table_limits_and_timestep_mapping(ms):
    assert ms.sigma_min == pytest.approx(0.0291671582, abs=1e-9)  # = the AYS table's last level
    assert ms.sigma_max == pytest.approx(14.614642, abs=2e-6)
    np.testing.assert_allclose(ms.sigmas.numpy(), _hand_table(), rtol=1e-6)
    t = torch.tensor([0.0, 1.0, 17.25, 500.5, 998.9, 999.0])
    np.testing.assert_allclose(ms.sigma(t).numpy(), _hand_sigma_at(t.numpy()), rtol=2e-6)
    # sigma -> t is the nearest trained timestep in log sigma
    assert ms.timestep(ms.sigma(torch.tensor([0.0, 250.0, 999.0]))).tolist() == [0, 250, 999]
    assert ms.timestep(ms.sigma(torch.tensor([250.4, 250.6]))).tolist() == [250, 251]


def test_karras_equals_diffusers_euler_and_dpmsolver(ms):
    for steps in (4, 10, 30):
        ours = make_sigmas(ms, "karras", steps)
        euler = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
        euler.set_timesteps(steps)
        dpm = DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True, algorithm_type="dpmsolver++")
        dpm.set_timesteps(steps)
        assert len(ours) == steps + 1 and ours[-1] == 0
        # diffusers builds its table in float32; 2e-5 covers that rounding
        np.testing.assert_allclose(ours.numpy(), euler.sigmas.numpy(), rtol=2e-5)
        np.testing.assert_allclose(ours.numpy(), dpm.sigmas.numpy(), rtol=2e-5)


def test_ddim_uniform_equals_ddim_leading_timesteps(ms):
    for steps in (10, 20, 25, 50):
        sched = DDIMScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading", set_alpha_to_one=True)
        sched.set_timesteps(steps)
        ours = make_sigmas(ms, "ddim_uniform", steps)
        assert ours[-1] == 0 and len(ours) == steps + 1
        assert ms.timestep(ours[:-1]).long().tolist() == sched.timesteps.tolist()
    # 1000 not a multiple of 30: ComfyUI/Fooocus take every 33rd entry -> one extra step
    assert len(make_sigmas(ms, "ddim_uniform", 30)) == 32


def test_lcm_schedule_equals_diffusers_lcm_timesteps():
    lcm_ms = model_sampling_for_scheduler("lcm", DiscreteModelSampling())
    # sgm_uniform on the 50-entry table coincides with diffusers' LCM spacing for 7 (and 1) steps
    for steps in (1, 7):
        sched = LCMScheduler(**SD_BETAS, original_inference_steps=50)
        sched.set_timesteps(steps)
        ours = make_sigmas(lcm_ms, "lcm", steps)
        assert lcm_ms.timestep(ours[:-1]).long().tolist() == sched.timesteps.tolist()
        abar = sched.alphas_cumprod[sched.timesteps].double()
        np.testing.assert_allclose(ours[:-1].numpy(), ((1 - abar) / abar).sqrt().numpy(), rtol=2e-5)


def test_normal_simple_sgm_uniform_exponential_by_hand(ms):
    n = 9
    table = _hand_table()
    normal = make_sigmas(ms, "normal", n).numpy()
    np.testing.assert_allclose(normal[:-1], _hand_sigma_at(np.linspace(999, 0, n)), rtol=1e-5)
    sgm = make_sigmas(ms, "sgm_uniform", n).numpy()
    np.testing.assert_allclose(sgm[:-1], _hand_sigma_at(np.linspace(999, 0, n + 1)[:-1]), rtol=1e-5)
    simple = make_sigmas(ms, "simple", n).numpy()
    np.testing.assert_allclose(simple[:-1], [table[999 - math.floor(i * 1000 / n)] for i in range(n)], rtol=1e-6)
    expo = make_sigmas(ms, "exponential", n).numpy()
    np.testing.assert_allclose(expo[:-1], np.exp(np.linspace(np.log(table[-1]), np.log(table[0]), n)), rtol=1e-5)
    for sigmas in (normal, sgm, simple, expo):
        assert len(sigmas) == n + 1 and sigmas[-1] == 0 and np.all(np.diff(sigmas) < 0)


def test_turbo_ays_kl_and_edm_schedules(ms):
    turbo = make_sigmas(ms, "turbo", 4).numpy()
    np.testing.assert_allclose(turbo[:-1], _hand_table()[[999, 899, 799, 699]], rtol=1e-5)
    ays = make_sigmas(ms, "align_your_steps", 10).numpy()
    np.testing.assert_allclose(ays[:-1], schedules.AYS_NOISE_LEVELS["SDXL"][:-1], rtol=1e-6)
    assert ays[-1] == 0
    # 5 steps: log sigma linearly interpolated at 6 evenly spaced positions of the 11 levels
    ays5 = make_sigmas(ms, "align_your_steps", 5).numpy()
    logs = np.log(schedules.AYS_NOISE_LEVELS["SDXL"])
    expected = np.exp([logs[0], logs[2], logs[4], logs[6], logs[8]])
    np.testing.assert_allclose(ays5[:-1], expected, rtol=1e-5)
    sd1 = make_sigmas(ms, "align_your_steps", 10, model_type="SD1").numpy()
    np.testing.assert_allclose(sd1[1], 6.4745760956, rtol=1e-6)
    kl = schedules.kl_optimal_sigmas(4, 0.03, 14.6).numpy()
    np.testing.assert_allclose(kl[:-1], np.tan(np.linspace(np.arctan(14.6), np.arctan(0.03), 4)), rtol=1e-6)
    edm_ms = model_sampling_for_scheduler("edm_playground_v2.5", ms)
    edm = make_sigmas(edm_ms, "edm_playground_v2.5", 6).numpy()
    ramp = np.linspace(0, 1, 6)
    expected = (120 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 120 ** (1 / 7))) ** 7
    np.testing.assert_allclose(edm[:-1], expected, rtol=1e-5)
    for name in ("beta", "linear_quadratic", "kl_optimal"):
        sigmas = make_sigmas(ms, name, 8)
        assert sigmas[-1] == 0 and torch.all(sigmas[:-1] > 0) and torch.all(sigmas[1:] <= sigmas[:-1])


def test_partial_denoise_and_discarded_penultimate_sigma(ms):
    full = make_sigmas(ms, "karras", int(10 / 0.6))
    partial = make_sigmas(ms, "karras", 10, denoise=0.6)
    assert len(partial) == 11
    torch.testing.assert_close(partial, full[-11:])
    assert len(make_sigmas(ms, "karras", 10, denoise=0.0)) == 0
    longer = make_sigmas(ms, "karras", 11)
    for name in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
        dropped = make_sigmas(ms, "karras", 10, sampler_name=name)
        torch.testing.assert_close(dropped, torch.cat([longer[:-2], longer[-1:]]))
    torch.testing.assert_close(make_sigmas(ms, "karras", 10, sampler_name="euler"), make_sigmas(ms, "karras", 10))


def test_unknown_names_list_the_valid_ones(ms):
    with pytest.raises(UnknownNameError) as err:
        get_sampler("eulerr")
    assert "dpmpp_2m_sde_gpu" in str(err.value) and "uni_pc_bh2" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        make_sigmas(ms, "karas", 10)
    assert "align_your_steps" in str(err.value) and "edm_playground_v2.5" in str(err.value)
    assert len(SAMPLER_NAMES) == 24 and SAMPLER_NAMES[0] == "euler" and SAMPLER_NAMES[-1] == "uni_pc_bh2"
    assert len(SCHEDULER_NAMES) == 11 and SCHEDULER_NAMES[1] == "karras"


def test_prediction_conversions_by_hand():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.5, 3.0])
    s = sigma.reshape(-1, 1, 1, 1)
    eps_ms = DiscreteModelSampling("eps")
    torch.testing.assert_close(eps_ms.calculate_denoised(sigma, out, x), x - s * out)
    torch.testing.assert_close(eps_ms.calculate_input(sigma, x), x / (s ** 2 + 1).sqrt())
    v_ms = DiscreteModelSampling("v")
    torch.testing.assert_close(v_ms.calculate_denoised(sigma, out, x), x / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt())
    edm = ContinuousEDMModelSampling(0.002, 120.0, 0.5, "edm")
    torch.testing.assert_close(edm.calculate_denoised(sigma, out, x),
                               x * 0.25 / (s ** 2 + 0.25) + out * s * 0.5 / (s ** 2 + 0.25).sqrt())
    torch.testing.assert_close(edm.timestep(sigma), 0.25 * sigma.log())
    lcm = DistilledModelSampling("lcm")
    sig = lcm.sigma(torch.tensor([259.0, 999.0]))
    t = torch.tensor([259.0, 999.0]).reshape(-1, 1, 1, 1) * 10
    x0 = x - sig.reshape(-1, 1, 1, 1) * out
    expected = t / (t ** 2 + 0.25).sqrt() * x0 + 0.25 / (t ** 2 + 0.25) * x
    torch.testing.assert_close(lcm.calculate_denoised(sig, out, x), expected)
    # make_denoiser feeds c_in * x and the model's timesteps
    seen = {}

    def unet(x_in, timesteps):
        seen["t"] = timesteps
        return torch.zeros_like(x_in)

    assert torch.equal(make_denoiser(unet, eps_ms)(x, sigma), x)
    assert seen["t"].tolist() == eps_ms.timestep(sigma).tolist()


def test_noise_scaling_and_initial_noise(ms):
    noise = prepare_noise((2, 4, 8, 8), seed=42)
    torch.manual_seed(0)  # the global RNG must not matter
    expected = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(42))
    assert torch.equal(noise, expected)
    # batch_index i gives the i-th single-image draw of the seed's sequence
    gen = torch.Generator().manual_seed(42)
    singles = [torch.randn((1, 4, 8, 8), generator=gen) for _ in range(3)]
    picked = prepare_noise((2, 4, 8, 8), seed=42, batch_index=[2, 0])
    assert torch.equal(picked, torch.cat([singles[2], singles[0]]))
    latent = torch.ones(2, 4, 8, 8)
    sigmas = make_sigmas(ms, "karras", 5)
    assert ms.is_max_denoise(sigmas)
    torch.testing.assert_close(ms.noise_scaling(sigmas[0], noise, latent, max_denoise=True),
                               latent + noise * math.sqrt(1 + float(sigmas[0]) ** 2))
    torch.testing.assert_close(ms.noise_scaling(0.5, noise, latent), latent + noise * 0.5)
    edm = ContinuousEDMModelSampling()
    torch.testing.assert_close(edm.noise_scaling(120.0, noise, latent, max_denoise=True), latent + noise * 120.0)


def test_every_sampler_needs_explicit_randomness():
    x = torch.zeros(1, 1, 2, 2)
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="generator"):
        get_sampler("euler_ancestral").function(lambda x, s: x * 0, x, sigmas)


def test_zero_terminal_snr_rescale_matches_diffusers():
    """v-prediction checkpoints marked `ztsnr`: the rescaled alpha products equal diffusers'
    rescale_zero_terminal_snr; the last one is kept just above 0 so sigma_max stays finite."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as oracle
    from models.sampling.model_sampling import DiscreteModelSampling, ZERO_SNR_LAST_ALPHA_CUMPROD

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1.0 - oracle(betas), dim=0)
    sampling = DiscreteModelSampling("v", zero_terminal_snr=True)
    torch.testing.assert_close(sampling.alphas_cumprod[:-1].double(), expected[:-1], rtol=1e-5, atol=1e-9)
    assert float(expected[-1]) == 0.0
    assert float(sampling.alphas_cumprod[-1]) == pytest.approx(ZERO_SNR_LAST_ALPHA_CUMPROD)
    assert sampling.sigma_max == pytest.approx(((1 - ZERO_SNR_LAST_ALPHA_CUMPROD) / ZERO_SNR_LAST_ALPHA_CUMPROD) ** 0.5,
                                               rel=1e-4)
    plain = DiscreteModelSampling("v")
    assert plain.sigma_max == pytest.approx(14.6146, rel=1e-4)
