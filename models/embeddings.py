"""Sinusoidal embeddings shared by the UNet (timesteps) and SDXL size conditioning (ADM)."""
import math

import torch


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The LDM/SGM sinusoidal embedding: [cos(t*f_i), sin(t*f_i)] with f_i = max_period^(-i/half).

    Cosine half first, as the original LDM code and every SD checkpoint expect
    (diffusers calls this `flip_sin_to_cos=True, downscale_freq_shift=0`).
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps[:, None].float() * torch.exp(exponent)[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding
