"""Stability's Control-LoRA: a ControlNet stored as low-rank deltas on the base UNet's weights.

Format (the files Fooocus ships: control-lora-canny-rank128, fooocus_xl_cpds_128): a marker key
`lora_controlnet`; for a weight `W` of the ControlNet either `<W>.up` (out, rank[, 1, 1]) and
`<W>.down` (rank, in[, kh, kw]), meaning W = W_base + up.flatten(1) @ down.flatten(1) reshaped
to W's shape, with W_base the base UNet's tensor under the same key; or the full tensor `<W>`
itself (hint block, zero convs, norms, biases). Every other ControlNet weight is the base UNet's.
"""
from __future__ import annotations

import torch

from models.checkpoint import CheckpointError
from models.controlnet import ControlNet, controlnet_config_for_unet
from models.unet import UNetConfig

MARKER = "lora_controlnet"


def is_control_lora(state_dict: dict[str, torch.Tensor]) -> bool:
    return MARKER in state_dict


def low_rank_delta(up: torch.Tensor, down: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return (up.flatten(1).float() @ down.flatten(1).float()).reshape(shape)


def control_lora_state_dict(lora: dict[str, torch.Tensor], base_unet: dict[str, torch.Tensor],
                            shapes: dict[str, torch.Size], name: str) -> dict[str, torch.Tensor]:
    """The ControlNet's full state dict (keys and shapes `shapes`) from a Control-LoRA and the base UNet's."""
    state = {}
    for key, shape in shapes.items():
        if key in lora:
            state[key] = lora[key].float()
        elif f"{key}.up" in lora:
            if key not in base_unet:
                raise CheckpointError(f"{name}: low-rank weight {key} has no base UNet weight")
            up, down = lora[f"{key}.up"], lora[f"{key}.down"]
            if (up.shape[0], *down.shape[1:]) != tuple(shape) or base_unet[key].shape != shape:
                raise CheckpointError(f"{name}: low-rank weight {key} does not fit the base model's ControlNet "
                                      f"(needs {tuple(shape)}; a Control-LoRA for another base model?)")
            state[key] = base_unet[key].float() + low_rank_delta(up, down, shape)
        elif key in base_unet and base_unet[key].shape == shape:
            state[key] = base_unet[key].float()
        else:
            raise CheckpointError(f"{name}: Control-LoRA weight {key} is missing and the base UNet has none "
                                  "of that shape (a Control-LoRA for another base model?)")
        if state[key].shape != shape:
            raise CheckpointError(f"{name}: {key} has shape {tuple(state[key].shape)}, the base model's "
                                  f"ControlNet needs {tuple(shape)} (a Control-LoRA for another base model?)")
    known = set(shapes) | {f"{k}.up" for k in shapes} | {f"{k}.down" for k in shapes} | {MARKER}
    unknown = sorted(set(lora) - known)
    if unknown:
        raise CheckpointError(f"{name}: Control-LoRA keys fit no ControlNet weight of this base model "
                              f"(e.g. {', '.join(unknown[:3])})")
    return state


def build_control_lora(lora: dict[str, torch.Tensor], base_unet: dict[str, torch.Tensor], unet_config: UNetConfig,
                       name: str) -> ControlNet:
    """The ControlNet a Control-LoRA defines on top of a base UNet (its state dict, LDM keys)."""
    hint = lora.get("input_hint_block.0.weight")
    if hint is None:
        raise CheckpointError(f"{name}: Control-LoRA without input_hint_block weights")
    config = controlnet_config_for_unet(unet_config, hint_channels=hint.shape[1])
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in ControlNet(config).state_dict().items()}
    return ControlNet.from_state_dict(control_lora_state_dict(lora, base_unet, shapes, name), config)
