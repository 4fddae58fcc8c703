"""Image prompt nodes (Fooocus ImagePrompt / FaceSwap over IP-Adapter plus, spec §10.1):

    IPAdapterPlusLoader(ipadapter_name, negative_name) -> IPADAPTER
    IPAdapterPlusApply(model, ipadapter, clip_vision_output, weight, stop) -> MODEL
    FooocusImagePrompt(model, clip_vision, ipadapter, image, cn_type, stop, weight) -> MODEL
    FooocusImagePromptPreprocess(image, cn_type, skip_preprocessors) -> IMAGE (the debug view)

Each applied image prompt adds one attn2 kv patch to the MODEL (its image tokens' K/V computed
here, once; the executor caches the result per image); several chain. The Fooocus sampler drops
them when it swaps to the refiner. Files live in models/controlnet, as in Fooocus.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.face_align import align_face
from models.ip_adapter import ImagePromptPatch, load_ip_adapter, load_ip_negative

from ..clip_vision import encode_images
from ..images import pil_to_tensor, tensor_to_pil
from ..runtime import manage, placement, services, use

FOLDER = "controlnet"
IMAGE_PROMPT_FILE = "ip-adapter-plus_sdxl_vit-h.bin"
FACE_SWAP_FILE = "ip-adapter-plus-face_sdxl_vit-h.bin"
NEGATIVE_FILE = "fooocus_ip_negative.safetensors"
CN_TYPES = ("ImagePrompt", "FaceSwap")
CLIP_VISION_SIZE = 224  # ViT-H/14's input: Fooocus stretches every image prompt to it
DEFAULTS = {"ImagePrompt": (0.5, 0.6), "FaceSwap": (0.9, 0.75)}  # (stop, weight), spec §10


@dataclass(frozen=True)
class IPAdapterSocket:
    """IPADAPTER: the adapter under the manager and the unconditional side's image tokens."""

    network: object
    negative: torch.Tensor  # (1, queries, context_dim)
    name: str


class IPAdapterPlusLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("IPADAPTER",)
    FUNCTION = "load"
    DESCRIPTION = ("IP-Adapter plus (torch pickle with image_proj + ip_adapter, or its safetensors) and Fooocus's "
                   "precomputed negative image tokens, from models/controlnet.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ipadapter_name": ("COMBO", {"folder": FOLDER, "default": IMAGE_PROMPT_FILE}),
                             "negative_name": ("COMBO", {"folder": FOLDER, "default": NEGATIVE_FILE})}}

    def load(self, ipadapter_name, negative_name):
        folders = services().folders
        adapter = load_ip_adapter(folders.path(FOLDER, ipadapter_name))
        negative = load_ip_negative(folders.path(FOLDER, negative_name)).float()
        expected = (adapter.image_proj.config.queries, adapter.image_proj.config.output_dim)
        if tuple(negative.shape[1:]) != expected:
            raise ValueError(f"{negative_name}: negative tokens {tuple(negative.shape[1:])} do not fit "
                             f"{ipadapter_name} ({expected})")
        return (IPAdapterSocket(manage(adapter, f"{ipadapter_name} (IP-Adapter)"), negative, ipadapter_name),)


def image_prompt_patch(model, ipadapter: IPAdapterSocket, penultimate: torch.Tensor, weight: float,
                       stop: float) -> ImagePromptPatch:
    """The Resampler's tokens for the image, then every layer's K/V, on the compute device; kept on the CPU."""
    with use(ipadapter.network) as (adapter,), torch.inference_mode():
        device, dtype = placement(ipadapter.network)
        tokens = adapter.image_proj(penultimate[:1].to(device, dtype)).float()
        patch = ImagePromptPatch(adapter, tokens, ipadapter.negative.to(device), model.info.unet, weight, stop)
    patch.kv = {loc: tuple(tuple(t.cpu() for t in pair) for pair in pairs) for loc, pairs in patch.kv.items()}
    return patch


def with_image_prompt(model, patch: ImagePromptPatch):
    return model.with_changes(attn2_kv_patches=tuple(model.attn2_kv_patches) + (patch,))


class IPAdapterPlusApply:
    CATEGORY = "conditioning/image_prompt"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = "Fooocus's injection of one image prompt (penultimate CLIP vision states) into the MODEL."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "ipadapter": ("IPADAPTER",),
                             "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "weight": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 2.0, "step": 0.01}),
                             "stop": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def apply(self, model, ipadapter, clip_vision_output, weight, stop):
        if stop <= 0:  # never active: the MODEL stays as it is (and shares its cache)
            return (model,)
        patch = image_prompt_patch(model, ipadapter, clip_vision_output.penultimate_hidden_states, weight, stop)
        return (with_image_prompt(model, patch),)


def _face_crop(image: torch.Tensor, face_detector) -> torch.Tensor:
    """The first face aligned to the FFHQ 512 template, or the whole image when none is found."""
    array = (image.cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    landmarks = face_detector.landmarks(array)
    if landmarks is None:
        return image
    return torch.from_numpy(align_face(array, landmarks).astype(np.float32) / 255.0)


class FooocusImagePrompt:
    CATEGORY = "fooocus/image_prompt"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    DESCRIPTION = ("One Fooocus image-prompt slot: ImagePrompt or FaceSwap (face crop first unless "
                   "skip_preprocessors), CLIP vision with Fooocus's stretch/Lanczos preprocessing, then the "
                   "IP-Adapter patch. No image, or stop 0, passes the MODEL through.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip_vision": ("CLIP_VISION",), "ipadapter": ("IPADAPTER",),
                             "cn_type": (list(CN_TYPES), {"default": "ImagePrompt"}),
                             "stop": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "weight": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 2.0, "step": 0.01}),
                             "skip_preprocessors": ("BOOLEAN", {"default": False})},
                "optional": {"image": ("IMAGE",), "face_detector": ("FACE_DETECTOR",)}}

    def apply(self, model, clip_vision, ipadapter, cn_type, stop, weight, skip_preprocessors=False, image=None,
              face_detector=None):
        if cn_type not in CN_TYPES:
            raise ValueError(f"cn_type {cn_type!r}: one of {', '.join(CN_TYPES)}")
        if image is None or stop <= 0:
            return (model,)
        single = image[0]
        if cn_type == "FaceSwap" and not skip_preprocessors and face_detector is not None:
            single = _face_crop(single, face_detector)
        encoded = encode_images(clip_vision, single[None, ..., :3], crop="stretch")
        patch = image_prompt_patch(model, ipadapter, encoded.penultimate_hidden_states, weight, stop)
        return (with_image_prompt(model, patch),)


class FooocusImagePromptPreprocess:
    """What an ImagePrompt / FaceSwap slot shows the CLIP vision encoder: the face crop (FaceSwap,
    unless skip_preprocessors), stretched to 224 px with Lanczos. Fooocus' "Debug Preprocessors"
    returns this image instead of generating."""

    CATEGORY = "fooocus/image_prompt"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preprocess"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "cn_type": (["ImagePrompt", "FaceSwap"], {"default": "ImagePrompt"}),
                             "skip_preprocessors": ("BOOLEAN", {"default": False})},
                "optional": {"face_detector": ("FACE_DETECTOR",)}}

    def preprocess(self, image, cn_type, skip_preprocessors=False, face_detector=None):
        results = []
        for single in image:
            if cn_type == "FaceSwap" and not skip_preprocessors and face_detector is not None:
                single = _face_crop(single, face_detector)
            pil = tensor_to_pil(single[..., :3]).resize((CLIP_VISION_SIZE, CLIP_VISION_SIZE), Image.LANCZOS)
            results.append(pil_to_tensor(pil))
        return (torch.stack(results),)


NODE_CLASS_MAPPINGS = {"IPAdapterPlusLoader": IPAdapterPlusLoader, "IPAdapterPlusApply": IPAdapterPlusApply,
                       "FooocusImagePrompt": FooocusImagePrompt,
                       "FooocusImagePromptPreprocess": FooocusImagePromptPreprocess}
NODE_DISPLAY_NAME_MAPPINGS = {"IPAdapterPlusLoader": "IP-Adapter plus loader",
                              "IPAdapterPlusApply": "IP-Adapter plus: apply (Fooocus injection)",
                              "FooocusImagePrompt": "Fooocus image prompt (ImagePrompt / FaceSwap)",
                              "FooocusImagePromptPreprocess": "Fooocus image prompt preprocessing (debug view)"}
