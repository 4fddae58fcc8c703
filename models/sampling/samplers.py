"""Classic ODE samplers over the denoiser contract `model(x, sigma, **extra_args) -> x0`.

Euler, Euler ancestral, Heun, Heun++ (heunpp2), DPM-2 (+ ancestral), linear multistep (LMS),
iPNDM and DDIM (= Euler, as in ComfyUI/Fooocus). Every sampler has the signature
`sample_<name>(model, x, sigmas, *, extra_args=None, callback=None, generator=None, ...)`,
takes x already scaled to sigmas[0], and calls `callback({"i","x","sigma","sigma_hat","denoised"})`
once per step. Random draws only come from `generator` / `noise_sampler`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .sampler_common import ancestral_step, denoise, gaussian_sampler, report, sigma_list, to_d


def _churn(x, sigma, n_steps, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, generator):
    """Karras et al. (2022) Algorithm 2 lines 5-7: raise the noise level to sigma_hat = sigma(1+gamma)."""
    gamma = min(s_churn / n_steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        noise = gaussian_sampler(x, noise_sampler, generator)(sigma, sigma_hat)
        x = x + noise * s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2)
    return x, sigma_hat


@torch.no_grad()
def sample_euler(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler method, Karras et al. (2022) Algorithm 2 (churn off by default: deterministic)."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        x, sigma_hat = _churn(x, sig[i], len(sig) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, generator)
        denoised = denoise(model, x, sigma_hat, extra_args)
        report(callback, i, x, sig[i], sigma_hat, denoised)
        x = x + to_d(x, sigma_hat, denoised) * (sig[i + 1] - sigma_hat)
    return x


sample_ddim = sample_euler  # DDIM (eta 0) is exactly Euler in (x / alpha, sigma) coordinates.


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                           noise_sampler=None, eta=1.0, s_noise=1.0):
    """Euler step to sigma_down, then fresh noise of size sigma_up (k-diffusion's ancestral rule)."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        x = x + to_d(x, sig[i], denoised) * (sigma_down - sig[i])
        if sigma_up > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + noise_sampler(sig[i], sig[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order method, Karras et al. (2022) Algorithm 2; Euler for the step to 0."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        x, sigma_hat = _churn(x, sig[i], len(sig) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, generator)
        denoised = denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, x, sig[i], sigma_hat, denoised)
        dt = sig[i + 1] - sigma_hat
        if sig[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sig[i + 1], denoise(model, x_2, sig[i + 1], extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                   s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun++ (ComfyUI "heunpp2"): up to three slope evaluations per step, at sigma_i, sigma_{i+1}
    and sigma_{i+2}, weighted by those sigmas relative to 2*sigma_0 or 3*sigma_0."""
    sig = sigma_list(sigmas)
    s_end = sig[-1]
    for i in range(len(sig) - 1):
        x, sigma_hat = _churn(x, sig[i], len(sig) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, generator)
        denoised = denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, x, sig[i], sigma_hat, denoised)
        dt = sig[i + 1] - sigma_hat
        if sig[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sig[i + 1], denoise(model, x_2, sig[i + 1], extra_args))
        if sig[i + 2] == s_end:
            w2 = sig[i + 1] / (2 * sig[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (sig[i + 2] - sig[i + 1])
        d_3 = to_d(x_3, sig[i + 2], denoise(model, x_3, sig[i + 2], extra_args))
        w2, w3 = sig[i + 1] / (3 * sig[0]), sig[i + 2] / (3 * sig[0])
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2-like midpoint method (Karras et al. 2022 variant): the slope is re-evaluated at
    the log-midpoint of sigma_hat and sigma_{i+1}. Euler for the step to 0."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        x, sigma_hat = _churn(x, sig[i], len(sig) - 1, s_churn, s_tmin, s_tmax, s_noise, noise_sampler, generator)
        denoised = denoise(model, x, sigma_hat, extra_args)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, x, sig[i], sigma_hat, denoised)
        if sig[i + 1] == 0:
            x = x + d * (sig[i + 1] - sigma_hat)
        else:
            sigma_mid = math.exp(0.5 * (math.log(sigma_hat) + math.log(sig[i + 1])))
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, denoise(model, x_2, sigma_mid, extra_args))
            x = x + d_2 * (sig[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                           noise_sampler=None, eta=1.0, s_noise=1.0):
    """DPM-2 midpoint step to sigma_down, then fresh noise sigma_up (ancestral)."""
    sig = sigma_list(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        sigma_down, sigma_up = ancestral_step(sig[i], sig[i + 1], eta)
        d = to_d(x, sig[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sig[i])
        else:
            sigma_mid = math.exp(0.5 * (math.log(sig[i]) + math.log(sigma_down)))
            x_2 = x + d * (sigma_mid - sig[i])
            d_2 = to_d(x_2, sigma_mid, denoise(model, x_2, sigma_mid, extra_args))
            x = x + d_2 * (sigma_down - sig[i])
        if sigma_up > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + noise_sampler(sig[i], sig[i + 1]) * s_noise * sigma_up
    return x


def lms_coefficient(order: int, sig: list[float], i: int, j: int, nodes=None) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial that is 1 at
    sigma_{i-j} and 0 at the other `order - 1` past sigmas.

    The integrand has degree order-1, so Gauss-Legendre with ceil(order/2) nodes is exact; plain
    float arithmetic keeps this to microseconds per step.
    """
    if nodes is None:
        nodes = np.polynomial.legendre.leggauss(max(1, (order + 1) // 2))
    mid, half = (sig[i] + sig[i + 1]) / 2, (sig[i + 1] - sig[i]) / 2
    total = 0.0
    for node, weight in zip(*nodes):
        tau = mid + half * float(node)
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - sig[i - k]) / (sig[i - j] - sig[i - k])
        total += float(weight) * product
    return total * half


@torch.no_grad()
def sample_lms(model, x, sigmas, *, extra_args=None, callback=None, generator=None, order=4):
    """Linear multistep (Adams-Bashforth in sigma) over the last `order` derivatives."""
    sig = sigma_list(sigmas)
    nodes = np.polynomial.legendre.leggauss(max(1, (order + 1) // 2))
    history = []
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        history.append(to_d(x, sig[i], denoised))
        if len(history) > order:
            history.pop(0)
        current = min(i + 1, order)
        for j in range(current):
            x = x + lms_coefficient(current, sig, i, j, nodes) * history[-1 - j]
    return x


# Adams-Bashforth weights for equal steps, newest derivative first (orders 1-4).
_ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_ipndm(model, x, sigmas, *, extra_args=None, callback=None, generator=None, max_order=4):
    """Improved PNDM (Zhang & Chen 2023, DEIS paper): fixed Adams-Bashforth weights on the last
    derivatives, warming up from order 1; the final step to sigma 0 is plain Euler."""
    sig = sigma_list(sigmas)
    history = []
    for i in range(len(sig) - 1):
        denoised = denoise(model, x, sig[i], extra_args)
        report(callback, i, x, sig[i], sig[i], denoised)
        d = to_d(x, sig[i], denoised)
        order = 1 if sig[i + 1] == 0 else min(max_order, i + 1)
        slopes = [d] + history[::-1]
        step = sum(w * s for w, s in zip(_ADAMS_BASHFORTH[order], slopes))
        x = x + step * (sig[i + 1] - sig[i])
        history.append(d)
        if len(history) > max_order - 1:
            history.pop(0)
    return x
