"""ComfyUI's LoRA nodes."""
from __future__ import annotations

from .runtime import services


def _path(lora_name: str) -> str:
    return str(services().folders.path("loras", lora_name))


class LoraLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",),
                             "lora_name": ("COMBO", {"folder": "loras"}),
                             "strength_model": ("FLOAT", strength), "strength_clip": ("FLOAT", strength)}}

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        path = _path(lora_name)
        if strength_model:
            model = model.with_changes(loras=model.loras + ((path, strength_model),))
        if strength_clip and clip is not None:
            clip = clip.with_changes(loras=clip.loras + ((path, strength_clip),))
        return (model, clip)


class LoraLoaderModelOnly:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "lora_name": ("COMBO", {"folder": "loras"}),
                             "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0,
                                                          "step": 0.01})}}

    def load_lora_model_only(self, model, lora_name, strength_model):
        if not strength_model:
            return (model,)
        return (model.with_changes(loras=model.loras + ((_path(lora_name), strength_model),)),)


NODE_CLASS_MAPPINGS = {"LoraLoader": LoraLoader, "LoraLoaderModelOnly": LoraLoaderModelOnly}
NODE_DISPLAY_NAME_MAPPINGS = {"LoraLoader": "Load LoRA", "LoraLoaderModelOnly": "LoraLoaderModelOnly"}
