"""Standalone CLIP text-encoder files (ComfyUI's `text_encoders/`: clip_l.safetensors,
clip_g.safetensors, in the Hugging Face or OpenCLIP layout) as the text-encoder part of a
checkpoint, so `models.text_encoders.load_text_encoder` builds the encoder from them.

One CLIP-L is an SD1.5 encoder, one CLIP-G the SDXL refiner's, a CLIP-L and a CLIP-G (either order)
SDXL's. Which CLIP a file holds is read from its tensors, as ComfyUI does.
"""
from __future__ import annotations

from typing import Mapping

import torch

from models.clip_text import is_open_clip_layout
from models.text_encoders import (REFINER_CLIP_G_PREFIX, SD15_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX,
                                  SDXL_CLIP_L_PREFIX)

# checkpoint prefixes a text-encoder file may still carry (an extract of a full checkpoint)
_CHECKPOINT_PREFIXES = (SD15_CLIP_L_PREFIX, SDXL_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX, REFINER_CLIP_G_PREFIX,
                        "cond_stage_model.model.")
FAMILY_BY_KINDS = {("clip_l",): "sd15", ("clip_g",): "sdxl_refiner", ("clip_g", "clip_l"): "sdxl"}


def bare_clip_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's tensors without any checkpoint prefix."""
    for prefix in _CHECKPOINT_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return dict(state)


def clip_kind(state: Mapping[str, torch.Tensor]) -> str:
    """"clip_l" or "clip_g". Real files: width 768 is CLIP-L, 1280 CLIP-G (ComfyUI tells them by
    layer count, the same split); OpenCLIP's layout is only used for CLIP-G. Other widths (tiny
    test models) by the projection: SD's CLIP-L is used without one, CLIP-G always with one."""
    if is_open_clip_layout(state):
        return "clip_g"
    embedding = next((value for key, value in state.items() if key.endswith("token_embedding.weight")), None)
    if embedding is None:
        raise ValueError("not a CLIP text encoder: no token embedding")
    width = int(embedding.shape[1])
    if width in (768, 1280):
        return "clip_l" if width == 768 else "clip_g"
    return "clip_g" if any(key.endswith("text_projection.weight") for key in state) else "clip_l"


def text_encoder_checkpoint(states: list[Mapping[str, torch.Tensor]]) -> tuple[str, dict[str, torch.Tensor]]:
    """(family, checkpoint-layout text-encoder state) for one or two text-encoder files."""
    by_kind: dict[str, dict[str, torch.Tensor]] = {}
    for state in states:
        bare = bare_clip_state(state)
        kind = clip_kind(bare)
        if kind in by_kind:
            raise ValueError(f"two {kind} files: SDXL needs one CLIP-L and one CLIP-G")
        by_kind[kind] = bare
    family = FAMILY_BY_KINDS.get(tuple(sorted(by_kind)))
    if family is None:
        raise ValueError("unsupported text-encoder combination")
    prefixes = {"sd15": {"clip_l": SD15_CLIP_L_PREFIX}, "sdxl_refiner": {"clip_g": REFINER_CLIP_G_PREFIX},
                "sdxl": {"clip_l": SDXL_CLIP_L_PREFIX, "clip_g": SDXL_CLIP_G_PREFIX}}[family]
    checkpoint = {prefixes[kind] + key: value for kind, state in by_kind.items() for key, value in state.items()}
    return family, checkpoint
