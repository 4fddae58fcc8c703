"""Reading checkpoint files and splitting single-file checkpoints into their networks.

Formats: `.safetensors`/`.sft` (memory-mapped, no copy) and the pickle formats
`.ckpt/.pt/.pth/.bin` (through torch's weights-only unpickler, memory-mapped when the file
uses the zip format). Architecture detection lives in models/detection.py.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field

import safetensors
import torch
from safetensors.torch import load_file

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pt2")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# (prefix in the checkpoint, part name, prefix the part's keys get)
_TEXT_ENCODER_PREFIXES = (
    ("cond_stage_model.transformer.text_model.", "clip_l", "text_model."),
    ("cond_stage_model.transformer.", "clip_l", "text_model."),  # old layout without text_model.
    ("conditioner.embedders.0.transformer.text_model.", "clip_l", "text_model."),
    ("cond_stage_model.model.", "open_clip_h", ""),  # SD2.x (detected, then refused)
)


class CheckpointError(Exception):
    """A model file that cannot be read or is not a supported architecture.

    The message always names the file so that users see which of their files is wrong.
    """


class _InertLightningObject:
    """Stand-in for training-time objects that old `.ckpt` files pickle next to the weights.

    SD1.x checkpoints made with PyTorch Lightning carry a `ModelCheckpoint` callback; the
    weights-only unpickler would refuse the whole file for it. Its state is kept as plain data
    and never executed.
    """

    def __setstate__(self, state):
        self.state = state


# Training-time classes known to appear in real SD `.ckpt` files; allowed as inert data only.
_KNOWN_HARMLESS_PICKLE_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a model file, keyed by their names in the file.

    safetensors tensors share the file's private (copy-on-write) memory map: reading costs no
    RAM beyond the pages touched. Pickle files are loaded with `weights_only=True`; a file that
    needs arbitrary code to unpickle is refused. Any failure raises CheckpointError naming the
    file.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{name}: no such model file ({path})")
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        return _read_safetensors(path, name)
    if path.lower().endswith(PICKLE_SUFFIXES):
        return _read_pickle(path, name)
    raise CheckpointError(
        f"{name}: unsupported model file type; expected one of "
        f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}"
    )


def _read_safetensors(path: str, name: str) -> dict[str, torch.Tensor]:
    _check_safetensors_header(path, name)
    try:
        # safetensors >= 0.6 maps the file privately (rw-p): tensors point into the mapping, and
        # in-place weight patches (LoRA) copy only the pages they touch.
        return load_file(path, device="cpu")
    except safetensors.SafetensorError as error:
        raise CheckpointError(f"{name}: corrupt safetensors file ({error})") from error


def _check_safetensors_header(path: str, name: str) -> None:
    """Refuse truncated files before mapping them: the header says how long the data must be."""
    size = os.path.getsize(path)
    if size < 8:
        raise CheckpointError(f"{name}: truncated safetensors file ({size} bytes)")
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if header_length > size - 8:
            raise CheckpointError(f"{name}: truncated or corrupt safetensors header")
        try:
            header = json.loads(handle.read(header_length))
        except ValueError as error:
            raise CheckpointError(f"{name}: corrupt safetensors header ({error})") from error
    data_end = max(
        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
        default=0,
    )
    if 8 + header_length + data_end > size:
        raise CheckpointError(
            f"{name}: truncated safetensors file: the header lists {8 + header_length + data_end} "
            f"bytes, the file has {size}"
        )


def _read_pickle(path: str, name: str) -> dict[str, torch.Tensor]:
    mmap = zipfile.is_zipfile(path)  # legacy (non-zip) torch.save files cannot be mapped
    harmless = [(_InertLightningObject, qualified) for qualified in _KNOWN_HARMLESS_PICKLE_GLOBALS]
    try:
        with torch.serialization.safe_globals(harmless):
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{name}: refused to load: the pickle needs code beyond plain tensors to unpickle "
            f"(convert it to .safetensors). Detail: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{name}: corrupt or truncated checkpoint ({error})") from error
    return _tensors_of(loaded, name)


def _tensors_of(loaded, name: str) -> dict[str, torch.Tensor]:
    # Lightning checkpoints nest the weights under "state_dict" (sometimes twice).
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{name}: the file holds a {type(loaded).__name__}, not a state dict")
    tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name}: the file holds no tensors")
    return tensors


@dataclass
class CheckpointParts:
    """A single-file checkpoint split by network, prefixes removed.

    unet: LDM/SGM UNet keys (`input_blocks.0.0.weight`, ...).
    vae: LDM VAE keys (`encoder.conv_in.weight`, ...).
    clip_l: Hugging Face CLIPTextModel keys with the `text_model.` prefix.
    clip_g: open_clip keys (`token_embedding.weight`, `transformer.resblocks.N...`).
    other: whatever else the file holds (prediction markers, schedule buffers, EMA copies).
    """

    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    vae: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_l: dict[str, torch.Tensor] = field(default_factory=dict)
    clip_g: dict[str, torch.Tensor] = field(default_factory=dict)
    open_clip_h: dict[str, torch.Tensor] = field(default_factory=dict)
    other: dict[str, torch.Tensor] = field(default_factory=dict)


def split_checkpoint(state_dict: dict[str, torch.Tensor]) -> CheckpointParts:
    """Split a single-file checkpoint (SD1.x, SDXL base, SDXL refiner) by key prefix.

    The CLIP-G embedder index depends on the family: SDXL base has CLIP-L at
    `conditioner.embedders.0` and CLIP-G at `.1`; the refiner has only CLIP-G at `.0`.
    """
    parts = CheckpointParts()
    for key, tensor in state_dict.items():
        if key.startswith(UNET_PREFIX):
            parts.unet[key[len(UNET_PREFIX):]] = tensor
        elif key.startswith(VAE_PREFIX):
            parts.vae[key[len(VAE_PREFIX):]] = tensor
        elif key.startswith("conditioner.embedders.") and ".model." in key:
            # open_clip embedder: `conditioner.embedders.<N>.model.<open_clip key>`
            parts.clip_g[key.split(".model.", 1)[1]] = tensor
        else:
            for prefix, part, new_prefix in _TEXT_ENCODER_PREFIXES:
                if key.startswith(prefix):
                    getattr(parts, part)[new_prefix + key[len(prefix):]] = tensor
                    break
            else:
                parts.other[key] = tensor
    return parts


def strip_common_prefix(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove the first of `prefixes` that every key starts with (standalone UNet/VAE files
    sometimes keep their checkpoint prefix)."""
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def is_diffusers_vae_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    return "encoder.conv_in.weight" in state_dict and any(
        key.startswith("encoder.down_blocks.") for key in state_dict
    )


def vae_diffusers_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers-layout AutoencoderKL state dict to the LDM layout our VAE uses.

    diffusers numbers decoder `up_blocks` from the lowest resolution; LDM numbers `up` from the
    highest, so the index is reversed. Attention projections are linear in diffusers and 1x1
    convolutions in LDM.
    """
    num_up = 1 + max(
        (int(key.split(".")[2]) for key in state_dict if key.startswith("decoder.up_blocks.")), default=-1
    )
    converted = {}
    for key, tensor in state_dict.items():
        new_key = _vae_key_to_ldm(key, num_up)
        if ".mid.attn_1." in new_key and new_key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
        converted[new_key] = tensor
    return converted


_VAE_ATTENTION_NAMES = {
    "group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
    "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out",
}


def _vae_key_to_ldm(key: str, num_up: int) -> str:
    side, rest = key.split(".", 1)
    if side not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    rest = rest.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
    if rest.startswith(("down_blocks.", "up_blocks.")):
        kind, index, rest = rest.split(".", 2)
        index = int(index)
        ldm_kind = "down" if kind == "down_blocks" else "up"
        if ldm_kind == "up":
            index = num_up - 1 - index
        rest = rest.replace("resnets.", "block.")
        rest = rest.replace("downsamplers.0.", "downsample.").replace("upsamplers.0.", "upsample.")
        return f"{side}.{ldm_kind}.{index}.{rest}"
    if rest.startswith("mid_block.resnets."):
        _, _, index, rest = rest.split(".", 3)
        return f"{side}.mid.block_{int(index) + 1}.{rest}"
    if rest.startswith("mid_block.attentions.0."):
        rest = rest[len("mid_block.attentions.0."):]
        name, leaf = rest.rsplit(".", 1)
        return f"{side}.mid.attn_1.{_VAE_ATTENTION_NAMES.get(name, name)}.{leaf}"
    return f"{side}.{rest}"
