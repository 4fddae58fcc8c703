"""Face detector loader (FaceSwap's face crop, spec §10.2):

    FaceDetectorLoader(detector_name) -> FACE_DETECTOR

The detector is facexlib's RetinaFace-ResNet50 (`detection_Resnet50_Final.pth`), kept in
models/controlnet as Fooocus keeps it. FooocusImagePrompt takes the FACE_DETECTOR on its optional
`face_detector` input and crops the first face before CLIP vision.
"""
from __future__ import annotations

import contextlib

import torch

from models.retinaface import DETECTOR_FILE, FaceDetector, load_retinaface

from .runtime import Unmanaged, services, use

FOLDER = "controlnet"


def _manage_float32(network, name: str):
    """Under the App's manager in float32 whatever the UNet's dtype: the 0.97 face threshold is
    calibrated on float32 scores (Fooocus runs the detector in float32 on the CPU)."""
    manager = services().models
    if manager is None:
        return Unmanaged(network)
    return manager.add(network, name=name, dtype=torch.float32)


class FaceDetectorLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("FACE_DETECTOR",)
    FUNCTION = "load"
    DESCRIPTION = ("RetinaFace-ResNet50 face detector (facexlib's detection_Resnet50_Final.pth, a torch pickle) "
                   "from models/controlnet, for FaceSwap's face crop.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"detector_name": ("COMBO", {"folder": FOLDER, "default": DETECTOR_FILE})}}

    def load(self, detector_name):
        network = load_retinaface(services().folders.path(FOLDER, detector_name))
        handle = _manage_float32(network, f"{detector_name} (face detector)")

        @contextlib.contextmanager
        def acquire():  # on the compute device only while a crop runs
            with use(handle) as (on_device,):
                yield on_device

        return (FaceDetector(acquire, name=detector_name),)


NODE_CLASS_MAPPINGS = {"FaceDetectorLoader": FaceDetectorLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"FaceDetectorLoader": "Face detector loader (RetinaFace, FaceSwap crop)"}
