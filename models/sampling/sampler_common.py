"""Small helpers shared by the sampler modules.

Samplers keep sigmas as Python floats (one `tolist()` per job): coefficient maths then costs no
device kernels or host-device syncs, and `if sigma_next == 0` never blocks on a GPU.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .noise import BrownianTreeNoiseSampler, GaussianNoiseSampler, brownian_range

Callback = Callable[[dict], None]


def sigma_list(sigmas: torch.Tensor) -> list[float]:
    return [float(s) for s in torch.as_tensor(sigmas).reshape(-1).tolist()]


def denoise(model, x: torch.Tensor, sigma: float, extra_args: dict | None) -> torch.Tensor:
    """One model evaluation with sigma broadcast to the batch as a float32 vector."""
    sigma_vec = torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.float32)
    return model(x, sigma_vec, **(extra_args or {}))


def report(callback: Callback | None, i: int, x, sigma: float, sigma_hat: float, denoised) -> None:
    """The per-step callback payload {"i", "x", "sigma", "sigma_hat", "denoised"}."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """ODE derivative dx/dsigma = (x - x0) / sigma (Karras et al. 2022, eq. 4 for sigma(t) = t)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step to sigma_to into a deterministic step to sigma_down plus fresh noise sigma_up,
    with sigma_down^2 + sigma_up^2 = sigma_to^2 (eta scales the stochastic share)."""
    if not eta or sigma_to == 0:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2))
    sigma_down = math.sqrt(sigma_to ** 2 - sigma_up ** 2)
    return sigma_down, sigma_up


def gaussian_sampler(x: torch.Tensor, noise_sampler, generator: torch.Generator | None):
    """The noise source of an ancestral sampler: the given sampler, else draws from `generator`."""
    if noise_sampler is not None:
        return noise_sampler
    if generator is None:
        raise ValueError("this sampler is stochastic: pass generator= or noise_sampler= (no global RNG)")
    return GaussianNoiseSampler(x, generator)


def brownian_sampler(x: torch.Tensor, sigmas: list[float], noise_sampler, generator: torch.Generator | None,
                     on_device: bool):
    """The noise source of an SDE sampler: the given sampler, else a Brownian tree over the
    schedule seeded by one draw from `generator` (the registry seeds it with the job seed instead)."""
    if noise_sampler is not None:
        return noise_sampler
    if generator is None:
        raise ValueError("this sampler is stochastic: pass generator= or noise_sampler= (no global RNG)")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device).item())
    sigma_min, sigma_max = brownian_range(torch.tensor(sigmas))
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, on_device=on_device)
