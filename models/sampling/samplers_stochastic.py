"""Samplers that re-noise between steps in their own way: DDPM, LCM, TCD and Restart.

ddpm: ancestral sampling of the DDPM posterior (Ho et al. 2020) between consecutive sigmas.
lcm: Latent Consistency Model multistep sampling (Luo et al. 2023): predict x0, re-noise to the next
sigma with fresh noise. tcd: Trajectory Consistency Distillation's strategic stochastic sampling
(Zheng et al. 2024) with gamma = eta. restart: Restart sampling (Xu et al. 2023), Heun steps with
repeated jumps back up to a higher noise level.
"""
from __future__ import annotations

import math

import torch

from .sampler_common import denoise, gaussian_sampler, report, sigma_list, to_d
from .schedules import karras_sigmas


@torch.no_grad()
def sample_ddpm(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None):
    """DDPM posterior mean between alpha-bar(sigma_i) and alpha-bar(sigma_{i+1}) plus posterior noise,
    computed in the VP frame (x / sqrt(1 + sigma^2)) and mapped back."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = denoise(model, x, sigma, extra_args)
        report(callback, i, x, sigma, sigma, denoised)
        eps = (x - denoised) / sigma
        abar = 1.0 / (sigma * sigma + 1.0)
        abar_next = 1.0 / (sigma_next * sigma_next + 1.0)
        alpha = abar / abar_next
        x_vp = x * math.sqrt(abar)
        mean = (x_vp - (1.0 - alpha) * eps / math.sqrt(1.0 - abar)) / math.sqrt(alpha)
        if sigma_next > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            std = math.sqrt((1.0 - alpha) * (1.0 - abar_next) / (1.0 - abar))
            mean = mean + std * noise_sampler(sigma, sigma_next)
            x = mean * math.sqrt(1.0 + sigma_next * sigma_next)
        else:
            x = mean
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None):
    """LCM multistep: x <- x0_pred, then x <- x0_pred + sigma_{i+1} * fresh noise (if sigma_{i+1} > 0)."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        x = denoised
        if sig[i + 1] > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + sig[i + 1] * noise_sampler(sig[i], sig[i + 1])
    return x


@torch.no_grad()
def sample_tcd(model, x, sigmas, *, model_sampling, extra_args=None, callback=None, generator=None,
               noise_sampler=None, eta=0.3):
    """TCD: from the x0/eps prediction at sigma_i jump to the earlier timestep s = floor((1-eta) t_{i+1})
    on the trajectory, then forward-diffuse from s to t_{i+1} with fresh noise.

    Needs the (distilled) model sampling for timesteps and the 1000-entry alphas_cumprod.
    Fooocus uses eta (its "gamma") = 0.3.
    """
    if getattr(model_sampling, "alphas_cumprod", None) is None:
        raise ValueError("tcd needs a discrete (alphas_cumprod) model sampling, not a continuous EDM one")
    sig = sigma_list(sigmas)
    timesteps = model_sampling.timestep(torch.tensor(sig)).cpu()
    s_steps = torch.floor((1 - eta) * timesteps).long()
    s_steps[-1] = 0
    abar_s = model_sampling.alphas_cumprod.double()[s_steps].tolist()
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        eps = (x - denoised) / sig[i]
        a = abar_s[i + 1]
        x_s = math.sqrt(a) * denoised + math.sqrt(1 - a) * eps  # VP-frame sample at timestep s
        if eta > 0 and sig[i + 1] > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            extra = max(sig[i + 1] ** 2 + 1 - 1 / a, 0.0)
            x = x_s / math.sqrt(a) + noise_sampler(sig[i], sig[i + 1]) * math.sqrt(extra)
        else:
            x = x_s * math.sqrt(1.0 + sig[i + 1] ** 2)
    return x


def _nearest(values: list[float], target: float) -> int:
    return min(range(len(values)), key=lambda k: abs(values[k] - target))


def restart_plan(sig: list[float], restart_list=None) -> list[tuple[float, float]]:
    """The (sigma_from, sigma_to) Heun steps Restart takes, restart segments included.

    Default (ComfyUI): for >= 20 steps the schedule is rebuilt as Karras over the given range with
    9 (or steps//4 twice, for >= 36 steps) steps moved into restarts from sigma ~0.1 up to ~2.
    restart_list: {min_sigma: [restart_steps, restart_times, max_sigma]}.
    """
    steps = len(sig) - 1
    if restart_list is None:
        restart_list = {}
        if steps >= 20:
            restart_steps, restart_times = 9, 1
            if steps >= 36:
                restart_steps, restart_times = steps // 4, 2
            sig = karras_sigmas(steps - restart_steps * restart_times, sig[-2], sig[0]).tolist()
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    by_index = {_nearest(sig, key): value for key, value in restart_list.items()}
    plan = []
    for i in range(len(sig) - 1):
        plan.append((sig[i], sig[i + 1]))
        if i + 1 in by_index:
            n, times, max_sigma = by_index[i + 1]
            max_idx = _nearest(sig, max_sigma)
            if max_idx < i + 1:
                segment = karras_sigmas(n, sig[i + 1], sig[max_idx]).tolist()[:-1]
                for _ in range(times):
                    plan.extend(zip(segment[:-1], segment[1:]))
    return plan


@torch.no_grad()
def sample_restart(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                   s_noise=1.0, restart_list=None):
    """Restart sampling: Heun steps along `restart_plan`; whenever the plan jumps to a higher sigma,
    add fresh noise of size sqrt(sigma_high^2 - sigma_low^2). The callback fires per Heun step, so
    it can fire more often than len(sigmas) - 1 times."""
    plan = restart_plan(sigma_list(sigmas), restart_list)
    last = None
    for step, (old, new) in enumerate(plan):
        if last is not None and last < old:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + noise_sampler(last, old) * s_noise * math.sqrt(old ** 2 - last ** 2)
        denoised = denoise(model, x, old, extra_args)
        d = to_d(x, old, denoised)
        report(callback, step, x, new, old, denoised)
        if new == 0:
            x = x + d * (new - old)
        else:
            x_2 = x + d * (new - old)
            d_2 = to_d(x_2, new, denoise(model, x_2, new, extra_args))
            x = x + (d + d_2) / 2 * (new - old)
        last = new
    return x
