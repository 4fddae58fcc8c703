"""The KL autoencoder of SD1.x/SDXL (LDM key layout: encoder.down.N.block.M, decoder.up...,
mid.attn_1, quant_conv, post_quant_conv), with tiled encode/decode for large images.

Images are (B, 3, H, W) in [-1, 1]; latents are the raw autoencoder latents (the family's
scale factor is applied by whoever hands latents to the UNet).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3  # image channels
    out_channels: int = 3
    base_channels: int = 128  # `ch`: width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one entry per level; levels-1 downsamplings
    num_res_blocks: int = 2  # encoder res blocks per level (the decoder has one more)
    z_channels: int = 4  # latent channels
    embed_dim: int = 4  # quant_conv width (equal to z_channels in every SD VAE)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=1e-6)


class VAEResBlock(nn.Module):
    """Keys norm1, conv1, norm2, conv2, nin_shortcut (1x1, only when the width changes)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if channels != out_channels:
            self.nin_shortcut = nn.Conv2d(channels, out_channels, 1)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class VAEAttention(nn.Module):
    """Single-head self-attention over pixels, 1x1-conv projections (keys norm, q, k, v, proj_out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.proj_out(h.transpose(1, 2).reshape(batch, channels, height, width))


class VAEDownsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # LDM pads right/bottom only


class VAEUpsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = VAEResBlock(channels, channels)
        self.attn_1 = VAEAttention(channels)
        self.block_2 = VAEResBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """`down.N` / `up.N`: res blocks (`block.M`) then an optional resampler."""

    def __init__(self, blocks: list[nn.Module], resample_name: str | None, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = resample_name
        if resample_name:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.resample_name:
            x = getattr(self, self.resample_name)(x)
        return x


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, mult = config.base_channels, config.channel_mult
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        channels = ch
        for level, m in enumerate(mult):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(VAEResBlock(channels, ch * m))
                channels = ch * m
            last = level == len(mult) - 1
            self.down.append(_Level(blocks, None if last else "downsample", None if last else VAEDownsample(channels)))
        self.mid = _Middle(channels)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, mult = config.base_channels, config.channel_mult
        channels = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, channels, 3, padding=1)
        self.mid = _Middle(channels)
        levels = [None] * len(mult)
        for level in reversed(range(len(mult))):  # built lowest resolution first, stored by level
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(VAEResBlock(channels, ch * mult[level]))
                channels = ch * mult[level]
            levels[level] = _Level(blocks, "upsample" if level else None, VAEUpsample(channels) if level else None)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], config: VAEConfig) -> "AutoencoderKL":
        """Build on the meta device and adopt the tensors (no copy); strict key match."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2*embed_dim, H/f, W/f): the posterior's mean and log-variance, concatenated."""
        return self.quant_conv(self.encoder(images.to(self.dtype)))

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None,
               tiled: bool = False, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
        """Latents of images in [-1, 1]: the posterior mean, or a sample when a generator is given."""
        if tiled:
            moments = tiled_apply(self.encode_moments, images, tile_size, overlap, self.config.downscale, upscale=False)
        else:
            moments = self.encode_moments(images)
        mean, logvar = moments.chunk(2, dim=1)
        if generator is None:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    def decode(self, latents: torch.Tensor, tiled: bool = False, tile_size: int = 64,
               overlap: int = 16) -> torch.Tensor:
        """Images in about [-1, 1] (not clamped) from raw latents. Tile sizes are in latent pixels."""
        if tiled:
            return tiled_apply(self._decode, latents, tile_size, overlap, self.config.downscale, upscale=True)
        return self._decode(latents)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents.to(self.dtype)))


def _tile_starts(length: int, tile: int, stride: int, align: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    last = -(-(length - tile) // align) * align  # ceil: the last tile may stick out (it is cut)
    if starts[-1] != last:
        starts.append(last)
    return starts


def _ramp(length: int, fade_start: int, fade_end: int) -> torch.Tensor:
    """1 inside, linear fade to (not reaching) 0 over `fade_start`/`fade_end` border pixels."""
    weight = torch.ones(length)
    if fade_start:
        weight[:fade_start] = torch.arange(1, fade_start + 1) / (fade_start + 1)
    if fade_end:
        weight[length - fade_end:] = torch.arange(fade_end, 0, -1) / (fade_end + 1)
    return weight


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
           factor: int, upscale: bool) -> torch.Tensor:
    """Run `fn` on overlapping tiles and blend them with linear feathering.

    Seams disappear because every output pixel is a weighted mean of the tiles covering it, with
    weights fading towards each tile's inner borders (where zero padding makes a tile wrong).
    For encoding (`upscale=False`) tile starts are aligned to the downscale factor so tiles map
    to whole latent pixels.
    """
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    align = 1 if upscale else factor
    stride = max((tile - overlap) // align * align, align)
    out_scale = factor if upscale else 1 / factor
    rows = _tile_starts(height, tile, stride, align)
    cols = _tile_starts(width, tile, stride, align)
    out = weights = None
    for top in rows:
        for left in cols:
            piece = fn(x[..., top:top + tile, left:left + tile])
            out_h, out_w = piece.shape[-2:]
            if out is None:
                out = torch.zeros(*x.shape[:-3], piece.shape[-3], round(height * out_scale),
                                  round(width * out_scale), dtype=torch.float32, device=piece.device)
                weights = torch.zeros(out.shape[-2:], dtype=torch.float32, device=piece.device)
            fade = round(overlap * out_scale)
            y0, x0 = round(top * out_scale), round(left * out_scale)
            mask = (_ramp(out_h, fade if top else 0, fade if top + tile < height else 0)[:, None]
                    * _ramp(out_w, fade if left else 0, fade if left + tile < width else 0)[None])
            mask = mask.to(piece.device)
            out[..., y0:y0 + out_h, x0:x0 + out_w] += piece.float() * mask
            weights[y0:y0 + out_h, x0:x0 + out_w] += mask
    return (out / weights).to(piece.dtype)
