"""Inpaint or Outpaint routes (issue 10): the API document's four examples sent as written, the
planner's reading of a request (text-to-image fallbacks, additional prompt, engine switch, the
synthetic refiner), and bad input.

The examples run against a server started with `--preset lightning` (4 steps, CFG 1): the requests
are the document's, the preset only makes each Fooocus-sized (shape ceil 1024) job affordable on a
CPU. Pixel-level inpaint behaviour (kept pixels, outpaint sizes, engines) is proven on the workflow
in tests/test_inpaint_workflow.py.
"""
import io
import json

import numpy as np
import pytest
from aiohttp import FormData
from PIL import Image, ImageDraw

from server.app import App
from server.config import AppConfig
from server.fooocus.requests import InpaintOutpaintRequestV2
from server.fooocus.setup import attach_fooocus_api
from server.fooocus.validation import validate_request
from server.serve import make_model_manager

from fooocus_client import b64, start_fooocus_server, wait_for_job

V1 = "/v1/generation/image-inpaint-outpaint"
V2 = "/v2/generation/image-inpaint-outpaint"
JOB_TYPE = "Image Inpaint or Outpaint"


def picture(width: int, height: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(width * height)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def mask_png(width: int, height: int, box=(0.3, 0.3, 0.6, 0.6), mode: str = "L") -> bytes:
    """White (repaint) in `box` (fractions of the size; None: an all-black mask)."""
    mask = Image.new(mode, (width, height), 0)
    if box is not None:
        ImageDraw.Draw(mask).rectangle((int(box[0] * width), int(box[1] * height), int(box[2] * width),
                                        int(box[3] * height)), fill=255 if mode == "L" else (255, 255, 255))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server(aiohttp_client, demo_app_factory):
    async def start(**overrides):
        return await start_fooocus_server(aiohttp_client, demo_app_factory, **overrides)
    return start


async def result_image(client, job: dict) -> Image.Image:
    assert job["job_stage"] == "SUCCESS", job
    item = job["job_result"][0]
    response = await client.get("/files/" + item["url"].split("/files/", 1)[1])
    return Image.open(io.BytesIO(await response.read())).convert("RGB")


def plan(api, body: dict, width: int = 96, height: int = 64, mask: bytes | None = None):
    store = api.jobs.planner.by_type[JOB_TYPE].inputs
    stored = {"input_image": store.save(Image.new("RGB", (width, height)), "input_image")}
    if mask is not None:
        stored["input_mask"] = store.save(Image.open(io.BytesIO(mask)).convert("RGB"), "input_mask")
    parsed = validate_request(InpaintOutpaintRequestV2, {**body, **stored}, api.routes.vocabulary())
    params = api.routes.request_params(parsed, exclude=("image_prompts",))
    return api.jobs.planner(JOB_TYPE, params, "job-under-test")


def classes(job_plan) -> set[str]:
    return {node["class_type"] for node in job_plan.runs[0].prompt.values()}


# ----------------------------------------------------------------------------- the document's examples

@pytest.mark.timeout(900)
async def test_document_v1_examples_as_written(server):
    client, app, api = await server(preset="lightning")
    image = picture(80, 64)
    # image extension example
    form = FormData()
    form.add_field("outpaint_selections", "Left,Right")
    form.add_field("async_process", "True")
    form.add_field("input_image", image, filename="bear.jpg")
    extension = await (await client.post(V1, data=form)).json()
    assert extension["job_type"] == JOB_TYPE
    # image inpaint example
    form = FormData()
    form.add_field("prompt", "a cat")
    form.add_field("async_process", "True")
    form.add_field("input_image", picture(72, 72), filename="s.jpg")
    form.add_field("input_mask", mask_png(72, 72), filename="m.png")
    inpaint = await (await client.post(V1, data=form)).json()
    extended = await result_image(client, await wait_for_job(client, extension["job_id"]))
    assert extended.size == (80 + 2 * int(0.3 * 80), 64)
    assert (await result_image(client, await wait_for_job(client, inpaint["job_id"]))).size == (72, 72)


@pytest.mark.timeout(900)
async def test_document_v2_examples_as_written(server):
    client, app, api = await server(preset="lightning")
    headers = {"Content-Type": "application/json"}
    extension = await (await client.post(V2, data=json.dumps({
        "input_image": b64(picture(64, 80)), "input_mask": None, "outpaint_selections": ["Left", "Right"],
        "async_process": True}), headers=headers)).json()
    inpaint = await (await client.post(V2, data=json.dumps({
        "prompt": "a cat", "input_image": b64(picture(72, 64)), "input_mask": b64(mask_png(72, 64, mode="RGB")),
        "async_process": True}), headers=headers)).json()
    assert (await result_image(client, await wait_for_job(client, extension["job_id"]))).size == (64 + 2 * 19, 80)
    assert (await result_image(client, await wait_for_job(client, inpaint["job_id"]))).size == (72, 64)


# ----------------------------------------------------------------------------- planning

async def test_requests_without_work_are_text_to_image(server):
    client, app, api = await server()
    no_mask = plan(api, {"aspect_ratios_selection": "64*64"})
    assert "EmptyLatentImage" in classes(no_mask)  # neither mask nor side: text-to-image
    black = plan(api, {"aspect_ratios_selection": "64*64"}, mask=mask_png(96, 64, box=None))
    assert "EmptyLatentImage" in classes(black)  # a mask without white pixels changes nothing
    eroded = plan(api, {"aspect_ratios_selection": "64*64", "advanced_params": {"inpaint_erode_or_dilate": -2}},
                  mask=mask_png(96, 64, box=(0, 0, 0, 0)))
    assert "EmptyLatentImage" in classes(eroded)  # erosion removes the single white pixel
    inverted = plan(api, {"advanced_params": {"invert_mask_checkbox": True}}, mask=mask_png(96, 64, box=None))
    assert "FooocusInpaintPrepare" in classes(inverted)  # inverted black: repaint everything
    masked = plan(api, {}, mask=mask_png(96, 64))
    assert "FooocusInpaintPrepare" in classes(masked)
    side = plan(api, {"outpaint_selections": ["Top"]})
    assert "FooocusInpaintPrepare" in classes(side)


async def test_plan_fills_the_inpaint_slots(server):
    client, app, api = await server()
    job = plan(api, {"prompt": "a cat", "inpaint_additional_prompt": "red hat", "outpaint_selections": ["Left"],
                     "style_selections": [],
                     "outpaint_distance_left": 40, "advanced_params": {"inpaint_respective_field": 0.5,
                                                                      "inpaint_strength": 0.7}},
               mask=mask_png(96, 64))
    prompt = job.runs[0].prompt
    assert prompt["prepare"]["inputs"]["outpaint_selections"] == "Left"
    assert prompt["prepare"]["inputs"]["outpaint_left"] == 40
    assert prompt["prepare"]["inputs"]["respective_field"] == 0.5 and prompt["prepare"]["inputs"]["strength"] == 0.7
    positive = json.loads(prompt["positive"]["inputs"]["texts"])
    assert positive[0] == "red hat" and "a cat" in positive[1:]  # the additional prompt comes first
    assert prompt["engine"]["inputs"]["engine"] == "v2.6"
    steps = prompt["sampler"]["inputs"]["steps"]
    assert prompt["sampler"]["inputs"]["refiner_switch_step"] == round(steps * 0.8)  # the synthetic refiner
    assert prompt["sampler"]["inputs"]["refiner_model"] == ["inpaint_model", 1]
    plain = plan(api, {"advanced_params": {"inpaint_engine": "None"}}, mask=mask_png(96, 64))
    assert plain.runs[0].prompt["sampler"]["inputs"]["refiner_switch_step"] == 10000  # no engine, no refiner


async def test_missing_engine_file_fails_the_job_naming_it(aiohttp_client, demo_models_dir, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    for entry in demo_models_dir.iterdir():
        if entry.name != "inpaint":
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    config = AppConfig(models_dir=root, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True)
    app = App(config, model_manager=make_model_manager(config))
    attach_fooocus_api(app)
    client = await aiohttp_client(app.make_web_app())
    items = await (await client.post(V2, data=json.dumps({"input_image": b64(picture(64, 64)),
                                                          "outpaint_selections": ["Top"]}))).json()
    assert items[0]["finish_reason"] == "ERROR"
    record = app.extensions[0].store.list_history(0, 1, None)[0]
    assert "fooocus_inpaint_head.pth" in record.status and "inpaint" in record.status


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case,body,field", [
    ("mask not an image", {"input_image": b64(picture(32, 32)), "input_mask": b64(b"no pixels here")}, "input_mask"),
    ("bad base64", {"input_image": "%%%", "outpaint_selections": ["Left"]}, "input_image"),
    ("unknown direction", {"input_image": b64(picture(32, 32)), "outpaint_selections": ["Up"]},
     "outpaint_selections"),
    ("unknown engine", {"input_image": b64(picture(32, 32)), "advanced_params": {"inpaint_engine": "v9"}},
     "inpaint_engine"),
    ("distance too large", {"input_image": b64(picture(32, 32)), "outpaint_selections": ["Left"],
                            "outpaint_distance_left": 100000}, "outpaint_distance_left"),
])
async def test_bad_input_is_a_422_naming_the_field(server, case, body, field):
    client, app, api = await server()
    response = await client.post(V2, data=json.dumps(body))
    assert response.status == 422, (case, await response.text())
    locations = [detail["loc"] for detail in (await response.json())["detail"]]
    assert any(field in location for location in locations), (case, locations)
    assert (await client.get("/ping")).status == 200


async def test_v1_requires_the_image_and_old_paths_answer(server):
    client, app, api = await server()
    form = FormData()
    form.add_field("outpaint_selections", "Left")
    response = await client.post(V1, data=form)
    assert response.status == 422
    assert ["body", "input_image"] in [d["loc"] for d in (await response.json())["detail"]]
    old = await client.post("/v2/generation/image-inpait-outpaint",
                            data=json.dumps({"input_image": "", "aspect_ratios_selection": "64*64",
                                             "advanced_params": {"overwrite_step": 1}, "async_process": True}))
    job = await wait_for_job(client, (await old.json())["job_id"])
    assert job["job_stage"] == "SUCCESS" and job["job_type"] == JOB_TYPE  # empty image: text-to-image
