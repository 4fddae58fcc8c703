"""Cost of image prompts per sampling step, and of the CLIP-vision encode (issue 12).

One UNet call on a cond+uncond batch (what each CFG step runs) at the mid-size config of
bench/unet_step.py, plain and with 1 and 4 IP-Adapter plus patches (16 image tokens each,
Fooocus' concatenated-token injection on every cross-attention), timed in alternation; then one
224 px image through the ViT-H/14 CLIP vision encoder (real width and depth, random weights) and
the Resampler of IP-Adapter plus at its real size.

Run: .venv/bin/python bench/image_prompt_step.py [--iters 5] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402
from models.ip_adapter import ImagePromptPatch, ip_adapter_from_state_dict  # noqa: E402
from models.tiny_ip_adapter import tiny_ip_adapter_state_dict  # noqa: E402
from models.unet import UNetModel  # noqa: E402
from unet_step import _alternating_times, _spec  # noqa: E402

IMAGE_TOKENS = 16  # queries of every IP-Adapter plus Resampler
RESAMPLER_WIDTH = 1280


def _patches(unet_config, count: int, generator: torch.Generator) -> list[ImagePromptPatch]:
    sd = tiny_ip_adapter_state_dict(unet_config, clip_width=1280, width=RESAMPLER_WIDTH, queries=IMAGE_TOKENS)
    adapter = ip_adapter_from_state_dict(sd)
    ctx = unet_config.context_dim
    return [ImagePromptPatch(adapter, torch.randn(1, IMAGE_TOKENS, ctx, generator=generator),
                             torch.randn(1, IMAGE_TOKENS, ctx, generator=generator), unet_config, 0.6, 1.0)
            for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    spec = _spec(full=False)
    unet = UNetModel(spec.unet).eval()
    size, batch = 64, 2  # 512 px latents; cond + uncond rows
    x = torch.randn(batch, 4, size, size, generator=generator)
    t = torch.full((batch,), 500.0)
    context = torch.randn(batch, 77, spec.unet.context_dim, generator=generator)
    y = torch.randn(batch, spec.unet.adm_in_channels, generator=generator)
    options = {n: {"attn2_kv_patch": _patches(spec.unet, n, generator), "timesteps": t, "sides": [0, 1]}
               for n in (1, 4)}

    with torch.inference_mode():
        calls = [lambda: unet(x, t, context, y)] + [lambda n=n: unet(x, t, context, y, transformer_options=options[n])
                                                     for n in (1, 4)]
        plain, one, four = (statistics.median(times) for times in
                            _alternating_times(calls, warmup=1, iters=args.iters, sync=lambda: None))

        vision = CLIPVisionModelWithProjection(CLIPVisionConfig()).eval()  # ViT-H/14: 1280 wide, 32 layers
        pixels = torch.randn(1, 3, 224, 224, generator=generator)
        vision(pixels)
        started = time.perf_counter()
        out = vision(pixels)
        encode_ms = (time.perf_counter() - started) * 1000
        resampler = _patches(spec.unet, 1, generator)[0]  # noqa: F841 (warm the adapter build)
        adapter = ip_adapter_from_state_dict(tiny_ip_adapter_state_dict(
            spec.unet, clip_width=1280, width=RESAMPLER_WIDTH, queries=IMAGE_TOKENS))
        started = time.perf_counter()
        adapter.image_proj(out.penultimate_hidden_states)
        resampler_ms = (time.perf_counter() - started) * 1000

    print(f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}; UNet {spec.unet.model_channels} ch, "
          f"mult {spec.unet.channel_mult}; batch {batch} (cond + uncond), latents {size}x{size}")
    print("| UNet call | ms (median) | ratio to plain |")
    print("|---|---|---|")
    for name, ms in (("plain", plain), ("1 image prompt", one), ("4 image prompts", four)):
        print(f"| {name} | {ms:.1f} | {ms / plain:.3f} |")
    print(f"CLIP vision ViT-H/14 encode, 1 image at 224 px: {encode_ms:.0f} ms; "
          f"Resampler (1280 wide, 4 layers, 16 queries): {resampler_ms:.1f} ms")


if __name__ == "__main__":
    main()
