"""FreeU (Si et al. 2023) as a UNet output-block patch `(h, skip, block_index) -> (h, skip)`
(the `transformer_options["output_block_patch"]` hook of CONTRACTS.md).

In decoder blocks whose backbone features h have 4x / 2x the model width (1280 / 640 channels on
SDXL) the first half of h's channels is amplified by the backbone factor b, and the skip features
are low-pass attenuated by s: the centred (2*threshold)^2 lowest spatial frequencies are scaled.
- v2 (Fooocus's FreeU): the amplification is structure-aware, (b - 1) * m + 1 with m the channel
  mean of h min-max normalised per sample.
- v1: plain multiplication by b.
Fooocus UI defaults: b1 1.01, b2 1.02, s1 0.99, s2 0.95.
"""
from __future__ import annotations

import torch


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """Scale the centred low-frequency square of the 2-D spectrum of x by `scale` (float32 FFT)."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = freq.shape[-2:]
    row, col = height // 2, width // 2
    mask = torch.ones(freq.shape[-2:], device=x.device)
    mask[row - threshold:row + threshold, col - threshold:col + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def make_freeu_patch(b1: float = 1.01, b2: float = 1.02, s1: float = 0.99, s2: float = 0.95,
                     model_channels: int = 320, version: int = 2, threshold: int = 1):
    """The patch function; channel counts 4*model_channels use (b1, s1), 2*model_channels (b2, s2)."""
    if version not in (1, 2):
        raise ValueError("FreeU version must be 1 or 2")
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def freeu_patch(h: torch.Tensor, skip: torch.Tensor, block_index: int):
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        backbone, skip_scale = scale
        half = h.shape[1] // 2
        if version == 2:
            mean = h.mean(1, keepdim=True)
            flat = mean.flatten(1)
            low = flat.min(dim=1).values.reshape(-1, 1, 1, 1)
            high = flat.max(dim=1).values.reshape(-1, 1, 1, 1)
            factor = (backbone - 1) * ((mean - low) / (high - low)) + 1
        else:
            factor = backbone
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_filter(skip, threshold, skip_scale)

    return freeu_patch
