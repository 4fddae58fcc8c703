"""Tiny random-weight control files in the real formats, for tests and the offline demo.

- a full SD1.5 ControlNet in the single-file layout (`control_model.` keys), shaped like a
  tiny SD1.5 checkpoint's UNet;
- Control-LoRAs against a tiny SDXL checkpoint, written under Fooocus's two file names.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.control_lora import MARKER
from models.controlnet import ControlNet, ControlNetConfig, controlnet_config_for_unet
from models.detection import detect_unet_config
from models.tiny import _random_weights

PYRACANNY_FILE = "control-lora-canny-rank128.safetensors"
CPDS_FILE = "fooocus_xl_cpds_128.safetensors"
DEMO_SD15_CONTROLNET = "tiny-sd15-controlnet.safetensors"
DEMO_CONTROL_FILES = (DEMO_SD15_CONTROLNET, PYRACANNY_FILE, CPDS_FILE)
# weights a Control-LoRA stores whole: the ControlNet's own layers (no base counterpart)
OWN_PREFIXES = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def controlnet_shapes(config: ControlNetConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {key: value.shape for key, value in ControlNet(config).state_dict().items()}


def tiny_controlnet_state_dict(config: ControlNetConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (unprefixed LDM ControlNet keys); zero convs random too, so residuals show."""
    return _random_weights(controlnet_shapes(config), torch.Generator().manual_seed(seed))


def write_tiny_controlnet(path: str | os.PathLike, config: ControlNetConfig, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"control_model.{k}": v.contiguous() for k, v in tiny_controlnet_state_dict(config, seed).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def _checkpoint_unet(checkpoint: str | os.PathLike):
    prefix = "model.diffusion_model."
    state = {k[len(prefix):]: v for k, v in load_file(str(checkpoint)).items() if k.startswith(prefix)}
    _, config = detect_unet_config(state, Path(checkpoint).name)
    return state, config


def tiny_control_lora_state_dict(unet_config, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Control-LoRA for a base UNet of `unet_config`: up/down for every matrix or kernel of the
    base-shared layers, whole tensors for 1-d weights, biases and the ControlNet's own layers."""
    shapes = controlnet_shapes(controlnet_config_for_unet(unet_config))
    generator = torch.Generator().manual_seed(seed)
    state = {MARKER: torch.tensor([])}
    for key, shape in shapes.items():
        if len(shape) >= 2 and not key.startswith(OWN_PREFIXES):
            fan_in = int(torch.Size(shape[1:]).numel())
            r = min(rank, shape[0], fan_in)
            up_shape = (shape[0], r, 1, 1) if len(shape) == 4 else (shape[0], r)
            state[f"{key}.up"] = 0.1 * torch.randn(up_shape, generator=generator) / r ** 0.5
            state[f"{key}.down"] = torch.randn((r, *shape[1:]), generator=generator) / fan_in ** 0.5
    state.update({k: v for k, v in _random_weights(shapes, generator).items()
                  if len(shapes[k]) < 2 or k.startswith(OWN_PREFIXES)})
    return state


def write_tiny_control_lora(path: str | os.PathLike, checkpoint: str | os.PathLike, rank: int = 4,
                            seed: int = 0) -> Path:
    """A Control-LoRA matching the UNet of `checkpoint` (a tiny SDXL file)."""
    _, config = _checkpoint_unet(checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_control_lora_state_dict(config, rank, seed).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def write_demo_control_files(models_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """controlnet/: a tiny SD1.5 ControlNet for tiny-sd15 and the two Fooocus Control-LoRAs for
    tiny-sdxl (written after the demo checkpoints, whose shapes they follow)."""
    models_dir = Path(models_dir)
    folder = models_dir / "controlnet"
    _, sd15 = _checkpoint_unet(models_dir / "checkpoints/tiny-sd15.safetensors")
    sdxl = models_dir / "checkpoints/tiny-sdxl.safetensors"
    return {
        DEMO_SD15_CONTROLNET: write_tiny_controlnet(folder / DEMO_SD15_CONTROLNET, controlnet_config_for_unet(sd15),
                                                    seed=seed),
        PYRACANNY_FILE: write_tiny_control_lora(folder / PYRACANNY_FILE, sdxl, seed=seed + 1),
        CPDS_FILE: write_tiny_control_lora(folder / CPDS_FILE, sdxl, seed=seed + 2),
    }
