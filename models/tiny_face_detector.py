"""A tiny random-weight RetinaFace in the key layout of `detection_Resnet50_Final.pth`, for tests
and the offline demo: every key of the real file (ResNet50's 3/4/6/3 bottlenecks, FPN, SSH, heads),
with narrow channels, so `models.retinaface.load_retinaface` reads its widths from the tensors
and loads it by the same strict code path as the real file.

The heads are set so that the demo exercises FaceSwap's crop: the stride-32 level scores every
cell a face (about 0.99, above Fooocus' 0.97) and every detection carries face-shaped landmarks
(eyes above nose above mouth), so the first face is well defined and aligns without degenerate
points. The backbone's influence on the heads is scaled down so the outputs stay near those
biases whatever the image (random full-depth weights would otherwise make boxes explode).
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.retinaface import DETECTOR_FILE, RetinaFace, RetinaFaceConfig

TINY_CONFIG = RetinaFaceConfig(stem_width=8, stage_widths=(4, 8, 16, 32), stage_outputs=(16, 32, 64, 128),
                               stage_blocks=(3, 4, 6, 3), fpn_width=16)
DEMO_FILE = DETECTOR_FILE  # the real file name, in models/controlnet, as Fooocus keeps it
# landmark offsets in units of variance * anchor size from the anchor centre: left eye, right
# eye, nose, left and right mouth corners (image x to the right, y down)
FACE_SHAPE = ((-2.0, -1.5), (2.0, -1.5), (0.0, 0.5), (-1.5, 2.5), (1.5, 2.5))
FACE_LOGIT = 5.0  # softmax(0, 5)[1] = 0.9933 > 0.97
HEAD_GAIN = 1e-3


def tiny_retinaface(seed: int = 0, config: RetinaFaceConfig = TINY_CONFIG) -> RetinaFace:
    torch.manual_seed(seed)
    network = RetinaFace(config).eval()
    with torch.no_grad():
        for heads in (network.ClassHead, network.BboxHead, network.LandmarkHead):
            for head in heads:
                head.conv1x1.weight.mul_(HEAD_GAIN)
                head.conv1x1.bias.zero_()
        last = network.ClassHead[len(config.steps) - 1].conv1x1.bias
        last[1] = FACE_LOGIT  # channels (background, face) per anchor: the first (256 px) anchor only
        shape = torch.tensor(FACE_SHAPE).flatten()
        for head in network.LandmarkHead:
            head.conv1x1.bias.copy_(shape.repeat(config.anchors))
    return network


def write_tiny_face_detector(path: str | Path, seed: int = 0) -> Path:
    """Saves the tiny network's state dict as a torch pickle, with DataParallel's `module.` prefix
    (files trained under DataParallel carry it; the loader strips it, as facexlib does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v.contiguous() for k, v in tiny_retinaface(seed).state_dict().items()}
    torch.save(state, path)
    return path


def write_demo_face_detector(models_dir: str | Path) -> Path:
    return write_tiny_face_detector(Path(models_dir) / "controlnet" / DEMO_FILE)
