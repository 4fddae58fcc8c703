"""What flows on the MODEL, CLIP and VAE sockets: immutable values around loaded networks.

Nodes never mutate a socket value they receive; they return a changed copy (`with_changes`), so
cached outputs upstream stay valid. The networks themselves are shared between copies; weight
patches (LoRA) are recorded here and applied by the sampler/encoder just before use.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from models.detection import CheckpointInfo
from models.sampling.model_sampling import ContinuousEDMModelSampling, DiscreteModelSampling, ModelSampling


@dataclass(frozen=True)
class ModelSocket:
    """MODEL: a diffusion UNet, what it is, and the patches to apply when it runs."""

    network: Any  # the UNet under the model manager (models.manager.ModelHandle or runtime.Unmanaged)
    info: CheckpointInfo
    name: str
    patcher: Any = None  # models.lora_patch.LoraPatcher over this UNet (one per loaded network)
    loras: tuple = ()  # ((lora file path, strength), ...) applied to the UNet when it runs
    output_block_patches: tuple = ()  # FreeU and the like: (h, skip, index) -> (h, skip)
    input_block_patches: tuple = ()  # the Fooocus inpaint head and the like: (h, index) -> h
    attn2_kv_patches: tuple = ()  # IP-Adapter image prompts: (k, v, location, options) -> (k, v)
    sampling_override: Any = None  # ModelSamplingDiscrete: a ModelSampling replacing the checkpoint's own
    cfg_combine: Any = None  # RescaleCFG and the like: replaces standard CFG's combine rule

    def with_changes(self, **changes) -> "ModelSocket":
        return replace(self, **changes)

    @property
    def family(self) -> str:
        return self.info.family

    def model_sampling(self) -> ModelSampling:
        """The sigma schedule and output parameterisation the checkpoint was trained with."""
        if self.sampling_override is not None:
            return self.sampling_override
        info = self.info
        if info.prediction == "edm":  # Playground 2.5
            return ContinuousEDMModelSampling(info.sigma_min or 0.002, info.sigma_max or 80.0, 0.5, "edm")
        if info.prediction == "v_edm":  # CosXL-style v-prediction EDM
            return ContinuousEDMModelSampling(info.sigma_min or 0.002, info.sigma_max or 120.0, 1.0, "v")
        return DiscreteModelSampling(info.prediction, zero_terminal_snr=info.zero_terminal_snr)  # "eps" or "v"


@dataclass(frozen=True)
class ClipSocket:
    """CLIP: a prompt encoder (SD1.5, SDXL or refiner), the layer to read, and its LoRA patches."""

    encoder: Any  # models.text_encoders.SD15TextEncoder | SDXLTextEncoder | SDXLRefinerTextEncoder
    networks: tuple  # its CLIP transformers under the model manager
    family: str
    name: str
    clip_skip: int | None = None  # ComfyUI CLIPSetLastLayer value (-1 last); None = model default
    patcher: Any = None  # models.lora_patch.LoraPatcher over the text encoders
    loras: tuple = ()  # ((lora file path, strength), ...) applied to the text encoders

    def with_changes(self, **changes) -> "ClipSocket":
        return replace(self, **changes)


@dataclass(frozen=True)
class VaeSocket:
    """VAE: the autoencoder. LATENT values hold its raw latents; the MODEL scales them (as ComfyUI)."""

    network: Any  # models.vae.AutoencoderKL under the model manager
    name: str
