"""diffusers-layout ControlNet files (`ControlNetModel.save_pretrained`'s
diffusion_pytorch_model.safetensors) renamed to the LDM keys our ControlNet loads.

The config is read from the diffusers keys, then every LDM module path of that ControlNet is
mapped to its diffusers name (the UNet part through the LoRA key map's block table, the
ControlNet's own layers here) and the file's tensors are taken under the LDM names.
"""
from __future__ import annotations

import re

import torch

from models.checkpoint import CheckpointError
from models.controlnet import HINT_LAYERS, ControlNet, ControlNetConfig
from models.lora_keys import unet_diffusers_module_names
from models.unet import UNetConfig

_MARKER = "controlnet_cond_embedding.conv_in.weight"


def is_diffusers_controlnet(state_dict: dict[str, torch.Tensor]) -> bool:
    return _MARKER in state_dict


def _count(sd, pattern: str) -> int:
    regex = re.compile(pattern)
    indices = {int(m[1]) for key in sd if (m := regex.match(key))}
    return max(indices) + 1 if indices else 0


def detect_diffusers_controlnet_config(sd: dict[str, torch.Tensor], name: str) -> ControlNetConfig:
    if "conv_in.weight" not in sd:
        raise CheckpointError(f"{name}: diffusers ControlNet without conv_in")
    model_channels, in_channels = sd["conv_in.weight"].shape[:2]
    levels = _count(sd, r"^down_blocks\.(\d+)\.")
    num_res_blocks, channel_mult, depth = [], [], []
    for level in range(levels):
        blocks = _count(sd, rf"^down_blocks\.{level}\.resnets\.(\d+)\.")
        num_res_blocks.append(blocks)
        channel_mult.append(sd[f"down_blocks.{level}.resnets.0.conv2.weight"].shape[0] // model_channels)
        depth += [_count(sd, rf"^down_blocks\.{level}\.attentions\.{i}\.transformer_blocks\.(\d+)\.")
                  for i in range(blocks)]
    context_keys = [key for key in sd if key.endswith("attn2.to_k.weight")]
    if not levels or 0 in num_res_blocks or not context_keys:
        raise CheckpointError(f"{name}: diffusers ControlNet layout not recognised")
    adm = sd["add_embedding.linear_1.weight"].shape[1] if "add_embedding.linear_1.weight" in sd else None
    heads = dict(num_heads=None, num_head_channels=64) if adm is not None else dict(num_heads=8, num_head_channels=None)
    unet = UNetConfig(in_channels=in_channels, model_channels=model_channels, channel_mult=tuple(channel_mult),
                      num_res_blocks=tuple(num_res_blocks), transformer_depth=tuple(depth),
                      transformer_depth_middle=_count(sd, r"^mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."),
                      transformer_depth_output=(0,) * (sum(num_res_blocks) + levels),
                      context_dim=sd[context_keys[0]].shape[1], adm_in_channels=adm,
                      use_linear_in_transformer=any(sd[k].ndim == 2 for k in sd if k.endswith("proj_in.weight")),
                      **heads)
    return ControlNetConfig(unet, hint_channels=sd[_MARKER].shape[1])


def _own_layer_names(config: ControlNetConfig, count_zero_convs: int) -> dict[str, str]:
    names = {"input_hint_block.0": "controlnet_cond_embedding.conv_in",
             f"input_hint_block.{2 * len(HINT_LAYERS)}": "controlnet_cond_embedding.conv_out",
             "middle_block_out.0": "controlnet_mid_block"}
    for j in range(len(HINT_LAYERS) - 1):
        names[f"input_hint_block.{2 * (j + 1)}"] = f"controlnet_cond_embedding.blocks.{j}"
    for n in range(count_zero_convs):
        names[f"zero_convs.{n}.0"] = f"controlnet_down_blocks.{n}"
    return names


def controlnet_diffusers_to_ldm(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The file's tensors under our LDM ControlNet keys (a missing tensor is a CheckpointError)."""
    config = detect_diffusers_controlnet_config(sd, name)
    with torch.device("meta"):
        keys = list(ControlNet(config).state_dict())
    paths = sorted({key.rsplit(".", 1)[0] for key in keys})
    names = unet_diffusers_module_names(paths, config.unet)
    names.update(_own_layer_names(config, sum(1 for p in paths if p.startswith("zero_convs."))))
    converted = {}
    for key in keys:
        path, leaf = key.rsplit(".", 1)
        source = f"{names.get(path, path)}.{leaf}"
        if source not in sd:
            raise CheckpointError(f"{name}: diffusers ControlNet lacks {source} (for {key})")
        tensor = sd[source]
        if path.endswith(("proj_in", "proj_out")) and not config.unet.use_linear_in_transformer and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        converted[key] = tensor
    return converted
