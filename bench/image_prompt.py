"""Cost of image prompts per sampling step, and the CLIP-vision encode time.

    python bench/image_prompt.py          # CPU: mid-size SDXL-style UNet, ViT-H/14 encode
    python bench/image_prompt.py --cuda   # full SDXL UNet (fp16, batch 2, 128x128 latents), needs a GPU

One step = one UNet forward on the CFG batch (cond + uncond rows). With k image prompts every
cross-attention gets 16*k more key/value tokens (Fooocus's concatenation); their K/V are computed
once per image, so the step pays only the longer attention. Weights are random (compute does not
depend on values).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection, preprocess  # noqa: E402
from models.ip_adapter import ImagePromptPatch, ip_adapter_from_state_dict  # noqa: E402
from models.tiny import tiny_unet_config  # noqa: E402
from models.tiny_ip_adapter import tiny_ip_adapter_state_dict  # noqa: E402
from models.unet import UNetConfig, UNetModel  # noqa: E402


def _median_ms(fn, warmup: int, iters: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _patches(cfg: UNetConfig, count: int, device, dtype) -> list:
    # a real-shaped plus adapter (16 queries) over this UNet; the Resampler's own size does not matter here
    sd = tiny_ip_adapter_state_dict(cfg, clip_width=64, width=128, depth=4, queries=16)
    adapter = ip_adapter_from_state_dict(sd)
    out = []
    for n in range(count):
        tokens = torch.randn(1, 16, cfg.context_dim)
        out.append(ImagePromptPatch(adapter, tokens, torch.randn(1, 16, cfg.context_dim), cfg, 0.6, 1.0))
    return out


def bench_steps(cfg: UNetConfig, latent: int, device, dtype, warmup: int, iters: int, sync) -> dict:
    torch.manual_seed(0)
    with torch.device("meta"):
        unet = UNetModel(cfg)
    unet = unet.to_empty(device=device).to(dtype)
    for p in unet.parameters():
        p.data.normal_(0, 0.02)
    unet.eval().requires_grad_(False)
    x = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, cfg.context_dim, device=device, dtype=dtype)
    y = torch.randn(2, cfg.adm_in_channels, device=device, dtype=dtype) if cfg.adm_in_channels else None
    t = torch.tensor([500.0, 500.0], device=device)
    sides = torch.tensor([0.0, 1.0], device=device)
    counts = (0, 1, 4)
    options = [{"attn2_kv_patch": _patches(cfg, n, device, dtype), "sides": sides, "timesteps": t} for n in counts]
    calls = [lambda o=o: unet(x, t, ctx, y=y, transformer_options=o) for o in options]
    with torch.inference_mode():
        return dict(zip(counts, _alternating_medians(calls, warmup, iters, sync)))


def _alternating_medians(fns, warmup: int, iters: int, sync) -> list[float]:
    """Median ms of each, timed in alternation so load from other processes hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync()
            record.append((time.perf_counter() - start) * 1000)
    return [statistics.median(record) for record in times]


def bench_encode(device, dtype, iters: int, sync) -> float:
    config = CLIPVisionConfig()  # ViT-H/14: 32 layers, width 1280, 224 px
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    model = model.to_empty(device=device).to(dtype)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    model.eval().requires_grad_(False)
    image = np.random.default_rng(0).random((768, 1024, 3)).astype(np.float32)

    def encode():
        model(preprocess(image).to(device, dtype))

    with torch.inference_mode():
        return _median_ms(encode, 1, iters, sync)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuda", action="store_true")
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # random weights drive activations into denormals, slow on CPUs
    if args.cuda:
        device, dtype, latent = torch.device("cuda"), torch.float16, 128
        cfg, warmup, iters, encode_iters = UNetConfig.sdxl(), 3, 10, 10
        sync = torch.cuda.synchronize
    else:
        device, dtype, latent = torch.device("cpu"), torch.float32, 32
        cfg = tiny_unet_config(model_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2,
                               depth_per_level=(0, 1, 2), middle_depth=2, context_dim=512, adm_in_channels=None,
                               sdxl_style=True)
        warmup, iters, encode_iters = 1, 7, 3
        sync = lambda: None  # noqa: E731
    steps = bench_steps(cfg, latent, device, dtype, warmup, iters, sync)
    print(f"device {device}, {dtype}, latent {latent}x{latent}, batch 2 (cond+uncond), torch threads "
          f"{torch.get_num_threads()}")
    for count, ms in steps.items():
        print(f"image prompts {count}: {ms:8.1f} ms/step  ratio {ms / steps[0]:.3f}")
    print(f"CLIP vision ViT-H/14 encode (preprocess + forward, 1 image): {bench_encode(device, dtype, encode_iters, sync):.1f} ms")


if __name__ == "__main__":
    main()
