"""ComfyUI's `comfy.comfy_types`: the type names and typing helpers V1 packs annotate with."""
from __future__ import annotations

import enum
from abc import ABC
from typing import Any, TypedDict


class IO(str, enum.Enum):
    """Socket type names; compare equal to their strings ("IMAGE" == IO.IMAGE)."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __str__(self) -> str:
        return self.value


class InputTypeDict(TypedDict, total=False):
    required: dict[str, Any]
    optional: dict[str, Any]
    hidden: dict[str, Any]


class ComfyNodeABC(ABC):
    """A base V1 node classes may name; it requires nothing (our schema reads the attributes)."""

    DESCRIPTION: str = ""
    CATEGORY: str = "sd"


class CheckLazyMixin:
    def check_lazy_status(self, **kwargs) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


FileLocator = dict
__all__ = ["IO", "InputTypeDict", "ComfyNodeABC", "CheckLazyMixin", "FileLocator"]
