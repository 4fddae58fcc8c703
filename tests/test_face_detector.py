"""FaceSwap's face detector (RetinaFace-ResNet50, models/retinaface.py): the real file's key
layout, the published prior/decode/NMS formulas, a hand-set network that finds known faces at
known places, and the FaceDetectorLoader -> FooocusImagePrompt FaceSwap crop.

facexlib itself is not an oracle here: it requires opencv-python, which clashes with our
opencv-python-headless (both install the cv2 package), plus filterpy and numba. A one-off
cross-check against facexlib 0.3.0 (installed --no-deps into a scratch directory) matched this
network's outputs exactly at the real widths and detect_faces' boxes/scores/landmarks and order
on canned head outputs; see the README's model-folders section.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision

from models.face_align import align_face
from models.retinaface import (DETECTOR_FILE, FaceDetector, RetinaFace, RetinaFaceConfig, clean_state_dict,
                               decode_boxes, decode_landmarks, detect_faces, load_retinaface, nms_keep, prior_boxes)
from models.tiny_face_detector import TINY_CONFIG, tiny_retinaface, write_tiny_face_detector

REAL_FILE_BYTES = 109_497_761  # detection_Resnet50_Final.pth, facexlib v0.1.0 (spec §13, a third-party size table)
LANDMARK_OFFSETS = np.array([[-2.0, -1.5], [2.0, -1.5], [0.0, 0.5], [-1.5, 2.5], [1.5, 2.5]], np.float32)


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _published_head_keys() -> dict[str, tuple[int, ...]]:
    """FPN, SSH and head keys of the real file with their shapes (facexlib's cfg_re50: in_channel
    256 -> FPN inputs 512/1024/2048, out_channel 256, 2 anchors per cell)."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix, cout, cin, k):
        keys[f"{prefix}.0.weight"] = (cout, cin, k, k)
        for key in _bn_keys(f"{prefix}.1"):
            keys[key] = () if key.endswith("num_batches_tracked") else (cout,)

    for n, cin in enumerate((512, 1024, 2048), start=1):
        conv_bn(f"fpn.output{n}", 256, cin, 1)
    for n in (1, 2):
        conv_bn(f"fpn.merge{n}", 256, 256, 3)
    for n in (1, 2, 3):
        conv_bn(f"ssh{n}.conv3X3", 128, 256, 3)
        conv_bn(f"ssh{n}.conv5X5_1", 64, 256, 3)
        conv_bn(f"ssh{n}.conv5X5_2", 64, 64, 3)
        conv_bn(f"ssh{n}.conv7X7_2", 64, 64, 3)
        conv_bn(f"ssh{n}.conv7x7_3", 64, 64, 3)
    for head, values in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for n in range(3):
            keys[f"{head}.{n}.conv1x1.weight"] = (2 * values, 256, 1, 1)
            keys[f"{head}.{n}.conv1x1.bias"] = (2 * values,)
    return keys


def test_real_layout_is_torchvision_resnet50_body_plus_the_published_heads():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in RetinaFace().state_dict().items()}
        resnet = torchvision.models.resnet50(weights=None).state_dict()
    # IntermediateLayerGetter keeps every module up to layer4: all of ResNet50 but avgpool/fc
    expected = {f"body.{k}": tuple(v.shape) for k, v in resnet.items() if not k.startswith("fc.")}
    expected.update(_published_head_keys())
    assert ours == expected
    assert len(ours) == 456
    # the tensors account for the published file size, less a few hundred bytes of pickle per tensor
    with torch.device("meta"):
        tensors = list(RetinaFace().state_dict().values())
    payload = sum(t.numel() * t.element_size() for t in tensors)
    assert 0 < REAL_FILE_BYTES - payload < 400 * len(tensors)


def test_widths_are_read_back_from_the_tensors_and_the_prefix_is_stripped():
    with torch.device("meta"):
        real = {f"module.{k}": v for k, v in RetinaFace().state_dict().items()}
        tiny = RetinaFace(TINY_CONFIG).state_dict()
    assert RetinaFaceConfig.from_state_dict(clean_state_dict(real)) == RetinaFaceConfig()
    assert RetinaFaceConfig.from_state_dict(tiny) == TINY_CONFIG
    assert set(tiny) == {k[len("module."):] for k in real}  # the tiny file keeps every real key
    assert RetinaFaceConfig().leaky == 0.0 and TINY_CONFIG.leaky == 0.1  # facexlib's width rule


def test_tiny_file_is_small_and_loads_strictly(tmp_path):
    path = write_tiny_face_detector(tmp_path / DETECTOR_FILE)
    assert path.stat().st_size < 2_000_000
    network = load_retinaface(path)
    assert network.config == TINY_CONFIG
    loaded = network.state_dict()
    for key, value in tiny_retinaface().state_dict().items():
        assert torch.equal(loaded[key], value), key
    broken = {k: v for k, v in torch.load(path, weights_only=True).items() if "LandmarkHead.2" not in k}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="broken.pth") as error:
        load_retinaface(tmp_path / "broken.pth")
    assert "LandmarkHead.2.conv1x1.weight" in str(error.value)
    torch.save({"not": "weights"}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="junk.pth"):
        load_retinaface(tmp_path / "junk.pth")


def test_priors_follow_the_published_loop():
    height, width = 37, 50
    config = RetinaFaceConfig()
    expected = []
    for step, sizes in zip(config.steps, config.min_sizes):
        for i in range(int(np.ceil(height / step))):
            for j in range(int(np.ceil(width / step))):
                for size in sizes:
                    expected.append([(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height])
    priors = prior_boxes(height, width, config)
    np.testing.assert_allclose(priors.numpy(), np.array(expected, np.float32), rtol=0, atol=1e-7)
    # one prior per prediction of the network at that size (odd sizes included)
    with torch.no_grad():
        boxes, _, _ = tiny_retinaface()(torch.zeros(1, 3, height, width))
    assert boxes.shape[1] == priors.shape[0]


def test_box_and_landmark_decoding_follow_the_published_formulas():
    rng = np.random.default_rng(0)
    priors = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.uniform(0.01, 0.5, (50, 2))], 1).astype(np.float32)
    loc = rng.normal(size=(50, 4)).astype(np.float32)
    pre = rng.normal(size=(50, 10)).astype(np.float32)
    centre = priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
    expected_boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    expected_points = np.stack([priors[:, :2] + pre[:, 2 * k:2 * k + 2] * 0.1 * priors[:, 2:] for k in range(5)], 1)
    tp = torch.from_numpy(priors)
    np.testing.assert_allclose(decode_boxes(torch.from_numpy(loc), tp).numpy(), expected_boxes, atol=1e-6)
    np.testing.assert_allclose(decode_landmarks(torch.from_numpy(pre), tp).numpy(), expected_points, atol=1e-6)


def test_nms_is_greedy_iou_suppression():
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 100, (80, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 40, (80, 2))], 1).astype(np.float32)
    scores = rng.permutation(80).astype(np.float32) / 80  # distinct
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep, order = [], list(np.argsort(-scores))
    while order:
        best, order = order[0], order[1:]
        keep.append(best)
        low, high = np.maximum(boxes[best, :2], boxes[order, :2]), np.minimum(boxes[best, 2:], boxes[order, 2:])
        wh = np.clip(high - low, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        order = [o for o, overlap in zip(order, inter / (area[best] + area[order] - inter)) if overlap <= 0.4]
    assert nms_keep(torch.from_numpy(boxes), torch.from_numpy(scores)).tolist() == keep


# A hand-set tiny network: every conv passes channel 0 (the image's blue, the network seeing BGR)
# straight through the stride-8 path (stem centre tap, downsample 1x1s, FPN output1/merge1, SSH
# 3x3), every residual branch and the coarser levels are zero. Input rows 8i-2, 8i, 8i+2 of a
# stride-8 cell i survive the stem/maxpool/downsample subsampling. The class head turns
# "blue minus the mean" into the face logit of the second (32 px) anchor; box offsets are zero
# (the box is the anchor), landmark offsets are the biases.
FACE_WEIGHT, FACE_BIAS = 30.0 / 151.0, -10.0


def _hand_set_state() -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in RetinaFace(TINY_CONFIG).state_dict().items()}
    for key, value in sd.items():
        # BatchNorms ("bnN", "downsample.1", "<conv-bn>.1") become identities, everything else zero
        if key.endswith(("running_var", ".1.weight")) or (key.endswith(".weight") and ".bn" in key):
            value.fill_(1.0)
        elif not key.endswith("num_batches_tracked"):
            value.zero_()
    passes = ["body.conv1.weight", "fpn.output1.0.weight", "fpn.merge1.0.weight", "ssh1.conv3X3.0.weight"]
    passes += [k for k in sd if k.endswith("downsample.0.weight")]
    for key in passes:
        weight = sd[key]
        weight[0, 0, weight.shape[2] // 2, weight.shape[3] // 2] = 1.0
    sd["ClassHead.0.conv1x1.weight"][3, 0] = FACE_WEIGHT
    for level in range(3):
        sd[f"ClassHead.{level}.conv1x1.bias"][1::2] = FACE_BIAS
        sd[f"LandmarkHead.{level}.conv1x1.bias"].copy_(torch.from_numpy(LANDMARK_OFFSETS).flatten().repeat(2))
    return sd


def _image(spots, height=72, width=104, channel=2) -> np.ndarray:
    """Black RGB image with 5x5 spots of the given value centred on stride-8 cells (row, col)."""
    image = np.zeros((height, width, 3), np.uint8)
    for (i, j), value in spots:
        image[8 * i - 2:8 * i + 3, 8 * j - 2:8 * j + 3, channel] = value
    return image


def _expected_face(i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Box (the 32 px anchor) and landmarks, in pixels, of a face found at stride-8 cell (i, j)."""
    centre = np.array([(j + 0.5) * 8, (i + 0.5) * 8], np.float32)
    return np.concatenate([centre - 16, centre + 16]), centre + LANDMARK_OFFSETS * 0.1 * 32


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory):
    """The hand-set network saved like the real file: `module.` prefix, no BatchNorm counters."""
    state = {f"module.{k}": v for k, v in _hand_set_state().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("face_models") / "controlnet" / DETECTOR_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def detector(detector_file):
    return FaceDetector.from_network(load_retinaface(detector_file))


def test_known_faces_are_found_in_image_pixels_highest_score_first(detector):
    image = _image([((2, 3), 200), ((4, 7), 255)])  # 72 x 104: not a multiple of the 32 px stride
    faces = detector.detect(image)
    assert len(faces.scores) == 2
    assert faces.scores[0] > faces.scores[1] > 0.97  # 255: logit 20; 200: logit 9.07
    for n, cell in enumerate([(4, 7), (2, 3)]):
        box, points = _expected_face(*cell)
        np.testing.assert_allclose(faces.boxes[n], box, atol=1e-3)
        np.testing.assert_allclose(faces.landmarks[n], points, atol=1e-3)
    np.testing.assert_allclose(detector.landmarks(image), _expected_face(4, 7)[1], atol=1e-3)


def test_threshold_colour_order_and_no_face(detector):
    assert detector.landmarks(np.zeros((72, 104, 3), np.uint8)) is None
    assert detector.landmarks(_image([((4, 7), 255)], channel=0)) is None  # red: the network sees BGR
    # blue 150: logit (150 - 104) * 30/151 - 10 = -0.86, a face score of 0.30, under 0.97
    assert detector.landmarks(_image([((4, 7), 150)])) is None
    with detector.acquire() as network:
        weak = detect_faces(network, _image([((4, 7), 150)]), conf_threshold=0.2)
    assert len(weak.scores) == 1 and 0.2 < weak.scores[0] < 0.97
    rgba = np.concatenate([_image([((4, 7), 255)]), np.full((72, 104, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(detector.landmarks(rgba), _expected_face(4, 7)[1], atol=1e-3)


def test_tiny_demo_detector_finds_a_face_shaped_face():
    detector = FaceDetector.from_network(tiny_retinaface())
    points = detector.landmarks(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    assert points is not None and np.isfinite(points).all()
    assert points[0, 0] < points[1, 0] and points[0, 1] < points[2, 1] < points[3, 1]  # eyes, nose, mouth


# --- the node and the FaceSwap crop ------------------------------------------------------------

@pytest.fixture
def node_context(detector_file):
    from graph.context import InterruptFlag, NodeContext, NullSink, activate, deactivate
    from models.manager import ModelManager
    from nodes.services import Services
    from server.folders import ModelFolders

    root = detector_file.parent.parent
    # a bfloat16 manager: the detector must still compute in float32
    services = Services(folders=ModelFolders(root), output_dir=root, input_dir=root, temp_dir=root,
                        models=ModelManager("cpu", torch.bfloat16))
    token = activate(NodeContext("p", "n", "FaceDetectorLoader", services, NullSink(), InterruptFlag(),
                                 logging.getLogger("test")))
    yield services
    deactivate(token)


class _Model:
    attn2_kv_patches = ()

    def with_changes(self, **changes):
        return SimpleNamespace(**changes)


def test_loader_and_faceswap_crop(node_context, monkeypatch):
    import nodes.face_detection as face_detection
    import nodes.fooocus.image_prompt as image_prompt
    from graph.registry import NodeRegistry
    from nodes import BUILTIN_MODULES
    from nodes.face_detection import FaceDetectorLoader

    assert "nodes.face_detection" in BUILTIN_MODULES
    registry = NodeRegistry()
    registry.register_mappings(face_detection.NODE_CLASS_MAPPINGS, face_detection.NODE_DISPLAY_NAME_MAPPINGS,
                               python_module="nodes.face_detection", builtin=True)
    schema = registry.get("FaceDetectorLoader")
    assert schema.outputs == ("FACE_DETECTOR",)
    assert schema.inputs[0].folder == "controlnet" and schema.inputs[0].options["default"] == DETECTOR_FILE
    (face_detector,) = FaceDetectorLoader().load(DETECTOR_FILE)
    with face_detector.acquire() as network:
        assert next(network.parameters()).dtype == torch.float32

    seen = []
    monkeypatch.setattr(image_prompt, "encode_images", lambda cv, images, crop: seen.append(images) or
                        SimpleNamespace(penultimate_hidden_states=None))
    monkeypatch.setattr(image_prompt, "image_prompt_patch", lambda *args: "patch")

    def clip_input(array, cn_type="FaceSwap", skip=False):
        image = torch.from_numpy(array.astype(np.float32) / 255.0)[None]
        out = image_prompt.FooocusImagePrompt().apply(_Model(), None, None, cn_type, 0.9, 0.75, skip, image,
                                                      face_detector)[0]
        assert out.attn2_kv_patches == ("patch",)
        return seen.pop()[0].numpy()

    face = _image([((2, 3), 200), ((4, 7), 255)])
    first = face_detector.landmarks(face)  # the highest-score face (tested above against its known place)
    np.testing.assert_allclose(first, _expected_face(4, 7)[1], atol=1e-3)
    crop = align_face(face, first)  # to the FFHQ 512 template
    np.testing.assert_array_equal(clip_input(face), crop.astype(np.float32) / 255.0)
    whole = face.astype(np.float32) / 255.0
    np.testing.assert_array_equal(clip_input(np.zeros_like(face)), np.zeros_like(whole))  # no face: the image
    np.testing.assert_array_equal(clip_input(face, skip=True), whole)
    np.testing.assert_array_equal(clip_input(face, cn_type="ImagePrompt"), whole)
