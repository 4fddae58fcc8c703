"""A tiny random-weight RRDBNet (ESRGAN) super-resolution model in the real files' layouts.

Fooocus' `fooocus_upscaler_s409985e5.bin` is a torch pickle of a plain state dict in the original
ESRGAN ("old arch") layout, float16, 23 RRDB blocks of 64 filters, growth 32, scale 4, with one
twist: the residual dense blocks are named `residual_block_1..3` where ESRGAN says `RDB1..3`
(Fooocus renames them back before building the network). Its size, 33 636 613 bytes, is what
torch.save gives for exactly that layout (torch 2.14 writes 906 bytes more, in zip entries older
versions lacked); the same network at scale 2 would be 88 kB smaller, with BasicSR key names 2 kB.

The tiny model keeps every key name and the file format, with small widths, so tests and the
offline demo run the real loading path in milliseconds. The same weights can be written in the
layouts spandrel reads natively (old ESRGAN `RDB`, and Real-ESRGAN/BasicSR `conv_first`/`body`),
which is the oracle for our Fooocus-key conversion.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from models.upscaler import FOOOCUS_UPSCALER_NAME

__all__ = ["FOOOCUS_UPSCALER_NAME", "LAYOUTS", "tiny_upscaler_state_dict", "write_tiny_fooocus_upscaler",
           "write_tiny_standard_upscaler"]
REAL_FILE_SCALE = 4  # two upsampling convs (model.3, model.6) in the real file
# ESRGAN readers (spandrel, Fooocus' chaiNNer copy) do not detect the growth width: always 32
GROWTH_CHANNELS = 32

LAYOUTS = ("fooocus", "esrgan", "realesrgan")


def tiny_upscaler_state_dict(seed: int = 0, *, layout: str = "fooocus", num_filters: int = 8, num_blocks: int = 1,
                             scale: int = REAL_FILE_SCALE,
                             dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Random RRDBNet weights; `layout` names them as Fooocus' file ("fooocus"), the original
    ESRGAN release ("esrgan", `model.1.sub.N.RDBr.convc.0`) or Real-ESRGAN/BasicSR
    ("realesrgan", `body.N.rdbr.convc`). The same seed gives the same values in every layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    upsamplings = int(math.log2(scale))
    if 2 ** upsamplings != scale:
        raise ValueError(f"scale must be a power of two, not {scale}")
    generator = torch.Generator().manual_seed(seed)
    growth = GROWTH_CHANNELS
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, in_channels: int, out_channels: int, gain: float = 1.0, bias: float = 0.0) -> None:
        fan_in = in_channels * 9
        weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * (gain / math.sqrt(fan_in))
        state[f"{name}.weight"] = weight.to(dtype)
        state[f"{name}.bias"] = (bias + 0.02 * torch.randn(out_channels, generator=generator)).to(dtype)

    conv(_name(layout, "first"), 3, num_filters)
    for block in range(num_blocks):
        for dense in range(1, 4):
            for index in range(1, 6):
                conv(_name(layout, "dense", block=block, dense=dense, index=index),
                     num_filters + (index - 1) * growth, growth if index < 5 else num_filters)
    conv(_name(layout, "trunk", num_blocks=num_blocks), num_filters, num_filters)
    for up in range(1, upsamplings + 1):
        conv(_name(layout, "up", up=up), num_filters, num_filters)
    conv(_name(layout, "hr", upsamplings=upsamplings), num_filters, num_filters)
    # small last-layer weights around a 0.5 bias keep the output inside 0..1 (not clamped flat)
    conv(_name(layout, "last", upsamplings=upsamplings), num_filters, 3, gain=0.25, bias=0.5)
    return state


def _name(layout: str, part: str, **at) -> str:
    if layout == "realesrgan":
        return {"first": "conv_first",
                "dense": "body.{block}.rdb{dense}.conv{index}",
                "trunk": "conv_body",
                "up": "conv_up{up}",
                "hr": "conv_hr",
                "last": "conv_last"}[part].format(**at)
    dense_name = "residual_block_" if layout == "fooocus" else "RDB"
    # the old arch is one nn.Sequential: conv, shortcut(trunk), [upsample, conv, act] per x2, conv, act, conv
    upsamplings = at.get("upsamplings", 0)
    return {"first": "model.0",
            "dense": "model.1.sub.{block}." + dense_name + "{dense}.conv{index}.0",
            "trunk": "model.1.sub.{num_blocks}",
            "up": "model.{conv_index}",
            "hr": f"model.{3 * upsamplings + 2}",
            "last": f"model.{3 * upsamplings + 4}"}[part].format(conv_index=3 * at.get("up", 0), **at)


def write_tiny_fooocus_upscaler(path: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny RRDBNet in exactly the real file's format: torch.save of a flat float16 state dict in
    Fooocus' key layout, scale 4."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_upscaler_state_dict(seed, layout="fooocus"), path)
    return path


def write_tiny_standard_upscaler(path: str | os.PathLike, seed: int = 0, layout: str = "realesrgan") -> Path:
    """The same weights as write_tiny_fooocus_upscaler(seed) in a layout spandrel reads as it is;
    Real-ESRGAN's release files wrap their weights in {"params_ema": ...}, and so does this."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_upscaler_state_dict(seed, layout=layout)
    torch.save({"params_ema": state} if layout == "realesrgan" else state, path)
    return path
