"""Guidance rules over several conditionings (ComfyUI's DualCFG and Perp-Neg guiders) and the
RescaleCFG combine rule.

Each guider is a k-diffusion denoiser `(x, sigma, **extra) -> x0` over the sampler's conditioned
denoiser and each prompt's prepared inputs ("sides", as CFGDenoiser holds them); every step
evaluates the sides it needs together (guidance.evaluate_conditions) and mixes their x0 predictions.
`rescale_cfg` has the `Combine` signature of guidance.py and replaces standard CFG.
"""
from __future__ import annotations

import math

import torch

from .guidance import Combine, evaluate_conditions, standard_cfg


def _sigma_batch(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


class DualCFGDenoiser:
    """ComfyUI's DualCFGGuider: two prompts against a negative.

    regular: cfg(middle vs negative, cfg2) + cfg1 * (positive - middle);
    nested:  negative + cfg2 * (cfg(positive vs middle, cfg1) - negative).
    `denoiser` and the sides (prepared conditioning inputs) are evaluated together per step
    (`evaluate_conditions`, ComfyUI's calc_cond_batch); a scale of 1 skips the prediction it would
    not need (ComfyUI's cfg1 optimisation). `combine` is the model's CFG rule for the paired terms.
    """

    def __init__(self, denoiser, positive, middle, negative, cfg1: float, cfg2: float, nested: bool = False,
                 combine: Combine = standard_cfg):
        self.denoiser = denoiser
        self.positive, self.middle, self.negative = positive, middle, negative
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested
        self.combine = combine

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        sigma = _sigma_batch(sigma, x)
        if self.nested:
            positive, middle, negative = evaluate_conditions(
                self.denoiser, [self.positive, self.middle, self.negative], x, sigma, **extra)
            text = self.combine(x, sigma, positive, middle, self.cfg1)
            return negative + self.cfg2 * (text - negative)
        if math.isclose(self.cfg2, 1.0) and math.isclose(self.cfg1, 1.0):
            return evaluate_conditions(self.denoiser, [self.positive], x, sigma, **extra)[0]
        if math.isclose(self.cfg2, 1.0):
            positive, middle = evaluate_conditions(self.denoiser, [self.positive, self.middle], x, sigma, **extra)
            paired = middle
        else:
            positive, middle, negative = evaluate_conditions(
                self.denoiser, [self.positive, self.middle, self.negative], x, sigma, **extra)
            paired = self.combine(x, sigma, middle, negative, self.cfg2)
        return paired + (positive - middle) * self.cfg1


def perp_neg(empty: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, neg_scale: float,
             cfg: float) -> torch.Tensor:
    """Perp-Neg (Armandpour et al. 2023) as ComfyUI computes it on x0 predictions: the negative
    direction loses its component along the positive one (projection over the whole batch), then
    empty + cfg * (pos - neg_scale * perp)."""
    pos = positive - empty
    neg = negative - empty
    perp = neg - ((neg * pos).sum() / torch.norm(pos) ** 2) * pos
    return empty + cfg * (pos - perp * neg_scale)


class PerpNegDenoiser:
    """ComfyUI's PerpNegGuider: positive, negative and empty-prompt predictions (evaluated together
    per step, as DualCFGDenoiser's) mixed by `perp_neg`."""

    def __init__(self, denoiser, positive, negative, empty, cfg: float, neg_scale: float):
        self.denoiser = denoiser
        self.positive, self.negative, self.empty = positive, negative, empty
        self.cfg, self.neg_scale = float(cfg), float(neg_scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        sigma = _sigma_batch(sigma, x)
        # ComfyUI's skips: a zero neg_scale needs no negative, and then a scale of 1 is the positive
        if math.isclose(self.neg_scale, 0.0):
            if math.isclose(self.cfg, 1.0):
                return evaluate_conditions(self.denoiser, [self.positive], x, sigma, **extra)[0]
            positive, empty = evaluate_conditions(self.denoiser, [self.positive, self.empty], x, sigma, **extra)
            return empty + self.cfg * (positive - empty)
        positive, negative, empty = evaluate_conditions(
            self.denoiser, [self.positive, self.negative, self.empty], x, sigma, **extra)
        return perp_neg(empty, positive, negative, self.neg_scale, self.cfg)


def make_rescale_cfg(multiplier: float) -> Combine:
    """RescaleCFG (Lin et al. 2023, "Common Diffusion Noise Schedules...", sec. 3.4) as ComfyUI
    applies it: CFG in v-prediction space, its per-sample std rescaled to the positive one's, mixed
    with plain CFG by `multiplier`. Written for discrete (sigma_data 1) models, as ComfyUI's is."""
    multiplier = float(multiplier)

    def rescale_cfg(x, sigma, cond_x0, uncond_x0, cfg):
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)) if sigma.ndim else sigma
        root = (sigma * sigma + 1.0) ** 0.5
        scaled = x / (sigma * sigma + 1.0)
        # v = (alpha * eps - sigma_t * x0) in the scaled input's units, from each x0 prediction
        v_cond = (scaled - cond_x0) * root / sigma
        v_uncond = (scaled - uncond_x0) * root / sigma
        v_cfg = v_uncond + cfg * (v_cond - v_uncond)
        std_cond = torch.std(v_cond, dim=tuple(range(1, x.ndim)), keepdim=True)
        std_cfg = torch.std(v_cfg, dim=tuple(range(1, x.ndim)), keepdim=True)
        v_final = multiplier * (v_cfg * (std_cond / std_cfg)) + (1.0 - multiplier) * v_cfg
        return scaled - v_final * sigma / root

    return rescale_cfg
