"""ComfyUI's advanced loaders: CheckpointLoader (with a config), UNETLoader, CLIPLoader,
DualCLIPLoader. Thin glue over models/loading.py and models/text_encoder_files.py; the sockets are
the ones CheckpointLoaderSimple makes (LoRA patchers included)."""
from __future__ import annotations

import re

from models.checkpoint import read_state_dict
from models.loading import load_checkpoint
from models.lora_keys import checkpoint_lora_key_map
from models.lora_patch import LoraPatcher
from models.sampling.model_sampling import DiscreteModelSampling
from models.text_encoder_files import text_encoder_checkpoint
from models.text_encoders import load_text_encoder

from .loaders import CheckpointLoaderSimple, _vocabulary_rows, clip_part_modules, tokenizer_for
from .runtime import manage, services
from .sockets import ClipSocket, ModelSocket

# an LDM config's v-prediction marker (`parameterization: "v"`), the one setting the tensors do not show
_V_PARAMETERIZATION = re.compile(r"^\s*parameterization\s*:\s*[\"']?v[\"']?\s*$", re.MULTILINE)
# ComfyUI's option lists; the weights themselves run at the server's --precision
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
DEVICE = (["default", "cpu"], {"advanced": True})


class CheckpointLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"config_name": ("COMBO", {"folder": "configs"}),
                             "ckpt_name": ("COMBO", {"folder": "checkpoints"})}}

    def load_checkpoint(self, config_name, ckpt_name):
        # the architecture is read from the tensors; of the config only the prediction type matters
        config = services().folders.path("configs", config_name).read_text(encoding="utf-8", errors="replace")
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint(ckpt_name)
        if _V_PARAMETERIZATION.search(config):
            model = model.with_changes(sampling_override=DiscreteModelSampling(
                "v", zero_terminal_snr=model.info.zero_terminal_snr))
        return (model, clip, vae)


class UNETLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": ("COMBO", {"folder": "diffusion_models"}),
                             "weight_dtype": (WEIGHT_DTYPES, {"advanced": True})}}

    def load_unet(self, unet_name, weight_dtype):
        loaded = load_checkpoint(services().folders.path("diffusion_models", unet_name))
        key_map = checkpoint_lora_key_map(loaded.info.family, unet=loaded.unet)
        return (ModelSocket(manage(loaded.unet, f"{unet_name} unet"), loaded.info, unet_name,
                            patcher=LoraPatcher({"unet": loaded.unet}, key_map)),)


def load_clip(names: list[str]) -> ClipSocket:
    """A CLIP socket from one or two files of text_encoders/."""
    folders = services().folders
    family, state = text_encoder_checkpoint([read_state_dict(folders.path("text_encoders", name)) for name in names])
    encoder = load_text_encoder(state, tokenizer_for(folders.root, _vocabulary_rows(state)))
    parts = clip_part_modules(encoder)
    key_map = checkpoint_lora_key_map(family, clip_l=parts.get("clip_l"), clip_g=parts.get("clip_g"))
    label = " + ".join(names)
    networks = tuple(manage(network, f"{label} {part}") for part, network in parts.items())
    return ClipSocket(encoder, networks, family, label, patcher=LoraPatcher(parts, key_map))


class CLIPLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        # of ComfyUI's types only SD's: a CLIP-L (SD1.5) or a CLIP-G (the SDXL refiner's)
        return {"required": {"clip_name": ("COMBO", {"folder": "text_encoders"}), "type": (["stable_diffusion"],)},
                "optional": {"device": DEVICE}}

    def load_clip(self, clip_name, type="stable_diffusion", device="default"):
        return (load_clip([clip_name]),)


class DualCLIPLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name1": ("COMBO", {"folder": "text_encoders"}),
                             "clip_name2": ("COMBO", {"folder": "text_encoders"}), "type": (["sdxl"],)},
                "optional": {"device": DEVICE}}

    def load_clip(self, clip_name1, clip_name2, type="sdxl", device="default"):
        return (load_clip([clip_name1, clip_name2]),)


NODE_CLASS_MAPPINGS = {"CheckpointLoader": CheckpointLoader, "UNETLoader": UNETLoader, "CLIPLoader": CLIPLoader,
                       "DualCLIPLoader": DualCLIPLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CheckpointLoader": "Load Checkpoint With Config (DEPRECATED)",
                              "UNETLoader": "Load Diffusion Model", "CLIPLoader": "Load CLIP",
                              "DualCLIPLoader": "DualCLIPLoader"}
