"""TAESD, the tiny autoencoder's decoder: SD/SDXL latents -> RGB at 8x size, for step previews.

The network is a plain Sequential so its parameter names are exactly those of the published
`taesd_decoder` / `taesdxl_decoder` files (`1.weight`, `3.conv.0.weight`, ...). Its input is the
latent the UNet works on (VAE latent * the VAE's scale factor); its output is RGB in about [0, 1].
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

LATENT_CHANNELS = 4
WIDTH = 64
UPSAMPLINGS = 3  # each doubles the size: 8x in all, like the SD VAE
BLOCKS_PER_STAGE = 3


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """Squashes latents smoothly into (-3, 3): outliers mid-sampling must not blow up the preview."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convolutions with ReLUs between them, a residual skip, and a ReLU after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.skip = nn.Identity()  # in == out channels everywhere in the decoder: no 1x1 projection
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class TAESDDecoder(nn.Sequential):
    """Latent (B, 4, h, w) in model space -> image (B, 3, 8h, 8w), roughly in [0, 1]."""

    def __init__(self) -> None:
        layers: list[nn.Module] = [SoftClamp(), _conv(LATENT_CHANNELS, WIDTH), nn.ReLU()]
        for _ in range(UPSAMPLINGS):
            layers += [Block(WIDTH) for _ in range(BLOCKS_PER_STAGE)]
            layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
        layers += [Block(WIDTH), _conv(WIDTH, 3)]
        super().__init__(*layers)


# diffusers' AutoencoderTiny names the same layers `decoder.layers.N` without the leading clamp
# (it clamps in forward), so its index N is our N + 1.
_DIFFUSERS_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def decoder_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our parameter names from a taesd decoder file, a full taesd file (`decoder.` prefix), or
    diffusers' AutoencoderTiny; encoder tensors are dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _DIFFUSERS_KEY.match(key)
        if match:
            out[f"{int(match.group(1)) + 1}.{match.group(2)}"] = value
        elif key.startswith("decoder."):
            out[key[len("decoder."):]] = value
        elif not key.startswith("encoder.") and key[:1].isdigit():
            out[key] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    # weights_only: a .pth from the internet must not run code when loaded
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_taesd_decoder(path: str | Path) -> TAESDDecoder:
    """The decoder with the weights of `path`, float32, eval mode; raises on missing/odd tensors."""
    decoder = TAESDDecoder()
    decoder.load_state_dict(decoder_state_dict(read_state_dict(path)), strict=True)
    return decoder.eval().requires_grad_(False)


def write_tiny_taesd_decoder(path: str | Path, seed: int = 0) -> Path:
    """A random-weight decoder file in the published layout (full size: TAESD is ~1 MB), for tests
    and demos; only its shapes and names are real."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in TAESDDecoder().state_dict().items():
        # PyTorch's default conv init range (uniform within 1/sqrt(fan_in)), from our own generator
        fan_in = tensor[0].numel() if tensor.dim() > 1 else WIDTH * 9
        bound = fan_in ** -0.5
        state[name] = (torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
