"""Sigma schedules: each returns a float32 tensor of `steps + 1` descending sigmas ending in 0.

(Two documented exceptions to the count: `ddim_uniform` can give one more step when 1000 is not a
multiple of `steps`, and `turbo` has at most 10 steps, both as in ComfyUI/Fooocus.)
Formulas follow Fooocus 2.5.5 / ComfyUI (spec fooocus_pipeline.md §2); the table-based ones read the
model sampling's trained sigmas, the others only its sigma_min / sigma_max.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .model_sampling import ModelSampling


def _with_zero(sigmas) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp())


def polyexponential_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """k-diffusion's polyexponential schedule: log sigma from max to min along ramp**rho, where the
    ramp runs 1 -> 0 (rho 1 is the exponential schedule; larger rho lingers at high noise)."""
    ramp = torch.linspace(1, 0, steps, dtype=torch.float64) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return _with_zero((ramp * (log_max - log_min) + log_min).exp())


def normal_sigmas(ms: ModelSampling, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps evenly spaced from t(sigma_max) to t(sigma_min) mapped to sigmas.

    sgm=True ("sgm_uniform"): steps+1 points with the last one (t_min) dropped, i.e. trailing
    spacing as used by SD-Turbo/Lightning/LCM.
    """
    start = float(ms.timestep(torch.tensor(ms.sigma_max)))
    end = float(ms.timestep(torch.tensor(ms.sigma_min)))
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        timesteps = torch.linspace(start, end, steps)
    return _with_zero(ms.sigma(timesteps).double())


def sgm_uniform_sigmas(ms: ModelSampling, steps: int) -> torch.Tensor:
    return normal_sigmas(ms, steps, sgm=True)


def simple_sigmas(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Every (N/steps)-th trained sigma counted from the top: table[-(1 + floor(i * N / steps))]."""
    table = ms.sigmas
    stride = len(table) / steps
    return _with_zero([float(table[-(1 + int(i * stride))]) for i in range(steps)])


def ddim_uniform_sigmas(ms: ModelSampling, steps: int) -> torch.Tensor:
    """Trained sigmas at indices 1, 1+k, 1+2k, ... (k = N // steps), highest first.

    Equals DDIM's "leading" timesteps with steps_offset 1 when N is a multiple of steps.
    """
    table = ms.sigmas
    stride = max(len(table) // steps, 1)
    picked = [float(table[i]) for i in range(1, len(table), stride)]
    return _with_zero(picked[::-1])


def beta_sigmas(ms: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta-distribution timestep spacing (Lee et al. 2024): t = round(ppf(1 - i/steps) * (N-1)).

    Repeated timesteps are merged, so very small step counts may give fewer steps.
    """
    from scipy.special import betaincinv  # lazy: scipy only matters for this scheduler

    last = len(ms.sigmas) - 1
    quantiles = 1.0 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(betaincinv(alpha, beta, quantiles) * last)
    picked, previous = [], None
    for t in timesteps:
        if t != previous:
            picked.append(float(ms.sigmas[int(t)]))
        previous = t
    return _with_zero(picked)


def linear_quadratic_sigmas(ms: ModelSampling, steps: int, threshold_noise: float = 0.025,
                            linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule: linear in the first half up to `threshold_noise`, then quadratic, scaled
    by sigma_max (returned with its final 0 already in place)."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps ** 2)
        const = quad_coef * linear_steps ** 2
        quadratic = [quad_coef * i ** 2 + lin_coef * i + const for i in range(linear_steps, steps)]
        fractions = [1.0 - f for f in linear + quadratic + [1.0]]
    return (torch.tensor(fractions, dtype=torch.float64) * ms.sigma_max).float()


def kl_optimal_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """KL-optimal schedule (Sabour et al. 2024, AYS appendix): linear in arctan(sigma)."""
    if steps == 1:
        return _with_zero([sigma_max])
    w = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    return _with_zero((w * math.atan(sigma_min) + (1 - w) * math.atan(sigma_max)).tan())


def turbo_sigmas(ms: ModelSampling, steps: int) -> torch.Tensor:
    """SD-Turbo timesteps 999, 899, ..., 99 (first `steps`, at most 10) mapped to sigmas."""
    timesteps = torch.arange(10, 0, -1, dtype=torch.float32) * 100 - 1
    return _with_zero(ms.sigma(timesteps[:steps]).double())


def sd_turbo_sigmas(ms: ModelSampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """ComfyUI's SDTurboScheduler: of the timesteps 999, 899, ..., 99, skip the first
    10 - int(10 * denoise) and take the next `steps` (fewer when they run out), mapped to sigmas."""
    start = 10 - int(10 * denoise)
    timesteps = torch.arange(10, 0, -1, dtype=torch.float32) * 100 - 1
    return _with_zero(ms.sigma(timesteps[start:start + steps]).double())


# Align Your Steps (Sabour et al. 2024, NVIDIA) optimised 10-step noise levels.
AYS_NOISE_LEVELS = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def align_your_steps_sigmas(steps: int, model_type: str = "SDXL") -> torch.Tensor:
    """AYS levels log-linearly resampled to steps+1 points; the last level is replaced by 0."""
    try:
        levels = np.array(AYS_NOISE_LEVELS[model_type], dtype=np.float64)
    except KeyError:
        raise ValueError(f"unknown AYS model type {model_type!r}; valid: {', '.join(AYS_NOISE_LEVELS)}") from None
    if steps + 1 != len(levels):
        # interpolate log sigma over a uniform grid, ascending for np.interp
        grid = np.linspace(0, 1, len(levels))
        log_ascending = np.log(levels[::-1])
        levels = np.exp(np.interp(np.linspace(0, 1, steps + 1), grid, log_ascending))[::-1].copy()
    levels[-1] = 0.0
    return torch.tensor(levels, dtype=torch.float32)
