"""Classifier-free guidance as a denoiser wrapper.

`CFGDenoiser(denoiser, positive, negative, cfg, combine=...)` is itself a k-diffusion denoiser
`(x, sigma, **extra) -> x0`. Per evaluation it makes ONE inner call with the batch
[x; x] and the positive and negative conditioning concatenated (or one call with batch x and the
positive conditioning alone when cfg == 1, as ComfyUI/Fooocus skip the uncond pass).

Conditioning is a dict of keyword arguments for the inner denoiser (e.g. {"context": c, "y": y}).
Tensors are batched along dim 0 (a batch of 1 is expanded to x's batch); cross-attention tensors
[B, tokens, dim] with different token counts are repeated up to their least common multiple, which
leaves attention unchanged (duplicated keys with equal values keep the softmax average).
Non-tensor values must be equal on both sides and are passed once.

Several CONDITIONING entries, areas, masks and timestep ranges arrive as lists of
`areas.RegionCond` and go through ComfyUI's per-region evaluation and blending instead
(`evaluate_conditions`, which guiders with any number of sides share).

`combine(x, sigma, cond_x0, uncond_x0, cfg) -> x0` chooses the guidance rule: `standard_cfg`
(uncond + cfg * (cond - uncond)) or `FooocusGuidance` (sharpness + CFG mimicking).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .adaptive_cfg import cfg_mimicking
from .areas import RegionCond, calc_cond_batch
from .model_sampling import ModelSampling
from .sharpness import sharpen_positive_eps

Combine = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def standard_cfg(x, sigma, cond_x0, uncond_x0, cfg):
    """uncond + cfg * (cond - uncond)."""
    return uncond_x0 + (cond_x0 - uncond_x0) * cfg


class FooocusGuidance:
    """Fooocus's replacement of the CFG rule (spec §3-4), in eps units e = x - x0:
    e+ is softened by the anisotropic filter with weight 0.001*sharpness*p, then CFG with
    mimicking toward `adaptive_cfg`; p = 1 - t/999 from the model sampling's timestep."""

    def __init__(self, model_sampling: ModelSampling, sharpness: float = 2.0, adaptive_cfg: float = 7.0):
        self.model_sampling = model_sampling
        self.sharpness = float(sharpness)
        self.adaptive_cfg = float(adaptive_cfg)

    def __call__(self, x, sigma, cond_x0, uncond_x0, cfg):
        progress = self.model_sampling.progress(sigma)
        eps_pos = sharpen_positive_eps(x - cond_x0, cond_x0, self.sharpness, progress)
        eps = cfg_mimicking(x - uncond_x0, eps_pos, cfg, self.adaptive_cfg, progress)
        return x - eps


def _expand_batch(value: torch.Tensor, batch: int) -> torch.Tensor:
    if value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise ValueError(f"conditioning batch {value.shape[0]} does not match latent batch {batch}")


def _match_tokens(a: torch.Tensor, b: torch.Tensor):
    """Repeat [B, tokens, dim] tensors along tokens to a common length (lcm), or None if not possible."""
    if a.shape[1:] == b.shape[1:]:
        return a, b
    if a.ndim != 3 or a.shape[2] != b.shape[2]:
        return None
    length = math.lcm(a.shape[1], b.shape[1])
    if length // min(a.shape[1], b.shape[1]) > 4:  # ComfyUI's limit: avoid huge repeated contexts
        return None
    return a.repeat(1, length // a.shape[1], 1), b.repeat(1, length // b.shape[1], 1)


def batch_conditions(positive: dict, negative: dict, batch: int):
    """Merge two conditioning dicts into one for the [x; x] batch, or None if they cannot be merged."""
    if positive.keys() != negative.keys():
        return None
    merged = {}
    for key, pos in positive.items():
        neg = negative[key]
        if isinstance(pos, torch.Tensor) and isinstance(neg, torch.Tensor):
            matched = _match_tokens(_expand_batch(pos, batch), _expand_batch(neg, batch))
            if matched is None:
                return None
            merged[key] = torch.cat(matched, dim=0)
        elif isinstance(pos, torch.Tensor) or isinstance(neg, torch.Tensor) or pos is not neg and pos != neg:
            return None
        else:
            merged[key] = pos
    return merged


def evaluate_conditions(denoiser, sides: list, x: torch.Tensor, sigma: torch.Tensor, **extra) -> list[torch.Tensor]:
    """Each side's x0 for x at sigma, in as few calls as possible (ComfyUI's calc_cond_batch).

    A side is a dict of denoiser inputs (one whole-latent conditioning: the fast path, one call for
    all sides when their inputs merge), a list of `areas.RegionCond` (several, area, mask or
    timestep-range entries: evaluated per region and blended), or None (predicts 0)."""
    batch = x.shape[0]
    sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    if len(sides) == 1 and isinstance(sides[0], dict):
        return [denoiser(x, sigma, **sides[0], **extra)]
    if len(sides) == 2 and all(isinstance(side, dict) for side in sides):
        merged = batch_conditions(sides[0], sides[1], batch)
        if merged is None:  # incompatible shapes: two calls instead of one
            return [denoiser(x, sigma, **side, **extra) for side in sides]
        both = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **merged, **extra)
        return [both[:batch], both[batch:]]
    regions = [None if side is None else [RegionCond(side)] if isinstance(side, dict) else side for side in sides]
    return calc_cond_batch(denoiser, regions, x, sigma, **extra)


class CFGDenoiser:
    """k-diffusion denoiser applying classifier-free guidance around `denoiser`.

    positive / negative: dicts of denoiser inputs, or lists of `areas.RegionCond` (see
    `evaluate_conditions`)."""

    def __init__(self, denoiser, positive: dict | list, negative: dict | list | None, cfg: float,
                 combine: Combine = standard_cfg):
        self.denoiser = denoiser
        self.positive, self.negative = positive, negative
        self.cfg = float(cfg)
        self.combine = combine

    @property
    def uses_uncond(self) -> bool:
        return self.negative is not None and not math.isclose(self.cfg, 1.0)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        sides = [self.positive, self.negative] if self.uses_uncond else [self.positive]
        outputs = evaluate_conditions(self.denoiser, sides, x, sigma, **extra)
        if not self.uses_uncond:
            return outputs[0]
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        return self.combine(x, sigma, outputs[0], outputs[1], self.cfg)
