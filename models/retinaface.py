"""RetinaFace-ResNet50 face detector in the key layout of `detection_Resnet50_Final.pth`
(facexlib / Pytorch_Retinaface), the detector behind Fooocus' FaceSwap face crop (spec §10.2).

The file is a torch pickle of the network's state dict, keys possibly prefixed `module.` (it was
trained under DataParallel):
  body.*          torchvision's ResNet50 up to layer4 (IntermediateLayerGetter: no avgpool/fc),
                  returning layer2, layer3, layer4 (strides 8, 16, 32)
  fpn.*           output1..3 (1x1 conv-BN-act), merge1..2 (3x3 conv-BN-act), top-down by nearest
  ssh1..3.*       SSH context modules, one per pyramid level
  ClassHead.N / BboxHead.N / LandmarkHead.N .conv1x1.*   per level, 2 anchors per cell

Attribute names equal those keys, so loading is a strict `load_state_dict`. Widths and depths are
read back from the tensors (the real file: stem 64, stages 256/512/1024/2048 wide with 3/4/6/3
blocks, FPN 256), so the tiny demo/test files with narrow channels load by the same code.

Detection follows facexlib's `detect_faces` as Fooocus calls it: BGR float image at its own size
(`use_origin_size=True`), minus the BGR mean (104, 117, 123); softmax face score > 0.97; boxes
and landmarks decoded from the priors with variances (0.1, 0.2); sorted by score; NMS at IoU 0.4
(torchvision's, as facexlib's `py_cpu_nms` calls it). Fooocus crops the first (highest-score) face.
"""
from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

DETECTOR_FILE = "detection_Resnet50_Final.pth"
BGR_MEAN = (104.0, 117.0, 123.0)
CONFIDENCE = 0.97  # facexlib's FaceRestoreHelper.get_face_landmarks_5 passes 0.97 to detect_faces
NMS_IOU = 0.4
STAGE_STRIDES = (1, 2, 2, 2)  # torchvision ResNet: layer1 keeps the stem's stride 4, then halves


@dataclass(frozen=True)
class RetinaFaceConfig:
    stem_width: int = 64  # body.conv1 output channels
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck (conv1/conv2) width per layerN
    stage_outputs: tuple[int, ...] = (256, 512, 1024, 2048)  # conv3 output channels per layerN
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)  # bottlenecks per layerN
    fpn_width: int = 256  # FPN and SSH channels (facexlib's cfg_re50 out_channel)
    anchors: int = 2  # anchors per feature cell, one per min size
    min_sizes: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))  # anchor sides per level, px
    steps: tuple[int, ...] = (8, 16, 32)  # feature stride per level
    variances: tuple[float, float] = (0.1, 0.2)  # centre and size variances of the box encoding

    @property
    def leaky(self) -> float:
        """facexlib's FPN and SSH use LeakyReLU(0.1) when 64 channels wide or less, plain ReLU above."""
        return 0.1 if self.fpn_width <= 64 else 0.0

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "RetinaFaceConfig":
        widths, outputs, blocks = [], [], []
        for n in range(1, 5):
            prefix = f"body.layer{n}."
            widths.append(sd[prefix + "0.conv1.weight"].shape[0])
            outputs.append(sd[prefix + "0.conv3.weight"].shape[0])
            blocks.append(1 + max(int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)))
        return cls(stem_width=sd["body.conv1.weight"].shape[0], stage_widths=tuple(widths),
                   stage_outputs=tuple(outputs), stage_blocks=tuple(blocks),
                   fpn_width=sd["fpn.output1.0.weight"].shape[0],
                   anchors=sd["ClassHead.0.conv1x1.weight"].shape[0] // 2)


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm (+ activation): keys `.0.weight`, `.1.*` as facexlib's conv_bn helpers."""

    def __init__(self, cin: int, cout: int, kernel: int, leaky: float | None):
        layers = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
        if leaky is not None:
            layers.append(nn.LeakyReLU(leaky) if leaky > 0 else nn.ReLU())
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    def __init__(self, cin: int, width: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBody(nn.Module):
    """ResNet50 trunk returning layer2..layer4 features (facexlib's return_layers)."""

    def __init__(self, c: RetinaFaceConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem_width)
        cin = c.stem_width
        for n, (width, cout, blocks, stride) in enumerate(
                zip(c.stage_widths, c.stage_outputs, c.stage_blocks, STAGE_STRIDES), start=1):
            stage = [Bottleneck(cin, width, cout, stride)]
            stage += [Bottleneck(cout, width, cout, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{n}", nn.Sequential(*stage))
            cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], width: int, leaky: float):
        super().__init__()
        self.output1 = ConvBN(in_channels[0], width, 1, leaky)
        self.output2 = ConvBN(in_channels[1], width, 1, leaky)
        self.output3 = ConvBN(in_channels[2], width, 1, leaky)
        self.merge1 = ConvBN(width, width, 3, leaky)
        self.merge2 = ConvBN(width, width, 3, leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Context module: a 3x3 branch (half the width) and stacked 3x3s standing for 5x5 and 7x7
    (a quarter each), concatenated then ReLU. `conv7x7_3` is spelled so in the file."""

    def __init__(self, width: int, leaky: float):
        super().__init__()
        half, quarter = width // 2, width // 4
        self.conv3X3 = ConvBN(width, half, 3, None)
        self.conv5X5_1 = ConvBN(width, quarter, 3, leaky)
        self.conv5X5_2 = ConvBN(quarter, quarter, 3, None)
        self.conv7X7_2 = ConvBN(quarter, quarter, 3, leaky)
        self.conv7x7_3 = ConvBN(quarter, quarter, 3, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(first),
                                 self.conv7x7_3(self.conv7X7_2(first))], dim=1))


class Head(nn.Module):
    """1x1 conv predicting `values` numbers per anchor; flattened cell-major, anchor-minor, as the priors."""

    def __init__(self, width: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(width, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self, config: RetinaFaceConfig = RetinaFaceConfig()):
        super().__init__()
        if config.fpn_width % 4:
            raise ValueError(f"RetinaFace: FPN width {config.fpn_width} must be a multiple of 4 (SSH branches)")
        self.config = config
        self.body = ResNetBody(config)
        self.fpn = FPN(tuple(config.stage_outputs[1:]), config.fpn_width, config.leaky)
        self.ssh1 = SSH(config.fpn_width, config.leaky)
        self.ssh2 = SSH(config.fpn_width, config.leaky)
        self.ssh3 = SSH(config.fpn_width, config.leaky)
        levels = len(config.steps)
        self.ClassHead = nn.ModuleList(Head(config.fpn_width, config.anchors, 2) for _ in range(levels))
        self.BboxHead = nn.ModuleList(Head(config.fpn_width, config.anchors, 4) for _ in range(levels))
        self.LandmarkHead = nn.ModuleList(Head(config.fpn_width, config.anchors, 10) for _ in range(levels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) BGR minus the mean -> box offsets (B, N, 4), face/background
        probabilities (B, N, 2: background, face), landmark offsets (B, N, 10)."""
        pyramid = self.fpn(self.body(x))
        features = [self.ssh1(pyramid[0]), self.ssh2(pyramid[1]), self.ssh3(pyramid[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, logits.softmax(dim=-1), landmarks


def prior_boxes(height: int, width: int, config: RetinaFaceConfig = RetinaFaceConfig()) -> torch.Tensor:
    """(N, 4) anchors (cx, cy, w, h) as fractions of the image: per level, rows then columns of
    ceil(size / step) cells, each cell's min sizes in turn (the heads' flattening order)."""
    levels = []
    for step, sizes in zip(config.steps, config.min_sizes):
        rows, cols = -(-height // step), -(-width // step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        per_size = [torch.stack([grid_x, grid_y, torch.full_like(grid_x, s / width),
                                 torch.full_like(grid_y, s / height)], dim=-1) for s in sizes]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(levels).float()


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor, variances=(0.1, 0.2)) -> torch.Tensor:
    """(N, 4) corner boxes (x1, y1, x2, y2), fractions of the image, from SSD-style offsets."""
    centre = priors[:, :2] + offsets[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(offsets[:, 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor, variances=(0.1, 0.2)) -> torch.Tensor:
    """(N, 5, 2) landmark points, fractions of the image: each an offset from the anchor centre."""
    points = offsets.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]


def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, iou: float = NMS_IOU) -> torch.Tensor:
    """Indices kept by greedy NMS, highest score first: torchvision's (continuous-area IoU), as
    facexlib 0.3 and Fooocus' copy of it call (the older numpy py_cpu_nms counted +1 pixel)."""
    return torchvision.ops.nms(boxes, scores, iou)


@dataclass(frozen=True)
class Faces:
    """Detections in image pixels, highest score first."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2) x, y: eyes, nose, mouth corners, each pair image-left first


def to_network_input(image_rgb: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 BGR minus the mean, from an (H, W) / (H, W, 3|4) uint8 RGB(A) image."""
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    bgr = image[..., 2::-1].astype(np.float32)  # drop alpha, RGB -> BGR
    tensor = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
    return tensor - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)


@torch.inference_mode()
def detect_faces(network: RetinaFace, image_rgb: np.ndarray, conf_threshold: float = CONFIDENCE,
                 nms_threshold: float = NMS_IOU) -> Faces:
    """Every face of the image: the network at the image's own size on its device, in its dtype."""
    parameter = next(network.parameters())
    x = to_network_input(image_rgb)
    height, width = x.shape[-2:]
    offsets, probabilities, landmark_offsets = (t[0].float().cpu() for t in
                                                network(x.to(parameter.device, parameter.dtype)))
    config = network.config
    priors = prior_boxes(height, width, config)
    if priors.shape[0] != offsets.shape[0]:
        raise RuntimeError(f"RetinaFace: {offsets.shape[0]} predictions for {priors.shape[0]} priors")
    scores = probabilities[:, 1]
    chosen = np.nonzero(scores.numpy() > conf_threshold)[0]
    # numpy's argsort reversed, as facexlib: ties (float32 scores saturate at 1.0) keep its order,
    # and so does the first face Fooocus crops
    order = torch.from_numpy(chosen[np.argsort(scores.numpy()[chosen])[::-1].copy()])
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = decode_boxes(offsets[order], priors[order], config.variances) * scale.repeat(2)
    points = decode_landmarks(landmark_offsets[order], priors[order], config.variances) * scale
    keep = nms_keep(boxes, scores[order], nms_threshold)
    return Faces(boxes[keep].numpy(), scores[order][keep].numpy(), points[keep].numpy())


class FaceDetector:
    """FACE_DETECTOR: `landmarks(image)` gives the 5 landmarks of the face Fooocus crops (the
    highest-score one), or None. `acquire()` is a context manager yielding the network ready on
    its compute device (the node passes the model manager's; see also `from_network`)."""

    def __init__(self, acquire: Callable[[], ContextManager[RetinaFace]], name: str = DETECTOR_FILE,
                 conf_threshold: float = CONFIDENCE, nms_threshold: float = NMS_IOU):
        self.acquire = acquire
        self.name = name
        self.conf_threshold = conf_threshold
        self.nms_threshold = nms_threshold

    @classmethod
    def from_network(cls, network: RetinaFace, **kwargs) -> "FaceDetector":
        """A detector computing wherever `network` already is (scripts and tests; no manager)."""
        network = network.eval()
        return cls(lambda: contextlib.nullcontext(network), **kwargs)

    def detect(self, image_rgb: np.ndarray) -> Faces:
        with self.acquire() as network:
            return detect_faces(network, image_rgb, self.conf_threshold, self.nms_threshold)

    def landmarks(self, image_rgb: np.ndarray) -> np.ndarray | None:
        faces = self.detect(image_rgb)
        return faces.landmarks[0] if len(faces.scores) else None


def clean_state_dict(loaded) -> dict[str, torch.Tensor]:
    """The detector's tensors without DataParallel's `module.` prefix. BatchNorm's
    num_batches_tracked counters (absent from files saved by older torch, unused in eval) are
    added where missing, as torch's own BatchNorm loading does for such files."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError("RetinaFace: the file does not hold a state dict of tensors")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in loaded.items()}
    for key in [k for k in sd if k.endswith(".running_var")]:
        sd.setdefault(key[:-len("running_var")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return sd


def retinaface_from_state_dict(sd: dict[str, torch.Tensor]) -> RetinaFace:
    sd = clean_state_dict(sd)
    missing = [k for k in ("body.conv1.weight", "fpn.output1.0.weight", "ClassHead.0.conv1x1.weight") if k not in sd]
    if missing:
        raise ValueError(f"RetinaFace: not a RetinaFace-ResNet state dict (missing {', '.join(missing)})")
    network = RetinaFace(RetinaFaceConfig.from_state_dict(sd))
    network.load_state_dict(sd, strict=True)
    return network.float().eval()


def load_retinaface(path: str | Path) -> RetinaFace:
    """The detector from a torch pickle (loaded with weights_only: no code runs from the file)."""
    path = Path(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    try:
        return retinaface_from_state_dict(loaded)
    except (ValueError, RuntimeError, KeyError) as error:  # wrong kind of file, or keys missing/unexpected
        raise ValueError(f"{path.name}: {error}") from None
