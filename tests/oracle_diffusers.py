"""Reference networks for parity tests: diffusers models built from OUR tiny single-file
checkpoints through diffusers' OWN single-file conversion (`from_single_file`).

There is no network here, so `from_single_file` gets a local config directory (written from the
tiny config) instead of a Hub repo id: `config=<dir>, subfolder="unet"|"vae"`.
Test-only code: product code never imports diffusers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from models.embeddings import timestep_embedding
from models.unet import UNetConfig
from models.vae import VAEConfig


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """UNet2DConditionModel config equal to an LDM UNetConfig with uniform depth per level."""
    levels = len(cfg.channel_mult)
    if len(set(cfg.num_res_blocks)) != 1:
        raise ValueError("diffusers needs the same number of res blocks on every level")
    per_level, start = [], 0
    for blocks in cfg.num_res_blocks:
        depths = set(cfg.transformer_depth[start:start + blocks])
        if len(depths) != 1:
            raise ValueError("diffusers needs a uniform transformer depth within a level")
        per_level.append(depths.pop())
        start += blocks
    widths = [cfg.model_channels * mult for mult in cfg.channel_mult]
    # diffusers' mid block takes the last level's depth: representable when the last level has
    # no attention (its entry is then free) or the same depth.
    if per_level[-1] and per_level[-1] != cfg.transformer_depth_middle:
        raise ValueError("diffusers needs the middle depth equal to the last level's depth")
    layers_per_level = per_level[:-1] + [cfg.transformer_depth_middle]
    if cfg.num_heads is not None:
        heads = cfg.num_heads
    else:
        heads = [cfg.heads_for(width)[0] for width in widths]
    config = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 32,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": widths,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in per_level],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(per_level)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": cfg.num_res_blocks[0],
        "transformer_layers_per_block": [max(d, 1) for d in layers_per_level],
        "cross_attention_dim": cfg.context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": cfg.use_linear_in_transformer,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if cfg.adm_in_channels is not None:
        config.update({"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                       "projection_class_embeddings_input_dim": cfg.adm_in_channels})
    assert levels == len(config["down_block_types"])
    return config


def diffusers_vae_config(cfg: VAEConfig, scaling_factor: float = 0.18215) -> dict:
    if cfg.embed_dim != cfg.z_channels:
        raise ValueError("diffusers' AutoencoderKL has embed_dim == latent_channels")
    levels = len(cfg.channel_mult)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [cfg.base_channels * m for m in cfg.channel_mult],
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.z_channels,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 64,
        "scaling_factor": scaling_factor,
    }


def write_config_dir(root: str | Path, unet: UNetConfig | None = None, vae: VAEConfig | None = None,
                     vae_scaling_factor: float = 0.18215) -> Path:
    """A local diffusers repo layout holding only configs: root/unet/config.json, root/vae/..."""
    root = Path(root)
    for subfolder, config in (("unet", unet and diffusers_unet_config(unet)),
                              ("vae", vae and diffusers_vae_config(vae, vae_scaling_factor))):
        if config is not None:
            (root / subfolder).mkdir(parents=True, exist_ok=True)
            (root / subfolder / "config.json").write_text(json.dumps(config, indent=1))
    return root


def diffusers_unet_from_single_file(checkpoint: str | Path, cfg: UNetConfig, workdir: str | Path):
    from diffusers import UNet2DConditionModel

    root = write_config_dir(Path(workdir) / "diffusers_config_unet", unet=cfg)
    model = UNet2DConditionModel.from_single_file(
        str(checkpoint), config=str(root), subfolder="unet", local_files_only=True, torch_dtype=torch.float32)
    return model.eval().requires_grad_(False)


def diffusers_vae_from_single_file(checkpoint: str | Path, cfg: VAEConfig, workdir: str | Path):
    from diffusers import AutoencoderKL

    root = write_config_dir(Path(workdir) / "diffusers_config_vae", vae=cfg)
    model = AutoencoderKL.from_single_file(
        str(checkpoint), config=str(root), subfolder="vae", local_files_only=True, torch_dtype=torch.float32)
    return model.eval().requires_grad_(False)


def sdxl_adm_vector(pooled: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """Our UNet's `y` for what diffusers receives as added_cond_kwargs (text_embeds, time_ids):
    pooled text embedding, then a 256-wide sinusoidal embedding of each size/crop/score value."""
    batch = pooled.shape[0]
    sizes = timestep_embedding(time_ids.flatten(), 256).reshape(batch, -1)
    return torch.cat([pooled, sizes.to(pooled.dtype)], dim=1)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference.double()).norm() / reference.double().norm())
