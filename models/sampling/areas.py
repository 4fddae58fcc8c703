"""Area, mask and timestep-range conditioning: ComfyUI's per-region evaluation and blending.

A CONDITIONING list may hold several entries, each optionally limited to an `area` (latent
pixels, or fractions of the latent), a `mask`, a `strength` and a sigma range. Per model call
ComfyUI evaluates every active entry of every side (positive, negative, ...) on its crop of x,
batching entries whose crops and inputs can be concatenated, and blends each side's x0 as a
weighted mean:

    out = sum_i(x0_i * w_i) / (sum_i(w_i) + 1e-37)    (per latent pixel, inside each entry's area)

with w_i = strength * (mask * mask_strength, or 1 with an 8-pixel linear feather on each area edge
that is not the latent's border). An inactive side therefore predicts 0, as in ComfyUI.

Each side is a list of `RegionCond`; `pair_opposite_areas` gives every area entry an opposite entry
with the same area on the other sides (ComfyUI's create_cond_with_same_area_if_none), so CFG
compares like with like inside each area.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

FEATHER = 8  # latent pixels of linear ramp on an area's inner edges (ComfyUI's rr)
EMPTY_WEIGHT = 1e-37  # ComfyUI's initial weight sum: an uncovered pixel divides 0 by it -> 0
SPATIAL_INPUTS = ("concat",)  # denoiser inputs laid out like x: cropped to the area with it


@dataclass
class RegionCond:
    """One CONDITIONING entry ready for the sampler.

    inputs: the denoiser's keyword inputs (context, y, concat, control, ...);
    area: (h, w, y, x) in latent pixels, or None for the whole latent;
    mask: [B or 1, h, w] at the latent's size, or None;
    sigma_start / sigma_end: active while sigma_end <= sigma <= sigma_start (None: unbounded)."""

    inputs: dict
    area: tuple[int, int, int, int] | None = None
    mask: torch.Tensor | None = None
    strength: float = 1.0
    mask_strength: float = 1.0
    sigma_start: float | None = None
    sigma_end: float | None = None

    @property
    def is_plain(self) -> bool:
        """Whole latent, weight 1, always active: the entry ComfyUI blends as plain CFG."""
        return (self.area is None and self.mask is None and self.strength == 1.0 and self.sigma_start is None
                and self.sigma_end is None)


def resolve_area(area, dims: tuple[int, int]) -> tuple[int, int, int, int]:
    """ConditioningSetArea's (h, w, y, x) in latent pixels; ("percentage", h, w, y, x) fractions are
    scaled to `dims` (sizes at least 1), as ComfyUI resolves them before sampling."""
    if area[0] == "percentage":
        h, w, y, x = (float(v) for v in area[1:])
        return (max(1, round(h * dims[0])), max(1, round(w * dims[1])), round(y * dims[0]), round(x * dims[1]))
    return tuple(int(v) for v in area)


def resolve_mask(mask: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    """A MASK as [B, h, w] at the latent size (bilinear, as ComfyUI resizes cond masks)."""
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if tuple(mask.shape[1:]) != tuple(dims):
        mask = F.interpolate(mask.unsqueeze(1), size=dims, mode="bilinear", align_corners=False).squeeze(1)
    return mask


def mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """ConditioningSetMask's "mask bounds": the (h, w, y, x) box of the mask's non-zero pixels over
    the batch, at least 8 x 8; an empty mask gives (8, 8, 0, 0) (evaluated, but weighted 0)."""
    bounds = mask.abs().amax(dim=0)
    rows = torch.nonzero(bounds.amax(dim=1) > 0).flatten()
    cols = torch.nonzero(bounds.amax(dim=0) > 0).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return (8, 8, 0, 0)
    top, left = int(rows[0]), int(cols[0])
    return (max(8, int(rows[-1]) - top + 1), max(8, int(cols[-1]) - left + 1), top, left)


def region_from_extras(inputs: dict, extras: dict, dims: tuple[int, int], percent_to_sigma) -> RegionCond:
    """A RegionCond from a CONDITIONING entry's extras (area, mask, strength, start/end percent)."""
    area = resolve_area(extras["area"], dims) if extras.get("area") is not None else None
    mask = None
    if extras.get("mask") is not None:
        mask = resolve_mask(extras["mask"], dims)
        if extras.get("set_area_to_bounds", False):
            area = mask_bounds(mask)
    start = extras.get("start_percent")
    end = extras.get("end_percent")
    return RegionCond(inputs, area=area, mask=mask, strength=float(extras.get("strength", 1.0)),
                      mask_strength=float(extras.get("mask_strength", 1.0)),
                      sigma_start=None if start is None else float(percent_to_sigma(start)),
                      sigma_end=None if end is None else float(percent_to_sigma(end)))


def has_region_keys(extras: dict) -> bool:
    return any(extras.get(key) is not None for key in ("area", "mask", "strength", "start_percent", "end_percent"))


def _area_inside(inner, outer) -> bool:
    """Whether box `inner` (h, w, y, x) lies within box `outer`."""
    return (inner[2] >= outer[2] and inner[3] >= outer[3] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


def _opposite(side: list[RegionCond], entry: RegionCond) -> RegionCond | None:
    """ComfyUI's create_cond_with_same_area_if_none: `entry`'s area, strength, mask and range with
    the inputs of the smallest entry of `side` containing its area (a whole-latent entry counts,
    the first one found while no area entry contains it); None when one with the same area exists."""
    smallest = None
    for other in side:
        if other.area is not None:
            if not _area_inside(entry.area, other.area):
                continue
            if smallest is None or smallest.area is None or (
                    math.prod(smallest.area[:2]) > math.prod(other.area[:2])):
                smallest = other
        elif smallest is None:
            smallest = other
    if smallest is None or smallest.area == entry.area:
        return None
    inputs = {k: v for k, v in smallest.inputs.items() if k != "control"}
    if "control" in entry.inputs:  # the entry's ControlNet travels with its area (ComfyUI copies the cond)
        inputs["control"] = entry.inputs["control"]
    return replace(entry, inputs=inputs)


def pair_opposite_areas(sides: list[list[RegionCond] | None]) -> list[list[RegionCond] | None]:
    """New side lists in which every area entry of one side has a same-area entry on the others,
    added in ComfyUI's order (each side in turn, entries added earlier visible to later sides)."""
    sides = [None if side is None else list(side) for side in sides]
    for index, side in enumerate(sides):
        if side is None:
            continue
        for entry in side:  # the live list: entries added from earlier sides are paired too, as in ComfyUI
            if entry.area is None:
                continue
            for other_index, other in enumerate(sides):
                if other_index != index and other is not None:
                    added = _opposite(other, entry)
                    if added is not None:
                        other.append(added)
    return sides


def pair_sides(sides: list) -> list:
    """`pair_opposite_areas` over guider sides in `evaluate_conditions` form (dict, list of
    RegionCond, or None): unchanged when no side has an area entry, else every side as a list,
    paired (ComfyUI pairs all of a guider's conditionings: positive, negative, middle, empty...)."""
    if not any(isinstance(side, list) and any(entry.area is not None for entry in side) for side in sides):
        return list(sides)
    return pair_opposite_areas([[RegionCond(side)] if isinstance(side, dict) else side for side in sides])


def is_active(entry: RegionCond, sigma: float) -> bool:
    """ComfyUI skips an entry while sigma > sigma(start) or sigma < sigma(end)."""
    if entry.sigma_start is not None and sigma > entry.sigma_start:
        return False
    if entry.sigma_end is not None and sigma < entry.sigma_end:
        return False
    return True


def _clamped_area(area, shape) -> tuple[int, int, int, int]:
    h, w, y, x = area
    if y >= shape[-2] or x >= shape[-1]:
        raise ValueError(f"conditioning area at ({x * 8}, {y * 8}) px lies outside the "
                         f"{shape[-1] * 8}x{shape[-2] * 8} latent")
    return min(shape[-2] - y, h), min(shape[-1] - x, w), y, x


def region_weight(entry: RegionCond, x: torch.Tensor):
    """(area or None, the crop of x, weight [B, C, h, w]) of one entry: ComfyUI's get_area_and_mult."""
    area = None if entry.area is None else _clamped_area(entry.area, x.shape)
    crop = x if area is None else x[:, :, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
    if entry.mask is not None:
        mask = entry.mask.to(x.device, x.dtype)[:crop.shape[0]]
        if area is not None:
            mask = mask[:, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
        mask = mask * entry.mask_strength
        weight = mask.unsqueeze(1).repeat(crop.shape[0] // mask.shape[0], crop.shape[1], 1, 1)
    else:
        weight = torch.ones_like(crop)
    weight = weight * entry.strength
    if entry.mask is None and area is not None:
        full = (x.shape[-2], x.shape[-1])
        for dim in range(2):  # 0: rows (y), 1: columns (x)
            size, offset = area[dim], area[2 + dim]
            axis = 2 + dim
            # an area under 8 pixels wide stops its ramp at its own size (ComfyUI fails there)
            for t in range(min(FEATHER, size)):
                ramp = (t + 1) / FEATHER
                if offset != 0:  # the area's first rows/columns fade in from the latent's inside
                    weight.narrow(axis, t, 1).mul_(ramp)
                if offset + size < full[dim]:  # ... and its last ones fade out
                    weight.narrow(axis, size - 1 - t, 1).mul_(ramp)
    return area, crop, weight


def _compatible(a: dict, b: dict) -> bool:
    """Whether two entries' inputs can share one batched call (ComfyUI's can_concat_cond)."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor):
            if value.shape[1:] == other.shape[1:]:
                continue
            if value.ndim != 3 or other.ndim != 3 or value.shape[2] != other.shape[2]:
                return False
            if math.lcm(value.shape[1], other.shape[1]) // min(value.shape[1], other.shape[1]) > 4:
                return False
        elif isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            return False
        elif value is not other and value != other:
            return False
    return True


def _batched(value: torch.Tensor, batch: int) -> torch.Tensor:
    if value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    if batch % value.shape[0] == 0:  # ComfyUI's repeat_to_batch_size
        return value.repeat(batch // value.shape[0], *([1] * (value.ndim - 1)))
    return value.repeat(-(-batch // value.shape[0]), *([1] * (value.ndim - 1)))[:batch]


def merge_inputs(inputs: list[dict], batch: int) -> dict:
    """The inputs of several compatible entries concatenated along the batch (each chunk `batch`
    rows); token sequences of different lengths are repeated up to their least common multiple,
    which leaves cross-attention unchanged."""
    merged = {}
    for key, first in inputs[0].items():
        if not isinstance(first, torch.Tensor):
            merged[key] = first
            continue
        values = [_batched(entry[key], batch) for entry in inputs]
        if first.ndim == 3:
            length = math.lcm(*(v.shape[1] for v in values))
            values = [v.repeat(1, length // v.shape[1], 1) if v.shape[1] != length else v for v in values]
        merged[key] = torch.cat(values, dim=0)
    return merged


def _crop_inputs(inputs: dict, area) -> dict:
    if area is None:
        return inputs
    out = dict(inputs)
    for key in SPATIAL_INPUTS:
        if isinstance(out.get(key), torch.Tensor):
            out[key] = out[key][..., area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
    return out


def calc_cond_batch(denoiser, sides: list[list[RegionCond] | None], x: torch.Tensor, sigma: torch.Tensor,
                    max_batch: int | None = None, **extra) -> list[torch.Tensor]:
    """Each side's blended x0 for x at sigma (ComfyUI's calc_cond_batch): every active entry is
    evaluated on its crop, entries with equal crop shapes and compatible inputs in one call (at most
    `max_batch` entries per call), and summed with its weight into its side."""
    batch = x.shape[0]
    sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    first_sigma = float(sigma.reshape(-1)[0])
    outputs = [torch.zeros_like(x) for _ in sides]
    weights = [torch.full_like(x, EMPTY_WEIGHT) for _ in sides]
    pending = []
    for index, side in enumerate(sides):
        for entry in side or ():
            if is_active(entry, first_sigma):
                area, crop, weight = region_weight(entry, x)
                pending.append((index, area, crop, weight, _crop_inputs(entry.inputs, area)))
    while pending:
        head = pending[0]
        group = [item for item in pending if item[2].shape == head[2].shape and _compatible(item[4], head[4])]
        if max_batch is not None:
            group = group[:max_batch]
        chosen = {id(item) for item in group}
        pending = [item for item in pending if id(item) not in chosen]
        crops = torch.cat([item[2] for item in group]) if len(group) > 1 else group[0][2]
        inputs = merge_inputs([item[4] for item in group], batch) if len(group) > 1 else group[0][4]
        result = denoiser(crops, torch.cat([sigma] * len(group)) if len(group) > 1 else sigma, **inputs, **extra)
        for chunk, (index, area, _, weight, _) in zip(result.chunk(len(group)), group):
            if area is None:
                outputs[index] += chunk * weight
                weights[index] += weight
            else:
                rows, cols = slice(area[2], area[2] + area[0]), slice(area[3], area[3] + area[1])
                outputs[index][:, :, rows, cols] += chunk * weight
                weights[index][:, :, rows, cols] += weight
    return [out / weight for out, weight in zip(outputs, weights)]
