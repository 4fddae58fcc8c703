"""LoRA support: the one import point for the node layer.

    key_map = checkpoint_lora_key_map(family, unet=unet, clip_l=clip_l, clip_g=clip_g)
    unet_patcher = LoraPatcher({"unet": unet}, key_map)            # one per loaded network,
    clip_patcher = LoraPatcher({"clip_l": clip_l, "clip_g": clip_g}, key_map)  # owned by its handle
    reports = unet_patcher.apply([(path, strength_model, strength_clip), ...], max_rejected=12)
    ...                                                             # sample
    unet_patcher.apply([])  or  unet_patcher.restore()              # back to the originals

Key mapping lives in models.lora_keys, adapter maths (LoRA/LoCon/LoHa/LoKr/DoRA/diff/set) in
models.lora_adapters, in-place patching with exact restore and the one-set cache in
models.lora_patch; tiny test/demo LoRA files come from models.tiny_lora.
"""
from models.lora_adapters import ParsedLora, parse_lora, split_lora_key
from models.lora_keys import (
    CLIP_G,
    CLIP_L,
    UNET,
    LoraKeyMap,
    LoraTarget,
    checkpoint_lora_key_map,
    clip_lora_key_map,
    unet_diffusers_module_names,
    unet_lora_key_map,
)
from models.lora_patch import MODEL_PARTS, LoraFileReport, LoraPatcher, LoraSource, LoraSpec

__all__ = [
    "CLIP_G", "CLIP_L", "UNET", "MODEL_PARTS", "LoraKeyMap", "LoraTarget", "LoraFileReport", "LoraPatcher",
    "LoraSource", "LoraSpec", "ParsedLora", "checkpoint_lora_key_map", "clip_lora_key_map", "parse_lora",
    "split_lora_key", "unet_diffusers_module_names", "unet_lora_key_map",
]
