"""Applying a handle's LoRA list to its network for the duration of a call."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def clip_patched(clip):
    """The CLIP handle's encoder with its LoRAs applied (original weights restored on exit)."""
    with _patched(clip.encoder.models, clip.loras, "clip"):
        yield clip.encoder


@contextlib.contextmanager
def model_patched(model):
    """The MODEL handle's UNet with its LoRAs applied (original weights restored on exit)."""
    with _patched([model.unet], model.loras, "model"):
        yield model.unet


@contextlib.contextmanager
def _patched(modules, loras, part):
    if not loras:
        yield
        return
    raise NotImplementedError("LoRA patching is wired in by nodes/lora nodes")
