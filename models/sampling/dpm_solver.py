"""DPM-Solver (Lu et al. 2022, noise-prediction form) with fixed ("fast") and adaptive step sizes.

Both ignore the interior of the schedule: as in ComfyUI they integrate from sigmas[0] down to the
smallest positive sigma of the schedule (not to 0), in t = -log(sigma).
- dpm_fast: `len(sigmas) - 1` model evaluations split into DPM-Solver-3 steps (+ one 2/1 step)
  on a uniform t grid (the paper's "fast" recipe).
- dpm_adaptive: embedded DPM-Solver-2/3 pair with a PID step-size controller (paper §5).
"""
from __future__ import annotations

import math

import torch

from .sampler_common import ancestral_step, denoise, gaussian_sampler, report, sigma_list


class _Solver:
    """Evaluates eps = (x - x0) / sigma at time t = -log(sigma) and takes DPM-Solver-k steps."""

    def __init__(self, model, extra_args):
        self.model, self.extra_args = model, extra_args
        self.evaluations = 0

    @staticmethod
    def sigma(t: float) -> float:
        return math.exp(-t)

    def eps(self, cache: dict, key: str, x, t: float):
        if key not in cache:
            self.evaluations += 1
            cache[key] = (x - denoise(self.model, x, self.sigma(t), self.extra_args)) / self.sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * math.expm1(h) * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (x - self.sigma(t_next) * math.expm1(h) * eps
                - self.sigma(t_next) / (2 * r1) * math.expm1(h) * (eps_r1 - eps))

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * math.expm1(r2 * h) * eps
              - self.sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - self.sigma(t_next) * math.expm1(h) * eps
                - self.sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps))

    def noisy_target(self, t, t_next, t_end, eta):
        """Deterministic target time and the noise std to add afterwards (ancestral eta > 0)."""
        if not eta:
            return t_next, 0.0
        sd, _ = ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_down = min(t_end, -math.log(sd)) if sd > 0 else t_end
        return t_down, math.sqrt(max(self.sigma(t_next) ** 2 - self.sigma(t_down) ** 2, 0.0))


def _range(sig: list[float]) -> tuple[float, float]:
    sigma_min = sig[-1] if sig[-1] > 0 else sig[-2]
    if sigma_min <= 0 or sig[0] <= 0:
        raise ValueError("dpm_fast/dpm_adaptive need positive sigma_min and sigma_max")
    return sigma_min, sig[0]


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, *, extra_args=None, callback=None, generator=None, noise_sampler=None,
                    eta=0.0, s_noise=1.0):
    """DPM-Solver "fast": `len(sigmas) - 1` evaluations as order-3 steps on a uniform t grid."""
    sig = sigma_list(sigmas)
    sigma_min, sigma_max = _range(sig)
    nfe = len(sig) - 1
    solver = _Solver(model, extra_args)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    ts = [t_start + (t_end - t_start) * k / m for k in range(m + 1)]
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        t_target, noise_std = solver.noisy_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        report(callback, i, x, solver.sigma(t), solver.sigma(t), x - solver.sigma(t) * eps)
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, t_target, cache)
        if noise_std > 0:
            noise_sampler = gaussian_sampler(x, noise_sampler, generator)
            x = x + noise_std * s_noise * noise_sampler(solver.sigma(t), solver.sigma(t_next))
    return x


class PIDStepSizeController:
    """PID control of the step size from the embedded error estimate (Söderlind 2003 form)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.8, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)  # soft limiter
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, *, extra_args=None, callback=None, generator=None,
                        noise_sampler=None, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                        icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0):
    """Adaptive DPM-Solver-2/3: accept a step when the scaled difference of the low and high order
    solutions is small enough, and let the PID controller choose the next step size."""
    if order not in (2, 3):
        raise ValueError("order should be 2 or 3")
    sig = sigma_list(sigmas)
    sigma_min, sigma_max = _range(sig)
    solver = _Solver(model, extra_args)
    s, t_end = -math.log(sigma_max), -math.log(sigma_min)
    pid = PIDStepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    x_prev = x
    step = 0
    while s < t_end - 1e-5:
        cache = {}
        t = min(t_end, s + pid.h)
        t_target, noise_std = solver.noisy_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - solver.sigma(s) * eps
        if order == 2:
            x_low = solver.step_1(x, s, t_target, cache)
            x_high = solver.step_2(x, s, t_target, cache)
        else:
            x_low = solver.step_2(x, s, t_target, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t_target, cache)
        delta = torch.maximum(torch.full_like(x_low, atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            report(callback, step, x, solver.sigma(s), solver.sigma(s), denoised)
            x_prev = x_low
            x = x_high
            if noise_std > 0:
                noise_sampler = gaussian_sampler(x, noise_sampler, generator)
                x = x + noise_std * s_noise * noise_sampler(solver.sigma(s), solver.sigma(t))
            s = t
        step += 1
    return x
