"""From a model file to ready networks: read, split, detect, build (no copies of the weights).

Text encoders are returned as state dicts (their networks live in the text-encoder modules).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from models.checkpoint import (
    CheckpointError,
    CheckpointParts,
    is_diffusers_vae_layout,
    read_state_dict,
    split_checkpoint,
    strip_common_prefix,
    vae_diffusers_to_ldm,
)
from models.detection import CheckpointInfo, detect_checkpoint, detect_vae_config
from models.unet import UNetModel
from models.vae import AutoencoderKL

_TEXT_ENCODER_ROOTS = ("cond_stage_model.", "conditioner.embedders.")
_VAE_ROOTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


@dataclass
class LoadedCheckpoint:
    info: CheckpointInfo
    unet: UNetModel
    vae: AutoencoderKL | None  # None when the file has no VAE (a bare UNet file)
    # the file's text-encoder entries under their original prefixed names, as
    # models.text_encoders.load_text_encoder expects them; empty for a bare UNet file
    text_encoder_state: dict[str, torch.Tensor]


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """A single-file SD1.5 / SDXL / SDXL-refiner checkpoint, or a bare UNet file (LDM keys,
    with or without `model.diffusion_model.`). Weights stay in the file's dtype on the CPU;
    the model manager casts and moves them."""
    name = os.path.basename(os.fspath(path))
    state_dict = read_state_dict(path)
    parts = split_checkpoint(state_dict)
    if not parts.unet and "input_blocks.0.0.weight" in parts.other:
        parts = CheckpointParts(unet=_take(parts.other, ("input_blocks.", "middle_block.", "output_blocks.",
                                                         "time_embed.", "label_emb.", "out.")),
                                other=parts.other)
    info = detect_checkpoint(parts, name)
    unet = _build(UNetModel, parts.unet, info.unet, name)
    vae = None
    if parts.vae:
        vae_state = _vae_keys(parts.vae)
        vae = _build(AutoencoderKL, vae_state, detect_vae_config(vae_state, name), name)
    text_encoder_state = {key: value for key, value in state_dict.items() if key.startswith(_TEXT_ENCODER_ROOTS)}
    return LoadedCheckpoint(info=info, unet=unet, vae=vae, text_encoder_state=text_encoder_state)


def load_vae(path: str | os.PathLike) -> AutoencoderKL:
    """A standalone VAE file (LDM layout, e.g. sdxl_vae.safetensors, or diffusers layout), or the
    VAE inside a full checkpoint."""
    name = os.path.basename(os.fspath(path))
    state_dict = read_state_dict(path)
    if any(key.startswith("first_stage_model.") for key in state_dict):
        state_dict = split_checkpoint(state_dict).vae
    state_dict = strip_common_prefix(state_dict, ("vae.",))
    if is_diffusers_vae_layout(state_dict):
        state_dict = vae_diffusers_to_ldm(state_dict)
    state_dict = _vae_keys(state_dict)
    return _build(AutoencoderKL, state_dict, detect_vae_config(state_dict, name), name)


def _vae_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # .ckpt VAEs may carry training leftovers (loss.*, model_ema.*): keep the network's keys only.
    return {key: value for key, value in state_dict.items() if key.startswith(_VAE_ROOTS)}


def _take(state: dict[str, torch.Tensor], roots: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {key: state.pop(key) for key in list(state) if key.startswith(roots)}


def _build(network_class, state_dict, config, name: str):
    try:
        return network_class.from_state_dict(state_dict, config)
    except RuntimeError as error:  # strict load: missing/unexpected keys or wrong shapes
        raise CheckpointError(f"{name}: weights do not match the detected {network_class.__name__} "
                              f"configuration: {str(error)[:600]}") from error
