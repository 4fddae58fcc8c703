"""Tiny Fooocus inpaint engine files for a tiny SDXL checkpoint, in the real file formats:
`fooocus_inpaint_head.pth` ({"head": [C, 5, 3, 3]}, C = the checkpoint's first UNet width) and
the `.fooocus.patch` files ({"diffusion_model.<key>": (uint8, min, max)} torch pickles), so the
inpaint engines run offline on the demo models."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open

from models.checkpoint import UNET_PREFIX
from models.inpaint.engine import HEAD_FILE, HEAD_INPUT_CHANNELS, PATCH_FILES

PATCH_PREFIX = "diffusion_model."
PATCH_SCALE = 0.02  # the tiny patches move each weight by at most this much


def _unet_shapes(checkpoint: str | os.PathLike) -> dict[str, torch.Size]:
    with safe_open(os.fspath(checkpoint), framework="pt") as handle:
        return {key[len(UNET_PREFIX):]: handle.get_slice(key).get_shape() for key in handle.keys()
                if key.startswith(UNET_PREFIX)}


def write_tiny_inpaint_head(path: str | os.PathLike, checkpoint: str | os.PathLike, seed: int = 0) -> Path:
    shapes = _unet_shapes(checkpoint)
    channels = shapes["input_blocks.0.0.weight"][0]
    generator = torch.Generator().manual_seed(seed)
    head = torch.randn(channels, HEAD_INPUT_CHANNELS, 3, 3, generator=generator) / (HEAD_INPUT_CHANNELS * 9) ** 0.5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"head": head}, path)
    return path


def tiny_patch(shapes: dict[str, torch.Size], seed: int = 0, only=None) -> dict[str, tuple]:
    """{diffusion_model.<key>: (q uint8, w_min, w_max)} over the UNet keys `only` keeps."""
    generator = torch.Generator().manual_seed(seed)
    patch = {}
    for key, shape in shapes.items():
        if only is not None and not only(key):
            continue
        q = torch.randint(0, 256, tuple(shape), generator=generator, dtype=torch.uint8)
        low = -PATCH_SCALE * float(torch.rand((), generator=generator))
        high = PATCH_SCALE * float(torch.rand((), generator=generator))
        patch[PATCH_PREFIX + key] = (q, torch.tensor(low), torch.tensor(high))
    return patch


def write_tiny_inpaint_patch(path: str | os.PathLike, checkpoint: str | os.PathLike, seed: int = 0,
                             only=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_patch(_unet_shapes(checkpoint), seed, only), path)
    return path


def _attention_only(key: str) -> bool:
    # the real v2.6 patch is about half the size of v2.5: a smaller subset of the UNet
    return ".transformer_blocks." in key or ".proj_" in key


def write_tiny_inpaint_engine(folder: str | os.PathLike, checkpoint: str | os.PathLike, seed: int = 0
                              ) -> dict[str, Path]:
    """The head and the three patch versions under `folder` (the models' inpaint/ folder); a file
    already there (perhaps a real one) is left alone. Returns the files written."""
    folder = Path(folder)
    written = {}
    if not (folder / HEAD_FILE).exists():
        written[HEAD_FILE] = write_tiny_inpaint_head(folder / HEAD_FILE, checkpoint, seed)
    for index, (version, name) in enumerate(PATCH_FILES.items()):
        if not (folder / name).exists():
            only = _attention_only if version == "v2.6" else None
            written[name] = write_tiny_inpaint_patch(folder / name, checkpoint, seed + 1 + index, only)
    return written
