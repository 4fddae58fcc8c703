"""Networks ready to run: on the compute device, with the handle's LoRAs applied.

LoRA weights are patched in place and kept while the same LoRA set is asked for again (the
patcher remembers what it applied); a different set (or none) first restores the originals.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from .runtime import placement, use


@contextlib.contextmanager
def running_unet(model) -> Iterator[tuple]:
    """(unet, device, dtype) for a MODEL handle."""
    with use(model.network) as (unet,):
        apply_loras({"unet": unet}, model.loras)
        device, dtype = placement(model.network)
        yield unet, device, dtype


@contextlib.contextmanager
def running_encoder(clip) -> Iterator[tuple]:
    """(prompt encoder, device, dtype) for a CLIP handle."""
    with use(*clip.networks) as modules:
        apply_loras(dict(zip(_clip_part_names(clip), modules)), clip.loras)
        device, dtype = placement(clip.networks[0])
        yield clip.encoder, device, dtype


@contextlib.contextmanager
def running_vae(vae) -> Iterator[tuple]:
    with use(vae.network) as (module,):
        device, dtype = placement(vae.network)
        yield module, device, dtype


def _clip_part_names(clip) -> list[str]:
    encoder = clip.encoder
    names = []
    for module in encoder.models:
        if getattr(encoder, "clip_l", None) is module:
            names.append("clip_l")
        else:
            names.append("clip_g")
    return names


def apply_loras(parts: dict, loras: tuple) -> None:
    if loras:
        raise NotImplementedError("LoRA patching is wired in with models.lora_patch")
