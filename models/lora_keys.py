"""Which model weight a LoRA tensor belongs to: the "LoRA prefix -> model key" map.

LoRA files name their target modules in several dialects, none of them ours:
- kohya / A1111: `lora_unet_<diffusers module path, '.' -> '_'>` (SD1.x is trained on the
  diffusers UNet), `lora_unet_<LDM module path, '.' -> '_'>` (kohya trains SDXL on the SGM UNet),
  text encoders `lora_te_` (SD1.x), `lora_te1_` / `lora_te2_` (SDXL CLIP-L / CLIP-G);
- diffusers / PEFT: `unet.<diffusers path>` (also bare, and the old attention-processor spelling
  `attn1.processor.to_q`, `...processor.to_out`), `text_encoder.` / `text_encoder_2.`;
- generic: `diffusion_model.<LDM path>`, `lycoris_<diffusers path with _>`,
  `text_encoders.clip_l.transformer.<HF path>`, whole-checkpoint prefixes, and CLIP-G's OpenCLIP
  names (`...transformer.resblocks.N.attn.in_proj` targets q, k and v as row slices).

The map is generated from the model's own keys, so it only lists weights that exist. Our UNet
uses LDM names; the diffusers names are computed from its UNetConfig (block layout), never
from a table of a fixed model size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from models.unet import UNetConfig

UNET = "unet"
CLIP_L = "clip_l"
CLIP_G = "clip_g"

_RESBLOCK_NAMES = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}
_TOP_LEVEL_NAMES = {
    "time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
}
# diffusers' old attention-processor LoRA names (`to_q_lora`, `to_out_lora`) next to ours
_PROCESSOR_NAMES = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out.0": "to_out"}
_CLIP_PROCESSOR_NAMES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "out_proj": "to_out"}
# OpenCLIP block names -> our Hugging Face names (CLIP-G inside SGM checkpoints)
_OPEN_CLIP_BLOCK_NAMES = {"attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


@dataclass(frozen=True)
class LoraTarget:
    """One model weight a LoRA module patches.

    part: which network ("unet", "clip_l", "clip_g"); key: the weight's state-dict key in that
    network (always a `.weight`; `.diff_b` patches go to the sibling `.bias`); shape: the
    weight's shape; rows: (start, length, total) when the LoRA module patches a fused weight of
    `total` rows of which ours is the slice [start, start + length) (OpenCLIP's q/k/v
    `in_proj`), else None; has_bias: the module has a `.bias`.
    """

    part: str
    key: str
    shape: tuple[int, ...]
    rows: tuple[int, int, int] | None = None
    has_bias: bool = False

    @property
    def lora_shape(self) -> tuple[int, ...]:
        """Shape of the update the LoRA module computes (the fused weight's, for a slice)."""
        if self.rows is None:
            return self.shape
        return (self.rows[2],) + self.shape[1:]


LoraKeyMap = dict[str, tuple[LoraTarget, ...]]


# ---------------------------------------------------------------------------------------------
# UNet: LDM names -> diffusers names


def unet_diffusers_module_names(module_paths: Iterable[str], config: UNetConfig) -> dict[str, str]:
    """LDM module path (a state-dict key without `.weight`/`.bias`) -> the diffusers
    UNet2DConditionModel path of the same module. Paths with no diffusers counterpart are left out."""
    blocks = _block_prefix_map(config)
    names = {}
    for path in module_paths:
        converted = _to_diffusers(path, blocks)
        if converted is not None:
            names[path] = converted
    return names


def _block_prefix_map(config: UNetConfig) -> dict[str, tuple[str, str]]:
    """`input_blocks.N.M` / `middle_block.M` / `output_blocks.N.M` -> (diffusers prefix, kind),
    kind "res" (ResBlock inner names are renamed), "attn" (same inner names) or "sample"
    (down/upsampler: LDM `op`/`conv` -> diffusers `conv`)."""
    levels = len(config.channel_mult)
    prefixes = {}
    block = 1
    for level in range(levels):
        for i in range(config.num_res_blocks[level]):
            prefixes[f"input_blocks.{block}.0"] = (f"down_blocks.{level}.resnets.{i}", "res")
            prefixes[f"input_blocks.{block}.1"] = (f"down_blocks.{level}.attentions.{i}", "attn")
            block += 1
        if level != levels - 1:
            prefixes[f"input_blocks.{block}.0"] = (f"down_blocks.{level}.downsamplers.0", "sample")
            block += 1
    middle = ["mid_block.resnets.0"]
    if config.transformer_depth_middle:
        middle.append("mid_block.attentions.0")
    middle.append("mid_block.resnets.1")
    for index, prefix in enumerate(middle):
        prefixes[f"middle_block.{index}"] = (prefix, "attn" if "attentions" in prefix else "res")
    block = 0
    for up_level, level in enumerate(reversed(range(levels))):
        for i in range(config.num_res_blocks[level] + 1):
            has_attention = config.transformer_depth_output[block] > 0
            prefixes[f"output_blocks.{block}.0"] = (f"up_blocks.{up_level}.resnets.{i}", "res")
            if has_attention:
                prefixes[f"output_blocks.{block}.1"] = (f"up_blocks.{up_level}.attentions.{i}", "attn")
            if level and i == config.num_res_blocks[level]:
                position = 2 if has_attention else 1
                prefixes[f"output_blocks.{block}.{position}"] = (f"up_blocks.{up_level}.upsamplers.0", "sample")
            block += 1
    return prefixes


def _to_diffusers(path: str, blocks: dict[str, tuple[str, str]]) -> str | None:
    if path in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[path]
    parts = path.split(".")
    depth = 2 if parts[0] == "middle_block" else 3
    head, rest = ".".join(parts[:depth]), ".".join(parts[depth:])
    if head not in blocks or not rest:
        return None
    prefix, kind = blocks[head]
    if kind == "res":
        rest = _RESBLOCK_NAMES.get(rest)
        if rest is None:
            return None
    elif kind == "sample":
        if rest not in ("op", "conv"):
            return None
        rest = "conv"
    return f"{prefix}.{rest}"


# ---------------------------------------------------------------------------------------------
# Key maps


def unet_lora_key_map(shapes: Mapping[str, tuple[int, ...]], config: UNetConfig, part: str = UNET) -> LoraKeyMap:
    """Every LoRA prefix that may name a weight of this UNet. `shapes`: our state-dict key ->
    shape (`{k: tuple(v.shape) for k, v in unet.state_dict().items()}`)."""
    weights = {key[: -len(".weight")]: tuple(shape) for key, shape in shapes.items() if key.endswith(".weight")}
    diffusers = unet_diffusers_module_names(weights, config)
    key_map: LoraKeyMap = {}
    for path, shape in weights.items():
        target = (LoraTarget(part, path + ".weight", shape, has_bias=path + ".bias" in shapes),)
        names = [f"lora_unet_{_underscored(path)}", f"diffusion_model.{path}", f"model.diffusion_model.{path}"]
        converted = diffusers.get(path)
        if converted is not None:
            names += [f"lora_unet_{_underscored(converted)}", f"lycoris_{_underscored(converted)}",
                      f"unet.{converted}", converted]
            for leaf, processor_leaf in _PROCESSOR_NAMES.items():
                if converted.endswith("." + leaf) and ".attn" in converted:
                    attention = converted[: -len(leaf) - 1]
                    names += [f"unet.{attention}.processor.{processor_leaf}", f"{attention}.processor.{processor_leaf}"]
        for name in names:
            key_map[name] = target
    return key_map


def clip_lora_key_map(shapes: Mapping[str, tuple[int, ...]], part: str, kohya_prefixes: tuple[str, ...],
                      diffusers_prefix: str, checkpoint_prefix: str | None = None,
                      open_clip_prefix: str | None = None) -> LoraKeyMap:
    """LoRA prefixes for one CLIP text encoder in our Hugging Face layout.

    kohya_prefixes: e.g. ("lora_te1_",); diffusers_prefix: "text_encoder." or "text_encoder_2.";
    checkpoint_prefix: where the HF-layout weights sit in a single-file checkpoint (CLIP-L);
    open_clip_prefix: where OpenCLIP-layout weights sit in a single-file checkpoint (CLIP-G).
    """
    key_map: LoraKeyMap = {}
    for key, shape in shapes.items():
        if not key.endswith(".weight"):
            continue
        path = key[: -len(".weight")]
        target = (LoraTarget(part, key, tuple(shape), has_bias=path + ".bias" in shapes),)
        names = [prefix + _underscored(path) for prefix in kohya_prefixes]
        names += [diffusers_prefix + path, f"text_encoders.{part}.transformer.{path}"]
        if path.startswith("text_model."):  # saved from transformers 5, whose CLIPTextModel lacks it
            names.append(diffusers_prefix + path[len("text_model."):])
        if checkpoint_prefix is not None:
            names.append(checkpoint_prefix + path)
        leaf = path.rsplit(".", 1)[-1]
        if ".self_attn." in path and leaf in _CLIP_PROCESSOR_NAMES:
            names.append(f"{diffusers_prefix}{path.rsplit('.', 1)[0]}.{_CLIP_PROCESSOR_NAMES[leaf]}")
        for name in names:
            key_map[name] = target
    if open_clip_prefix is not None:
        key_map.update(_open_clip_names(shapes, part, open_clip_prefix))
    return key_map


def _open_clip_names(shapes: Mapping[str, tuple[int, ...]], part: str, prefix: str) -> LoraKeyMap:
    key_map: LoraKeyMap = {}
    layers = sorted({int(key.split(".")[3]) for key in shapes if key.startswith("text_model.encoder.layers.")})
    for index in layers:
        ours = f"text_model.encoder.layers.{index}."
        theirs = f"{prefix}transformer.resblocks.{index}."
        for open_clip, hf in _OPEN_CLIP_BLOCK_NAMES.items():
            key = ours + hf + ".weight"
            if key in shapes:
                key_map[theirs + open_clip] = (LoraTarget(part, key, tuple(shapes[key]), has_bias=True),)
        qkv = [ours + f"self_attn.{name}.weight" for name in ("q_proj", "k_proj", "v_proj")]
        if all(key in shapes for key in qkv):
            # The fused in_proj stacks q, k, v rows; each of our weights takes its slice of the update.
            width = shapes[qkv[0]][0]
            key_map[theirs + "attn.in_proj"] = tuple(
                LoraTarget(part, key, tuple(shapes[key]), rows=(i * width, width, 3 * width), has_bias=True)
                for i, key in enumerate(qkv))
    return key_map


def _underscored(path: str) -> str:
    return path.replace(".", "_")


# ---------------------------------------------------------------------------------------------
# Whole checkpoints


def checkpoint_lora_key_map(family: str, unet=None, clip_l=None, clip_g=None,
                            unet_config: UNetConfig | None = None) -> LoraKeyMap:
    """The key map of a whole checkpoint: `unet`, `clip_l`, `clip_g` are modules (or state dicts
    / key->shape maps) in our layouts, any of them None when absent. `family`: models.detection's
    "sd15" | "sdxl" | "sdxl_refiner" (decides the text-encoder dialects). The UNet's config is read
    from `unet.config` unless given. Targets' `part` is "unet", "clip_l" or "clip_g"."""
    key_map: LoraKeyMap = {}
    if unet is not None:
        config = unet_config or unet.config
        key_map.update(unet_lora_key_map(_shapes(unet), config))
    if clip_l is not None:
        if family == "sd15":
            kohya, checkpoint = ("lora_te_", "lora_te1_"), "cond_stage_model.transformer."
        else:
            kohya, checkpoint = ("lora_te1_",), "conditioner.embedders.0.transformer."
        key_map.update(clip_lora_key_map(_shapes(clip_l), CLIP_L, kohya, "text_encoder.", checkpoint))
    if clip_g is not None:
        open_clip = "conditioner.embedders.0.model." if family == "sdxl_refiner" else "conditioner.embedders.1.model."
        key_map.update(clip_lora_key_map(_shapes(clip_g), CLIP_G, ("lora_te2_",), "text_encoder_2.",
                                         open_clip_prefix=open_clip))
    return key_map


def _shapes(source) -> dict[str, tuple[int, ...]]:
    if hasattr(source, "state_dict"):
        source = source.state_dict()
    return {key: tuple(value.shape if hasattr(value, "shape") else value) for key, value in source.items()}
