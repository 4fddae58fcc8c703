"""ComfyUI's `node_helpers`: Pillow retry, conditioning edits, hashing."""
from __future__ import annotations

import hashlib

from PIL import ImageFile, UnidentifiedImageError

from comfy_compat import missing_attribute

__getattr__ = missing_attribute("node_helpers")


def pillow(fn, arg):
    """fn(arg), retried once with truncated-image loading when Pillow refuses a damaged file."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def conditioning_set_values(conditioning, values: dict | None = None, append: bool = False):
    """A copy of CONDITIONING ([[tokens, options], ...]) with `values` set in each options dict
    (appended to a list value when append=True)."""
    out = []
    for tokens, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            if append:
                old = options.get(key)
                value = (list(old) if old is not None else []) + list(value)
            options[key] = value
        out.append([tokens, options])
    return out


def hasher():
    return hashlib.sha256()


def string_to_torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def image_alpha_fix(destination, source):
    """Matches the channel counts of two [B, H, W, C] images (RGB vs RGBA) before compositing."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        pad = torch.ones_like(destination[..., :destination.shape[-1] - source.shape[-1]])
        source = torch.cat((source, pad), dim=-1)
    return destination, source
