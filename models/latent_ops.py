"""Pure tensor maths of ComfyUI's latent nodes: batch fitting and the feathered paste.

Latents are [B, C, h, w]; sizes and offsets here are in latent pixels.
"""
from __future__ import annotations

import math

import torch


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """The first `batch` rows, the rows repeated cyclically when there are fewer (ComfyUI's
    repeat_to_batch_size)."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        return tensor.repeat(math.ceil(batch / tensor.shape[0]), *([1] * (tensor.ndim - 1)))[:batch]
    return tensor


def edge_feather(shape, top: bool, bottom: bool, left: bool, right: bool, feather: int) -> torch.Tensor:
    """A [.., h, w] weight of ones whose rows/columns next to the flagged edges ramp linearly:
    (t + 1) / feather for the t-th line from that edge, t < feather (LatentComposite's mask)."""
    mask = torch.ones(shape)
    height, width = shape[-2], shape[-1]
    for t in range(feather):
        ramp = (t + 1) / feather
        if top and t < height:
            mask[..., t, :] *= ramp
        if bottom and t < height:
            mask[..., height - 1 - t, :] *= ramp
        if left and t < width:
            mask[..., :, t] *= ramp
        if right and t < width:
            mask[..., :, width - 1 - t] *= ramp
    return mask


def paste(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, feather: int = 0) -> torch.Tensor:
    """`source` pasted into a copy of `destination` at (x, y), clipped to it; with `feather`, the
    source's edges that lie inside the destination fade into it over that many pixels."""
    out = destination.clone()
    source = source[:, :, :destination.shape[2] - y, :destination.shape[3] - x]
    height, width = source.shape[2], source.shape[3]
    region = out[:, :, y:y + height, x:x + width]
    if feather == 0:
        out[:, :, y:y + height, x:x + width] = source
        return out
    mask = edge_feather(source.shape, y != 0, y + height < destination.shape[2], x != 0,
                        x + width < destination.shape[3], feather).to(source)
    out[:, :, y:y + height, x:x + width] = source * mask + region * (1.0 - mask)
    return out


def extend_batch_index(batch_index: list[int], amount: int) -> list[int]:
    """RepeatLatentBatch's noise indices: each repeat continues past the span of the previous ones."""
    offset = max(batch_index) - min(batch_index) + 1
    return batch_index + [index + copy * offset for copy in range(1, amount) for index in batch_index]
