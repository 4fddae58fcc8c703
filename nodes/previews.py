"""Cheap step previews: a fixed linear map from the 4 latent channels to RGB.

The factors are the least-squares fits of latent to RGB that the Stable Diffusion community
publishes for each latent space (the "latent2rgb" preview); no decoder is run.
"""
from __future__ import annotations

import torch
from PIL import Image

_FACTORS = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0273]),
}


def latent_preview(family: str, denoised: torch.Tensor, max_size: int = 512) -> Image.Image | None:
    """RGB preview of the first latent of a batch (model space), or None for unknown layouts."""
    factors, bias = _FACTORS["sd15" if family == "sd15" else "sdxl"]
    latent = denoised[0].detach().float().cpu()
    if latent.shape[0] != len(factors):
        return None
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    array = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).byte().numpy()
    image = Image.fromarray(array)
    if max(image.size) > max_size:
        image.thumbnail((max_size, max_size))
    return image
