"""DPM-Solver++ family (Lu et al. 2022, "DPM-Solver++"), in data-prediction form with
t = -log(sigma) (= the half log-SNR lambda for VP models, since alpha/sigma_vp = 1/sigma).

dpmpp_2s_ancestral, dpmpp_sde (+_gpu), dpmpp_2m, dpmpp_2m_sde (+_gpu, midpoint or heun
correction), dpmpp_3m_sde (+_gpu). SDE variants take their noise from a Brownian-tree noise sampler
(see noise.py); "_gpu" variants only build that tree on x's device instead of the CPU.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from .sampler_common import (ancestral_step, brownian_sampler, denoise, gaussian_sampler, report,
                             sigma_list, to_d)


def _t(sigma: float) -> float:
    return -math.log(sigma)


def _sigma(t: float) -> float:
    return math.exp(-t)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                              noise_sampler=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) single-step second order towards sigma_down, plus ancestral noise sigma_up."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sig[i], denoised) * (sigma_down - sig[i])
        else:
            t, t_next = _t(sig[i]), _t(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma(s) / sig[i]) * x - math.expm1(-0.5 * h) * denoised
            denoised_2 = denoise(model, x_2, _sigma(s), extra_args)
            x = (sigma_down / sig[i]) * x - math.expm1(-h) * denoised_2
        if sigma_up > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + noise_sampler(sig[i], sig[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                     noise_sampler=None, eta=1.0, s_noise=1.0, r=0.5, noise_on_device=False):
    """DPM-Solver++ (stochastic, 2 evaluations per step): an SDE sub-step to the intermediate time
    t + r*h, then the full step with the combined data prediction (1-1/2r)*x0_1 + 1/2r*x0_2."""
    sig = sigma_list(sigmas)
    noise_sampler = brownian_sampler(x, sig, noise_sampler, generator, noise_on_device) if eta else None
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        if sig[i + 1] == 0:
            x = x + to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
            continue
        t, t_next = _t(sig[i]), _t(sig[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        # sub-step: deterministic part to sigma_down of (sigma_t -> sigma_s), then noise back up to sigma_s
        sd, su = ancestral_step(sig[i], _sigma(s), eta)
        s_down = _t(sd)
        x_2 = (sd / sig[i]) * x - math.expm1(t - s_down) * denoised
        if su > 0:
            x_2 = x_2 + noise_sampler(sig[i], _sigma(s)) * s_noise * su
        denoised_2 = denoise(model, x_2, _sigma(s), extra_args)
        # full step with the interpolated data prediction
        sd, su = ancestral_step(sig[i], sig[i + 1], eta)
        t_down = _t(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sd / sig[i]) * x - math.expm1(t - t_down) * denoised_d
        if su > 0:
            x = x + noise_sampler(sig[i], sig[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, *, extra_args=None, callback=None, generator=None):
    """DPM-Solver++(2M): second-order multistep using the previous data prediction; first-order
    for the first step and for the final step to sigma 0 (which returns the denoised x0)."""
    sig = sigma_list(sigmas)
    old_denoised = None
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        if sig[i + 1] == 0:
            x = denoised
        else:
            t, t_next = _t(sig[i]), _t(sig[i + 1])
            h = t_next - t
            if old_denoised is None:
                estimate = denoised
            else:
                r = (t - _t(sig[i - 1])) / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * estimate
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                        noise_sampler=None, eta=1.0, s_noise=1.0, solver_type="midpoint",
                        noise_on_device=False):
    """DPM-Solver++(2M) SDE: exponential-integrator step of the reverse SDE (eta=1) with a
    second-order correction from the previous data prediction (midpoint or heun form)."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError("solver_type must be 'midpoint' or 'heun'")
    sig = sigma_list(sigmas)
    noise_sampler = brownian_sampler(x, sig, noise_sampler, generator, noise_on_device) if eta else None
    old_denoised, h_last = None, None
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = _t(sig[i + 1]) - _t(sig[i])
            eta_h = eta * h
            decay = -math.expm1(-h - eta_h)  # 1 - exp(-(1 + eta) h)
            x = (sig[i + 1] / sig[i]) * math.exp(-eta_h) * x + decay * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (1 - decay / (h + eta_h)) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * decay * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise_sampler(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                        noise_sampler=None, eta=1.0, s_noise=1.0, noise_on_device=False):
    """DPM-Solver++(3M) SDE: third-order multistep correction from the last two data predictions."""
    sig = sigma_list(sigmas)
    noise_sampler = brownian_sampler(x, sig, noise_sampler, generator, noise_on_device) if eta else None
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = _t(sig[i + 1]) - _t(sig[i])
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                x = x + noise_sampler(sig[i], sig[i + 1]) * sig[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


sample_dpmpp_sde_gpu = partial(sample_dpmpp_sde, noise_on_device=True)
sample_dpmpp_2m_sde_gpu = partial(sample_dpmpp_2m_sde, noise_on_device=True)
sample_dpmpp_3m_sde_gpu = partial(sample_dpmpp_3m_sde, noise_on_device=True)
