"""SDXL ADM ("size") conditioning with Fooocus's ADM guidance (spec fooocus_pipeline.md §5).

Fooocus conditions the base UNet on a 5632-wide y = [pooled, emphasized sizes, pooled, consistent
sizes]: the emphasized half claims an original size scaled by adm_scaler_positive (1.5) for the
positive prompt and adm_scaler_negative (0.8) for the negative one; the consistent half claims
original size = target size. Inside the UNet the emphasized half is used while
t > 999 * (1 - adm_scaler_end), i.e. progress p < adm_scaler_end (the first 30 % by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.embeddings import timestep_embedding

SDXL_ADM_WIDTH = 2816


@dataclass(frozen=True)
class AdmScalers:
    """The three UI knobs; (1.0, 1.0, 0.0) switches ADM guidance off (restricted performance modes)."""
    positive: float = 1.5
    negative: float = 0.8
    end: float = 0.3


def round_to_64(value: float) -> int:
    return int(round(float(value) / 64.0)) * 64


def _size_embedding(numbers, batch: int, device=None) -> torch.Tensor:
    """Six sinusoidal 256-d embeddings concatenated: [B, 1536]."""
    emb = timestep_embedding(torch.tensor(numbers, dtype=torch.float32, device=device), 256)
    return emb.reshape(1, -1).expand(batch, -1)


def sdxl_adm_halves(pooled: torch.Tensor, width: int, height: int, scaler: float = 1.0):
    """(emphasized, consistent) y vectors, each [B, 2816], for an image of width x height pixels
    (latent size * 8). The claimed original size is int(size * scaler); targets round to 64."""
    batch = pooled.shape[0]
    target_w, target_h = round_to_64(width), round_to_64(height)
    orig_w, orig_h = int(width * scaler), int(height * scaler)
    emphasized = _size_embedding([orig_h, orig_w, 0, 0, target_h, target_w], batch, pooled.device)
    consistent = _size_embedding([target_h, target_w, 0, 0, target_h, target_w], batch, pooled.device)
    return (torch.cat([pooled, emphasized.to(pooled.dtype)], dim=1),
            torch.cat([pooled, consistent.to(pooled.dtype)], dim=1))


def fooocus_adm_y(pooled: torch.Tensor, width: int, height: int, scaler: float) -> torch.Tensor:
    """The 5632-wide y Fooocus hands to the base UNet: [emphasized half, consistent half]."""
    emphasized, consistent = sdxl_adm_halves(pooled, width, height, scaler)
    return torch.cat([emphasized, consistent], dim=1)


def emphasized_adm_active(progress: float, adm_scaler_end: float) -> bool:
    """Whether the emphasized half is used at progress p (= 1 - t/999): p < adm_scaler_end."""
    return 999.0 * (1.0 - float(progress)) > 999.0 * (1.0 - float(adm_scaler_end))


def select_adm(y: torch.Tensor, timesteps: torch.Tensor, adm_scaler_end: float,
               adm_width: int = SDXL_ADM_WIDTH) -> torch.Tensor:
    """Per-sample choice of the half of a 2*adm_width y (5632 for SDXL) for the UNet's ADM input
    (adm_width wide: 2816 for SDXL, less for narrower test models); other widths pass through."""
    if y.ndim != 2 or y.shape[1] != 2 * adm_width:
        return y
    mask = (timesteps.to(y.device) > 999.0 * (1.0 - float(adm_scaler_end))).to(y.dtype)[:, None]
    return y[:, :adm_width] * mask + y[:, adm_width:] * (1.0 - mask)


def refiner_adm_y(pooled: torch.Tensor, width: int, height: int, aesthetic_score: float) -> torch.Tensor:
    """SDXL-refiner y (2560): [pooled G, emb(H), emb(W), emb(0), emb(0), emb(aesthetic)];
    Fooocus uses aesthetic 6.0 for the positive and 2.5 for the negative prompt."""
    emb = timestep_embedding(torch.tensor([height, width, 0, 0, aesthetic_score], dtype=torch.float32,
                                          device=pooled.device), 256)
    return torch.cat([pooled, emb.reshape(1, -1).expand(pooled.shape[0], -1).to(pooled.dtype)], dim=1)
