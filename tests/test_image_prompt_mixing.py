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

@pytest.mark.timeout(900)
async def test_document_image_prompt_examples_and_mixed_jobs_end_in_success(server):
    """The document's image-prompt examples (v2 as written, v1 sent as `requests` encodes them) on
    a server started with --preset lightning, and image prompts mixed into inpaint and vary."""
    client, app, api = await server(preset="lightning")
    image, source, mask = picture(64, 48, 1), picture(64, 64, 2), mask_picture(64, 64)
    jobs = []
    v2 = [{"input_image": b64(image), "outpaint_selections": ["Left", "Right"], "image_prompts": [],
           "async_process": True},
          {"prompt": "1girl sitting on the chair", "input_image": b64(source), "input_mask": b64(mask),
           "image_prompts": [], "async_process": True},
          {"prompt": "1girl sitting on the chair", "async_process": True, "image_prompts": [
              {"cn_img": b64(source), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
              {"cn_img": b64(image), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}]},
          # the mix: the inpaint example with an image prompt
          {"prompt": "1girl sitting on the chair", "input_image": b64(source), "input_mask": b64(mask),
           "image_prompts": [{"cn_img": b64(image), "cn_type": "ImagePrompt"}], "async_process": True}]
    for body in v2:
        response = await client.post("/v2/generation/image-prompt", data=json.dumps(body),
                                     headers={"Content-Type": "application/json"})
        jobs.append((await response.json())["job_id"])
    # v1 as `requests.post(data=params, files=...)` sends them: a list becomes repeated fields, an
    # empty list nothing, a dict its str(); files left None are not sent
    v1 = [({"outpaint_selections": ["Left", "Right"], "async_process": True}, {"input_image": image}),
          ({"prompt": "1girl sitting on the chair", "async_process": True}, {"input_image": source, "input_mask": mask}),
          ({"prompt": "1girl sitting on the chair", "async_process": True, "image_prompts": [
              {"cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}] * 2}, {"cn_img1": image, "cn_img2": source})]
    for params, files in v1:
        form = FormData()
        for key, value in params.items():
            for item in value if isinstance(value, list) else [value]:
                form.add_field(key, str(item))
        for key, data in files.items():
            form.add_field(key, data, filename=key, content_type="application/octet-stream")
        response = await client.post("/v1/generation/image-prompt", data=form)
        assert response.status == 200, await response.text()
        jobs.append((await response.json())["job_id"])
    vary = {"input_image": b64(source), "uov_method": "Vary (Subtle)", "async_process": True,
            "image_prompts": [{"cn_img": b64(image), "cn_type": "PyraCanny"}]}
    jobs.append((await (await client.post("/v2/generation/image-upscale-vary", data=json.dumps(vary))).json())["job_id"])
    for job_id in jobs:
        job = await wait_for_job(client, job_id)
        assert job["job_stage"] == "SUCCESS", job
        assert job["job_result"][0]["url"], job
