"""SDXL's ADM ("y") vectors: the pooled text vector plus 256-wide sinusoidal embeddings of sizes.

Base (2816 = 1280 + 6 x 256): pooled, height, width, crop_h, crop_w, target_height, target_width.
Refiner (2560 = 1280 + 5 x 256): pooled, height, width, crop_h, crop_w, aesthetic score
(6.0 for the positive prompt, 2.5 for the negative by convention).
Each scalar is embedded on its own with `timestep_embedding(value, 256)` and the embeddings are
concatenated in that order, the layout SDXL was trained with. Fooocus's ADM scaling
(size x 1.5 / x 0.8, truncated to int) is the caller's business: pass the scaled sizes.
"""
from __future__ import annotations

import torch

from models.embeddings import timestep_embedding

SIZE_EMBEDDING_DIM = 256
POSITIVE_AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5


def embed_scalars(values: list[float], dim: int = SIZE_EMBEDDING_DIM, device=None) -> torch.Tensor:
    """[len(values) * dim]: each value's sinusoidal embedding, concatenated, float32."""
    embedded = timestep_embedding(torch.tensor(values, dtype=torch.float32, device=device), dim)
    return embedded.reshape(-1)


def _with_pooled(pooled: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    sizes = sizes.to(device=pooled.device, dtype=pooled.dtype)
    return torch.cat([pooled, sizes.expand(pooled.shape[0], -1)], dim=1)


def sdxl_adm(
    pooled: torch.Tensor,
    height: float,
    width: float,
    crop_h: float = 0,
    crop_w: float = 0,
    target_height: float | None = None,
    target_width: float | None = None,
) -> torch.Tensor:
    """[B, P + 1536] (2816 for real SDXL) for pooled [B, P]; targets default to the size."""
    target_height = height if target_height is None else target_height
    target_width = width if target_width is None else target_width
    sizes = embed_scalars([height, width, crop_h, crop_w, target_height, target_width], device=pooled.device)
    return _with_pooled(pooled, sizes)


def sdxl_refiner_adm(
    pooled: torch.Tensor,
    height: float,
    width: float,
    aesthetic_score: float = POSITIVE_AESTHETIC_SCORE,
    crop_h: float = 0,
    crop_w: float = 0,
) -> torch.Tensor:
    """[B, P + 1280] (2560 for the real refiner) for pooled [B, P]."""
    sizes = embed_scalars([height, width, crop_h, crop_w, aesthetic_score], device=pooled.device)
    return _with_pooled(pooled, sizes)
