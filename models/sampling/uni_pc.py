"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data-prediction
multistep form with the B(h) = h ("bh1") or B(h) = e^h - 1 ("bh2") variants, order up to 3.

Written in the k-diffusion frame: with lambda = -log(sigma) the VP update
x_t = (std_t/std_0) x_0 - alpha_t (e^{-h} - 1) m_0 - alpha_t B(h) sum(rho_k D_k), divided by alpha_t,
becomes x_t = (sigma_t/sigma_0) x_0 - (e^{-h} - 1) m_0 - B(h) sum(rho_k D_k).
Like ComfyUI, a final sigma of 0 is replaced by 0.001 (lambda must stay finite), so the result
keeps noise of std 0.001; the corrector is skipped on the last step; the order is
min(3, steps - 1), lowered during warm-up and for the final steps.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .sampler_common import denoise, report, sigma_list


def _coefficients(rks: list[float], h: float, order: int, variant: str):
    """Predictor and corrector weights rho (solutions of R rho = b, UniPC Algorithm / Thm 3.1)."""
    hh = -h  # data prediction integrates in -lambda
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    matrix, b = np.array(rows, dtype=np.float64), np.array(b, dtype=np.float64)
    if order == 2:
        rhos_p = [0.5]
    elif order > 2:
        rhos_p = np.linalg.solve(matrix[:-1, :-1], b[:-1]).tolist()
    else:
        rhos_p = []
    rhos_c = [0.5] if order == 1 else np.linalg.solve(matrix, b).tolist()
    return h_phi_1, b_h, rhos_p, rhos_c


def _update(model, x, hist_sigma, hist_x0, sigma_t, order, variant, use_corrector, extra_args):
    """One UniP step to sigma_t (+ UniC correction using a fresh evaluation at the predicted point).

    Returns (x_t, x0 evaluated at the uncorrected predictor point or None)."""
    sigma_0, m0 = hist_sigma[-1], hist_x0[-1]
    lambda_0 = -math.log(sigma_0)
    h = -math.log(sigma_t) - lambda_0
    rks, d1s = [], []
    for i in range(1, order):
        rk = (-math.log(hist_sigma[-(i + 1)]) - lambda_0) / h
        rks.append(rk)
        d1s.append((hist_x0[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    h_phi_1, b_h, rhos_p, rhos_c = _coefficients(rks, h, order, variant)
    x_base = (sigma_t / sigma_0) * x - h_phi_1 * m0
    x_t = x_base
    if d1s:
        x_t = x_base - b_h * sum(rho * d for rho, d in zip(rhos_p, d1s))
    if not use_corrector:
        return x_t, None
    model_t = denoise(model, x_t, sigma_t, extra_args)
    correction = rhos_c[-1] * (model_t - m0)
    if d1s:
        correction = correction + sum(rho * d for rho, d in zip(rhos_c[:-1], d1s))
    return x_base - b_h * correction, model_t


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, *, extra_args=None, callback=None, generator=None, variant="bh1",
                  max_order=3):
    """UniPC multistep (ComfyUI "uni_pc" = bh1, "uni_pc_bh2" = bh2). Deterministic.

    callback(i) fires after the evaluation at sigmas[i] (for i >= 1 that is the corrector's
    evaluation), so the next model call is at sigmas[i + 1].
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError("variant must be 'bh1' or 'bh2'")
    sig = sigma_list(sigmas)
    if sig[-1] == 0:
        sig[-1] = 0.001
    steps = len(sig) - 1
    order = max(1, min(max_order, steps - 1))
    hist_sigma, hist_x0 = [sig[0]], [denoise(model, x, sig[0], extra_args)]
    report(callback, 0, x, sig[0], sig[0], hist_x0[-1])
    for step in range(1, steps + 1):
        step_order = min(order, step, steps + 1 - step)
        last = step == steps
        x, model_x = _update(model, x, hist_sigma, hist_x0, sig[step], step_order, variant,
                             use_corrector=not last, extra_args=extra_args)
        if last:
            break
        hist_sigma.append(sig[step])
        hist_x0.append(model_x)
        if len(hist_sigma) > order:
            hist_sigma.pop(0)
            hist_x0.pop(0)
        report(callback, step, x, sig[step], sig[step], model_x)
    return x


def sample_uni_pc_bh2(model, x, sigmas, *, extra_args=None, callback=None, generator=None, max_order=3):
    """UniPC with B(h) = e^h - 1."""
    return sample_uni_pc(model, x, sigmas, extra_args=extra_args, callback=callback, generator=generator,
                         variant="bh2", max_order=max_order)
