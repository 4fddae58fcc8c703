"""Fooocus's inpaint image maths over numpy arrays (spec fooocus_pipeline.md §9.4-9.7).

Images are HxWx3 uint8 RGB, masks HxW uint8 with 255 = repaint, as Fooocus keeps them, so every
threshold (> 127) and rounding step is the one Fooocus applies. Nothing here knows about tensors,
models or nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from models.image_sizes import shape_ceil, shape_ceil_steps, size_after_shape_ceil  # noqa: F401 (re-exported)

OUTPAINT_SIDES = ("Left", "Right", "Top", "Bottom")
OUTPAINT_FRACTION = 0.3  # a side padded without an explicit distance grows by 30% of the image
FEATHER_STEPS = 32  # the composite's blend mask falls from 255 to 0 over this many pixels
FEATHER_DECAY = 8  # per pixel of distance from the mask
# (box-blur radius, repeats) of fooocus_fill, widest first
FILL_PASSES = ((512, 2), (256, 2), (128, 4), (64, 4), (33, 8), (15, 8), (5, 16), (3, 16))
_KERNEL_3X3 = np.ones((3, 3), dtype=np.uint8)


# --- images and masks in --------------------------------------------------------------------

def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from gray, gray+alpha, RGB or RGBA; transparent pixels are composited on white
    (as Fooocus's HWC3: colour * alpha + 255 * (1 - alpha), truncated to uint8)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    color = image[:, :, :channels - 1].astype(np.float32)
    if channels == 2:
        color = np.repeat(color, 3, axis=2)
    alpha = image[:, :, channels - 1:].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def resample(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of a uint8 image or mask (PIL, as Fooocus's resample_image)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(Image.fromarray(image).resize((int(width), int(height)), Image.LANCZOS))


def binarize(mask: np.ndarray, threshold: int = 127) -> np.ndarray:
    """255 where mask > threshold, else 0."""
    return (mask > threshold).view(np.uint8) * np.uint8(255)


def uploaded_mask(mask_rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """An uploaded mask picture as a 0/255 mask of the image's size: resized (Lanczos) to the
    image, mean of R, G, B, repaint where the mean > 127 (white = repaint)."""
    red, green, blue = cv2.split(resample(to_rgb(mask_rgb), width, height))
    # mean > 127 exactly when the channel sum > 381 (integer maths, no float image)
    total = cv2.add(cv2.add(red, green, dtype=cv2.CV_16U), blue, dtype=cv2.CV_16U)
    return binarize(total, threshold=3 * 127)


def erode_or_dilate(mask: np.ndarray, amount: int) -> np.ndarray:
    """amount > 0 dilates, < 0 erodes, |amount| times with a 3x3 all-ones kernel."""
    amount = int(amount)
    if amount == 0:
        return mask
    operation = cv2.dilate if amount > 0 else cv2.erode
    return operation(mask, _KERNEL_3X3, iterations=abs(amount))


def invert(mask: np.ndarray) -> np.ndarray:
    return (255 - mask.astype(np.int16)).astype(np.uint8)


def prepare_mask(height: int, width: int, uploaded: np.ndarray | None = None, canvas: np.ndarray | None = None,
                 erode_dilate: int = 0, invert_mask: bool = False) -> np.ndarray:
    """Fooocus's mask rules in order (§9.4): the canvas mask (HxW uint8, 255 = repaint, resized to
    the image) max-combined with the uploaded mask picture (uploaded_mask), then erode/dilate,
    then the optional inversion. Neither given: an all-zero mask."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if canvas is not None:
        mask = np.maximum(mask, resample(canvas.astype(np.uint8), width, height))
    if uploaded is not None:
        mask = np.maximum(mask, uploaded_mask(uploaded, width, height))
    mask = erode_or_dilate(mask, erode_dilate)
    return invert(mask) if invert_mask else mask


def needs_inpaint(mask: np.ndarray, outpaint_sides) -> bool:
    """Fooocus inpaints only when some mask pixel is > 127 or an outpaint side is chosen."""
    return bool(np.any(mask > 127)) or bool(outpaint_sides)


# --- outpaint --------------------------------------------------------------------------------

def parse_outpaint_sides(sides) -> tuple[str, ...]:
    """Side names (any case, as a list or a comma-separated text) -> canonical names; an unknown
    name raises ValueError naming it and the valid ones."""
    if isinstance(sides, str):
        sides = [part for part in sides.split(",")]
    canonical = {side.lower(): side for side in OUTPAINT_SIDES}
    chosen = []
    for side in sides:
        name = str(side).strip()
        if not name:
            continue
        if name.lower() not in canonical:
            raise ValueError(f"unknown outpaint direction {name!r}; valid: {', '.join(OUTPAINT_SIDES)}")
        if canonical[name.lower()] not in chosen:
            chosen.append(canonical[name.lower()])
    return tuple(chosen)


def outpaint_distances(height: int, width: int, sides, distances: dict | None = None) -> dict[str, int]:
    """Pixels to add per chosen side: the explicit distance when > 0, else int(0.3 * H) for
    top/bottom and int(0.3 * W) for left/right (0 and -1 both mean the default)."""
    distances = distances or {}
    out = {}
    for side in parse_outpaint_sides(sides):
        explicit = int(distances.get(side.lower(), distances.get(side, 0)) or 0)
        base = height if side in ("Top", "Bottom") else width
        out[side] = explicit if explicit > 0 else int(base * OUTPAINT_FRACTION)
    return out


def outpaint(image: np.ndarray, mask: np.ndarray, sides, distances: dict | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Pad the image (edge-replicated) and the mask (255) on the chosen sides (§9.5). Top and
    bottom use the original height, left and right the width."""
    height, width = mask.shape
    grow = outpaint_distances(height, width, sides, distances)
    if not grow:
        return image, mask
    top, bottom = grow.get("Top", 0), grow.get("Bottom", 0)
    left, right = grow.get("Left", 0), grow.get("Right", 0)
    image = np.pad(image, [[top, bottom], [left, right], [0, 0]], mode="edge")
    mask = np.pad(mask, [[top, bottom], [left, right]], mode="constant", constant_values=255)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


# --- the crop ("respective field") -----------------------------------------------------------

@dataclass(frozen=True)
class Box:
    """Rows [top, bottom) and columns [left, right) of an image."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def clipped(self, height: int, width: int) -> "Box":
        return Box(min(max(self.top, 0), height), min(max(self.bottom, 0), height),
                   min(max(self.left, 0), width), min(max(self.right, 0), width))


def initial_box(mask: np.ndarray) -> Box:
    """A square around the mask's bounding box (pixels > 0), half-extent 1.15x the bounding box's
    larger half-extent, clipped to the image."""
    rows, columns = np.nonzero(mask > 0)
    if rows.size == 0:
        raise ValueError("the mask is empty: nothing to inpaint")
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())
    centre_row, half_rows = (bottom + top) // 2, (bottom - top) // 2
    centre_col, half_cols = (right + left) // 2, (right - left) // 2
    half = int(max(half_rows, half_cols) * 1.15)
    box = Box(centre_row - half, centre_row + half + 1, centre_col - half, centre_col + half + 1)
    return box.clipped(*mask.shape)


def respective_field_box(mask: np.ndarray, field: float) -> Box:
    """The crop Fooocus inpaints (§9.6 steps 1-2): the initial box grown, one pixel per side at a
    time on its smaller dimension (both once either is full), until it covers `field` (0..1) of
    the image's height and width. field 1 is the whole image."""
    field = float(field)
    if not 0.0 <= field <= 1.0:
        raise ValueError(f"respective field must be within 0..1, got {field}")
    height, width = mask.shape
    if field == 1.0:
        return Box(0, height, 0, width)
    box = initial_box(mask)
    top, bottom, left, right = box.top, box.bottom, box.left, box.right
    while not (bottom - top >= height * field and right - left >= width * field):
        grow_rows = bottom - top < right - left
        grow_cols = not grow_rows
        if bottom - top == height:
            grow_cols = True
        if right - left == width:
            grow_rows = True
        top, bottom = max(top - grow_rows, 0), min(bottom + grow_rows, height)
        left, right = max(left - grow_cols, 0), min(right + grow_cols, width)
    return Box(top, bottom, left, right)


def shape_for_ceil(height: int, width: int, target: float) -> tuple[int, int]:
    """(H, W) after Fooocus brings an image to shape ceil `target` (models.image_sizes)."""
    return size_after_shape_ceil(height, width, target)


def set_shape_ceil(image: np.ndarray, target: float) -> np.ndarray:
    """The image Lanczos-resized step by step to shape ceil `target`, as Fooocus resamples
    (unchanged, the same array, when already there)."""
    for height, width in shape_ceil_steps(image.shape[0], image.shape[1], target):
        image = resample(image, width, height)
    return image


# --- fill and feather ------------------------------------------------------------------------

def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """A (2r+1)-wide box mean with the edge pixels extended (Fooocus blurs with PIL's BoxBlur,
    which differs from this by at most 1 per channel in rounding; OpenCV's is ~10x faster)."""
    return cv2.blur(image, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REPLICATE)


def fooocus_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A smooth colour fill of the hole (§9.6 step 4): blur the whole image, then put the known
    pixels (mask < 127) back, from wide to narrow blurs.

    Only the hole changes, and a blur of radius r reads r pixels around it, so each pass works on
    the hole's bounding box grown by r (clipped to the picture, whose edges are extended as
    before): the same result as blurring the whole picture, at a fraction of the cost."""
    known = (mask < 127).astype(np.uint8)
    rows, columns = np.nonzero(known.min(axis=1) == 0)[0], np.nonzero(known.min(axis=0) == 0)[0]
    current = image.copy()
    if rows.size == 0:
        return current
    height, width = mask.shape
    for radius, repeats in FILL_PASSES:
        window = (slice(max(0, int(rows[0]) - radius), min(height, int(rows[-1]) + 1 + radius)),
                  slice(max(0, int(columns[0]) - radius), min(width, int(columns[-1]) + 1 + radius)))
        part = np.ascontiguousarray(current[window])
        original, keep = np.ascontiguousarray(image[window]), np.ascontiguousarray(known[window])
        for _ in range(repeats):
            part = cv2.copyTo(original, keep, box_blur(part, radius))  # known pixels back
        current[window] = part
    return current


def feather(mask: np.ndarray) -> np.ndarray:
    """The composite's blend mask (Fooocus's morphological_open, §9.6 step 5): 255 on the mask
    (> 127), falling by 8 per pixel of (chessboard) distance outside it, 0 beyond 32 pixels.

    Fooocus dilates 32 times (m <- max(m, dilate3x3(m) - 8) from 256 on the mask); that is
    exactly 256 - 8 * chessboard distance, which one distance transform gives."""
    outside = (mask <= 127).astype(np.uint8)
    if not outside.all():
        distance = cv2.distanceTransform(outside, cv2.DIST_C, 3)
    else:  # no mask pixel: the transform has no zero to measure from
        distance = np.full(mask.shape, FEATHER_STEPS + 1, dtype=np.float32)
    return (256.0 - FEATHER_DECAY * np.minimum(distance, FEATHER_STEPS + 1)).clip(0, 255).astype(np.uint8)


# --- back into the original ------------------------------------------------------------------

def paste(original: np.ndarray, crop: np.ndarray, box: Box) -> np.ndarray:
    """The original with `crop` Lanczos-resized into `box`."""
    result = original.copy()
    result[box.top:box.bottom, box.left:box.right] = resample(crop, box.width, box.height)
    return result


def blend(foreground: np.ndarray, background: np.ndarray, blend_mask: np.ndarray) -> np.ndarray:
    """fg * w + bg * (1 - w), w = blend_mask / 255, truncated to uint8 (Fooocus's colour
    correction): where w is 0 the background is kept exactly, where 255 the foreground."""
    weight = blend_mask[:, :, None].astype(np.float32) / 255.0
    mixed = foreground.astype(np.float32) * weight + background.astype(np.float32) * (1.0 - weight)
    return mixed.clip(0, 255).astype(np.uint8)


def composite(original: np.ndarray, crop: np.ndarray, box: Box, blend_mask: np.ndarray) -> np.ndarray:
    """The generated crop pasted back into the (outpainted) original and feathered into it:
    blend(paste(original, crop, box), original, blend_mask), computed only where the blend mask
    is nonzero (elsewhere it is the original, exactly)."""
    rows, columns = np.nonzero(blend_mask.any(axis=1))[0], np.nonzero(blend_mask.any(axis=0))[0]
    result = original.copy()
    if rows.size == 0:
        return result
    region = Box(int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1)
    pasted = original[region.top:region.bottom, region.left:region.right].copy()
    content = resample(crop, box.width, box.height)
    top, bottom = max(box.top, region.top), min(box.bottom, region.bottom)
    left, right = max(box.left, region.left), min(box.right, region.right)
    if top < bottom and left < right:
        pasted[top - region.top:bottom - region.top, left - region.left:right - region.left] = \
            content[top - box.top:bottom - box.top, left - box.left:right - box.left]
    window = (slice(region.top, region.bottom), slice(region.left, region.right))
    result[window] = blend(pasted, original[window], blend_mask[window])
    return result
