"""CLIP vision nodes, as ComfyUI has them:

    CLIPVisionLoader(clip_name) -> CLIP_VISION
    CLIPVisionEncode(clip_vision, image, crop) -> CLIP_VISION_OUTPUT (image_embeds, last and
        penultimate hidden states)
    unCLIPConditioning(conditioning, clip_vision_output, strength, noise_augmentation) ->
        CONDITIONING with an "unclip_conditioning" entry appended (ComfyUI's revision workflows)

The network lives under the App's model manager; outputs are float32 CPU tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.clip_vision import CLIPVisionModelWithProjection, CLIPVisionOutput, preprocess
from models.checkpoint import read_state_dict

from .runtime import manage, placement, services, use

FOLDER = "clip_vision"


@dataclass(frozen=True)
class ClipVisionSocket:
    """CLIP_VISION: the image encoder under the manager and its input size."""

    network: object
    image_size: int
    name: str


def load_clip_vision(name: str) -> ClipVisionSocket:
    path = services().folders.path(FOLDER, name)
    model = CLIPVisionModelWithProjection.from_state_dict(read_state_dict(path))
    return ClipVisionSocket(manage(model, f"{name} (CLIP vision)"), model.config.image_size, name)


def encode_images(clip_vision: ClipVisionSocket, images: torch.Tensor, crop: str = "stretch") -> CLIPVisionOutput:
    """IMAGE [B, H, W, C] in 0..1 -> CLIPVisionOutput (float32, CPU); crop as models.clip_vision.preprocess."""
    pixels = torch.cat([preprocess(image.cpu().numpy(), clip_vision.image_size, crop) for image in images])
    with use(clip_vision.network) as (network,), torch.inference_mode():
        device, dtype = placement(clip_vision.network)
        out = network(pixels.to(device, dtype))
    return CLIPVisionOutput(*(t.float().cpu() for t in (out.last_hidden_state, out.penultimate_hidden_states,
                                                         out.image_embeds)))


class CLIPVisionLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("COMBO", {"folder": FOLDER})}}

    def load_clip(self, clip_name):
        return (load_clip_vision(clip_name),)


class CLIPVisionEncode:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"
    DESCRIPTION = "crop 'center': shortest side to the model's size, bicubic, centre crop; 'none': stretched."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",),
                             "crop": (["center", "none"], {"default": "center"})}}

    def encode(self, clip_vision, image, crop="center"):
        return (encode_images(clip_vision, image, crop),)


class unCLIPConditioning:  # noqa: N801 - ComfyUI's class name
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_adm"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
                             "noise_augmentation": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0,
                                                              "step": 0.01})}}

    def apply_adm(self, conditioning, clip_vision_output, strength, noise_augmentation):
        if strength == 0:
            return (conditioning,)
        entry = {"clip_vision_output": clip_vision_output, "strength": float(strength),
                 "noise_augmentation": float(noise_augmentation)}
        out = []
        for tokens, extras in conditioning:
            extras = dict(extras)
            extras["unclip_conditioning"] = list(extras.get("unclip_conditioning", ())) + [entry]
            out.append([tokens, extras])
        return (out,)


NODE_CLASS_MAPPINGS = {"CLIPVisionLoader": CLIPVisionLoader, "CLIPVisionEncode": CLIPVisionEncode,
                       "unCLIPConditioning": unCLIPConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPVisionLoader": "Load CLIP Vision", "CLIPVisionEncode": "CLIP Vision Encode",
                              "unCLIPConditioning": "unCLIPConditioning"}
