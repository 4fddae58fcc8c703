"""Inpainting inside the sampler: holding the known region, and the extra input channels of
9-channel inpainting UNets. Tensors only; latents here are in the UNet's (scaled) space.

- `InpaintBlend` wraps a k-diffusion denoiser: before each model call the known region
  (mask 0) of x is replaced by the known latent plus noise at the current sigma, and after it the
  prediction there is replaced by the known latent:
  x <- m*x + (1-m)*(known + n*sigma);  x0 <- m*x0 + (1-m)*known.
  ComfyUI's KSampler (LATENT["noise_mask"]) uses the sampling's own initial noise as n;
  Fooocus draws a fresh n per call from a CPU generator seeded (seed + 1) mod (2^63 - 1).
- `inpaint_concat`: what SD1.5/SDXL inpainting checkpoints (UNet in_channels 9) take next to the
  4 latent channels: the mask (1 = repaint) and the masked-image latent, as diffusers' inpaint
  pipelines and ComfyUI feed them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOOOCUS_MAX_SEED = 2 ** 63 - 1
# ComfyUI's latent of an all-gray (0.5) picture, used when an inpainting UNet gets no image
BLANK_MASKED_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def resize_mask(mask: torch.Tensor, shape) -> torch.Tensor:
    """A MASK ([H, W], [B, H, W] or [B, 1, H, W]) as [B, C, h, w] for a latent of `shape`
    (bilinear, as ComfyUI's reshape_mask), repeated over channels and batch."""
    batch, channels, height, width = shape
    mask = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if mask.shape[-2:] != (height, width):
        mask = F.interpolate(mask, size=(height, width), mode="bilinear")
    mask = mask.expand(-1, channels, -1, -1)
    if mask.shape[0] < batch:
        mask = mask.repeat(-(-batch // mask.shape[0]), 1, 1, 1)
    return mask[:batch]


def fooocus_latent_mask(pixel_mask: torch.Tensor, latent_height: int, latent_width: int) -> torch.Tensor:
    """Fooocus's latent mask (§9.7): the pixel mask (0..1) bilinear to 8x the latent size, rounded,
    8x8 max-pooled, rounded: a latent cell is masked when any of its pixels is. [B, 1, h, w]."""
    mask = pixel_mask.float().reshape(-1, 1, pixel_mask.shape[-2], pixel_mask.shape[-1])
    mask = F.interpolate(mask, size=(latent_height * 8, latent_width * 8), mode="bilinear").round()
    return F.max_pool2d(mask, (8, 8)).round()


def inpaint_concat(shape, mask: torch.Tensor | None = None, masked_latent: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """[B, 1 + C, h, w]: mask (resized bilinear and rounded; all ones when None) then the
    masked-image latent in model space (resized when needed; the gray latent when None)."""
    batch, channels, height, width = shape
    if mask is None:
        mask_part = torch.ones(batch, 1, height, width)
    else:
        mask_part = resize_mask(mask, (batch, 1, height, width)).round()
    if masked_latent is None:
        image_part = torch.tensor(BLANK_MASKED_LATENT[:channels]).view(1, -1, 1, 1).expand(batch, -1, height, width)
    else:
        image_part = masked_latent.float()
        if image_part.shape[-2:] != (height, width):
            image_part = F.interpolate(image_part, size=(height, width), mode="bilinear")
        if image_part.shape[0] < batch:
            image_part = image_part.repeat(-(-batch // image_part.shape[0]), 1, 1, 1)
        image_part = image_part[:batch]
    return torch.cat([mask_part.to(image_part.device), image_part], dim=1)


class InpaintBlend:
    """k-diffusion denoiser holding the known region (mask 0) of the latent (see module doc).

    known: [B, C, h, w] latent in model space; mask: broadcastable to it, 1 = repaint.
    noise: the fixed noise n (ComfyUI) -- or None with `generator` set, to draw n afresh at every
    model call on the generator's device (Fooocus).
    """

    def __init__(self, denoiser, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
        if (noise is None) == (generator is None):
            raise ValueError("InpaintBlend needs exactly one of noise= and generator=")
        self.denoiser = denoiser
        self.known, self.mask, self.noise, self.generator = known, mask, noise, generator
        self._placed: dict = {}

    @classmethod
    def fooocus(cls, denoiser, known: torch.Tensor, mask: torch.Tensor, seed: int) -> "InpaintBlend":
        generator = torch.Generator(device="cpu").manual_seed((int(seed) + 1) % FOOOCUS_MAX_SEED)
        return cls(denoiser, known, mask, generator=generator)

    def _on(self, x: torch.Tensor):
        key = (x.device, x.dtype)
        if key not in self._placed:
            noise = None if self.noise is None else self.noise.to(x)
            self._placed[key] = (self.known.to(x), self.mask.to(x), noise)
        return self._placed[key]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        known, mask, noise = self._on(x)
        if noise is None:
            noise = torch.randn(x.shape, generator=self.generator, dtype=torch.float32,
                                device=self.generator.device).to(x)
        scale = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        scale = scale.reshape(-1, *([1] * (x.ndim - 1))) if scale.ndim else scale
        x = x * mask + (known + noise * scale) * (1.0 - mask)
        out = self.denoiser(x, sigma, **extra)
        return out * mask + known * (1.0 - mask)
