"""Building blocks of the LDM/SGM UNet; attribute names follow the checkpoint keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32  # every SD GroupNorm uses 32 groups; the checkpoint does not record it


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the timestep embedding added in between, plus a skip path.

    Keys: in_layers.{0 norm, 2 conv}, emb_layers.1, out_layers.{0 norm, 3 conv}, skip_connection.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(GROUPS, out_channels), nn.SiLU(), nn.Identity(),  # Identity: dropout's slot
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head attention (self when context is None); keys to_q, to_k, to_v, to_out.0."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Identity())
        self.location = None  # (block kind, block index, transformer index), set by the UNet for kv patches

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                transformer_options: dict | None = None) -> torch.Tensor:
        context = x if context is None else context
        batch, tokens, _ = x.shape
        q = self.to_q(x).view(batch, tokens, self.heads, -1).transpose(1, 2)
        k, v = self.to_k(context), self.to_v(context)
        # "attn2_kv_patch": (k, v, location, options) -> (k, v) may append tokens (IP-Adapter)
        for patch in (transformer_options or {}).get("attn2_kv_patch", ()):
            k, v = patch(k, v, self.location, transformer_options)
        k = k.view(batch, k.shape[1], self.heads, -1).transpose(1, 2)
        v = v.view(batch, v.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, -1))


class GEGLU(nn.Module):
    """Gated GELU projection (exact GELU, as in LDM); key `proj`."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention on the text context, then a GEGLU MLP."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.attn1 = Attention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, transformer_options: dict | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context, transformer_options) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Image tokens through `depth` transformer blocks; residual around the whole stack.

    SD1.x projects in/out with 1x1 convolutions, SDXL with linear layers (`use_linear`); the two
    are the same maths, applied before or after flattening to tokens.
    """

    def __init__(self, channels: int, context_dim: int, heads: int, dim_head: int, depth: int,
                 use_linear: bool):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        if use_linear:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, context_dim, heads, dim_head) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, transformer_options: dict | None = None) -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (batch, tokens, channels)
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, transformer_options)
        if self.use_linear:
            h = self.proj_out(h)
        # back in the input's memory format: the transposed view is channels_last in memory, and
        # an input in another format than the weights makes a convolution copy its weights
        h = h.transpose(1, 2).reshape(batch, -1, height, width).contiguous(memory_format=_memory_format(x))
        if not self.use_linear:
            h = self.proj_out(h)
        return h + x


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size | None = None) -> torch.Tensor:
        # `size` is the next skip's size, so odd latent sizes round-trip exactly.
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class UNetStage(nn.ModuleList):
    """One `input_blocks.N` / `middle_block` / `output_blocks.N` entry: its layers run in order,
    each fed what it needs (embedding, context or target size). Which layer gets what is fixed
    at construction, so the forward has no data-dependent branches."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                upsample_size: torch.Size | None = None, transformer_options: dict | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
            elif isinstance(layer, Upsample):
                x = layer(x, upsample_size)
            else:
                x = layer(x)
        return x
