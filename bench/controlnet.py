"""Cost of a ControlNet per sampling step, as a ratio to the UNet step, and the preprocessors' time.

    python bench/controlnet.py            # CPU, mid-size SDXL-style config, batch 2 (CFG), 32x32 latents
    python bench/controlnet.py --cuda     # full SDXL widths, 128x128 latents, fp16 (needs a GPU)

A ControlNet is the UNet's input half + middle + hint encoder, so the ratio should sit a bit
under 0.5. Preprocessors: PyraCanny (9-level pyramid, 3 channels) and CPDS (OpenCV decolor) on a
1024x1024 photo-like image (smooth noise with edges). Weights are random (compute does not
depend on values).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.controlnet import ControlNet, controlnet_config_for_unet  # noqa: E402
from models.preprocessors import cpds, pyracanny  # noqa: E402
from models.tiny import tiny_unet_config  # noqa: E402
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


def step_ratio(cuda: bool, iters: int) -> dict:
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    if cuda:
        config, latent = UNetConfig.sdxl(), 128
    else:
        config, latent = tiny_unet_config(model_channels=128, channel_mult=(1, 2, 4), num_res_blocks=2,
                                          depth_per_level=(0, 1, 2), middle_depth=2, context_dim=512,
                                          adm_in_channels=256 + 6 * 256, sdxl_style=True), 32
    unet = UNetModel(config).to(device, dtype).eval()
    control = ControlNet(controlnet_config_for_unet(config)).to(device, dtype).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=generator).to(device, dtype)
    hint = torch.rand(2, 3, latent * 8, latent * 8, generator=generator).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device)
    context = torch.randn(2, 77, config.context_dim, generator=generator).to(device, dtype)
    y = torch.randn(2, config.adm_in_channels, generator=generator).to(device, dtype)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        residuals = control(x, hint, t, context, y)
        unet_ms = _median_ms(lambda: unet(x, t, context, y), 2, iters, sync)
        control_ms = _median_ms(lambda: control(x, hint, t, context, y), 2, iters, sync)
        both_ms = _median_ms(lambda: unet(x, t, context, y, transformer_options={
            "control": control(x, hint, t, context, y)}), 2, iters, sync)
    del residuals
    return {"unet_ms": unet_ms, "controlnet_ms": control_ms, "step_with_control_ms": both_ms,
            "ratio": control_ms / unet_ms, "latent": latent, "model_channels": config.model_channels}


def preprocessors(iters: int) -> dict:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), (0, 0), 4.0)
    cv2.rectangle(image, (200, 200), (700, 600), (240, 30, 30), -1)
    cv2.circle(image, (600, 700), 180, (20, 200, 60), -1)
    none = lambda: None  # noqa: E731
    return {"pyracanny_ms": _median_ms(lambda: pyracanny(image, 64, 128), 1, iters, none),
            "cpds_ms": _median_ms(lambda: cpds(image), 1, iters, none)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    step = step_ratio(args.cuda, args.iters)
    print(f"model_channels {step['model_channels']}, batch 2, latent {step['latent']}x{step['latent']}: "
          f"UNet {step['unet_ms']:.1f} ms, ControlNet {step['controlnet_ms']:.1f} ms "
          f"(ratio {step['ratio']:.2f}), UNet step with ControlNet {step['step_with_control_ms']:.1f} ms")
    pre = preprocessors(args.iters)
    print(f"1024x1024: PyraCanny {pre['pyracanny_ms']:.1f} ms, CPDS {pre['cpds_ms']:.1f} ms "
          f"(OpenCV threads: {cv2.getNumThreads()})")


if __name__ == "__main__":
    main()
