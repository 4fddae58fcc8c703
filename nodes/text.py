"""Prompt encoding nodes. CONDITIONING is ComfyUI's shape: [[tokens, {"pooled_output", ...}], ...]."""
from __future__ import annotations

import torch

from graph import context as graph_context
from models.textual_inversion import EmbeddingLibrary

from .sockets import ClipSocket
from .lora_runtime import running_encoder


def embedding_library() -> EmbeddingLibrary | None:
    """The embeddings/ folders of the running prompt's models (None outside a node: no lookups)."""
    try:
        folders = graph_context.current().services.folders
    except RuntimeError:
        return None
    return EmbeddingLibrary(folders.directories("embeddings")) if folders is not None else None


def encode(clip: ClipSocket, text: str, rescale_mean: bool = False):
    """(tokens [1, 77k, D], pooled [1, P]) on the CPU in fp32, for caching between runs.

    `embedding:name` words take their vectors from embeddings/ (ComfyUI's and Fooocus' rule)."""
    if clip is None:
        raise ValueError("this checkpoint has no text encoder (clip input is empty)")
    with running_encoder(clip) as (encoder, device, dtype):
        encoding = encoder.encode(text, clip_skip=clip.clip_skip, rescale_mean=rescale_mean,
                                  embeddings=embedding_library())
    return encoding.cond.float().cpu(), encoding.pooled.float().cpu()


class CLIPTextEncode:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}

    def encode(self, clip, text):
        cond, pooled = encode(clip, text)
        return ([[cond, {"pooled_output": pooled}]],)


class CLIPTextEncodeSDXL:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 1024, "min": 0, "max": 16384}
        return {"required": {"clip": ("CLIP",), "width": ("INT", size), "height": ("INT", size),
                             "crop_w": ("INT", {"default": 0, "min": 0, "max": 16384}),
                             "crop_h": ("INT", {"default": 0, "min": 0, "max": 16384}),
                             "target_width": ("INT", size), "target_height": ("INT", size),
                             "text_g": ("STRING", {"multiline": True}), "text_l": ("STRING", {"multiline": True})}}

    def encode(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        encoder = clip.encoder
        if not hasattr(encoder, "clip_g") or not hasattr(encoder, "clip_l"):
            raise ValueError("CLIPTextEncodeSDXL needs an SDXL base CLIP (CLIP-L + CLIP-G)")
        # CLIP-L reads text_l, CLIP-G reads text_g; each is encoded with the full encoder and its
        # half of the 2048 features kept (the pooled output is CLIP-G's).
        cond_l, _ = encode(clip, text_l)
        cond_g, pooled = encode(clip, text_g)
        width_l = encoder.clip_l.config.width
        tokens = max(cond_l.shape[1], cond_g.shape[1])
        cond_l = _pad_tokens(cond_l, tokens)
        cond_g = _pad_tokens(cond_g, tokens)
        cond = torch.cat([cond_l[..., :width_l], cond_g[..., width_l:]], dim=-1)
        return ([[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                         "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]],)


def _pad_tokens(cond: torch.Tensor, tokens: int) -> torch.Tensor:
    """Repeat 77-token windows up to `tokens` (as ComfyUI pads the shorter of text_g/text_l)."""
    if cond.shape[1] == tokens:
        return cond
    repeats = -(-tokens // cond.shape[1])
    return cond.repeat(1, repeats, 1)[:, :tokens]


class CLIPTextEncodeSDXLRefiner:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 1024, "min": 0, "max": 16384}
        return {"required": {"ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
                             "width": ("INT", size), "height": ("INT", size), "text": ("STRING", {"multiline": True}),
                             "clip": ("CLIP",)}}

    def encode(self, ascore, width, height, text, clip):
        cond, pooled = encode(clip, text)
        return ([[cond, {"pooled_output": pooled, "aesthetic_score": ascore, "width": width, "height": height}]],)


NODE_CLASS_MAPPINGS = {"CLIPTextEncode": CLIPTextEncode, "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
                       "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPTextEncode": "CLIP Text Encode (Prompt)"}
