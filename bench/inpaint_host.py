"""Host-side cost of Fooocus's inpaint pre- and post-processing for a 1024x1024 picture.

Times each numpy/OpenCV/PIL step of models/inpaint (no network, no VAE, no super-resolution:
the crop's upscale is the model's time, measured by its own benchmark):

  mask rules    prepare_mask: uploaded mask mean-RGB > 127, erode/dilate 8
  outpaint      outpaint Left+Right by 30%
  crop box      respective_field_box (field 0.618)
  shape ceil    set_shape_ceil(crop, 1024) (Lanczos)
  fill          fooocus_fill on the 1024-class crop
  feather       feather: the 32-pixel blend ramp of the whole mask
  composite     resize the crop back, paste, blend with the feather

Median of `--repeats` runs per step, in ms.

    .venv/bin/python bench/inpaint_host.py [--size 1024] [--repeats 7] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from models.inpaint import masks as m  # noqa: E402
from models.inpaint.prepare import prepare_crop  # noqa: E402


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    size = args.size
    rng = np.random.default_rng(0)
    # a smooth picture (noise would make the Lanczos and blur costs no different, but looks like nothing)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2,
                      rng.uniform(0, 255, (size, size))], axis=2).astype(np.uint8)
    upload = np.zeros((size, size, 3), np.uint8)
    upload[size * 3 // 8: size * 5 // 8, size // 4: size // 2] = 255  # a 256x256 hole at 1024

    rows = []
    ms, mask = timed(lambda: m.prepare_mask(size, size, uploaded=upload, erode_dilate=8), args.repeats)
    rows.append(("mask rules (upload + dilate 8)", ms))
    ms, _ = timed(lambda: m.outpaint(image, mask, ["Left", "Right"]), args.repeats)
    rows.append(("outpaint Left+Right (30%)", ms))
    ms, box = timed(lambda: m.respective_field_box(mask, 0.618), args.repeats)
    rows.append(("crop box (field 0.618)", ms))
    crop = np.ascontiguousarray(image[box.top:box.bottom, box.left:box.right])
    ms, crop = timed(lambda: m.set_shape_ceil(crop, 1024), args.repeats)
    rows.append((f"shape ceil 1024 ({box.width}x{box.height} -> {crop.shape[1]}x{crop.shape[0]})", ms))
    crop_mask = m.binarize(m.resample(np.ascontiguousarray(mask[box.top:box.bottom, box.left:box.right]),
                                      crop.shape[1], crop.shape[0]))
    ms, _ = timed(lambda: m.fooocus_fill(crop, crop_mask), args.repeats)
    rows.append(("fooocus_fill", ms))
    ms, blend_mask = timed(lambda: m.feather(mask), args.repeats)
    rows.append(("feather (32-px chessboard ramp)", ms))
    ms, _ = timed(lambda: m.composite(image, crop, box, blend_mask), args.repeats)
    rows.append(("composite (resize back, paste, blend)", ms))
    pre_ms, plan = timed(lambda: prepare_crop(image, mask, 0.618, use_fill=True), args.repeats)
    post_ms, _ = timed(lambda: plan.composite(plan.crop_image), args.repeats)

    print(f"| step ({size}x{size} picture, {args.threads} OpenCV thread(s)) | ms |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    print(f"| **whole pre-processing** (prepare_crop: crop, shape ceil, fill, feather) | **{pre_ms:.1f}** |")
    print(f"| **whole post-processing** (composite) | **{post_ms:.1f}** |")


if __name__ == "__main__":
    main()
