"""Our UNet vs diffusers' UNet2DConditionModel: same weights, same config, one process.

    python bench/unet_step.py            # CPU, mid-size SDXL-style config (short)
    python bench/unet_step.py --cuda     # full SDXL, batch 2, 128x128 latents, fp16 (needs a GPU)

Prints median milliseconds per forward for both and the ratio ours/diffusers (lower is better).
Weights are random (compute does not depend on values); diffusers gets them through its own
single-file conversion of the same file.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from models.loading import load_checkpoint  # noqa: E402
from models.tiny import tiny_sdxl_spec, write_tiny_checkpoint  # noqa: E402
from models.tiny_text import TINY_CLIP_G, TINY_CLIP_L  # noqa: E402
from models.unet import UNetConfig  # noqa: E402
from oracle_diffusers import diffusers_unet_from_single_file, sdxl_adm_vector  # noqa: E402


def _alternating_times(fns, warmup: int, iters: int, sync) -> list[list[float]]:
    """Milliseconds of each call of each function, timed in alternation so that load from other
    processes (this may be a shared machine) hits both sides alike."""
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
    return times


def _alternating_medians(fns, warmup: int, iters: int, sync) -> list[float]:
    """Median ms of each function (see _alternating_times)."""
    return [statistics.median(record) for record in _alternating_times(fns, warmup, iters, sync)]


def _spec(full: bool):
    if full:
        # real SDXL widths; tiny CLIP configs only size the context/ADM like the real ones
        clip_l = replace(TINY_CLIP_L, width=768, heads=12, intermediate=64, layers=1)
        clip_g = replace(TINY_CLIP_G, width=1280, heads=20, intermediate=64, layers=1, projection_dim=1280)
        spec = tiny_sdxl_spec(clip_l=clip_l, clip_g=clip_g)
        return replace(spec, unet=UNetConfig.sdxl())
    # mid-size: SDXL layout at reduced width/depth
    clip_l = replace(TINY_CLIP_L, width=256, heads=4, intermediate=64)
    clip_g = replace(TINY_CLIP_G, width=256, heads=4, intermediate=64, projection_dim=256)
    return tiny_sdxl_spec(model_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2,
                          depth_per_level=(0, 1, 2), middle_depth=2, clip_l=clip_l, clip_g=clip_g)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = args.cuda and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    dtype = torch.float16 if use_cuda else torch.float32
    batch, size = (2, 128) if use_cuda else (2, 32)
    spec = _spec(full=use_cuda)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_checkpoint(Path(tmp) / "bench.safetensors", spec, seed=0, dtype=dtype)
        ours = load_checkpoint(path).unet.to(device, dtype)
        theirs = diffusers_unet_from_single_file(path, spec.unet, tmp).to(device, dtype)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, size, size, generator=generator).to(device, dtype)
    t = torch.tensor([500.0] * batch, device=device)
    context = torch.randn(batch, 77, spec.unet.context_dim, generator=generator).to(device, dtype)
    pooled = torch.randn(batch, spec.clip_g.projection_dim, generator=generator).to(device, dtype)
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * batch, device=device)
    y = sdxl_adm_vector(pooled, time_ids).to(dtype)
    added = {"text_embeds": pooled, "time_ids": time_ids}
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with torch.inference_mode():
        diff = (ours(x, t, context, y) - theirs(x, t, context, added_cond_kwargs=added).sample).abs().max()
        ours_times, theirs_times = _alternating_times(
            [lambda: ours(x, t, context, y), lambda: theirs(x, t, context, added_cond_kwargs=added)],
            warmup=2, iters=args.iters, sync=sync)
    ours_ms, theirs_ms = statistics.median(ours_times), statistics.median(theirs_times)
    # each call against the other side's call right after it: steadier than the medians' ratio
    # when other processes come and go
    paired = statistics.median(a / b for a, b in zip(ours_times, theirs_times))

    where = torch.cuda.get_device_name() if use_cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {where}; torch {torch.__version__}; dtype {dtype}; batch {batch}; latents {size}x{size}")
    print(f"config: {spec.unet}")
    print(f"max |ours - diffusers| = {float(diff):.3g}")
    print(f"load average before/after: {load:.2f} / {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    print(f"ours {ours_ms:.1f} ms, diffusers {theirs_ms:.1f} ms, ratio ours/diffusers = {ours_ms / theirs_ms:.3f} "
          f"(median of paired ratios {paired:.3f})")


if __name__ == "__main__":
    main()
