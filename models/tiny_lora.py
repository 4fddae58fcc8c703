"""Tiny random LoRA files that fit a tiny checkpoint, in the formats real LoRA files use.

For tests (compared with diffusers' own LoRA loader) and the offline demo. Formats:
- "kohya": `lora_unet_<diffusers module path, '.' -> '_'>` (as kohya's SD1.5 trainer names
  them), text encoders `lora_te_` (SD1.5) or `lora_te1_` / `lora_te2_` (SDXL), tensors
  `.lora_down.weight`, `.lora_up.weight`, `.alpha`;
- "kohya_ldm": the same but UNet modules under their LDM/SGM names (kohya's SDXL trainer);
- "peft": diffusers' PEFT layout, `unet.<diffusers path>.lora_A.weight` / `.lora_B.weight`,
  `text_encoder.` / `text_encoder_2.`; no alpha (scale 1).
Targets: the attention blocks' linear layers (q, k, v, out, feed-forward, proj_in/out) and the
text encoders' attention and MLP layers; `convs=True` adds LoCon convolutions (res-block convs,
time projections, shortcuts, down/upsamplers: down k x k, up 1 x 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file

from models.checkpoint import read_state_dict, split_checkpoint
from models.clip_text import normalize_hf_keys, open_clip_to_hf
from models.detection import SD15, detect_checkpoint
from models.lora_keys import unet_diffusers_module_names
from models.unet import UNetConfig

FORMATS = ("kohya", "kohya_ldm", "peft")
_ATTENTION_LEAVES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                     "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_CONV_LEAVES = ("in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection", "op", "conv")
_CLIP_LEAVES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


@dataclass(frozen=True)
class ModelLayout:
    """What a LoRA writer needs to know of a checkpoint: weight shapes in our layouts."""

    family: str
    unet_config: UNetConfig
    unet: dict[str, tuple[int, ...]]
    clip_l: dict[str, tuple[int, ...]]
    clip_g: dict[str, tuple[int, ...]]


def model_layout(checkpoint) -> ModelLayout:
    """`checkpoint`: a single-file state dict, a models.tiny.TinyCheckpointSpec or a file path."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_state_dict(checkpoint)
    elif not isinstance(checkpoint, Mapping):
        from models.tiny import tiny_checkpoint_state_dict  # lazy: models.tiny calls this module for its demo

        checkpoint = tiny_checkpoint_state_dict(checkpoint, seed=0)
    parts = split_checkpoint(checkpoint)
    info = detect_checkpoint(parts, "checkpoint")

    def shapes(state):
        return {key: tuple(value.shape) for key, value in state.items()}

    return ModelLayout(info.family, info.unet, shapes(parts.unet), shapes(normalize_hf_keys(parts.clip_l)),
                       shapes(open_clip_to_hf(parts.clip_g)) if parts.clip_g else {})


def tiny_lora_state_dict(checkpoint, seed: int = 0, *, format: str = "kohya", rank: int = 4, alpha: float = 2.0,
                         text_encoders: bool = True, convs: bool = False) -> dict[str, torch.Tensor]:
    """Random LoRA tensors for `checkpoint` (see model_layout). Each update is about a tenth of
    the weight it patches, so its effect is visible but mild."""
    if format not in FORMATS:
        raise ValueError(f"unknown LoRA format {format!r}; expected one of {FORMATS}")
    layout = checkpoint if isinstance(checkpoint, ModelLayout) else model_layout(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    unet_paths = [key[: -len(".weight")] for key in layout.unet if key.endswith(".weight")
                  and _is_unet_target(key[: -len(".weight")], len(layout.unet[key]), convs)]
    diffusers = unet_diffusers_module_names(unet_paths, layout.unet_config)
    for path in unet_paths:
        shape = layout.unet[path + ".weight"]
        if format == "peft":
            name = f"unet.{diffusers[path]}"
        else:
            name = "lora_unet_" + (path if format == "kohya_ldm" else diffusers[path]).replace(".", "_")
        out.update(_pair(name, shape, rank, alpha, format, generator))
    if text_encoders:
        for part, shapes in (("clip_l", layout.clip_l), ("clip_g", layout.clip_g)):
            for key, shape in shapes.items():
                path = key[: -len(".weight")]
                if not key.endswith(".weight") or not path.endswith(_CLIP_LEAVES):
                    continue
                if format == "peft":
                    name = ("text_encoder." if part == "clip_l" else "text_encoder_2.") + path
                else:
                    prefix = "lora_te_" if layout.family == SD15 else ("lora_te1_" if part == "clip_l" else "lora_te2_")
                    name = prefix + path.replace(".", "_")
                out.update(_pair(name, shape, rank, alpha, format, generator))
    return out


def write_tiny_lora(path: str | os.PathLike, checkpoint, seed: int = 0, **options) -> Path:
    """Write tiny_lora_state_dict(checkpoint, seed, **options) as a .safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in tiny_lora_state_dict(checkpoint, seed, **options).items()}
    save_file(state, str(path), metadata={"format": "pt", "tiny_lora_format": options.get("format", "kohya")})
    return path


def write_tiny_sdxl_lora(path: str | os.PathLike, checkpoint=None, seed: int = 0, **options) -> Path:
    """A kohya-format LoRA for a tiny SDXL checkpoint (state dict, spec or path; default: the
    default tiny SDXL spec), UNet and both text encoders."""
    if checkpoint is None:
        from models.tiny import tiny_sdxl_spec

        checkpoint = tiny_sdxl_spec()
    return write_tiny_lora(path, checkpoint, seed, **options)


def write_tiny_sd15_lora(path: str | os.PathLike, checkpoint=None, seed: int = 0, **options) -> Path:
    if checkpoint is None:
        from models.tiny import tiny_sd15_spec

        checkpoint = tiny_sd15_spec()
    return write_tiny_lora(path, checkpoint, seed, **options)


def _is_unet_target(path: str, ndim: int, convs: bool) -> bool:
    if ".transformer_blocks." in path and path.endswith(_ATTENTION_LEAVES):
        return True
    if path.endswith((".proj_in", ".proj_out")):
        return True
    blocks = path.startswith(("input_blocks.", "middle_block.", "output_blocks.")) and not path.startswith(
        "input_blocks.0.")
    return convs and blocks and ndim >= 2 and any(path.endswith("." + leaf) for leaf in _CONV_LEAVES)


def _pair(name: str, shape: tuple[int, ...], rank: int, alpha: float, format: str,
          generator: torch.Generator) -> dict[str, torch.Tensor]:
    out_dim, in_dim, kernel = shape[0], shape[1], tuple(shape[2:])
    fan_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
    down = torch.randn((rank, in_dim, *kernel), generator=generator) / fan_in ** 0.5
    up = torch.randn((out_dim, rank, *((1, 1) if kernel else ())), generator=generator) * (0.1 / rank ** 0.5)
    scale = alpha / rank if format != "peft" else 1.0
    up = up / scale  # keeps the merged update's size independent of alpha
    if format == "peft":
        return {f"{name}.lora_A.weight": down, f"{name}.lora_B.weight": up}
    return {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
            f"{name}.alpha": torch.tensor(float(alpha))}
