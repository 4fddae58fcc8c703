"""One-off cross-check of models/retinaface.py against facexlib's RetinaFace (not a test: facexlib
requires opencv-python, which clashes with our opencv-python-headless). Install it aside first:

    .venv/bin/python -m pip install --no-deps --target /tmp/fxl facexlib==0.3.0
    .venv/bin/python scripts/facexlib_crosscheck.py /tmp/fxl

1. facexlib's network at the real widths, random weights and BatchNorm statistics, saved with a
   `module.` prefix, loads into ours; both forwards agree on an odd-sized image.
2. Canned head outputs through both post-processings (facexlib's detect_faces at 0.97): the same
   boxes, scores, landmarks, in the same order.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.retinaface import detect_faces, prior_boxes, retinaface_from_state_dict  # noqa: E402


def import_facexlib_retinaface(site: Path):
    """facexlib's RetinaFace class without running facexlib/__init__.py (it imports filterpy, numba...)."""
    for name, sub in (("facexlib", ""), ("facexlib.detection", "detection"), ("facexlib.utils", "utils")):
        module = types.ModuleType(name)
        module.__path__ = [str(site / "facexlib" / sub)]
        sys.modules[name] = module
    from facexlib.detection.retinaface import RetinaFace

    return RetinaFace


def main(site: Path) -> int:
    oracle = import_facexlib_retinaface(site)(network_name="resnet50", device="cpu").eval()
    generator = torch.Generator().manual_seed(1)
    state = oracle.state_dict()
    for key, value in state.items():  # statistics that make eval BatchNorm matter
        if key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
        elif key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    oracle.load_state_dict(state)
    ours = retinaface_from_state_dict({f"module.{k}": v for k, v in state.items()})
    failures = 0
    image = np.random.default_rng(0).integers(0, 256, (203, 317, 3), dtype=np.uint8)
    x = torch.from_numpy(image[..., ::-1].astype(np.float32).transpose(2, 0, 1).copy())[None] - oracle.mean_tensor
    with torch.no_grad():
        for name, a, b in zip(("boxes", "scores", "landmarks"), oracle(x), ours(x)):
            diff = (a - b).abs().max().item()
            print(f"forward {name}: max |difference| {diff:.3g}")
            failures += diff > 1e-4 * max(1.0, a.abs().max().item())
    for seed, (height, width) in enumerate([(203, 317), (512, 512), (97, 130), (640, 480), (333, 251)]):
        gen = torch.Generator().manual_seed(seed)
        count = prior_boxes(height, width).shape[0]
        canned = (torch.randn(1, count, 4, generator=gen) * 0.7,
                  torch.softmax(torch.randn(1, count, 2, generator=gen) * 3, -1),
                  torch.randn(1, count, 10, generator=gen))
        oracle.forward = ours.forward = lambda _x, c=canned: c
        blank = np.zeros((height, width, 3), np.uint8)
        with torch.no_grad():
            reference = oracle.detect_faces(blank, 0.97)
        faces = detect_faces(ours, blank)
        same = len(reference) == len(faces.scores) and (
            np.allclose(reference[:, :4], faces.boxes, atol=1e-3) and np.array_equal(reference[:, 4], faces.scores)
            and np.allclose(reference[:, 5:], faces.landmarks.reshape(-1, 10), atol=1e-3))
        print(f"detect_faces {height}x{width}: {len(reference)} faces, {'same' if same else 'DIFFERENT'}")
        failures += not same
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
