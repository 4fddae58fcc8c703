"""Loader nodes: checkpoints and VAEs from the model folders."""
from __future__ import annotations

from pathlib import Path

from models.loading import load_checkpoint, load_vae
from models.lora_keys import checkpoint_lora_key_map
from models.lora_patch import LoraPatcher
from models.text_encoders import load_text_encoder
from models.tokenizer import CLIPTokenizer, load_clip_tokenizer

from .sockets import ClipSocket, ModelSocket, VaeSocket
from .runtime import manage, services

TINY_TOKENIZER_DIR = "text_encoders/tiny_clip_tokenizer"
TOKENIZER_SEARCH = ("text_encoders/clip_tokenizer", "text_encoders", "clip")


def tokenizer_for(models_root: Path, vocabulary_rows: int | None):
    """The CLIP tokenizer for a text encoder with `vocabulary_rows` token embeddings: the tiny demo
    vocabulary for tiny demo models, else the real CLIP BPE files of the models folder."""
    tiny = models_root / TINY_TOKENIZER_DIR
    if vocabulary_rows is not None and (tiny / "vocab.json").is_file():
        candidate = CLIPTokenizer.from_files(tiny / "vocab.json", tiny / "merges.txt")
        if candidate.vocab_size == vocabulary_rows:
            return candidate
    return load_clip_tokenizer([models_root / sub for sub in TOKENIZER_SEARCH])


def _vocabulary_rows(text_state: dict) -> int | None:
    for key, value in text_state.items():
        if key.endswith("token_embedding.weight"):
            return int(value.shape[0])
    return None


def clip_part_modules(encoder) -> dict:
    """{"clip_l": ..., "clip_g": ...}: the encoder's CLIP transformers by LoRA part name."""
    parts = {}
    for name in ("clip_l", "clip_g"):
        module = getattr(encoder, name, None)
        if module is not None:
            parts[name] = module
    return parts


class CheckpointLoaderSimple:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    DESCRIPTION = "Loads a single-file SD1.5, SDXL or SDXL-refiner checkpoint."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("COMBO", {"folder": "checkpoints", "tooltip": "file in checkpoints/"})}}

    def load_checkpoint(self, ckpt_name):
        folders = services().folders
        path = folders.path("checkpoints", ckpt_name)
        loaded = load_checkpoint(path)
        encoder = None
        if loaded.text_encoder_state:
            tokenizer = tokenizer_for(folders.root, _vocabulary_rows(loaded.text_encoder_state))
            encoder = load_text_encoder(loaded.text_encoder_state, tokenizer)
        clip_parts = clip_part_modules(encoder) if encoder is not None else {}
        # one key map of the whole checkpoint, so no patcher calls another part's keys unmatched
        key_map = checkpoint_lora_key_map(loaded.info.family, unet=loaded.unet, clip_l=clip_parts.get("clip_l"),
                                          clip_g=clip_parts.get("clip_g"))
        model = ModelSocket(manage(loaded.unet, f"{ckpt_name} unet"), loaded.info, ckpt_name,
                            patcher=LoraPatcher({"unet": loaded.unet}, key_map))
        clip = None
        if encoder is not None:
            networks = tuple(manage(network, f"{ckpt_name} {part}") for part, network in clip_parts.items())
            clip = ClipSocket(encoder, networks, loaded.info.family, ckpt_name,
                              patcher=LoraPatcher(clip_parts, key_map))
        vae = None
        if loaded.vae is not None:
            vae = VaeSocket(manage(loaded.vae, f"{ckpt_name} vae", keep_float32=True), ckpt_name)
        return (model, clip, vae)


class VAELoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ("COMBO", {"folder": "vae"})}}

    def load_vae(self, vae_name):
        vae = load_vae(services().folders.path("vae", vae_name))
        return (VaeSocket(manage(vae, vae_name, keep_float32=True), vae_name),)


class CLIPSetLastLayer:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",),
                             "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})}}

    def set_last_layer(self, clip, stop_at_clip_layer):
        return (clip.with_changes(clip_skip=stop_at_clip_layer),)


NODE_CLASS_MAPPINGS = {"CheckpointLoaderSimple": CheckpointLoaderSimple, "VAELoader": VAELoader,
                       "CLIPSetLastLayer": CLIPSetLastLayer}
NODE_DISPLAY_NAME_MAPPINGS = {"CheckpointLoaderSimple": "Load Checkpoint", "VAELoader": "Load VAE",
                              "CLIPSetLastLayer": "CLIP Set Last Layer"}
