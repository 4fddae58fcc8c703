"""Sampler and scheduler names (Fooocus order) and the two calls the node layer makes:
`make_sigmas(model_sampling, scheduler, steps, denoise)` and `get_sampler(name).sample(...)`.

Names are plain tuples; the mapping is built inside functions (no import-time registry object).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from . import dpm_solver, samplers, samplers_dpmpp, samplers_stochastic, schedules, uni_pc
from .model_sampling import ModelSampling
from .noise import BrownianTreeNoiseSampler, GaussianNoiseSampler, brownian_range

# Fooocus flags.SAMPLER_NAMES, in its order (the 24 names its API accepts).
SAMPLER_NAMES = (
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "tcd", "restart", "ddim",
    "uni_pc", "uni_pc_bh2",
)
# Further ComfyUI names we also run (accepted by get_sampler, listed after Fooocus's).
EXTRA_SAMPLER_NAMES = ("dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "ipndm")

# Fooocus flags.SCHEDULER_NAMES, in its order.
SCHEDULER_NAMES = (
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "lcm", "turbo",
    "align_your_steps", "tcd", "edm_playground_v2.5",
)
EXTRA_SCHEDULER_NAMES = ("beta", "linear_quadratic", "kl_optimal")

# Samplers that add a step and drop the penultimate sigma (their last step would otherwise waste
# a second-order evaluation on a tiny interval).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


class UnknownNameError(ValueError):
    """An unknown sampler or scheduler name; the message lists the valid ones."""


@dataclass(frozen=True)
class Sampler:
    """A named sampler plus what it needs from the caller.

    noise: "none" (deterministic), "gaussian" (fresh draws from a generator seeded with the job
    seed on x's device) or "brownian" (Brownian tree over the schedule, seeded with the job seed;
    on x's device when `brownian_on_device`, else on the CPU).
    """
    name: str
    function: Callable
    noise: str = "none"
    brownian_on_device: bool = False
    needs_model_sampling: bool = False
    options: dict = field(default_factory=dict)

    @property
    def discards_penultimate_sigma(self) -> bool:
        return self.name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS

    def sample(self, model, x: torch.Tensor, sigmas: torch.Tensor, *, seed: int, model_sampling: ModelSampling | None = None,
               extra_args: dict | None = None, callback=None, noise_sampler=None,
               brownian_sigma_range: tuple[float, float] | None = None) -> torch.Tensor:
        """Run the sampler from x (already noised to sigmas[0]); returns the final latent.

        seed seeds the sampler's own randomness (not the initial noise). noise_sampler overrides it
        (e.g. a Brownian tree shared with a refiner pass). brownian_sigma_range: the tree's interval
        when it must cover more than `sigmas` (Fooocus: the full schedule).
        """
        if len(sigmas) < 2:
            return x
        kwargs = dict(self.options)
        if self.needs_model_sampling:
            if model_sampling is None:
                raise ValueError(f"sampler {self.name!r} needs model_sampling=")
            kwargs["model_sampling"] = model_sampling
        if noise_sampler is None and self.noise == "gaussian":
            noise_sampler = GaussianNoiseSampler.from_seed(x, seed)
        elif noise_sampler is None and self.noise == "brownian":
            low, high = brownian_sigma_range or brownian_range(sigmas)
            noise_sampler = BrownianTreeNoiseSampler(x, low, high, seed, on_device=self.brownian_on_device)
        if noise_sampler is not None:
            kwargs["noise_sampler"] = noise_sampler
        return self.function(model, x, sigmas, extra_args=extra_args, callback=callback, **kwargs)


def _sampler_table() -> dict[str, Sampler]:
    s, dp, st = samplers, samplers_dpmpp, samplers_stochastic
    return {sampler.name: sampler for sampler in (
        Sampler("euler", s.sample_euler),
        Sampler("euler_ancestral", s.sample_euler_ancestral, "gaussian"),
        Sampler("heun", s.sample_heun),
        Sampler("heunpp2", s.sample_heunpp2),
        Sampler("dpm_2", s.sample_dpm_2),
        Sampler("dpm_2_ancestral", s.sample_dpm_2_ancestral, "gaussian"),
        Sampler("lms", s.sample_lms),
        Sampler("dpm_fast", dpm_solver.sample_dpm_fast),
        Sampler("dpm_adaptive", dpm_solver.sample_dpm_adaptive),
        Sampler("dpmpp_2s_ancestral", dp.sample_dpmpp_2s_ancestral, "gaussian"),
        Sampler("dpmpp_sde", dp.sample_dpmpp_sde, "brownian"),
        Sampler("dpmpp_sde_gpu", dp.sample_dpmpp_sde, "brownian", brownian_on_device=True),
        Sampler("dpmpp_2m", dp.sample_dpmpp_2m),
        Sampler("dpmpp_2m_sde", dp.sample_dpmpp_2m_sde, "brownian"),
        Sampler("dpmpp_2m_sde_gpu", dp.sample_dpmpp_2m_sde, "brownian", brownian_on_device=True),
        Sampler("dpmpp_2m_sde_heun", dp.sample_dpmpp_2m_sde, "brownian", options={"solver_type": "heun"}),
        Sampler("dpmpp_2m_sde_heun_gpu", dp.sample_dpmpp_2m_sde, "brownian", brownian_on_device=True,
                options={"solver_type": "heun"}),
        Sampler("dpmpp_3m_sde", dp.sample_dpmpp_3m_sde, "brownian"),
        Sampler("dpmpp_3m_sde_gpu", dp.sample_dpmpp_3m_sde, "brownian", brownian_on_device=True),
        Sampler("ddpm", st.sample_ddpm, "gaussian"),
        Sampler("lcm", st.sample_lcm, "gaussian"),
        Sampler("tcd", st.sample_tcd, "gaussian", needs_model_sampling=True, options={"eta": 0.3}),
        Sampler("restart", st.sample_restart, "gaussian"),
        Sampler("ddim", s.sample_ddim),
        Sampler("uni_pc", uni_pc.sample_uni_pc),
        Sampler("uni_pc_bh2", uni_pc.sample_uni_pc_bh2),
        Sampler("ipndm", s.sample_ipndm),
    )}


def get_sampler(name: str) -> Sampler:
    """The sampler called `name` (Fooocus or extra ComfyUI name); UnknownNameError otherwise."""
    table = _sampler_table()
    if name not in table:
        raise UnknownNameError(f"unknown sampler {name!r}; valid samplers: "
                               f"{', '.join(SAMPLER_NAMES + EXTRA_SAMPLER_NAMES)}")
    return table[name]


def _schedule(ms: ModelSampling, scheduler: str, steps: int, model_type: str) -> torch.Tensor:
    sc = schedules
    if scheduler == "karras" or scheduler == "edm_playground_v2.5":
        return sc.karras_sigmas(steps, ms.sigma_min, ms.sigma_max)
    if scheduler == "exponential":
        return sc.exponential_sigmas(steps, ms.sigma_min, ms.sigma_max)
    if scheduler == "normal":
        return sc.normal_sigmas(ms, steps)
    if scheduler in ("sgm_uniform", "lcm", "tcd"):
        return sc.sgm_uniform_sigmas(ms, steps)
    if scheduler == "simple":
        return sc.simple_sigmas(ms, steps)
    if scheduler == "ddim_uniform":
        return sc.ddim_uniform_sigmas(ms, steps)
    if scheduler == "turbo":
        return sc.turbo_sigmas(ms, steps)
    if scheduler == "align_your_steps":
        return sc.align_your_steps_sigmas(steps, model_type)
    if scheduler == "beta":
        return sc.beta_sigmas(ms, steps)
    if scheduler == "linear_quadratic":
        return sc.linear_quadratic_sigmas(ms, steps)
    if scheduler == "kl_optimal":
        return sc.kl_optimal_sigmas(steps, ms.sigma_min, ms.sigma_max)
    raise UnknownNameError(f"unknown scheduler {scheduler!r}; valid schedulers: "
                           f"{', '.join(SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES)}")


def make_sigmas(model_sampling: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0, *,
                sampler_name: str | None = None, model_type: str = "SDXL") -> torch.Tensor:
    """The sigmas a KSampler run uses (ComfyUI/Fooocus `KSampler.set_steps`).

    - lcm / tcd / edm_playground_v2.5 give sgm_uniform / sgm_uniform / karras over `model_sampling`:
      pass the model sampling from `model_sampling_for_scheduler(scheduler, base)`.
    - align_your_steps uses the SDXL table unless model_type="SD1".
    - sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS: schedule steps+1, drop the penultimate.
    - denoise < 1: schedule int(steps / denoise) steps and keep the last steps+1 sigmas;
      denoise <= 0 returns an empty tensor (nothing to sample).
    """
    if sampler_name is not None and sampler_name not in SAMPLER_NAMES + EXTRA_SAMPLER_NAMES:
        get_sampler(sampler_name)  # raises with the valid names
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if denoise is not None and denoise <= 0.0:
        return torch.zeros(0)
    discard = sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    full = denoise is None or denoise > 0.9999
    total = steps if full else int(steps / denoise)
    sigmas = _schedule(model_sampling, scheduler, total + discard, model_type)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas if full else sigmas[-(steps + 1):]


def sampler_function(name: str, **options) -> Callable:
    """The bare `sample_<name>` function with fixed options (for callers that bring their own noise)."""
    return partial(get_sampler(name).function, **options)
