"""Fooocus "sharpness": a joint-bilateral (anisotropic) blur of the positive noise prediction,
guided by the positive x0 prediction, blended in with weight 0.001 * sharpness * progress
(spec fooocus_pipeline.md §3). It removes a little high-frequency noise only where the image
is flat, which reads as crisper edges at the end of sampling.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel_1d(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian sampled at integer offsets centred on the middle tap."""
    offsets = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def joint_bilateral_blur(x: torch.Tensor, guide: torch.Tensor, kernel_size: int = 13,
                         sigma_space: float = 3.0, sigma_color: float = 3.0) -> torch.Tensor:
    """Weighted mean of x over a kernel_size^2 window with weights
    spatial(q - p) * exp(-0.5 * (sum_c |guide(q) - guide(p)|)^2 / sigma_color^2), reflect padding.

    x, guide: [B, C, H, W] (channel counts may differ). Memory: B*C*H*W*kernel_size^2 elements.
    """
    pad = (kernel_size - 1) // 2
    spatial_1d = gaussian_kernel_1d(kernel_size, sigma_space, x.device, x.dtype)
    spatial = (spatial_1d[:, None] * spatial_1d[None, :]).reshape(-1)  # [K*K], row-major like unfold
    windows_x = _windows(x, kernel_size, pad)            # [B, C, H, W, K*K]
    windows_g = _windows(guide.to(x.dtype), kernel_size, pad)
    distance = (windows_g - guide.to(x.dtype).unsqueeze(-1)).abs().sum(1, keepdim=True)
    weights = spatial * torch.exp(-0.5 * distance.square() / sigma_color ** 2)  # [B, 1, H, W, K*K]
    return (windows_x * weights).sum(-1) / weights.sum(-1)


def _windows(t: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    padded = F.pad(t, (pad, pad, pad, pad), mode="reflect")
    return padded.unfold(2, size, 1).unfold(3, size, 1).flatten(-2)


def adaptive_anisotropic_filter(x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Joint bilateral blur of x guided by the per-sample standardised guide
    (g - mean) / (std + 1e-5), mean/std over C, H, W (std with Bessel's correction, as torch.std)."""
    std, mean = torch.std_mean(guide, dim=(1, 2, 3), keepdim=True)
    return joint_bilateral_blur(x, (guide - mean) / (std + 1e-5))


def sharpness_weight(sharpness: float, progress: float) -> float:
    """alpha = 0.001 * sharpness * progress."""
    return 0.001 * float(sharpness) * float(progress)


def sharpen_positive_eps(eps_positive: torch.Tensor, x0_positive: torch.Tensor, sharpness: float,
                         progress: float) -> torch.Tensor:
    """e+' = alpha * blur(e+) + (1 - alpha) * e+ (unchanged when alpha is 0)."""
    alpha = sharpness_weight(sharpness, progress)
    if alpha == 0 or math.isclose(alpha, 0.0):
        return eps_positive
    return adaptive_anisotropic_filter(eps_positive, x0_positive) * alpha + eps_positive * (1.0 - alpha)
