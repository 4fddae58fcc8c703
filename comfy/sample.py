"""ComfyUI's `comfy.sample`: seeded noise and latent helpers over our sampler."""
from __future__ import annotations

import torch

from comfy_compat import missing_attribute, not_provided

__getattr__ = missing_attribute("comfy.sample")


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds=None) -> torch.Tensor:
    """ComfyUI's seeded CPU noise for a latent batch (same numbers for the same seed)."""
    from models.sampling.noise import prepare_noise as ours

    return ours(latent_image.shape, seed, noise_inds, dtype=latent_image.dtype)


def fix_empty_latent_channels(model, latent_image: torch.Tensor) -> torch.Tensor:
    """SD1.5 and SDXL latents have 4 channels; an empty latent of another count is resized to 4."""
    if latent_image.shape[1] != 4 and torch.count_nonzero(latent_image) == 0:
        return torch.zeros((latent_image.shape[0], 4, *latent_image.shape[2:]), dtype=latent_image.dtype)
    return latent_image


def sample(*args, **kwargs):
    raise not_provided("comfy.sample.sample", "our sampler draws its own seeded noise; use nodes.common_ksampler")


def sample_custom(*args, **kwargs):
    raise not_provided("comfy.sample.sample_custom", "use nodes.common_ksampler")
