"""Image prompts mixed into vary, upscale and inpaint/outpaint (Fooocus-API's auto-mixing), the
debug view of the preprocessors, and the limit on image prompts per request.

Planning tests read the workflow a request becomes; one end-to-end run per mixed kind proves the
mixed workflows run on the demo models.
"""
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from aiohttp import FormData
from PIL import Image

from server.fooocus.requests import ImagePromptRequestV2, InpaintOutpaintRequestV2, UpscaleVaryRequestV2
from server.fooocus.validation import validate_request
from workflows import WORKFLOW_DIR
from fooocus_client import b64, start_fooocus_server, wait_for_job

ROOT = Path(__file__).resolve().parent.parent
FAST = {"base_model_name": "tiny-sdxl.safetensors", "aspect_ratios_selection": "64*64", "image_seed": 5,
        "advanced_params": {"overwrite_step": 1}, "style_selections": []}


def picture(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_picture(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4: height // 2, width // 4: width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server(aiohttp_client, demo_app_factory):
    async def start(**overrides):
        return await start_fooocus_server(aiohttp_client, demo_app_factory, **overrides)
    return start


def plan(api, job_type: str, request_class, body: dict, images: dict, prompts: list[dict]):
    """The workflow of the job's first image: `images` (field -> (w, h)) and the prompts' images stored."""
    store = api.jobs.planner.by_type["Image Upscale or Variation"].inputs
    stored = {field: store.save(Image.new("RGB", size, "gray"), field) for field, size in images.items()}
    if "input_mask" in images:
        stored["input_mask"] = store.save(Image.open(io.BytesIO(mask_picture(*images["input_mask"]))), "input_mask")
    slots = [{**prompt, "cn_img": store.save(Image.new("RGB", (32, 32)), "cn_img") if prompt.get("cn_img") else None}
             for prompt in prompts]
    parsed = validate_request(request_class, {**FAST, "image_prompts": [], **body, **{k: "x" for k in images}},
                              api.routes.vocabulary())
    params = {**api.routes.request_params(parsed, exclude=("image_prompts", *images)), **stored,
              "image_prompts": slots}
    return api.jobs.planner(job_type, params, "job-under-test").runs[0].prompt


def classes(prompt: dict) -> set[str]:
    return {node["class_type"] for node in prompt.values()}


# ----------------------------------------------------------------------------- the mixed workflows

def test_mixed_workflows_are_what_the_builder_makes_of_their_sources():
    spec = importlib.util.spec_from_file_location("build_mixed_workflows", ROOT / "scripts/build_mixed_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for base in builder.BASES:
        graph, params = builder.build(base)
        assert json.loads((WORKFLOW_DIR / f"{base}_ip.json").read_text()) == graph, base
        assert json.loads((WORKFLOW_DIR / f"{base}_ip.params.json").read_text()) == params, base
        assert builder.render_graph(graph) == (WORKFLOW_DIR / f"{base}_ip.json").read_text()


# ----------------------------------------------------------------------------- planning

async def test_vary_and_upscale_with_image_prompts_use_the_mixed_workflows(server):
    client, app, api = await server()
    vary = plan(api, "Image Upscale or Variation", UpscaleVaryRequestV2, {"uov_method": "Vary (Subtle)"},
                {"input_image": (64, 64)}, [{"cn_img": True, "cn_type": "ImagePrompt", "cn_weight": 0.8},
                                            {"cn_img": True, "cn_type": "PyraCanny"}])
    sampler = vary["sampler"]["inputs"]
    assert sampler["model"] == ["ip_4", 0] and vary["ip_1"]["inputs"]["model"] == ["loras", 0]
    assert vary["ip_1"]["inputs"]["weight"] == 0.8 and vary["ip_1"]["inputs"]["ipadapter"] == ["ip_adapter_image", 0]
    assert (sampler["positive"], sampler["negative"]) == (["cn_4", 0], ["cn_4", 1])
    assert (vary["cn_1"]["inputs"]["positive"], vary["cn_1"]["inputs"]["negative"]) == (["positive", 0], ["negative", 0])
    assert vary["cn_2"]["inputs"]["image"] == ["cn_pyracanny_2", 0]
    # the hint is sized to the latent the sampler gets: the vary size is only known inside the graph
    assert vary["cn_hint_2"]["class_type"] == "FooocusImageScaleToLatent"
    assert vary["cn_hint_2"]["inputs"]["latent"] == sampler["latent_image"] == ["encode", 0]
    assert sampler["denoise"] == 0.5 and "FooocusImageShapeCeil" in classes(vary)

    upscale = plan(api, "Image Upscale or Variation", UpscaleVaryRequestV2, {"uov_method": "Upscale (2x)"},
                   {"input_image": (64, 64)}, [{"cn_img": True, "cn_type": "CPDS"}])
    assert upscale["sampler"]["inputs"]["model"] == ["loras", 0]  # no adapter slot: no CLIP vision
    assert upscale["cn_1"]["inputs"]["image"] == ["cn_cpds_1", 0] and "ImageUpscaleWithModel" in classes(upscale)
    plain = plan(api, "Image Upscale or Variation", UpscaleVaryRequestV2, {"uov_method": "Vary (Strong)"},
                 {"input_image": (64, 64)}, [{"cn_img": None}])
    assert "FooocusImagePrompt" not in classes(plain) and plain["sampler"]["inputs"]["model"] == ["loras", 0]


async def test_inpaint_with_image_prompts_and_the_image_prompt_route(server):
    client, app, api = await server()
    body = {"outpaint_selections": ["Left"]}
    prompts = [{"cn_img": True, "cn_type": "FaceSwap"}]
    for job_type, request_class in (("Image Inpaint or Outpaint", InpaintOutpaintRequestV2),
                                    ("Image Prompt", ImagePromptRequestV2)):
        mixed = plan(api, job_type, request_class, body, {"input_image": (64, 64)}, prompts)
        assert mixed["ip_1"]["inputs"]["model"] == ["inpaint_model", 0], job_type  # the adapter on the patched model
        assert mixed["sampler"]["inputs"]["model"] == ["ip_4", 0]
        assert (mixed["ip_1"]["inputs"]["stop"], mixed["ip_1"]["inputs"]["weight"]) == (0.9, 0.75)
        assert mixed["cn_hint_1"]["inputs"]["latent"] == mixed["sampler"]["inputs"]["latent_image"]
    # nothing to inpaint (no mask, no side): text-to-image, the image prompts kept
    t2i = plan(api, "Image Prompt", ImagePromptRequestV2, {}, {"input_image": (64, 64)}, prompts)
    assert "EmptyLatentImage" in classes(t2i) and t2i["sampler"]["inputs"]["model"] == ["ip_4", 0]


async def test_debugging_cn_preprocessor_returns_the_first_preprocessed_image(server):
    client, app, api = await server()
    prompts = [{"cn_img": True, "cn_type": "ImagePrompt"}, {"cn_img": True, "cn_type": "CPDS"}]
    debug = plan(api, "Text to Image", ImagePromptRequestV2,
                 {"advanced_params": {"debugging_cn_preprocessor": True, "canny_low_threshold": 20}}, {}, prompts)
    assert "FooocusKSampler" not in classes(debug)
    assert debug["save"]["inputs"]["images"] == ["cpds", 0]  # Fooocus' order: PyraCanny, CPDS, then the adapters
    client_body = {**FAST, "advanced_params": {"debugging_cn_preprocessor": True},
                   "image_prompts": [{"cn_img": b64(picture(40, 48)), "cn_type": "ImagePrompt"}]}
    items = await (await client.post("/v2/generation/image-prompt", data=json.dumps(client_body))).json()
    assert items[0]["finish_reason"] == "SUCCESS", items
    response = await client.get("/files/" + items[0]["url"].split("/files/", 1)[1])
    assert Image.open(io.BytesIO(await response.read())).size == (224, 224)  # what CLIP vision is shown


@pytest.mark.parametrize("prompts,message", [
    ([{"cn_img": "x"}] * 5, "at most 4 image prompts with an image"),
    ([{"cn_img": None}] * 17, "at most 16"),
])
async def test_more_image_prompts_than_slots_is_422(server, prompts, message):
    client, app, api = await server()
    response = await client.post("/v2/generation/image-prompt", data=json.dumps({**FAST, "image_prompts": prompts}))
    body = await response.json()
    assert response.status == 422, body
    assert any(detail["loc"] == ["body", "image_prompts"] and message in detail["msg"] for detail in body["detail"])
    padded = [{"cn_img": None}] * 5  # Fooocus-API's own clients pad the list to five entries
    assert (await client.post("/v2/generation/image-prompt",
                              data=json.dumps({**FAST, "image_prompts": padded}))).status == 200


# ----------------------------------------------------------------------------- running

IMAGE, SOURCE, MASK = picture(64, 48, 1), picture(64, 64, 2), mask_picture(64, 64)
TWO_PROMPTS = [{"cn_img": b64(SOURCE), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
               {"cn_img": b64(IMAGE), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}]
# (route, v2 JSON body) or (route, (v1 form params, v1 files)); v2 bodies and v1 params as the
# document writes them. Result sizes as Fooocus makes them: outpainting pads each side by 30 %,
# inpainting returns the input's size, text-to-image the preset's 1152x896, vary shape ceil 1024.
EXTENDED, INPAINTED, GENERATED, VARIED = (64 + 2 * 19, 48), (64, 64), (1152, 896), (1024, 1024)
DOCUMENT_EXAMPLES = {
    "v2-image-extend": (EXTENDED, "/v2/generation/image-prompt", {
        "input_image": b64(IMAGE), "outpaint_selections": ["Left", "Right"], "image_prompts": []}),
    "v2-inpaint": (INPAINTED, "/v2/generation/image-prompt", {
        "prompt": "1girl sitting on the chair", "input_image": b64(SOURCE), "input_mask": b64(MASK),
        "image_prompts": [], "async_process": True}),
    "v2-image-prompt": (GENERATED, "/v2/generation/image-prompt", {
        "prompt": "1girl sitting on the chair", "image_prompts": TWO_PROMPTS}),
    "v1-image-extend": (EXTENDED, "/v1/generation/image-prompt", (
        {"outpaint_selections": ["Left", "Right"], "image_prompts": []}, {"input_image": IMAGE})),
    "v1-inpaint": (INPAINTED, "/v1/generation/image-prompt", (
        {"prompt": "1girl sitting on the chair", "image_prompts": [], "async_process": True},
        {"input_image": SOURCE, "input_mask": MASK})),
    "v1-image-prompt": (GENERATED, "/v1/generation/image-prompt", (
        {"prompt": "1girl sitting on the chair",
         "image_prompts": [{"cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}] * 2},
        {"cn_img1": IMAGE, "cn_img2": SOURCE})),
    # the mixes
    "inpaint-with-an-image-prompt": (INPAINTED, "/v2/generation/image-prompt", {
        "prompt": "1girl sitting on the chair", "input_image": b64(SOURCE), "input_mask": b64(MASK),
        "image_prompts": [{"cn_img": b64(IMAGE), "cn_type": "ImagePrompt"}]}),
    "vary-with-a-PyraCanny-image-prompt": (VARIED, "/v2/generation/image-upscale-vary", {
        "input_image": b64(SOURCE), "uov_method": "Vary (Subtle)",
        "image_prompts": [{"cn_img": b64(IMAGE), "cn_type": "PyraCanny"}]}),
}


def requests_form(params: dict, files: dict) -> FormData:
    """What `requests.post(data=params, files=files)` sends: a list becomes repeated fields, an
    empty list nothing, anything else its str()."""
    form = FormData()
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            form.add_field(key, str(item))
    for key, data in files.items():
        form.add_field(key, data, filename=key, content_type="application/octet-stream")
    return form


@pytest.mark.timeout(900)
@pytest.mark.parametrize("example", list(DOCUMENT_EXAMPLES))
async def test_document_image_prompt_examples_and_mixes_end_in_success(server, example):
    """Sent to a server started with --preset lightning (4 steps, CFG 1); every one samples at
    Fooocus' real sizes (~1 MP), so each is its own test."""
    client, app, api = await server(preset="lightning")
    size, route, body = DOCUMENT_EXAMPLES[example]
    if isinstance(body, tuple):
        response = await client.post(route, data=requests_form({**body[0], "async_process": True}, body[1]))
    else:
        response = await client.post(route, data=json.dumps({**body, "async_process": True}),
                                     headers={"Content-Type": "application/json"})
    submitted = await response.json()
    assert response.status == 200, submitted
    job = await wait_for_job(client, submitted["job_id"])
    assert job["job_stage"] == "SUCCESS", job
    picture_response = await client.get("/files/" + job["job_result"][0]["url"].split("/files/", 1)[1])
    assert Image.open(io.BytesIO(await picture_response.read())).size == size, example
