"""workflows/inpaint_outpaint.json with the demo models: inpaint keeps what it must, outpaint
sizes, the debug preprocessor, engines on and off (and undone), bad input named, and the whole
graph through POST /prompt."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from PIL import Image

from graph import validate_prompt
from models.inpaint.masks import shape_ceil
from workflows import Workflow
from waiting import DEADLINE_S, until

STEPS = 3
CEIL = 256  # the crop's size class (Fooocus: 1024); small keeps the tiny models fast


@pytest.fixture
def app(demo_app_factory):
    app = demo_app_factory(cache="lru:64")
    rng = np.random.default_rng(0)
    app.config.input_dir.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(app.config.input_dir / "source.png")
    mask = np.zeros((96, 80), np.uint8)
    mask[44:52, 30:40] = 255
    Image.fromarray(mask).save(app.config.input_dir / "mask.png")
    Image.fromarray(mask[::2, ::2]).save(app.config.input_dir / "half_mask.png")  # another size
    app.test_image, app.test_mask = image, mask
    return app


def inpaint_prompt(save_prefix="inpaint", enabled=None, **values) -> dict:
    defaults = dict(base_model="tiny-sdxl.safetensors", input_image="source.png", input_mask="mask.png",
                    steps=STEPS, inpaint_shape_ceil=CEIL, positive_texts='["a red apple"]', negative_texts='[""]',
                    refiner_switch_step=round(STEPS * 0.8), inpaint_respective_field=0.5, seed=7)
    defaults.update(values)
    pieces = {"refiner": False, "expansion": False}
    pieces.update(enabled or {})
    prompt = Workflow.load("inpaint_outpaint").fill(defaults, pieces)
    # the route's FooocusSaveImage needs the Fooocus API's writer; the graph above it is the same
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["composite", 0], "filename_prefix": save_prefix}}
    return prompt


def run(app, prompt, expect="success"):
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(prompt, "p", result.outputs, result.constants, links=result.links)
    assert outcome.status == expect, outcome.error and outcome.error.get("exception_message")
    if expect != "success":
        return outcome
    images = [np.asarray(Image.open(app.config.output_dir / entry["filename"]))
              for entry in outcome.outputs["save"]["images"]]
    return images, outcome


def far_from(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels whose chessboard distance to every mask pixel exceeds `distance`."""
    rows, cols = np.nonzero(mask > 127)
    far = np.ones(mask.shape, dtype=bool)
    for row, col in zip(rows, cols):
        far[max(0, row - distance):row + distance + 1, max(0, col - distance):col + distance + 1] = False
    return far


def test_inpaint_keeps_every_pixel_beyond_the_feather_of_the_dilated_mask(app):
    (result,), outcome = run(app, inpaint_prompt(inpaint_erode_or_dilate=2))
    image, mask = app.test_image, app.test_mask
    assert result.shape == image.shape
    dilated = np.zeros_like(mask)
    dilated[42:54, 28:42] = 255  # dilated twice by the 3x3 kernel
    far = far_from(dilated, 32)
    assert far.sum() > 2000
    np.testing.assert_array_equal(result[far], image[far])
    assert np.abs(result[dilated > 0].astype(int) - image[dilated > 0]).mean() > 5  # the hole was repainted
    assert {"sampler", "inpaint_model", "engine"} <= set(outcome.executed)


def test_a_mask_of_another_size_is_resized_not_refused(app):
    (result,), _ = run(app, inpaint_prompt(input_mask="half_mask.png"))
    far = far_from(app.test_mask, 34)  # Lanczos-resized edges may reach a pixel further
    np.testing.assert_array_equal(result[far], app.test_image[far])


def test_outpaint_left_right_grows_the_width_by_30_percent_each_side(app):
    (result,), _ = run(app, inpaint_prompt(outpaint_selections="Left,Right", inpaint_respective_field=0.3,
                                           inpaint_strength=0.5, enabled={"mask": False}))
    height, width = app.test_image.shape[:2]
    grow = int(0.3 * width)
    assert result.shape == (height, width + 2 * grow, 3)
    middle = result[:, grow + 32: grow + width - 32]
    np.testing.assert_array_equal(middle, app.test_image[:, 32:width - 32])


def test_outpaint_explicit_distances_give_the_exact_size(app):
    (result,), _ = run(app, inpaint_prompt(outpaint_selections="Top,Left", outpaint_distance_top=40,
                                           outpaint_distance_left=24, outpaint_distance_right=100,
                                           enabled={"mask": False}))
    assert result.shape == (96 + 40, 80 + 24, 3)  # right is not selected: its distance is ignored


def test_debug_preprocessor_returns_fill_mask_and_crop_without_sampling(app):
    images, outcome = run(app, inpaint_prompt(debugging_inpaint_preprocessor=True))
    assert len(images) == 3 and all(i.shape == images[0].shape for i in images)
    fill, mask, crop = images
    assert shape_ceil(*fill.shape[:2]) == CEIL and set(np.unique(mask)) <= {0, 255}
    known = mask[:, :, 0] < 127
    np.testing.assert_array_equal(fill[known], crop[known])
    assert not np.array_equal(fill[~known], crop[~known])
    assert "sampler" not in outcome.executed and "encode" not in outcome.executed


def test_engines_change_the_result_and_their_patch_is_undone(app):
    def text_to_image():
        prompt = Workflow.load("text_to_image").fill(
            dict(base_model="tiny-sdxl.safetensors", steps=2, width=64, height=64, positive_texts='["x"]',
                 negative_texts='[""]', seed=1), {"refiner": False, "expansion": False})
        prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "t2i"}}
        return run(app, prompt)[0][0]

    before = text_to_image()
    (with_v26,), _ = run(app, inpaint_prompt(inpaint_engine="v2.6"))
    (with_v1,), _ = run(app, inpaint_prompt(inpaint_engine="v1"))
    (without,), _ = run(app, inpaint_prompt(inpaint_engine="None"))
    mask = app.test_mask > 127
    assert not np.array_equal(with_v26[mask], without[mask])
    assert not np.array_equal(with_v26[mask], with_v1[mask])
    np.testing.assert_array_equal(text_to_image(), before)  # base weights restored exactly


def test_disable_initial_latent_starts_from_zeros_instead_of_the_fill(app):
    (from_fill,), _ = run(app, inpaint_prompt(inpaint_strength=0.6))
    (from_zeros,), _ = run(app, inpaint_prompt(inpaint_strength=0.6, inpaint_disable_initial_latent=True))
    mask = app.test_mask > 127
    assert not np.array_equal(from_fill[mask], from_zeros[mask])
    far = far_from(app.test_mask, 32)
    np.testing.assert_array_equal(from_zeros[far], app.test_image[far])


def test_bad_input_is_named(app):
    outcome = run(app, inpaint_prompt(outpaint_selections="Left,Up"), expect="error")
    assert "outpaint_selections: unknown outpaint direction 'Up'" in outcome.error["exception_message"]
    outcome = run(app, inpaint_prompt(outpaint_selections="Left,Right", outpaint_distance_left=16000,
                                      outpaint_distance_right=500), expect="error")
    assert outcome.error["exception_message"].startswith("outpaint_left: outpainting makes the image")
    Image.fromarray(np.zeros((96, 80), np.uint8)).save(app.config.input_dir / "empty.png")
    outcome = run(app, inpaint_prompt(input_mask="empty.png"), expect="error")
    assert outcome.error["exception_message"].startswith("mask: nothing to inpaint")
    result = validate_prompt(inpaint_prompt(inpaint_engine="v3"), app.registry)
    assert not result.ok and result.node_errors["engine"]["errors"][0]["extra_info"]["input_name"] == "engine"


async def test_the_workflow_runs_through_post_prompt(app, aiohttp_client):
    client = await aiohttp_client(app.make_web_app())
    prompt = Workflow.load("inpaint_outpaint").fill(
        dict(base_model="tiny-sdxl.safetensors", input_image="source.png", input_mask="mask.png", steps=2,
             inpaint_shape_ceil=CEIL, positive_texts='["a red apple"]', negative_texts='[""]', seed=3),
        {"refiner": False, "expansion": False})
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["composite", 0], "filename_prefix": "api"}}
    response = await client.post("/prompt", data=json.dumps({"prompt": prompt}))
    body = await response.json()
    assert response.status == 200, body
    prompt_id = body["prompt_id"]

    async def finished():
        history = await (await client.get(f"/history/{prompt_id}")).json()
        return history.get(prompt_id)

    entry = await until(finished, timeout=DEADLINE_S * 3, what="the inpaint prompt's history entry")
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["save"]["images"][0]
    view = await client.get("/view", params={"filename": saved["filename"], "type": "output"})
    assert view.status == 200
    assert Image.open(app.config.output_dir / saved["filename"]).size == (80, 96)
    await asyncio.sleep(0)


def test_a_nine_channel_inpainting_checkpoint_runs_in_both_workflows(tmp_path):
    """An SDXL inpainting checkpoint (UNet in_channels 9) as the base model: the Fooocus inpaint
    workflow feeds it mask + masked latent (the engine is not applied to it), text-to-image feeds it
    "repaint everything"."""
    from models.inpaint.tiny import write_tiny_inpaint_engine
    from models.tiny import tiny_sdxl_spec, write_tiny_checkpoint
    from models.tiny_text import write_tiny_tokenizer
    from nodes.loaders import TINY_TOKENIZER_DIR
    from server.app import App
    from server.config import AppConfig

    models = tmp_path / "models"
    write_tiny_checkpoint(models / "checkpoints/tiny-sdxl-inpainting.safetensors", tiny_sdxl_spec(in_channels=9))
    write_tiny_tokenizer(models / TINY_TOKENIZER_DIR)
    write_tiny_inpaint_engine(models / "inpaint", write_tiny_checkpoint(tmp_path / "base.safetensors",
                                                                        tiny_sdxl_spec()))
    app = App(AppConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                        temp_dir=tmp_path / "tmp", custom_nodes_dir=None, demo_models=False))
    app.config.input_dir.mkdir(exist_ok=True)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(app.config.input_dir / "source.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:40] = 255
    Image.fromarray(mask).save(app.config.input_dir / "mask.png")
    (result,), outcome = run(app, inpaint_prompt(base_model="tiny-sdxl-inpainting.safetensors",
                                                 inpaint_respective_field=1.0, enabled={"upscaler": False}))
    assert result.shape == image.shape and "sampler" in outcome.executed
    far = far_from(mask, 32)
    np.testing.assert_array_equal(result[far], image[far])
    prompt = Workflow.load("text_to_image").fill(
        dict(base_model="tiny-sdxl-inpainting.safetensors", steps=2, width=64, height=64, positive_texts='["x"]',
             negative_texts='[""]'), {"refiner": False, "expansion": False})
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "t2i"}}
    (generated,), _ = run(app, prompt)
    assert generated.shape == (64, 64, 3)
