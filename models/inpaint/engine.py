"""The Fooocus inpaint engine files (spec fooocus_pipeline.md §9.1-9.3), read safely.

- `fooocus_inpaint_head.pth`: {"head": [C, 5, 3, 3]} (C = the UNet's first width, 320 for SDXL),
  a bias-free 3x3 convolution with replicate padding from (latent mask, scaled masked-image
  latent) to a C-channel feature added to the UNet's hidden state after its first input block.
- `*.fooocus.patch`: a torch pickle {UNet state-dict key: (q uint8, w_min, w_max)} with keys like
  `diffusion_model.input_blocks.4.1.proj_in.weight`; merged as W <- W + q/255 * (max - min) + min.

Both are loaded with torch's weights-only unpickler (memory-mapped when the file is a zip
archive); anything else in the file is refused. The patch is handed to the LoRA patcher as an
in-memory "LoRA" (models/lora_adapters.py QuantizedDiffAdapter), so it is merged, cached and
undone exactly like a LoRA.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError

ENGINE_VERSIONS = ("None", "v1", "v2.5", "v2.6")
DEFAULT_ENGINE = "v2.6"
HEAD_FILE = "fooocus_inpaint_head.pth"
PATCH_FILES = {"v1": "inpaint.fooocus.patch", "v2.5": "inpaint_v25.fooocus.patch", "v2.6": "inpaint_v26.fooocus.patch"}
HEAD_INPUT_CHANNELS = 5  # latent mask (1) + masked-image latent (4)
_PATCH_PARAMETERS = {".weight": "fooocus", ".bias": "fooocus_bias"}


def patch_file_for(engine: str) -> str | None:
    """The patch file name of an engine version; None for "None"; ValueError for unknown names."""
    if engine not in ENGINE_VERSIONS:
        raise ValueError(f"unknown inpaint engine {engine!r}; valid: {', '.join(ENGINE_VERSIONS)}")
    return PATCH_FILES.get(engine)


class InpaintHead(nn.Module):
    """forward(mask [B,1,h,w], masked_latent [B,4,h,w] in the UNet's latent space) -> [B,C,h,w]."""

    def __init__(self, channels: int = 320):
        super().__init__()
        self.head = nn.Parameter(torch.empty(channels, HEAD_INPUT_CHANNELS, 3, 3))

    @property
    def channels(self) -> int:
        return self.head.shape[0]

    def forward(self, mask: torch.Tensor, masked_latent: torch.Tensor) -> torch.Tensor:
        feed = torch.cat([mask, masked_latent], dim=1).to(self.head.dtype)
        return F.conv2d(F.pad(feed, (1, 1, 1, 1), mode="replicate"), self.head)


def _load_pickle(path: str | os.PathLike, what: str):
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{name}: no such {what} file ({path})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{name}: refused to load the {what}: it needs code beyond plain tensors to "
                              f"unpickle. Detail: {str(error).splitlines()[0]}") from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{name}: corrupt or truncated {what} file ({error})") from error


def load_inpaint_head(path: str | os.PathLike) -> InpaintHead:
    name = os.path.basename(os.fspath(path))
    state = _load_pickle(path, "inpaint head")
    weight = state.get("head") if isinstance(state, Mapping) else None
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or tuple(weight.shape[1:]) != (5, 3, 3):
        raise CheckpointError(f"{name}: not a Fooocus inpaint head (expected {{'head': [C, 5, 3, 3]}})")
    head = InpaintHead(weight.shape[0])
    head.load_state_dict({"head": weight.float()}, strict=True)
    return head.eval().requires_grad_(False)


def load_fooocus_patch(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{UNet key: (q uint8, w_min, w_max)}, checked entry by entry."""
    name = os.path.basename(os.fspath(path))
    loaded = _load_pickle(path, "inpaint patch")
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"{name}: not a Fooocus inpaint patch (expected a dict of (uint8, min, max))")
    patch = {}
    for key, value in loaded.items():
        if not (isinstance(key, str) and isinstance(value, (tuple, list)) and len(value) == 3
                and isinstance(value[0], torch.Tensor) and value[0].dtype == torch.uint8):
            raise CheckpointError(f"{name}: entry {key!r} is not (uint8 tensor, min, max)")
        low, high = (torch.as_tensor(v, dtype=torch.float32) if not isinstance(v, torch.Tensor) else v
                     for v in value[1:])
        patch[key] = (value[0], low, high)
    return patch


def patch_as_lora(patch: Mapping[str, tuple]) -> dict[str, torch.Tensor]:
    """The patch in the LoRA patcher's vocabulary: `<module>.fooocus_q/min/max` for a weight,
    `<module>.fooocus_bias_q/min/max` for a bias. Tensors are shared, not copied. Keys that are
    neither a weight nor a bias keep their name, so the patcher reports them as unmatched."""
    lora = {}
    for key, (q, low, high) in patch.items():
        for parameter, stem in _PATCH_PARAMETERS.items():
            if key.endswith(parameter):
                module = key[: -len(parameter)]
                lora.update({f"{module}.{stem}_q": q, f"{module}.{stem}_min": low, f"{module}.{stem}_max": high})
                break
        else:
            lora[key] = q
    return lora


def dequantize(q: torch.Tensor, w_min, w_max) -> torch.Tensor:
    """The spec's formula for one entry, in float32: q/255 * (max - min) + min."""
    low, high = torch.as_tensor(w_min, dtype=torch.float32), torch.as_tensor(w_max, dtype=torch.float32)
    return q.float() / 255.0 * (high - low) + low


class HeadFeaturePatch:
    """UNet input-block patch adding the head feature after input block 0 (the first conv).

    The feature is computed once on the CPU; a copy per (device, dtype) is kept so a GPU run
    moves it once, not at every step. Batches (the [cond; uncond] pair) broadcast over it.
    """

    def __init__(self, feature: torch.Tensor):
        self.feature = feature
        self._placed: dict[tuple, torch.Tensor] = {}

    def __call__(self, h: torch.Tensor, block_index: int) -> torch.Tensor:
        if block_index != 0:
            return h
        key = (h.device, h.dtype)
        placed = self._placed.get(key)
        if placed is None:
            placed = self._placed[key] = self.feature.to(device=h.device, dtype=h.dtype)
        return h + placed


def head_feature(head: InpaintHead, latent_mask: torch.Tensor, masked_latent: torch.Tensor) -> torch.Tensor:
    """The head's feature for a latent mask and a masked-image latent already in model space."""
    with torch.inference_mode():
        return head(latent_mask.float(), masked_latent.float())
