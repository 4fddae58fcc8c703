"""Super-resolution throughput: megapixels per second of upscale_image, tiled vs untiled.

By default the tiny demo upscaler (RRDBNet, 8 filters, 1 block, growth 32, scale 4, Fooocus'
key layout) on the CPU in float32; `--full` builds a random-weight network of the real file's size
(64 filters, 23 blocks) for a GPU. Tiled = 512-px tiles with 32-px overlap (the Fooocus/ComfyUI
setting); untiled = one tile covering the whole image. Reports the median of `--repeats` runs
after a small warm-up, as input and output megapixels per second, and the largest tiled-vs-untiled
difference.

    python bench/upscaler.py [--size 1024] [--repeats 3] [--threads 2] [--device cuda --full --half]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.tiny_upscaler import tiny_upscaler_state_dict, write_tiny_fooocus_upscaler
from models.upscaler import load_upscaler, upscale_image


def build(full: bool, directory: Path):
    if not full:
        return load_upscaler(write_tiny_fooocus_upscaler(directory / "fooocus_upscaler_s409985e5.bin"))
    path = directory / "full_size.bin"
    torch.save(tiny_upscaler_state_dict(0, num_filters=64, num_blocks=23), path)
    return load_upscaler(path)


def timed(descriptor, image, tile, overlap, device, repeats) -> tuple[float, torch.Tensor]:
    def once():
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = upscale_image(descriptor, image, tile=tile, overlap=overlap, min_tile=min(128, tile))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    upscale_image(descriptor, image[:, :64, :64], tile=tile, overlap=overlap)  # warm-up: kernel selection
    runs = [once() for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="input side in pixels (square)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="the real file's size (64 filters, 23 blocks)")
    parser.add_argument("--half", action="store_true", help="float16 weights and compute")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as directory:
        descriptor = build(args.full, Path(directory))
    descriptor.to(device=device, dtype=torch.float16 if args.half else torch.float32)
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    megapixels_in = args.size * args.size / 1e6
    megapixels_out = megapixels_in * descriptor.scale ** 2
    print(f"{'full-size' if args.full else 'tiny'} RRDBNet x{descriptor.scale} on {device} "
          f"{'fp16' if args.half else 'fp32'}, {args.threads} threads, {args.size}x{args.size} input")
    print("| mode | tile / overlap | seconds | input MP/s | output MP/s |")
    print("|---|---|---|---|---|")
    results = {}
    for mode, tile, overlap in (("untiled", args.size, 0), ("tiled", 512, 32)):  # untiled: one tile, no blend
        seconds, results[mode] = timed(descriptor, image, tile, overlap, device, args.repeats)
        print(f"| {mode} | {tile} / {overlap} | {seconds:.2f} | {megapixels_in / seconds:.3f} | "
              f"{megapixels_out / seconds:.2f} |")
    difference = (results["tiled"] - results["untiled"]).abs().max().item()
    print(f"largest tiled-vs-untiled difference: {difference:.2e}")


if __name__ == "__main__":
    main()
