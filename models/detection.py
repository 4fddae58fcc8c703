"""Which network a checkpoint holds, read from its keys and tensor shapes.

Widths and depths come from the tensors themselves, so tiny test checkpoints are recognised as
their family with their own (tiny) configuration. What shapes cannot tell (the attention head
split, the latent scale) is fixed per family, as in the original model configs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from models.checkpoint import CheckpointError, CheckpointParts
from models.unet import UNetConfig
from models.vae import VAEConfig

SD15, SDXL, SDXL_REFINER = "sd15", "sdxl", "sdxl_refiner"
LATENT_SCALE = {SD15: 0.18215, SDXL: 0.13025, SDXL_REFINER: 0.13025}
TEXT_ENCODERS = {SD15: ("clip_l",), SDXL: ("clip_l", "clip_g"), SDXL_REFINER: ("clip_g",)}
SDXL_SIZE_EMBED = 256  # width of each sinusoidal size/crop/aesthetic embedding in the ADM vector

# Keys (without checkpoint prefix) of architectures we recognise but do not run.
_FOREIGN_SIGNATURES = {
    "double_blocks.0.img_attn.qkv.weight": "Flux",
    "joint_blocks.0.x_block.attn.qkv.weight": "SD3",
    "transformer_blocks.0.attn.to_q.weight": "a DiT (transformer) diffusion model",
}


@dataclass(frozen=True)
class CheckpointInfo:
    family: str  # "sd15" | "sdxl" | "sdxl_refiner"
    unet: UNetConfig
    latent_scale_factor: float  # latents_for_unet = vae_latents * factor (minus latents_mean, EDM)
    text_encoders: tuple[str, ...]  # the text encoders the UNet's context expects, in concat order
    # "eps" | "v" (v-prediction) | "edm" (EDM eps, Playground 2.5) | "v_edm" (EDM v-prediction)
    prediction: str = "eps"
    zero_terminal_snr: bool = False  # `ztsnr` marker next to `v_pred`
    sigma_min: float | None = None  # EDM sampling range when the file states it
    sigma_max: float | None = None
    latents_mean: tuple[float, ...] | None = None  # per-channel latent statistics (Playground 2.5)
    latents_std: tuple[float, ...] | None = None

    @property
    def is_inpaint(self) -> bool:
        return self.unet.in_channels > 4

    @property
    def latent_channels(self) -> int:
        return self.unet.out_channels


def detect_checkpoint(parts: CheckpointParts, name: str) -> CheckpointInfo:
    """Family, UNet configuration and sampling markers of a split single-file checkpoint (or of
    a bare UNet file split the same way). Unsupported content raises CheckpointError."""
    _refuse_foreign(parts, name)
    if parts.open_clip_h:
        raise CheckpointError(f"{name}: SD2.x checkpoints (OpenCLIP ViT-H text encoder) are not supported")
    # A bare UNet file has no text encoders; then the family comes from the UNet's widths alone.
    encoders_known = bool(parts.clip_l or parts.clip_g)
    family, unet_config = detect_unet_config(
        parts.unet, name, has_clip_l=bool(parts.clip_l) if encoders_known else None,
        has_clip_g=bool(parts.clip_g) if encoders_known else None)
    return CheckpointInfo(family=family, unet=unet_config, latent_scale_factor=LATENT_SCALE[family],
                          text_encoders=TEXT_ENCODERS[family], **_prediction_markers(parts.other))


def _refuse_foreign(parts: CheckpointParts, name: str) -> None:
    for key, architecture in _FOREIGN_SIGNATURES.items():
        if key in parts.unet or key in parts.other:
            raise CheckpointError(f"{name}: {architecture} models are not supported (found {key})")


def _prediction_markers(other: dict[str, torch.Tensor]) -> dict:
    """Marker keys some SDXL fine-tunes carry at the top level of the file."""
    if "edm_mean" in other and "edm_std" in other:  # Playground 2.5: EDM with latent statistics
        return dict(prediction="edm", sigma_min=0.002, sigma_max=80.0,
                    latents_mean=tuple(other["edm_mean"].flatten().tolist()),
                    latents_std=tuple(other["edm_std"].flatten().tolist()))
    if "edm_vpred.sigma_max" in other:
        sigma_min = other.get("edm_vpred.sigma_min")
        return dict(prediction="v_edm", sigma_max=float(other["edm_vpred.sigma_max"].item()),
                    sigma_min=None if sigma_min is None else float(sigma_min.item()))
    if "v_pred" in other:
        return dict(prediction="v", zero_terminal_snr="ztsnr" in other)
    return {}


_TRANSFORMER_KEY = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\.transformer_blocks\.(\d+)\.")


def detect_unet_config(sd: dict[str, torch.Tensor], name: str, has_clip_l: bool | None = None,
                       has_clip_g: bool | None = None) -> tuple[str, UNetConfig]:
    """(family, UNetConfig) from LDM UNet keys without prefix.

    The SDXL base/refiner split uses the text encoders present in the file when known, else the
    ADM width: the refiner's ADM is pooled CLIP-G (= its context width) + 5 size embeddings, the
    base's is pooled CLIP-G + 6 size embeddings next to a wider CLIP-L+G context.
    """
    if "input_blocks.0.0.weight" not in sd or "out.2.weight" not in sd:
        sample = ", ".join(sorted(sd)[:3]) or "none"
        raise CheckpointError(f"{name}: no SD/SDXL UNet found (UNet keys seen: {sample})")
    conv_in = sd["input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]

    depth_of = {}
    for key in sd:
        match = _TRANSFORMER_KEY.match(key)
        if match:
            depth_of[match[1]] = max(depth_of.get(match[1], 0), int(match[2]) + 1)

    num_res_blocks, channel_mult, transformer_depth = [0], [], []
    index = 1
    while True:
        prefix = f"input_blocks.{index}.0."
        if prefix + "op.weight" in sd:  # downsample: a new level starts
            num_res_blocks.append(0)
        elif prefix + "in_layers.0.weight" in sd:
            if num_res_blocks[-1] == 0:
                channel_mult.append(sd[prefix + "out_layers.3.weight"].shape[0] // model_channels)
            num_res_blocks[-1] += 1
            transformer_depth.append(depth_of.get(f"input_blocks.{index}", 0))
        else:
            break
        index += 1
    num_outputs = len({key.split(".")[1] for key in sd if key.startswith("output_blocks.")})
    transformer_depth_output = tuple(depth_of.get(f"output_blocks.{i}", 0) for i in range(num_outputs))
    if 0 in num_res_blocks or num_outputs != sum(num_res_blocks) + len(num_res_blocks):
        raise CheckpointError(f"{name}: UNet block layout not recognised "
                              f"(res blocks per level {num_res_blocks}, {num_outputs} output blocks)")

    context_keys = [key for key in sd if key.endswith("attn2.to_k.weight")]
    if not context_keys:
        raise CheckpointError(f"{name}: UNet without cross-attention is not a supported architecture")
    context_dim = sd[context_keys[0]].shape[1]
    use_linear = any(sd[key].ndim == 2 for key in sd if key.endswith("proj_in.weight"))
    adm = sd["label_emb.0.0.weight"].shape[1] if "label_emb.0.0.weight" in sd else None

    if adm is None:
        if use_linear:
            raise CheckpointError(f"{name}: SD2.x-style UNet (linear projections, context {context_dim}) "
                                  "is not supported")
        family = SD15
    else:
        if not use_linear:
            raise CheckpointError(f"{name}: UNet with ADM input {adm} but convolutional projections "
                                  "is not a supported architecture")
        if has_clip_g is not None and has_clip_l is not None:
            family = SDXL if has_clip_l else SDXL_REFINER
        else:
            family = SDXL_REFINER if adm == context_dim + 5 * SDXL_SIZE_EMBED else SDXL
    heads = dict(num_heads=8, num_head_channels=None) if family == SD15 else dict(num_heads=None, num_head_channels=64)
    config = UNetConfig(
        in_channels=in_channels, out_channels=sd["out.2.weight"].shape[0], model_channels=model_channels,
        channel_mult=tuple(channel_mult), num_res_blocks=tuple(num_res_blocks),
        transformer_depth=tuple(transformer_depth), transformer_depth_middle=depth_of.get("middle_block", 0),
        transformer_depth_output=transformer_depth_output, context_dim=context_dim, adm_in_channels=adm,
        use_linear_in_transformer=use_linear, **heads)
    return family, config


def detect_vae_config(sd: dict[str, torch.Tensor], name: str) -> VAEConfig:
    """VAEConfig from LDM-layout autoencoder keys without prefix."""
    required = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
                "post_quant_conv.weight", "encoder.down.0.block.0.conv1.weight")
    missing = [key for key in required if key not in sd]
    if missing:
        raise CheckpointError(f"{name}: no SD autoencoder found (missing {', '.join(missing)})")
    base = sd["encoder.conv_in.weight"].shape[0]
    levels = len({key.split(".")[2] for key in sd if key.startswith("encoder.down.")})
    num_res_blocks = len({key.split(".")[4] for key in sd if key.startswith("encoder.down.0.block.")})
    mult = tuple(sd[f"encoder.down.{level}.block.0.conv2.weight"].shape[0] // base for level in range(levels))
    return VAEConfig(in_channels=sd["encoder.conv_in.weight"].shape[1],
                     out_channels=sd["decoder.conv_out.weight"].shape[0], base_channels=base,
                     channel_mult=mult, num_res_blocks=num_res_blocks,
                     z_channels=sd["decoder.conv_in.weight"].shape[1],
                     embed_dim=sd["post_quant_conv.weight"].shape[1])
