"""Random-weight checkpoints in the real single-file layouts, with tiny widths.

For tests (many random configurations per family, compared against reference implementations)
and for an offline demo. The files use the exact key names of real SD1.5 / SDXL / SDXL refiner
`.safetensors` checkpoints, so every loader path is the one real files take.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.clip_text import CLIPTextConfig, heads_for_width
from models.detection import SD15, SDXL, SDXL_REFINER, SDXL_SIZE_EMBED
from models.unet import UNetConfig, UNetModel
from models.tiny_text import TINY_CLIP_G, TINY_CLIP_L, random_clip_g_state_dict, random_clip_l_state_dict
from models.vae import AutoencoderKL, VAEConfig

TINY_VAE = VAEConfig(base_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=1)  # keeps the 8x factor


def tiny_clip_l(width: int = TINY_CLIP_L.width) -> CLIPTextConfig:
    """The tiny CLIP-L at another width (a multiple of 16: heads are read back from the width)."""
    return replace(TINY_CLIP_L, width=width, heads=heads_for_width(width), intermediate=2 * width)


def tiny_clip_g(width: int = TINY_CLIP_G.width) -> CLIPTextConfig:
    """The tiny CLIP-G at another width; projection_dim stays equal to the width (as bigG has;
    diffusers' open_clip converter splits q/k/v by it)."""
    return replace(TINY_CLIP_G, width=width, heads=heads_for_width(width), intermediate=2 * width,
                   projection_dim=width)


@dataclass(frozen=True)
class TinyCheckpointSpec:
    family: str
    unet: UNetConfig
    vae: VAEConfig = TINY_VAE
    clip_l: CLIPTextConfig | None = None
    clip_g: CLIPTextConfig | None = None
    prediction: str = "eps"  # "eps" | "v" | "v_ztsnr" | "edm" | "v_edm": which marker keys to add


def tiny_unet_config(model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2),
                     num_res_blocks: int = 1, depth_per_level: tuple[int, ...] = (1, 1),
                     middle_depth: int = 1, context_dim: int = 32, adm_in_channels: int | None = None,
                     in_channels: int = 4, sdxl_style: bool = False) -> UNetConfig:
    """A small UNetConfig with uniform depth per level. Widths must be multiples of 32 (GroupNorm)."""
    blocks = (num_res_blocks,) * len(channel_mult)
    down, up = UNetConfig.per_level_depths(blocks, depth_per_level)
    heads = dict(num_heads=None, num_head_channels=64) if sdxl_style else dict(num_heads=8, num_head_channels=None)
    return UNetConfig(in_channels=in_channels, model_channels=model_channels, channel_mult=channel_mult,
                      num_res_blocks=blocks, transformer_depth=down, transformer_depth_middle=middle_depth,
                      transformer_depth_output=up, context_dim=context_dim, adm_in_channels=adm_in_channels,
                      use_linear_in_transformer=sdxl_style, **heads)


def tiny_sd15_spec(model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1,
                   depth_per_level: tuple[int, ...] = (1, 1), middle_depth: int = 1,
                   clip: CLIPTextConfig = TINY_CLIP_L, vae: VAEConfig = TINY_VAE,
                   in_channels: int = 4, prediction: str = "eps") -> TinyCheckpointSpec:
    unet = tiny_unet_config(model_channels, channel_mult, num_res_blocks, depth_per_level, middle_depth,
                            context_dim=clip.width, in_channels=in_channels)
    return TinyCheckpointSpec(SD15, unet, vae, clip_l=clip, prediction=prediction)


def tiny_sdxl_spec(model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1,
                   depth_per_level: tuple[int, ...] = (0, 2), middle_depth: int = 2,
                   clip_l: CLIPTextConfig = TINY_CLIP_L, clip_g: CLIPTextConfig = TINY_CLIP_G,
                   vae: VAEConfig = TINY_VAE, in_channels: int = 4, prediction: str = "eps") -> TinyCheckpointSpec:
    """SDXL base: context = CLIP-L + CLIP-G tokens; ADM = pooled CLIP-G + 6 size embeddings."""
    _check_clip_g(clip_g)
    unet = tiny_unet_config(model_channels, channel_mult, num_res_blocks, depth_per_level, middle_depth,
                            context_dim=clip_l.width + clip_g.width,
                            adm_in_channels=clip_g.projection_dim + 6 * SDXL_SIZE_EMBED,
                            in_channels=in_channels, sdxl_style=True)
    return TinyCheckpointSpec(SDXL, unet, vae, clip_l=clip_l, clip_g=clip_g, prediction=prediction)


def tiny_sdxl_refiner_spec(model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2, 2),
                           num_res_blocks: int = 1, depth_per_level: tuple[int, ...] = (0, 2, 0),
                           middle_depth: int = 2,
                           clip_g: CLIPTextConfig = TINY_CLIP_G,
                           vae: VAEConfig = TINY_VAE, prediction: str = "eps") -> TinyCheckpointSpec:
    """SDXL refiner: context = CLIP-G tokens; ADM = pooled CLIP-G + 5 embeddings (size, crop, score)."""
    _check_clip_g(clip_g)
    unet = tiny_unet_config(model_channels, channel_mult, num_res_blocks, depth_per_level, middle_depth,
                            context_dim=clip_g.width,
                            adm_in_channels=clip_g.projection_dim + 5 * SDXL_SIZE_EMBED, sdxl_style=True)
    return TinyCheckpointSpec(SDXL_REFINER, unet, vae, clip_g=clip_g, prediction=prediction)


def _check_clip_g(clip_g: CLIPTextConfig) -> None:
    if clip_g.projection_dim != clip_g.width:
        raise ValueError("tiny CLIP-G needs projection_dim == width (as bigG; diffusers' converter relies on it)")


def tiny_checkpoint_state_dict(spec: TinyCheckpointSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full single-file state dict (prefixed keys), random weights drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    state.update(_prefixed("model.diffusion_model.", _random_weights(_shapes_of(UNetModel, spec.unet), generator)))
    state.update(_prefixed("first_stage_model.", _random_weights(_shapes_of(AutoencoderKL, spec.vae), generator)))
    if spec.family == SD15:
        state.update(_prefixed("cond_stage_model.transformer.", random_clip_l_state_dict(spec.clip_l, generator)))
    elif spec.family == SDXL:
        state.update(_prefixed("conditioner.embedders.0.transformer.", random_clip_l_state_dict(spec.clip_l, generator)))
        state.update(_prefixed("conditioner.embedders.1.model.", random_clip_g_state_dict(spec.clip_g, generator)))
    else:
        state.update(_prefixed("conditioner.embedders.0.model.", random_clip_g_state_dict(spec.clip_g, generator)))
    state.update(_prediction_marker_keys(spec.prediction, spec.unet.out_channels))
    return state


def write_tiny_checkpoint(path: str | os.PathLike, spec: TinyCheckpointSpec, seed: int = 0,
                          dtype: torch.dtype = torch.float32) -> Path:
    """Write the checkpoint; `dtype` float16 halves full-size benchmark files, as real ones are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.to(dtype).contiguous() for key, value in tiny_checkpoint_state_dict(spec, seed).items()}
    save_file(state, str(path), metadata={"format": "pt", "tiny_family": spec.family})
    return path


def write_tiny_sd15(path: str | os.PathLike, seed: int = 0, spec: TinyCheckpointSpec | None = None) -> Path:
    return write_tiny_checkpoint(path, spec or tiny_sd15_spec(), seed)


def write_tiny_sdxl(path: str | os.PathLike, seed: int = 0, spec: TinyCheckpointSpec | None = None) -> Path:
    return write_tiny_checkpoint(path, spec or tiny_sdxl_spec(), seed)


def write_tiny_sdxl_refiner(path: str | os.PathLike, seed: int = 0, spec: TinyCheckpointSpec | None = None) -> Path:
    return write_tiny_checkpoint(path, spec or tiny_sdxl_refiner_spec(), seed)


DEMO_CHECKPOINTS = {
    "checkpoints/tiny-sd15.safetensors": write_tiny_sd15,
    "checkpoints/tiny-sdxl.safetensors": write_tiny_sdxl,
    "checkpoints/tiny-sdxl-refiner.safetensors": write_tiny_sdxl_refiner,
}
DEMO_LORA = "loras/tiny-sdxl-lora.safetensors"


def write_demo_models(models_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the offline demo models under `models_dir`; returns {relative name: path}.
    Their text encoders use the tiny BPE vocabulary of models.tiny_text.write_tiny_tokenizer."""
    models_dir = Path(models_dir)
    written = {name: writer(models_dir / name, seed=seed + index)
               for index, (name, writer) in enumerate(DEMO_CHECKPOINTS.items())}
    written.update(_write_demo_lora(models_dir, seed))
    return written


def _write_demo_lora(models_dir: Path, seed: int) -> dict[str, Path]:
    """DEMO_LORA: a kohya-format LoRA matching the demo tiny-sdxl checkpoint."""
    from models.tiny_lora import write_tiny_sdxl_lora

    checkpoint = models_dir / "checkpoints/tiny-sdxl.safetensors"
    return {DEMO_LORA: write_tiny_sdxl_lora(models_dir / DEMO_LORA, checkpoint, seed=seed)}


# --- random weights -------------------------------------------------------------------------

def _shapes_of(network_class, config) -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only: no memory, no random draws
        network = network_class(config)
    return {key: value.shape for key, value in network.state_dict().items()}


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _random_weights(shapes: dict[str, torch.Size], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Well-conditioned random weights: matrices ~ N(0, 1/fan_in) keep activations O(1) through
    deep stacks, norms ~ 1 and biases small but nonzero (so wrong wiring shows in the outputs)."""
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        leaf = key.rsplit(".", 1)[-1]
        if key.endswith(("embedding.weight", "positional_embedding")):
            state[key] = 0.02 * noise
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = noise / math.sqrt(fan_in)
        elif leaf == "weight":  # 1-d weights: normalisation scales
            state[key] = 1.0 + 0.1 * noise
        else:
            state[key] = 0.05 * noise
    return state


def _prediction_marker_keys(prediction: str, latent_channels: int) -> dict[str, torch.Tensor]:
    if prediction == "eps":
        return {}
    if prediction in ("v", "v_ztsnr"):
        markers = {"v_pred": torch.tensor([])}
        if prediction == "v_ztsnr":
            markers["ztsnr"] = torch.tensor([])
        return markers
    if prediction == "edm":
        return {"edm_mean": torch.full((1, latent_channels, 1, 1), 0.1),
                "edm_std": torch.full((1, latent_channels, 1, 1), 0.9)}
    if prediction == "v_edm":
        return {"edm_vpred.sigma_max": torch.tensor(120.0), "edm_vpred.sigma_min": torch.tensor(0.002)}
    raise ValueError(f"unknown prediction marker {prediction!r}")
