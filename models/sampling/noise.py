"""Seeded noise: the initial latent noise and the per-step noise samplers of stochastic samplers.

A noise sampler is a callable `(sigma, sigma_next) -> tensor shaped like x` with unit variance.
- `GaussianNoiseSampler`: independent N(0, 1) draws from an explicit torch.Generator (ancestral
  samplers, ddpm, lcm, ...).
- `BrownianTreeNoiseSampler`: increments of one Brownian path W over [sigma_min, sigma_max],
  returned as W(s0, s1) / sqrt(|s1 - s0|). Because every query reads the same path, the SDE
  samplers give consistent images when the step count changes. Backed by torchsde's
  BrownianTree seeded with the job seed (entropy=seed), as ComfyUI/Fooocus do, so a seed gives
  the same path as theirs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

_TREE_TOL = 1e-6  # torchsde's default tolerance, as k-diffusion/ComfyUI use it


def prepare_noise(latent_shape, seed: int, batch_index=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial noise for a latent of `latent_shape`, reproducible across machines (the CPU
    Mersenne-Twister stream of `torch.manual_seed(seed)`, whatever device sampling runs on).

    batch_index=None: one randn draw of the full shape (ComfyUI/Fooocus).
    batch_index=[i, ...]: sample k gets the i_k-th draw of a per-sample sequence of single-image
    draws, so image i of a batch matches image i generated alone with the same seed (ComfyUI's
    batch_index from "Latent From Batch" / "Rebatch").
    """
    shape = tuple(int(s) for s in latent_shape)
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    if batch_index is None:
        return torch.randn(shape, dtype=dtype, generator=generator, device="cpu")
    indices = [int(i) for i in batch_index]
    unique = sorted(set(indices))
    draws = {}
    for i in range(unique[-1] + 1):
        sample = torch.randn((1,) + shape[1:], dtype=dtype, generator=generator, device="cpu")
        if i in unique:
            draws[i] = sample
    return torch.cat([draws[i] for i in indices], dim=0)


class GaussianNoiseSampler:
    """Unit Gaussian noise shaped like `x`, drawn from `generator` (on the generator's device)."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator):
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.generator = generator

    @classmethod
    def from_seed(cls, x: torch.Tensor, seed: int) -> "GaussianNoiseSampler":
        """A fresh generator on x's device seeded with `seed` (current ComfyUI behaviour)."""
        generator = torch.Generator(device=x.device).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        return cls(x, generator)

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        gen_device = self.generator.device
        noise = torch.randn(self.shape, dtype=self.dtype, device=gen_device, generator=self.generator)
        return noise.to(self.device)


class BrownianTreeNoiseSampler:
    """Brownian-path noise over [sigma_min, sigma_max] seeded with `seed`.

    on_device=False keeps the tree on the CPU (ComfyUI's non-"_gpu" SDE samplers); True builds it
    on x's device (the "_gpu" variants and Fooocus's patched sampler).
    `transform` maps sigma to the tree's time variable (identity for all samplers here).
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seed: int,
                 on_device: bool = False, transform=None):
        import torchsde  # lazy: only the SDE samplers need it

        self.transform = transform or (lambda s: s)
        self.out_dtype, self.out_device = x.dtype, x.device
        self.tree_device = x.device if on_device else torch.device("cpu")
        t0 = float(self.transform(float(sigma_min)))
        t1 = float(self.transform(float(sigma_max)))
        self.sign = 1.0 if t0 <= t1 else -1.0
        lo, hi = min(t0, t1), max(t0, t1)
        w0 = torch.zeros(x.shape, dtype=torch.float32, device=self.tree_device)
        entropy = int(seed)  # numpy SeedSequence entropy: any non-negative int, as ComfyUI passes it
        self.tree = torchsde.BrownianTree(torch.tensor(lo, device=self.tree_device), w0,
                                          torch.tensor(hi, device=self.tree_device), entropy=entropy,
                                          tol=_TREE_TOL)
        # torchsde stores its end points rounded to the tolerance's digits and clamps (with a warning)
        # queries outside them; clamping here gives the same numbers without the warning.
        digits = -int(math.log10(_TREE_TOL))
        self.t_low, self.t_high = round(float(torch.tensor(lo)), digits), round(float(torch.tensor(hi)), digits)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0 = float(self.transform(float(sigma)))
        t1 = float(self.transform(float(sigma_next)))
        sign = self.sign * (1.0 if t0 <= t1 else -1.0)
        lo = min(max(min(t0, t1), self.t_low), self.t_high)
        hi = min(max(max(t0, t1), self.t_low), self.t_high)
        increment = self.tree(lo, hi)
        scale = sign / np.sqrt(abs(t1 - t0))
        return (increment * scale).to(device=self.out_device, dtype=self.out_dtype)


def brownian_range(sigmas: torch.Tensor) -> tuple[float, float]:
    """(smallest positive sigma, largest sigma) of a schedule: the Brownian tree's interval."""
    positive = sigmas[sigmas > 0]
    return float(positive.min()), float(sigmas.max())
