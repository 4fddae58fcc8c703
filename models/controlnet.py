"""ControlNet: the UNet's input half and middle block, a hint encoder and zero convolutions.

Attribute names equal the single-file (LDM `control_model.`) checkpoint keys, so a file loads
with a strict `load_state_dict`. forward returns one residual per UNet input block (shallowest
first) plus one for the middle block; the UNet adds them to its skips and middle output.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch
from torch import nn

from models.checkpoint import CheckpointError
from models.embeddings import timestep_embedding
from models.unet import UNetConfig
from models.unet_blocks import Downsample, ResBlock, SpatialTransformer, UNetStage

# (out channels, stride) of the hint encoder's convolutions before the last one, which maps to
# model_channels; SiLU between all of them (indices 0, 2, ..., 14 in the checkpoint).
HINT_LAYERS = ((16, 1), (16, 1), (32, 2), (32, 1), (96, 2), (96, 1), (256, 2))


@dataclass(frozen=True)
class ControlNetConfig:
    unet: UNetConfig  # the input half and middle of this UNet (output-side fields are unused)
    hint_channels: int = 3


class ControlNet(nn.Module):
    """forward(x, hint, timesteps, context, y=None) -> (input residuals, middle residual).

    hint: (B, hint_channels, 8h, 8w) in 0..1 for latents x of (B, C, h, w)."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        cfg = config.unet
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if cfg.adm_in_channels is not None:
            self.label_emb = nn.Sequential(nn.Sequential(
                nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))

        hint, channels = [], config.hint_channels
        for out, stride in HINT_LAYERS:
            hint += [nn.Conv2d(channels, out, 3, padding=1, stride=stride), nn.SiLU()]
            channels = out
        hint.append(nn.Conv2d(channels, mc, 3, padding=1))
        self.input_hint_block = nn.Sequential(*hint)

        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        self.zero_convs = nn.ModuleList([self._zero_conv(mc)])
        channels, down_index, levels = mc, 0, len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks[level]):
                layers = [ResBlock(channels, ted, mc * mult)]
                channels = mc * mult
                layers += self._attention(channels, cfg.transformer_depth[down_index])
                down_index += 1
                self.input_blocks.append(UNetStage(layers))
                self.zero_convs.append(self._zero_conv(channels))
            if level != levels - 1:
                self.input_blocks.append(UNetStage([Downsample(channels)]))
                self.zero_convs.append(self._zero_conv(channels))
        self.middle_block = UNetStage([ResBlock(channels, ted, channels)]
                                      + self._attention(channels, cfg.transformer_depth_middle)
                                      + [ResBlock(channels, ted, channels)])
        self.middle_block_out = self._zero_conv(channels)

    @staticmethod
    def _zero_conv(channels: int) -> UNetStage:
        return UNetStage([nn.Conv2d(channels, channels, 1)])

    def _attention(self, channels: int, depth: int) -> list[nn.Module]:
        if depth == 0:
            return []
        heads, dim_head = self.config.unet.heads_for(channels)
        return [SpatialTransformer(channels, self.config.unet.context_dim, heads, dim_head, depth,
                                   self.config.unet.use_linear_in_transformer)]

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], config: ControlNetConfig) -> "ControlNet":
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        cfg = self.config.unet
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels).to(x.dtype))
        if cfg.adm_in_channels is not None:
            emb = emb + self.label_emb(y.to(x.dtype))
        context = context.to(x.dtype)
        guided_hint = self.input_hint_block(hint.to(x.dtype))
        outs, h = [], x
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + guided_hint
            outs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        return outs, self.middle_block_out(h, emb, context)


_TRANSFORMER_KEY = re.compile(r"^((?:input_blocks\.\d+)|middle_block)\.\d+\.transformer_blocks\.(\d+)\.")


def detect_controlnet_config(sd: dict[str, torch.Tensor], name: str) -> ControlNetConfig:
    """ControlNetConfig from LDM ControlNet keys (no `control_model.` prefix)."""
    if "input_hint_block.0.weight" not in sd or "input_blocks.0.0.weight" not in sd:
        raise CheckpointError(f"{name}: not a ControlNet (no input_hint_block / input_blocks keys)")
    conv_in = sd["input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    depth_of: dict[str, int] = {}
    for key in sd:
        match = _TRANSFORMER_KEY.match(key)
        if match:
            depth_of[match[1]] = max(depth_of.get(match[1], 0), int(match[2]) + 1)
    num_res_blocks, channel_mult, transformer_depth = [0], [], []
    index = 1
    while True:
        prefix = f"input_blocks.{index}.0."
        if prefix + "op.weight" in sd:
            num_res_blocks.append(0)
        elif prefix + "in_layers.0.weight" in sd:
            if num_res_blocks[-1] == 0:
                channel_mult.append(sd[prefix + "out_layers.3.weight"].shape[0] // model_channels)
            num_res_blocks[-1] += 1
            transformer_depth.append(depth_of.get(f"input_blocks.{index}", 0))
        else:
            break
        index += 1
    if 0 in num_res_blocks:
        raise CheckpointError(f"{name}: ControlNet block layout not recognised (res blocks per level {num_res_blocks})")
    context_keys = [key for key in sd if key.endswith("attn2.to_k.weight")]
    if not context_keys:
        raise CheckpointError(f"{name}: ControlNet without cross-attention is not supported")
    use_linear = any(sd[key].ndim == 2 for key in sd if key.endswith("proj_in.weight"))
    adm = sd["label_emb.0.0.weight"].shape[1] if "label_emb.0.0.weight" in sd else None
    heads = dict(num_heads=None, num_head_channels=64) if adm is not None else dict(num_heads=8, num_head_channels=None)
    levels = len(channel_mult)
    unet = UNetConfig(in_channels=in_channels, model_channels=model_channels, channel_mult=tuple(channel_mult),
                      num_res_blocks=tuple(num_res_blocks), transformer_depth=tuple(transformer_depth),
                      transformer_depth_middle=depth_of.get("middle_block", 0),
                      transformer_depth_output=(0,) * (sum(num_res_blocks) + levels),
                      context_dim=sd[context_keys[0]].shape[1], adm_in_channels=adm,
                      use_linear_in_transformer=use_linear, **heads)
    return ControlNetConfig(unet, hint_channels=sd["input_hint_block.0.weight"].shape[1])


def controlnet_config_for_unet(unet: UNetConfig, hint_channels: int = 3) -> ControlNetConfig:
    """The ControlNet shaped like a base UNet's input half (Control-LoRA builds one from the base)."""
    return ControlNetConfig(replace(unet, in_channels=4 if unet.in_channels == 9 else unet.in_channels),
                            hint_channels=hint_channels)


def resize_hint(hint: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """A (B, C, H, W) hint to (B, C, height, width): centre crop to the target aspect ratio, then
    nearest-exact resize (ComfyUI's common_upscale with "center", as Fooocus applies hints)."""
    old_h, old_w = hint.shape[-2:]
    if (old_h, old_w) == (height, width):
        return hint
    old_aspect, new_aspect = old_w / old_h, width / height
    if old_aspect > new_aspect:
        crop = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        hint = hint[..., :, crop:old_w - crop]
    elif old_aspect < new_aspect:
        crop = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        hint = hint[..., crop:old_h - crop, :]
    return torch.nn.functional.interpolate(hint, size=(height, width), mode="nearest-exact")


def softness_scales(count: int, softness: float) -> list[float]:
    """Fooocus's controlnet_softness: residual i of `count` (0 = shallowest input block, last =
    middle) is scaled by 1 - softness * (1 - i / (count - 1)); SDXL has 10 (i / 9)."""
    if count < 2:
        return [1.0] * count
    return [1.0 - softness * (1.0 - i / (count - 1)) for i in range(count)]


def scaled_residuals(inputs: list[torch.Tensor], middle: torch.Tensor, strength: float,
                     softness: float = 0.0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Residuals times strength and, per level, the softness scale."""
    scales = [s * strength for s in softness_scales(len(inputs) + 1, softness)]
    return [r * s for r, s in zip(inputs, scales[:-1])], middle * scales[-1]


def sum_residuals(first, second):
    """Two (inputs, middle) residual sets added (chained ControlNets); either may be None."""
    if first is None:
        return second
    if second is None:
        return first
    return [a + b for a, b in zip(first[0], second[0])], first[1] + second[1]
