"""Super-resolution networks through spandrel, and tiled inference over images of any size.

spandrel knows the architectures (ESRGAN/RealESRGAN, SwinIR, HAT, DAT, OmniSR, ...) and detects
them from the state dict; this module reads the file safely, converts Fooocus' own upscaler
layout, and runs the network tile by tile so that large images fit in memory.
"""
from __future__ import annotations

import math
import os
import pickle
import zipfile
from collections.abc import Callable

import spandrel
import torch

from models.checkpoint import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, CheckpointError, read_state_dict

# Fooocus' default upscaler (Hugging Face lllyasviel/misc), in models/upscale_models/
FOOOCUS_UPSCALER_NAME = "fooocus_upscaler_s409985e5.bin"

# Fooocus' fooocus_upscaler_s409985e5.bin is an old-arch ESRGAN whose dense blocks are named
# `residual_block_N`; the ESRGAN layout (and Fooocus itself, before building it) says `RDBN`.
_FOOOCUS_DENSE_BLOCK = "residual_block_"
_ESRGAN_DENSE_BLOCK = "RDB"


class UpscalerError(ValueError):
    """An upscale model file that cannot be read or is not a single-image model spandrel knows.
    The message names the file."""


def load_upscaler(path: str | os.PathLike) -> spandrel.ImageModelDescriptor:
    """The super-resolution model of `path` (.pth/.pt/.bin/.ckpt through the weights-only
    unpickler, or .safetensors), on the CPU in float32, in eval mode."""
    name = os.path.basename(os.fspath(path))
    state_dict = fooocus_to_esrgan_keys(_read_weights(path, name))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as error:
        raise UpscalerError(f"{name}: not an upscale model architecture spandrel knows") from error
    except (RuntimeError, KeyError, ValueError, IndexError, AssertionError) as error:
        raise UpscalerError(f"{name}: the weights do not build a known upscale model ({str(error)[:300]})") from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscalerError(f"{name}: a {descriptor.purpose} model, not a single-image upscale model")
    return descriptor.eval()


def fooocus_to_esrgan_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fooocus' upscaler layout -> the old-arch ESRGAN layout spandrel detects; other layouts
    pass through unchanged."""
    if not any(_FOOOCUS_DENSE_BLOCK in key for key in state_dict):
        return state_dict
    return {key.replace(_FOOOCUS_DENSE_BLOCK, _ESRGAN_DENSE_BLOCK): value for key, value in state_dict.items()}


def _read_weights(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UpscalerError(f"{name}: no such upscale model file ({path})")
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        try:
            return read_state_dict(path)
        except CheckpointError as error:
            raise UpscalerError(str(error)) from error
    if not path.lower().endswith(PICKLE_SUFFIXES):
        raise UpscalerError(f"{name}: unsupported upscale model file type; expected one of "
                            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")
    # Upscaler releases wrap their weights ({"params_ema": ...}, {"state_dict": ...}, "module."
    # prefixes): the weights-only unpickler reads the whole object and spandrel unwraps it.
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise UpscalerError(f"{name}: refused to load: the pickle needs code beyond plain tensors to unpickle "
                            f"(convert it to .safetensors). Detail: {str(error).splitlines()[0]}") from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise UpscalerError(f"{name}: corrupt or truncated upscale model file ({error})") from error
    if not isinstance(loaded, dict):
        raise UpscalerError(f"{name}: the file holds a {type(loaded).__name__}, not a state dict")
    state_dict = spandrel.canonicalize_state_dict(loaded)
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise UpscalerError(f"{name}: the file holds no tensors")
    return tensors


# --- tiled inference ------------------------------------------------------------------------

def upscale_image(descriptor: spandrel.ImageModelDescriptor, image_bhwc: torch.Tensor, tile: int = 512,
                  overlap: int = 32, min_tile: int = 128, device: torch.device | str | None = None,
                  check_interrupt: Callable[[], None] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`image_bhwc` ([B, H, W, C] floats in 0..1) upscaled by the model's own scale, on the CPU in
    float32, clamped to 0..1.

    The network sees tiles of at most `tile` pixels overlapping by `overlap`; neighbouring outputs are
    blended over the middle half of each overlap, so every output pixel comes from a tile that
    saw at least a quarter overlap of context beyond it. On out-of-memory the tile is halved and
    the image restarted, down to `min_tile` (below that the error is raised). `device` defaults
    to where the network's weights are. A fourth (alpha) channel is resized bilinearly, as
    ComfyUI does.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and smaller than the tile ({tile})")
    if image_bhwc.ndim != 4:
        raise ValueError(f"expected an image batch [B, H, W, C], got shape {tuple(image_bhwc.shape)}")
    parameter = next(descriptor.model.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None
                                                              else torch.device("cpu"))
    dtype = parameter.dtype if parameter is not None else torch.float32
    alpha = None
    channels = descriptor.input_channels
    if image_bhwc.shape[-1] == 4 and channels == 3:
        alpha, image_bhwc = image_bhwc[..., 3:], image_bhwc[..., :3]
    pixels = image_bhwc.movedim(-1, 1).float()
    if descriptor.tiling == spandrel.ModelTiling.INTERNAL:  # the network tiles itself
        tile = max(pixels.shape[-2:])
    while True:
        try:
            upscaled = _tiled(descriptor, pixels, tile, overlap, device, dtype, check_interrupt, progress)
            break
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if tile // 2 < min_tile or tile // 2 <= overlap:
                raise
            tile //= 2
    upscaled = upscaled.clamp_(0.0, 1.0).movedim(1, -1)
    if alpha is not None:
        alpha = torch.nn.functional.interpolate(alpha.movedim(-1, 1).float(), size=upscaled.shape[1:3],
                                                mode="bilinear")
        upscaled = torch.cat((upscaled, alpha.movedim(1, -1)), dim=-1)
    return upscaled


def tile_grid(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """(tile size, tile origins) along one axis: the fewest tiles of at most `tile` pixels that
    overlap by at least `overlap`, all of one size and spread evenly, so no tile is mostly a
    recomputation of its neighbour (1024 px in 512/32 tiles: three of 363, not three of 512)."""
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    # floor division keeps every step <= size - overlap, so neighbours overlap by >= overlap
    return size, [index * (length - size) // (count - 1) for index in range(count)]


def _tiled(descriptor, pixels: torch.Tensor, tile: int, overlap: int, device: torch.device, dtype: torch.dtype,
           check_interrupt, progress) -> torch.Tensor:
    batch, _, height, width = pixels.shape
    scale = descriptor.scale
    (tile_height, rows), (tile_width, columns) = tile_grid(height, tile, overlap), tile_grid(width, tile, overlap)
    total = batch * len(rows) * len(columns)
    output = torch.zeros(batch, descriptor.output_channels, height * scale, width * scale)
    weights = torch.zeros(1, 1, height * scale, width * scale)
    done = 0
    for index in range(batch):
        for top in rows:
            for left in columns:
                if check_interrupt is not None:
                    check_interrupt()
                bottom, right = top + tile_height, left + tile_width
                piece = pixels[index:index + 1, :, top:bottom, left:right].to(device, dtype)
                result = descriptor(piece).float().cpu()
                weight = _blend_weight(result.shape[-2:], scale, overlap,
                                       interior=(top > 0, bottom < height, left > 0, right < width))
                region = (slice(index, index + 1), slice(None), slice(top * scale, bottom * scale),
                          slice(left * scale, right * scale))
                output[region] += result * weight
                if index == 0:
                    weights[(slice(None), slice(None)) + region[2:]] += weight
                done += 1
                if progress is not None:
                    progress(done, total)
    return output / weights


def _blend_weight(size: torch.Size, scale: int, overlap: int, interior: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """[1, 1, h, w] weights of one output tile: 1 inside, and along each edge that borders another
    tile 0 over the outer quarter of the overlap, rising linearly over its middle half. Image
    borders keep weight 1 (there is no neighbour to blend with)."""
    top, bottom, left, right = interior
    return (_ramp(size[0], scale * overlap, top, bottom)[:, None] *
            _ramp(size[1], scale * overlap, left, right)[None, :])[None, None]


def _ramp(length: int, overlap: float, start_blends: bool, end_blends: bool) -> torch.Tensor:
    ramp = torch.ones(length)
    if overlap <= 0:
        return ramp
    centres = torch.arange(length, dtype=torch.float32) + 0.5  # distance of each pixel centre from the edge
    rising = ((centres - overlap / 4) / (overlap / 2)).clamp(0.0, 1.0)
    if start_blends:
        ramp = torch.minimum(ramp, rising)
    if end_blends:
        ramp = torch.minimum(ramp, rising.flip(0))
    return ramp
