"""Fooocus adaptive CFG ("CFG Mimicking from TSNR", spec fooocus_pipeline.md §4).

With a real CFG scale s above the mimic value m, early steps are guided as if with scale m and the
guidance moves linearly (in progress p) to s: e = p * e_real + (1 - p) * e_mimic. This keeps high
CFG from burning the image early on while keeping its prompt adherence late.
"""
from __future__ import annotations

import torch


def cfg_mimicking(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, cfg: float, mimic_cfg: float,
                  progress: float) -> torch.Tensor:
    """Guided prediction in eps units (works the same on x0 predictions: the map is affine)."""
    real = eps_uncond + float(cfg) * (eps_cond - eps_uncond)
    if float(cfg) <= float(mimic_cfg):
        return real
    mimicked = eps_uncond + float(mimic_cfg) * (eps_cond - eps_uncond)
    return real * float(progress) + mimicked * (1.0 - float(progress))
