"""Fooocus's inpaint maths on small arrays with hand-checked values (models/inpaint/masks.py,
models/inpaint/prepare.py)."""
from __future__ import annotations

import numpy as np
import pytest

from models.inpaint import masks as m
from models.inpaint.prepare import prepare_crop


def test_alpha_is_composited_on_white():
    rgba = np.array([[[100, 10, 200, 128], [7, 8, 9, 255], [7, 8, 9, 0]]], dtype=np.uint8)
    rgb = m.to_rgb(rgba)
    # 100 * 128/255 + 255 * 127/255 = 177.2 -> 177 (truncated, as Fooocus)
    assert rgb[0, 0].tolist() == [177, 132, 227]
    assert rgb[0, 1].tolist() == [7, 8, 9]  # opaque: unchanged
    assert rgb[0, 2].tolist() == [255, 255, 255]  # transparent: white = repaint in a mask
    assert m.to_rgb(np.array([[3, 4]], dtype=np.uint8)).tolist() == [[[3, 3, 3], [4, 4, 4]]]


def test_uploaded_mask_is_mean_rgb_above_127():
    picture = np.array([[[255, 255, 255], [0, 0, 0]],
                        [[200, 100, 90], [128, 127, 126]]], dtype=np.uint8)  # means 130 and 127
    assert m.uploaded_mask(picture, 2, 2).tolist() == [[255, 0], [255, 0]]


def test_uploaded_mask_of_another_size_is_resized_to_the_image():
    picture = np.zeros((4, 4, 3), dtype=np.uint8)
    picture[:, 2:] = 255  # right half white
    mask = m.uploaded_mask(picture, 8, 2)
    assert mask.shape == (2, 8)
    assert mask[:, :3].max() == 0 and mask[:, 5:].min() == 255


def test_erode_and_dilate_use_a_3x3_kernel():
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[2, 2] = 255
    once = m.erode_or_dilate(mask, 1)
    assert once.tolist() == [[0] * 5, [0, 255, 255, 255, 0], [0, 255, 255, 255, 0], [0, 255, 255, 255, 0], [0] * 5]
    assert m.erode_or_dilate(mask, 2).min() == 255
    assert m.erode_or_dilate(once, -1).tolist() == mask.tolist()
    assert m.erode_or_dilate(mask, 0) is mask


def test_prepare_mask_combines_then_dilates_then_inverts():
    canvas = np.zeros((5, 5), dtype=np.uint8)
    canvas[0, 0] = 255
    upload = np.zeros((5, 5, 3), dtype=np.uint8)
    upload[4, 4] = 255
    mask = m.prepare_mask(5, 5, uploaded=upload, canvas=canvas, erode_dilate=1)
    assert mask[:2, :2].min() == 255 and mask[3:, 3:].min() == 255 and mask[2, 2] == 0
    inverted = m.prepare_mask(5, 5, uploaded=upload, canvas=canvas, erode_dilate=1, invert_mask=True)
    assert (inverted.astype(int) + mask).tolist() == [[255] * 5] * 5
    assert m.prepare_mask(3, 4).tolist() == [[0] * 4] * 3
    assert not m.needs_inpaint(m.prepare_mask(3, 4), ())
    assert m.needs_inpaint(m.prepare_mask(3, 4), ("Left",))


def test_outpaint_left_right_grows_by_30_percent_of_the_width():
    image = np.arange(10 * 21 * 3, dtype=np.uint8).reshape(10, 21, 3)
    mask = np.zeros((10, 21), dtype=np.uint8)
    padded, padded_mask = m.outpaint(image, mask, ["Left", "Right"])
    assert padded.shape == (10, 21 + 2 * 6, 3)  # int(0.3 * 21) = 6
    np.testing.assert_array_equal(padded[:, 6:27], image)
    np.testing.assert_array_equal(padded[:, :6], np.repeat(image[:, :1], 6, axis=1))  # edge replicated
    assert padded_mask[:, :6].min() == 255 and padded_mask[:, 27:].min() == 255 and padded_mask[:, 6:27].max() == 0


def test_outpaint_explicit_distances_on_the_chosen_sides():
    image = np.zeros((10, 21, 3), dtype=np.uint8)
    mask = np.zeros((10, 21), dtype=np.uint8)
    padded, _ = m.outpaint(image, mask, "Top,left", {"top": 5, "left": 7, "right": 50, "bottom": 9})
    assert padded.shape == (15, 28, 3)  # right and bottom are not chosen: their distances are ignored
    for default in (0, -1, None):
        padded, _ = m.outpaint(image, mask, ["Bottom"], {"bottom": default})
        assert padded.shape == (13, 21, 3)  # int(0.3 * 10) = 3
    with pytest.raises(ValueError, match="unknown outpaint direction 'Up'"):
        m.outpaint(image, mask, ["Up"])


def test_initial_box_is_a_square_of_1_15_half_extent():
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:10, 8:11] = 255  # rows 5..9, columns 8..10
    assert m.initial_box(mask) == m.Box(5, 10, 7, 12)  # centre (7, 9), half int(2 * 1.15) = 2
    with pytest.raises(ValueError, match="empty"):
        m.initial_box(np.zeros((3, 3), dtype=np.uint8))


def test_respective_field_grows_the_smaller_side_until_it_covers_the_field():
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:10, 8:11] = 255
    # 5x5 -> columns, rows, columns, rows, columns, rows: 11x11 >= 0.5 * 20 on both sides
    assert m.respective_field_box(mask, 0.5) == m.Box(2, 13, 4, 15)
    assert m.respective_field_box(mask, 1.0) == m.Box(0, 20, 0, 20)
    corner = np.zeros((10, 10), dtype=np.uint8)
    corner[0, 0] = 255
    assert m.respective_field_box(corner, 0.5) == m.Box(0, 5, 0, 5)  # clipped at the image edge


def test_shape_ceil_and_set_shape_ceil():
    assert m.shape_ceil(64, 64) == 64 and m.shape_ceil(100, 100) == 128
    # 300x200: ceil 256, scale 4 -> 1200/64 = 18.75 -> 19*64, 800/64 = 12.5 -> 12*64 (Python rounds half to even)
    assert m.shape_for_ceil(300, 200, 1024) == (1216, 768)
    assert m.shape_ceil(1216, 768) == 1024
    assert m.shape_for_ceil(96, 16080, 256) == (64, 1024)  # a very long strip keeps 64 rows
    image = np.zeros((300, 200, 3), dtype=np.uint8)
    assert m.set_shape_ceil(image, 1024).shape == (1216, 768, 3)
    same = np.zeros((1024, 1024, 3), dtype=np.uint8)
    assert m.set_shape_ceil(same, 1024) is same


def test_fooocus_fill_keeps_known_pixels_and_fills_the_hole_smoothly():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:] = (10, 20, 30)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:9, 5:12] = 255
    holed = image.copy()
    holed[mask > 127] = (255, 0, 0)
    np.testing.assert_array_equal(m.fooocus_fill(holed, mask), image)  # a flat surround fills flat

    gradient = np.repeat(np.repeat(np.linspace(0, 200, 16).astype(np.uint8)[None, :, None], 16, 0), 3, 2)
    filled = m.fooocus_fill(np.where(mask[:, :, None] > 127, 255, gradient).astype(np.uint8), mask)
    known = mask < 127
    np.testing.assert_array_equal(filled[known], gradient[known])
    hole = filled[mask > 127][:, 0].astype(int)
    assert hole.min() >= gradient[:, 4:13].min() and hole.max() <= gradient[:, 4:13].max()
    row = filled[6, 5:12, 0].astype(int)
    assert (np.diff(row) >= 0).all()  # the fill follows the left-to-right ramp


def test_feather_falls_by_8_per_pixel_over_32_pixels():
    mask = np.zeros((81, 81), dtype=np.uint8)
    mask[40, 40] = 255
    blend = m.feather(mask)
    assert blend[40, 40] == 255
    expected = [max(0, 256 - 8 * d) for d in range(1, 41)]
    assert blend[40, 41:].tolist() == expected  # 248, 240, ..., 8, 0, ...
    assert blend[0, 0] == 0 and blend[8, 8] == 0 and blend[9, 9] == 8  # chessboard distance 31


def test_blend_keeps_the_background_where_the_weight_is_zero():
    fg = np.full((1, 3, 3), 200, dtype=np.uint8)
    bg = np.full((1, 3, 3), 100, dtype=np.uint8)
    out = m.blend(fg, bg, np.array([[0, 128, 255]], dtype=np.uint8))
    assert out[0, :, 0].tolist() == [100, 150, 200]  # 200 * 128/255 + 100 * 127/255 = 150.2


def test_inpaint_keeps_every_pixel_farther_than_the_feather():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    mask = np.zeros((96, 80), dtype=np.uint8)
    mask[40:50, 30:36] = 255
    mask = m.erode_or_dilate(mask, 3)
    crop = prepare_crop(image, mask, respective_field=0.5, use_fill=True, target_ceil=256)
    assert crop.crop_image.shape[0] % 64 == 0 and crop.crop_image.shape[1] % 64 == 0
    assert m.shape_ceil(*crop.crop_image.shape[:2]) == 256
    assert set(np.unique(crop.crop_mask)) <= {0, 255}
    generated = rng.integers(0, 256, crop.crop_image.shape, dtype=np.uint8)
    result = crop.composite(generated)
    rows, cols = np.nonzero(mask)
    far = np.ones(mask.shape, dtype=bool)
    far[max(0, rows.min() - 32):rows.max() + 33, max(0, cols.min() - 32):cols.max() + 33] = False
    assert far.sum() > 1000
    np.testing.assert_array_equal(result[far], image[far])
    assert not np.array_equal(result[mask > 127], image[mask > 127])  # the hole did change


def test_small_crops_go_through_the_upscaler_first():
    calls = []

    def upscale(crop):
        calls.append(crop.shape)
        return np.repeat(np.repeat(crop, 4, 0), 4, 1)

    image = np.zeros((64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:20, 10:20] = 255
    crop = prepare_crop(image, mask, 1.0, use_fill=False, upscale=upscale, target_ceil=512)
    assert calls == [(64, 64, 3)] and crop.crop_image.shape == (512, 512, 3)
    np.testing.assert_array_equal(crop.crop_fill, crop.crop_image)  # no fill below full strength
    prepare_crop(np.zeros((512, 512, 3), np.uint8), np.pad(mask, 224), 1.0, False, upscale=upscale, target_ceil=512)
    assert len(calls) == 1  # already at the size class: no upscale


def _iterative_feather(mask):
    """Fooocus's morphological_open as written: 32 rounds of max(m, dilate3x3(m) - 8)."""
    import cv2

    blend = np.where(mask > 127, 256, 0).astype(np.int16)
    for _ in range(32):
        blend = np.maximum(cv2.dilate(blend, np.ones((3, 3), np.uint8)) - 8, blend)
    return blend.clip(0, 255).astype(np.uint8)


def test_feather_equals_fooocus_iterated_dilation_on_random_masks():
    rng = np.random.default_rng(3)
    for density in (0.001, 0.02, 0.5):
        mask = np.where(rng.random((70, 90)) < density, 255, 0).astype(np.uint8)
        np.testing.assert_array_equal(m.feather(mask), _iterative_feather(mask))
    empty = np.zeros((10, 10), np.uint8)
    np.testing.assert_array_equal(m.feather(empty), empty)


def test_composite_equals_paste_then_blend_of_the_whole_picture():
    rng = np.random.default_rng(4)
    original = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    mask = np.zeros((60, 50), np.uint8)
    mask[20:30, 5:12] = 255
    box = m.Box(10, 40, 0, 30)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    feathered = m.feather(mask)
    expected = m.blend(m.paste(original, crop, box), original, feathered)
    np.testing.assert_array_equal(m.composite(original, crop, box, feathered), expected)


def test_fill_of_the_hole_window_equals_blurring_the_whole_picture():
    """fooocus_fill works on the hole's neighbourhood only; the result must equal the plain
    definition (blur everything, restore the known pixels) pass for pass."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), np.uint8)
    mask[30:41, 70:95] = 255
    known = mask < 127
    reference = image.copy()
    for radius, repeats in m.FILL_PASSES:
        for _ in range(repeats):
            reference = m.box_blur(reference, radius)
            reference[known] = image[known]
    np.testing.assert_array_equal(m.fooocus_fill(image, mask), reference)
