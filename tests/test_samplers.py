"""Samplers against diffusers' schedulers step by step (same model, sigmas and noise), the exact
Gaussian denoiser's known ODE solution, and a smoke run of every sampler x scheduler.

Tolerance: both sides run float32 tensors; we compute step coefficients in float64 Python floats,
diffusers in float32 tensors, so each step differs by a few float32 ulps of values up to ~15
(|x| at sigma_max); over <= 10 steps that stays below 1e-5 relative, and we allow 5e-5.
"""
import math

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LCMScheduler, LMSDiscreteScheduler,
                       UniPCMultistepScheduler)

from models.sampling import samplers, samplers_dpmpp, samplers_stochastic, uni_pc
from models.sampling.model_sampling import DiscreteModelSampling, make_denoiser, model_sampling_for_scheduler
from models.sampling.registry import (EXTRA_SAMPLER_NAMES, EXTRA_SCHEDULER_NAMES, SAMPLER_NAMES,
                                      SCHEDULER_NAMES, get_sampler, make_sigmas)
from models.sampling.schedules import exponential_sigmas

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
MU, STD = 0.3, 0.5  # toy data distribution N(MU, STD^2) per element
SHAPE = (1, 4, 8, 8)
RTOL = ATOL = 5e-5


@pytest.fixture(scope="module")
def ms():
    return DiscreteModelSampling()


def gaussian_eps(ms):
    """Exact noise prediction for the toy data, at the noise level of UNet timestep t."""
    def eps(x_in, t):
        sigma = ms.sigma(t.float()).reshape(-1, 1, 1, 1)
        x = x_in * (1 + sigma ** 2).sqrt()
        denoised = MU + STD ** 2 / (STD ** 2 + sigma ** 2) * (x - MU)
        return (x - denoised) / sigma
    return eps


class ConvEps(torch.nn.Module):
    """A small random conv net eps(x_in, t) with a timestep-dependent bias."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    @torch.no_grad()
    def forward(self, x_in, t):
        h = torch.tanh(self.conv1(x_in) + torch.cos(t.float() / 300.0).reshape(-1, 1, 1, 1))
        return self.conv2(h) + 0.5 * x_in


def k_denoiser(eps, sigmas, timesteps):
    """Our side: x0 = x - sigma * eps(x / sqrt(1 + sigma^2), t), t = the oracle's timestep for sigma."""
    sigmas, timesteps = sigmas.double(), torch.as_tensor(timesteps).double()

    def denoiser(x, sigma):
        s = float(sigma[0])
        t = timesteps[int(torch.argmin((sigmas[:len(timesteps)] - s).abs()))]
        return x - s * eps(x / math.sqrt(1 + s * s), t.float().expand(x.shape[0]))
    return denoiser


def run_diffusers(sched, eps, sample, **step_kwargs_per_step):
    """Drive a diffusers scheduler; returns the sample after every step (its own space)."""
    out = [sample]
    for i, t in enumerate(sched.timesteps):
        model_out = eps(sched.scale_model_input(sample, t), t.expand(sample.shape[0]))
        kwargs = {key: value[i] if isinstance(value, list) else value for key, value in step_kwargs_per_step.items()}
        sample = sched.step(model_out, t, sample, **kwargs).prev_sample
        out.append(sample)
    return out


def trajectory(sample_fn, model, x, sigmas, **kwargs):
    xs = []
    final = sample_fn(model, x, sigmas, callback=lambda info: xs.append(info["x"]), **kwargs)
    return xs + [final]


def noise(seed=1):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def assert_trajectories(ours, theirs, vp_sigmas=None):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if vp_sigmas is not None:  # VP-frame sample -> k-diffusion frame
            b = b * math.sqrt(1 + float(vp_sigmas[i]) ** 2)
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=f"step {i}")


MODELS = {"gaussian": gaussian_eps, "conv": lambda ms: ConvEps()}


@pytest.mark.parametrize("model_kind", MODELS)
def test_euler_matches_diffusers_euler(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(8)
    x = noise() * math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    theirs = run_diffusers(sched, eps, x.clone())
    ours = trajectory(samplers.sample_euler, k_denoiser(eps, sched.sigmas, sched.timesteps), x, sched.sigmas)
    assert_trajectories(ours, theirs)


@pytest.mark.parametrize("model_kind", MODELS)
def test_euler_ancestral_matches_diffusers_with_same_noise(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = EulerAncestralDiscreteScheduler(**SD_BETAS, timestep_spacing="linspace")
    sched.set_timesteps(8)
    x = noise() * math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    theirs = run_diffusers(sched, eps, x.clone(), generator=torch.Generator().manual_seed(7))
    ours = trajectory(samplers.sample_euler_ancestral, k_denoiser(eps, sched.sigmas, sched.timesteps), x,
                      sched.sigmas, generator=torch.Generator().manual_seed(7))
    assert_trajectories(ours, theirs)


@pytest.mark.parametrize("model_kind", MODELS)
def test_heun_matches_diffusers_heun(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = HeunDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(6)
    sigmas = torch.unique_consecutive(sched.sigmas)  # diffusers repeats each inner sigma
    x = noise() * math.sqrt(1 + float(sigmas[0]) ** 2)
    theirs = run_diffusers(sched, eps, x.clone())
    model = k_denoiser(eps, sched.sigmas, sched.timesteps)
    ours = samplers.sample_heun(model, x, sigmas)
    torch.testing.assert_close(ours, theirs[-1], rtol=RTOL, atol=ATOL)
    # the state after each full Heun step sits at every second diffusers sample
    steps = trajectory(samplers.sample_heun, model, x, sigmas)
    assert_trajectories(steps[:-1], theirs[0:-1:2])


@pytest.mark.parametrize("model_kind", MODELS)
def test_lms_matches_diffusers_lms(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = LMSDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(9)
    x = noise() * math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    theirs = run_diffusers(sched, eps, x.clone())
    ours = trajectory(samplers.sample_lms, k_denoiser(eps, sched.sigmas, sched.timesteps), x, sched.sigmas)
    assert_trajectories(ours, theirs)


@pytest.mark.parametrize("model_kind", MODELS)
def test_dpmpp_2m_matches_diffusers_dpmsolver(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True, algorithm_type="dpmsolver++",
                                        solver_order=2)
    sched.set_timesteps(8)
    vp = noise()
    theirs = run_diffusers(sched, eps, vp.clone())
    x = vp * math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    ours = trajectory(samplers_dpmpp.sample_dpmpp_2m, k_denoiser(eps, sched.sigmas, sched.timesteps), x,
                      sched.sigmas)
    assert_trajectories(ours, theirs, vp_sigmas=sched.sigmas)


@pytest.mark.parametrize("model_kind", MODELS)
def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True, algorithm_type="sde-dpmsolver++",
                                        solver_order=2)
    sched.set_timesteps(8)
    noises = [noise(100 + i) for i in range(8)]
    vp = noise()
    theirs = run_diffusers(sched, eps, vp.clone(), variance_noise=noises)
    x = vp * math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    queue = iter(noises)
    ours = trajectory(samplers_dpmpp.sample_dpmpp_2m_sde, k_denoiser(eps, sched.sigmas, sched.timesteps), x,
                      sched.sigmas, noise_sampler=lambda s, s_next: next(queue))
    assert_trajectories(ours, theirs, vp_sigmas=sched.sigmas)


@pytest.mark.parametrize("model_kind", MODELS)
def test_ddim_with_ddim_uniform_matches_diffusers_ddim(ms, model_kind):
    eps = MODELS[model_kind](ms)
    sched = DDIMScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading", set_alpha_to_one=True,
                          clip_sample=False)
    sched.set_timesteps(10)
    sigmas = make_sigmas(ms, "ddim_uniform", 10)
    vp = noise()
    theirs = run_diffusers(sched, eps, vp.clone())
    x = vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = trajectory(get_sampler("ddim").function, k_denoiser(eps, sigmas, sched.timesteps), x, sigmas)
    assert_trajectories(ours, theirs, vp_sigmas=sigmas)


@pytest.mark.parametrize("model_kind", MODELS)
def test_lcm_matches_diffusers_lcm_with_same_noise(ms, model_kind):
    eps = MODELS[model_kind](ms)
    lcm_ms = model_sampling_for_scheduler("lcm", ms)
    sched = LCMScheduler(**SD_BETAS, original_inference_steps=50)
    sched.set_timesteps(7)
    sigmas = make_sigmas(lcm_ms, "lcm", 7)
    vp = noise()
    theirs = run_diffusers(sched, eps, vp.clone(), generator=torch.Generator().manual_seed(3))
    x = vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    # the product denoiser wrapper: c_in scaling, distilled timesteps, LCM boundary conditions
    model = make_denoiser(lambda x_in, t: eps(x_in, t), lcm_ms)
    ours = trajectory(samplers_stochastic.sample_lcm, model, x, sigmas, generator=torch.Generator().manual_seed(3))
    assert_trajectories(ours, theirs, vp_sigmas=sigmas)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("model_kind", MODELS)
def test_uni_pc_matches_diffusers_unipc(ms, model_kind, variant):
    eps = MODELS[model_kind](ms)
    sched = UniPCMultistepScheduler(**SD_BETAS, use_karras_sigmas=True, solver_order=3, solver_type=variant,
                                    predict_x0=True, lower_order_final=True)
    sched.set_timesteps(8)
    sched.sigmas[-1] = 0.001  # ComfyUI's uni_pc ends at sigma 0.001 instead of 0
    sigmas = sched.sigmas.clone()
    sigmas[-1] = 0.0
    vp = noise()
    theirs = run_diffusers(sched, eps, vp.clone())
    x = vp * math.sqrt(1 + float(sigmas[0]) ** 2)
    ours = uni_pc.sample_uni_pc(k_denoiser(eps, sigmas, sched.timesteps), x, sigmas, variant=variant)
    torch.testing.assert_close(ours, theirs[-1] * math.sqrt(1 + 0.001 ** 2), rtol=RTOL, atol=ATOL)


def _gaussian_denoiser(x, sigma):
    s = sigma.double().reshape(-1, 1, 1, 1)
    return MU + STD ** 2 / (STD ** 2 + s ** 2) * (x - MU)


@pytest.mark.parametrize("name,order", [
    ("euler", 1), ("ddim", 1), ("heun", 2), ("dpm_2", 2), ("lms", 2), ("dpm_fast", 2), ("dpmpp_2m", 2),
    ("ipndm", 2), ("uni_pc", 1.5), ("uni_pc_bh2", 1.5),
])
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name, order):
    """For N(MU, STD^2) data the probability-flow ODE is solved exactly by
    x(sigma) = MU + sqrt((STD^2 + sigma^2) / (STD^2 + sigma_0^2)) (x(sigma_0) - MU)."""
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (10, 20, 40):
        sigmas = exponential_sigmas(steps, 0.05, 14.6)[:-1].double()  # stop at 0.05: no special last step
        x = x0 * math.sqrt(1 + float(sigmas[0]) ** 2)
        out = get_sampler(name).sample(_gaussian_denoiser, x, sigmas, seed=0)
        exact = MU + math.sqrt((STD ** 2 + float(sigmas[-1]) ** 2) / (STD ** 2 + float(sigmas[0]) ** 2)) * (x - MU)
        errors.append(float((out - exact).abs().max()))
    # the error falls at least like the method's order (2^order per halving, with slack)
    assert errors[2] < errors[0] / (2 ** (2 * order) * 0.7)
    assert errors[2] < 0.06


def _toy_denoiser(x, sigma):
    s = sigma.reshape(-1, 1, 1, 1)
    return MU + STD ** 2 / (STD ** 2 + s ** 2) * (x - MU)


@pytest.mark.parametrize("name", SAMPLER_NAMES + EXTRA_SAMPLER_NAMES)
def test_every_sampler_with_every_scheduler_gives_finite_output(ms, name):
    sampler = get_sampler(name)
    for scheduler in SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES:
        model_sampling = model_sampling_for_scheduler(scheduler, ms)
        sigmas = make_sigmas(model_sampling, scheduler, 4, sampler_name=name)
        x = noise() * sigmas[0]
        if name == "tcd" and scheduler == "edm_playground_v2.5":
            with pytest.raises(ValueError, match="discrete"):
                sampler.sample(_toy_denoiser, x, sigmas, seed=5, model_sampling=model_sampling)
            continue
        calls = []
        out = sampler.sample(_toy_denoiser, x, sigmas, seed=5, model_sampling=model_sampling,
                             callback=lambda info: calls.append(info["i"]))
        assert out.shape == x.shape and torch.isfinite(out).all(), (name, scheduler)
        assert calls and set(calls[0:1]) == {0}, (name, scheduler)
        again = sampler.sample(_toy_denoiser, x, sigmas, seed=5, model_sampling=model_sampling)
        assert torch.equal(out, again), f"{name}/{scheduler} is not reproducible for a fixed seed"


def test_sde_samplers_use_the_seeded_brownian_tree(ms):
    sigmas = make_sigmas(ms, "karras", 6)
    x = noise() * math.sqrt(1 + float(sigmas[0]) ** 2)
    sampler = get_sampler("dpmpp_2m_sde_gpu")
    a = sampler.sample(_toy_denoiser, x, sigmas, seed=11)
    b = sampler.sample(_toy_denoiser, x, sigmas, seed=12)
    assert not torch.allclose(a, b)
    # the CPU and "_gpu" trees coincide on a CPU-only machine
    torch.testing.assert_close(a, get_sampler("dpmpp_2m_sde").sample(_toy_denoiser, x, sigmas, seed=11))
