"""Tiny random-weight image-prompt files in the real formats, for tests and the offline demo:
a CLIP vision safetensors (Hugging Face layout), IP-Adapter plus torch pickles (`image_proj` +
`ip_adapter`) and the negative-token safetensors (`data`)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from .ip_adapter import ResamplerConfig, cross_attention_widths

TINY_CLIP_VISION = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_layers=3, num_heads=2,
                                    patch_size=14, image_size=224, projection_dim=32)


def tiny_clip_vision_state_dict(config: CLIPVisionConfig = TINY_CLIP_VISION, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith(("norm1.weight", "norm2.weight", "layrnorm.weight", "layernorm.weight")):
            sd[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            sd[key] = 0.05 * torch.randn(value.shape, generator=generator)
    return sd


def write_tiny_clip_vision(path: Path, config: CLIPVisionConfig = TINY_CLIP_VISION, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny_clip_vision_state_dict(config, seed).items()}, str(path))
    return path


def tiny_ip_adapter_state_dict(unet_config, clip_width: int = TINY_CLIP_VISION.hidden_size, width: int = 128,
                               depth: int = 4, queries: int = 4,
                               seed: int = 0) -> dict:
    """{"image_proj": Resampler keys, "ip_adapter": "{2n+1}.to_{k,v}_ip.weight"} for a UNet config:
    one k/v pair per cross-attention layer, in IP-Adapter's order (input, output, middle)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.05):
        return scale * torch.randn(shape, generator=generator)

    ctx = unet_config.context_dim
    inner = width  # heads x 64 == width in every real plus adapter (here 2 heads)
    proj = {"latents": rand(1, queries, width, scale=width ** -0.5),
            "proj_in.weight": rand(width, clip_width), "proj_in.bias": rand(width),
            "proj_out.weight": rand(ctx, width), "proj_out.bias": rand(ctx),
            "norm_out.weight": 1 + rand(ctx), "norm_out.bias": rand(ctx)}
    for i in range(depth):
        p = f"layers.{i}."
        proj.update({p + "0.norm1.weight": 1 + rand(width), p + "0.norm1.bias": rand(width),
                     p + "0.norm2.weight": 1 + rand(width), p + "0.norm2.bias": rand(width),
                     p + "0.to_q.weight": rand(inner, width), p + "0.to_kv.weight": rand(2 * inner, width),
                     p + "0.to_out.weight": rand(width, inner),
                     p + "1.0.weight": 1 + rand(width), p + "1.0.bias": rand(width),
                     p + "1.1.weight": rand(4 * width, width), p + "1.3.weight": rand(width, 4 * width)})
    layers = {}
    for n, channels in enumerate(cross_attention_widths(unet_config)):
        layers[f"{2 * n + 1}.to_k_ip.weight"] = rand(channels, ctx, scale=0.2)
        layers[f"{2 * n + 1}.to_v_ip.weight"] = rand(channels, ctx, scale=0.2)
    return {"image_proj": proj, "ip_adapter": layers}


def write_tiny_ip_adapter(path: Path, unet_config, seed: int = 0, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_ip_adapter_state_dict(unet_config, seed=seed, **kwargs), str(path))
    return path


def write_tiny_ip_negative(path: Path, unet_config, queries: int = 4, seed: int = 0) -> Path:
    """`fooocus_ip_negative.safetensors`: tensor "data", (1, queries, context_dim) fp16 image tokens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn((1, queries, unet_config.context_dim), generator=generator).half()
    save_file({"data": data}, str(path))
    return path


DEMO_FILES = ("clip_vision/clip_vision_vit_h.safetensors", "controlnet/ip-adapter-plus_sdxl_vit-h.bin",
              "controlnet/ip-adapter-plus-face_sdxl_vit-h.bin", "controlnet/fooocus_ip_negative.safetensors")


def write_demo_image_prompt_models(models_dir: Path, unet_config=None, seed: int = 0) -> dict[str, Path]:
    """The image-prompt files under their Fooocus names, fitting the demo tiny-sdxl checkpoint
    (models.tiny.tiny_sdxl_spec); a file already there (perhaps a real one) is left alone."""
    if unet_config is None:
        from .tiny import tiny_sdxl_spec

        unet_config = tiny_sdxl_spec().unet
    models_dir = Path(models_dir)
    clip, plus, face, negative = (models_dir / name for name in DEMO_FILES)
    writers = {clip: lambda p: write_tiny_clip_vision(p, seed=seed),
               plus: lambda p: write_tiny_ip_adapter(p, unet_config, seed=seed + 1),
               face: lambda p: write_tiny_ip_adapter(p, unet_config, seed=seed + 2),
               negative: lambda p: write_tiny_ip_negative(p, unet_config, seed=seed + 3)}
    return {str(path.relative_to(models_dir)): write(path) for path, write in writers.items() if not path.exists()}
