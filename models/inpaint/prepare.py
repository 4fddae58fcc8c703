"""From (image, mask) to what diffusion needs and back (spec fooocus_pipeline.md §9.6-9.7):
the crop around the mask, its diffusion-size image, mask and fill, and the final composite.

Pure numpy (uint8 HxWx3 images, HxW masks with 255 = repaint); the super-resolution step is a
callable handed in, so this module needs no model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.inpaint.masks import (
    Box,
    binarize,
    composite,
    feather,
    fooocus_fill,
    resample,
    respective_field_box,
    set_shape_ceil,
    shape_ceil,
)

DIFFUSION_SHAPE_CEIL = 1024  # the crop is brought to this size class before encoding
FILL_ABOVE_STRENGTH = 0.99  # the hole is colour-filled only for (near) full denoise

Upscaler = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 -> (larger) HxWx3 uint8


@dataclass(frozen=True)
class InpaintCrop:
    """One inpaint job's geometry and pixels.

    image / mask: the whole (outpainted) picture and its 0/255 mask; box: the crop inside them;
    crop_image / crop_mask / crop_fill: the crop at diffusion size (multiples of 64), its 0/255
    mask and its colour fill (= crop_image when not filled); blend_mask: the feathered mask of
    the whole picture for the final composite.
    """

    image: np.ndarray
    mask: np.ndarray
    box: Box
    crop_image: np.ndarray
    crop_mask: np.ndarray
    crop_fill: np.ndarray
    blend_mask: np.ndarray

    def composite(self, generated: np.ndarray) -> np.ndarray:
        """The generated crop (diffusion size) resized into the box and feathered into the image."""
        return composite(self.image, generated, self.box, self.blend_mask)


def prepare_crop(image: np.ndarray, mask: np.ndarray, respective_field: float, use_fill: bool,
                 upscale: Upscaler | None = None, target_ceil: int = DIFFUSION_SHAPE_CEIL) -> InpaintCrop:
    """§9.6: crop to the respective field, upscale a small crop with `upscale` (when given), bring
    it to shape_ceil `target_ceil`, resize and binarise the mask, fill the hole when `use_fill`."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and mask {mask.shape[1]}x{mask.shape[0]} "
                         "differ in size")
    box = respective_field_box(mask, respective_field)
    crop_image = image[box.top:box.bottom, box.left:box.right]
    crop_mask = mask[box.top:box.bottom, box.left:box.right]
    if upscale is not None and shape_ceil(*crop_image.shape[:2]) < target_ceil:
        crop_image = upscale(crop_image)
    crop_image = np.ascontiguousarray(set_shape_ceil(crop_image, target_ceil))
    height, width = crop_image.shape[:2]
    crop_mask = binarize(resample(np.ascontiguousarray(crop_mask), width, height))
    crop_fill = fooocus_fill(crop_image, crop_mask) if use_fill else crop_image.copy()
    return InpaintCrop(image=image, mask=mask, box=box, crop_image=crop_image, crop_mask=crop_mask,
                       crop_fill=crop_fill, blend_mask=feather(mask))
