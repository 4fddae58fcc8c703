"""unCLIP / "revision" conditioning for SDXL: CLIP vision image embeddings in place of the pooled
text vector, as ComfyUI's unCLIPConditioning + SDXL model do.

Each entry's image embeddings are noise-augmented (a cosine "squaredcos_cap_v2" schedule of 1000
levels, level = round(999 * noise_augmentation); data mean 0 / std 1 as SDXL has no statistics),
the noise level's sinusoidal embedding (1280 wide) appended, and the result scaled by strength;
several entries are summed and re-augmented at level 0. SDXL reads the first `width` channels as
its pooled vector. The noise comes from an explicit generator (ComfyUI uses the sampler seed - 10;
here the caller passes the seed).
"""
from __future__ import annotations

import math

import torch

from .embeddings import timestep_embedding

LEVELS = 1000
LEVEL_EMBED_DIM = 1280


def cosine_alphas_cumprod(levels: int = LEVELS) -> torch.Tensor:
    """cumprod(1 - beta_t), beta_t = min(1 - abar((t+1)/T)/abar(t/T), 0.999), abar(s) = cos((s+0.008)/1.008*pi/2)^2."""
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - alpha_bar((i + 1) / levels) / alpha_bar(i / levels), 0.999) for i in range(levels)],
                         dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def noise_augment(embeds: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    """[augmented embeds, embedding of the level] for (B, D) image embeddings."""
    ac = cosine_alphas_cumprod()[level]
    noise = torch.randn(embeds.shape, generator=generator, dtype=torch.float32).to(embeds)
    noised = embeds * math.sqrt(ac) + noise * math.sqrt(1 - ac)
    level_embed = timestep_embedding(torch.full((embeds.shape[0],), float(level)), LEVEL_EMBED_DIM).to(embeds)
    return torch.cat([noised, level_embed], dim=1)


def unclip_pooled(entries, width: int, seed: int = 0) -> torch.Tensor:
    """The (1, width) pooled vector for a list of {"clip_vision_output", "strength", "noise_augmentation"}."""
    generator = torch.Generator().manual_seed(int(seed))
    outs = []
    for entry in entries:
        for embeds in entry["clip_vision_output"].image_embeds:
            level = round((LEVELS - 1) * float(entry["noise_augmentation"]))
            outs.append(noise_augment(embeds[None].float(), level, generator) * float(entry["strength"]))
    if not outs:
        raise ValueError("unclip_conditioning without image embeddings")
    out = outs[0]
    if len(outs) > 1:
        summed = torch.stack(outs).sum(0)
        out = noise_augment(summed[:, :LEVEL_EMBED_DIM], 0, generator)
    return out[:, :width]
