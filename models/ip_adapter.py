"""IP-Adapter plus (SDXL and SD1.5): the Resampler, the per-layer to_k_ip / to_v_ip and Fooocus's
concatenated-token injection (spec fooocus_pipeline.md §10.1).

File format (`ip-adapter-plus_sdxl_vit-h.bin`, `ip-adapter-plus-face_sdxl_vit-h.bin`): a torch
pickle {"image_proj": Resampler keys, "ip_adapter": {"1.to_k_ip.weight", "1.to_v_ip.weight",
"3.to_k_ip.weight", ...}} (loaded with weights_only); the `.safetensors` variant holds the same keys
prefixed "image_proj." / "ip_adapter.". The odd numbers are diffusers' attention-processor indices
of the cross-attention layers, in diffusers' module order: input (down) blocks, output (up) blocks,
then the middle block; layer n of that order owns the n-th k/v pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 64  # every released plus Resampler uses 64-wide heads (SDXL: 20 x 64, SD1.5: 12 x 64)


@dataclass(frozen=True)
class ResamplerConfig:
    width: int = 1280  # latent (query) width
    depth: int = 4
    heads: int = 20
    dim_head: int = 64
    queries: int = 16  # learned latents = image tokens out
    embedding_dim: int = 1280  # CLIP vision hidden width in
    output_dim: int = 2048  # UNet cross-attention width out
    ff_mult: int = 4

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "ResamplerConfig":
        latents = sd["latents"]
        inner = sd["layers.0.0.to_q.weight"].shape[0]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        ff = sd["layers.0.1.1.weight"].shape[0] // latents.shape[-1]
        return cls(latents.shape[-1], depth, max(1, inner // HEAD_WIDTH), HEAD_WIDTH if inner >= HEAD_WIDTH else inner,
                   latents.shape[1], sd["proj_in.weight"].shape[1], sd["proj_out.weight"].shape[0], ff)


class PerceiverAttention(nn.Module):
    """Latents attend to [image features; latents]; keys norm1, norm2, to_q, to_kv, to_out."""

    def __init__(self, c: ResamplerConfig):
        super().__init__()
        inner = c.heads * c.dim_head
        self.heads = c.heads
        self.norm1 = nn.LayerNorm(c.width)
        self.norm2 = nn.LayerNorm(c.width)
        self.to_q = nn.Linear(c.width, inner, bias=False)
        self.to_kv = nn.Linear(c.width, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, c.width, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.view(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        # the reference scales q and k by dim_head^-1/4 each: the usual 1/sqrt(dim_head)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Resampler(nn.Module):
    """(B, tokens, embedding_dim) CLIP hidden states -> (B, queries, output_dim) image tokens."""

    def __init__(self, c: ResamplerConfig):
        super().__init__()
        self.config = c
        self.latents = nn.Parameter(torch.empty(1, c.queries, c.width))
        self.proj_in = nn.Linear(c.embedding_dim, c.width)
        self.proj_out = nn.Linear(c.width, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(nn.ModuleList([
            PerceiverAttention(c),
            nn.Sequential(nn.LayerNorm(c.width), nn.Linear(c.width, c.width * c.ff_mult, bias=False), nn.GELU(),
                          nn.Linear(c.width * c.ff_mult, c.width, bias=False)),
        ]) for _ in range(c.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(x.dtype).repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attention, feed_forward in self.layers:
            latents = attention(x, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))


class IPAdapterPlus(nn.Module):
    """The Resampler plus one (to_k_ip, to_v_ip) pair per UNet cross-attention layer."""

    def __init__(self, resampler: Resampler, to_k: list[torch.Tensor], to_v: list[torch.Tensor]):
        super().__init__()
        self.image_proj = resampler
        self.to_k_ip = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in to_k)
        self.to_v_ip = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in to_v)

    @property
    def layer_widths(self) -> list[int]:
        return [w.shape[0] for w in self.to_k_ip]

    def layer_kv(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(K_ip, V_ip) per cross-attention layer for (B, queries, context_dim) image tokens."""
        return [(tokens @ k.to(tokens).t(), tokens @ v.to(tokens).t()) for k, v in zip(self.to_k_ip, self.to_v_ip)]


def split_ip_adapter_file(sd: dict) -> tuple[dict, dict]:
    if "image_proj" in sd and "ip_adapter" in sd:
        return sd["image_proj"], sd["ip_adapter"]
    proj = {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")}
    layers = {k[len("ip_adapter."):]: v for k, v in sd.items() if k.startswith("ip_adapter.")}
    if not proj or not layers:
        raise ValueError("not an IP-Adapter file: no 'image_proj' and 'ip_adapter' parts")
    return proj, layers


def ip_adapter_from_state_dict(sd: dict) -> IPAdapterPlus:
    proj, layers = split_ip_adapter_file(sd)
    if "latents" not in proj:
        raise ValueError("only IP-Adapter *plus* files (a Resampler with 'latents') are supported")
    with torch.device("meta"):
        resampler = Resampler(ResamplerConfig.from_state_dict(proj))
    resampler.load_state_dict(proj, strict=True, assign=True)
    numbers = sorted({int(key.split(".")[0]) for key in layers})
    try:
        to_k = [layers[f"{n}.to_k_ip.weight"] for n in numbers]
        to_v = [layers[f"{n}.to_v_ip.weight"] for n in numbers]
    except KeyError as missing:
        raise ValueError(f"IP-Adapter file lacks {missing}") from None
    return IPAdapterPlus(resampler.eval().requires_grad_(False), to_k, to_v)


def load_ip_adapter(path: str | Path) -> IPAdapterPlus:
    """Reads a `.bin`/`.pth` pickle with torch's weights-only loader (no code runs) or a `.safetensors`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return ip_adapter_from_state_dict(load_file(str(path)))
    return ip_adapter_from_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))


def load_ip_negative(path: str | Path) -> torch.Tensor:
    """`fooocus_ip_negative.safetensors`: the unconditional side's image tokens, (1, queries, context_dim)."""
    from safetensors.torch import load_file

    data = load_file(str(path))["data"]
    return data if data.ndim == 3 else data.unsqueeze(0)


def cross_attention_locations(unet_config) -> list[tuple[tuple[str, int, int], int]]:
    """((block kind, block index, transformer index), channels) of every cross-attention layer, in
    IP-Adapter's order: input blocks, output blocks, middle block (mirrors UNetModel's layout)."""
    mc, levels = unet_config.model_channels, len(unet_config.channel_mult)
    inputs, outputs = [], []
    index, down = 1, 0
    for level, mult in enumerate(unet_config.channel_mult):
        for _ in range(unet_config.num_res_blocks[level]):
            inputs += [(("input", index, j), mc * mult) for j in range(unet_config.transformer_depth[down])]
            index, down = index + 1, down + 1
        index += level != levels - 1  # the downsample block
    up = 0
    for level, mult in reversed(list(enumerate(unet_config.channel_mult))):
        for _ in range(unet_config.num_res_blocks[level] + 1):
            outputs += [(("output", up, j), mc * mult) for j in range(unet_config.transformer_depth_output[up])]
            up += 1
    middle_channels = mc * unet_config.channel_mult[-1]
    middle = [(("middle", 0, j), middle_channels) for j in range(unet_config.transformer_depth_middle)]
    return inputs + outputs + middle


def cross_attention_widths(unet_config) -> list[int]:
    return [channels for _, channels in cross_attention_locations(unet_config)]


def concat_image_tokens(k: torch.Tensor, v: torch.Tensor, k_ip: torch.Tensor, v_ip: torch.Tensor,
                        weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fooocus's injection: with C the layer width and w = weight*C/1280, K_ip <- w*K_ip and
    V_ip <- (V_ip - mean_tokens(V_ip)) + w*mean_tokens(V_ip); both appended after the text K/V so
    one softmax runs over text and image tokens."""
    w = float(weight) * k_ip.shape[-1] / 1280.0
    mean = v_ip.mean(dim=1, keepdim=True)
    return torch.cat([k, k_ip * w], dim=1), torch.cat([v, (v_ip - mean) + mean * w], dim=1)


class ImagePromptPatch:
    """An "attn2 kv patch" for one image prompt: `patch(k, v, location, options) -> (k, v)`.

    k, v: the layer's text K/V (B, tokens, C); location: the layer's (kind, block, transformer
    index); options["timesteps"]: the UNet timesteps of the call, options["sides"]: (B,) 0 for
    conditional rows, 1 for unconditional ones (all conditional when absent). Active while
    p = 1 - t/999 < stop (Fooocus reads t of the first row). K/V of the image tokens are computed
    once, when the patch is made, and moved to the compute device once per device/dtype.
    """

    def __init__(self, adapter: IPAdapterPlus, cond_tokens: torch.Tensor, uncond_tokens: torch.Tensor,
                 unet_config, weight: float, stop: float):
        locations = cross_attention_locations(unet_config)
        if [c for _, c in locations] != adapter.layer_widths:
            raise ValueError(f"this IP-Adapter has {len(adapter.layer_widths)} cross-attention layers of widths "
                             f"that do not match the model's {len(locations)}: it was made for another UNet")
        with torch.no_grad():
            cond = adapter.layer_kv(cond_tokens.float())
            uncond = adapter.layer_kv(uncond_tokens.float().to(cond_tokens.device))
        self.kv = {loc: (c, u) for (loc, _), c, u in zip(locations, cond, uncond)}
        self.weight, self.stop = float(weight), float(stop)
        self._moved: dict = {}

    def active(self, timesteps) -> bool:
        if timesteps is None:
            return self.stop > 0
        t = float(torch.as_tensor(timesteps).reshape(-1)[0])
        return 1.0 - t / 999.0 < self.stop

    def _on(self, location, like: torch.Tensor):
        key = (location, like.device, like.dtype)
        if key not in self._moved:
            (kc, vc), (ku, vu) = self.kv[location]
            self._moved[key] = tuple(t.to(like) for t in (kc, vc, ku, vu))
        return self._moved[key]

    def __call__(self, k: torch.Tensor, v: torch.Tensor, location, options: dict):
        if location not in self.kv or not self.active(options.get("timesteps")):
            return k, v
        kc, vc, ku, vu = self._on(location, k)
        sides = options.get("sides")
        batch = k.shape[0]
        if sides is None:
            k_ip, v_ip = kc.expand(batch, -1, -1), vc.expand(batch, -1, -1)
        else:
            uncond = torch.as_tensor(sides, device=k.device).reshape(-1, 1, 1).bool()
            k_ip = torch.where(uncond, ku.expand(batch, -1, -1), kc.expand(batch, -1, -1))
            v_ip = torch.where(uncond, vu.expand(batch, -1, -1), vc.expand(batch, -1, -1))
        return concat_image_tokens(k, v, k_ip, v_ip, self.weight)
