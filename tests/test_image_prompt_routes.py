"""Image-prompt routes (issue 12, routes part): text-to-image-with-ip and image-prompt v1/v2 over
`workflows/text_to_image_ip.json` with the demo models (tiny CLIP vision, IP-Adapter plus files,
Control-LoRAs). The networks and their oracles are tested in tests/test_ip_adapter.py,
tests/test_clip_vision.py and tests/test_controlnet*.py; here: what a request runs and that it runs.
"""
import io
import json

import numpy as np
import pytest
from aiohttp import FormData
from PIL import Image

from server.fooocus.requests import TextToImageWithIPRequest
from server.fooocus.validation import validate_request
from fooocus_client import b64, start_fooocus_server, wait_for_job

T2I_IP = "/v2/generation/text-to-image-with-ip"
V1 = "/v1/generation/image-prompt"
V2 = "/v2/generation/image-prompt"
FAST = {"base_model_name": "tiny-sdxl.safetensors", "aspect_ratios_selection": "64*64", "image_seed": 11,
        "advanced_params": {"overwrite_step": 2}, "style_selections": []}


def picture(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def server(aiohttp_client, demo_app_factory):
    async def start(**overrides):
        return await start_fooocus_server(aiohttp_client, demo_app_factory, **overrides)
    return start


async def pixels(client, item: dict) -> np.ndarray:
    assert item["finish_reason"] == "SUCCESS", item
    response = await client.get("/files/" + item["url"].split("/files/", 1)[1])
    return np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB"))


def plan(api, prompts: list[dict], **body):
    store = api.jobs.planner.by_type["Image Upscale or Variation"].inputs
    slots = [{**prompt, "cn_img": store.save(Image.new("RGB", (32, 32)), "cn_img") if prompt.get("cn_img") else None}
             for prompt in prompts]
    parsed = validate_request(TextToImageWithIPRequest, {**FAST, **body}, api.routes.vocabulary())
    params = {**api.routes.request_params(parsed, exclude=("image_prompts",)), "image_prompts": slots}
    return api.jobs.planner("Text to Image", params, "job-under-test").runs[0].prompt


# ----------------------------------------------------------------------------- planning

async def test_each_slot_is_wired_for_its_type_with_fooocus_defaults(server):
    client, app, api = await server()
    prompt = plan(api, [{"cn_img": True, "cn_type": "ImagePrompt"},
                        {"cn_img": True, "cn_type": "FaceSwap", "cn_stop": 0, "cn_weight": None},
                        {"cn_img": True, "cn_type": "PyraCanny", "cn_weight": 0.3},
                        {"cn_img": True, "cn_type": "CPDS", "cn_stop": 0.2}],
                  advanced_params={"overwrite_step": 2, "controlnet_softness": 0.4, "canny_low_threshold": 10})
    assert (prompt["ip_1"]["inputs"]["stop"], prompt["ip_1"]["inputs"]["weight"]) == (0.5, 0.6)
    assert prompt["ip_1"]["inputs"]["ipadapter"] == ["ip_adapter_image", 0]
    assert (prompt["ip_2"]["inputs"]["stop"], prompt["ip_2"]["inputs"]["weight"]) == (0.9, 0.75)  # 0/null: defaults
    assert prompt["ip_2"]["inputs"]["ipadapter"] == ["ip_adapter_face", 0]
    assert prompt["ip_3"]["inputs"]["stop"] == 0.0 and "image" not in prompt["ip_3"]["inputs"]  # not an adapter slot
    assert prompt["cn_3"]["inputs"]["image"] == ["cn_pyracanny_3", 0]
    assert prompt["cn_3"]["inputs"]["control_net"] == ["control_canny", 0]
    assert (prompt["cn_3"]["inputs"]["stop"], prompt["cn_3"]["inputs"]["weight"]) == (0.5, 0.3)
    assert prompt["cn_4"]["inputs"]["image"] == ["cn_cpds_4", 0] and prompt["cn_4"]["inputs"]["stop"] == 0.2
    assert prompt["cn_4"]["inputs"]["control_net"] == ["control_cpds", 0]
    assert "image" not in prompt["cn_1"]["inputs"] and "image" not in prompt["cn_2"]["inputs"]
    assert prompt["cn_4"]["inputs"]["controlnet_softness"] == 0.4
    assert prompt["cn_pyracanny_3"]["inputs"]["canny_low_threshold"] == 10
    assert (prompt["cn_hint_3"]["inputs"]["width"], prompt["cn_hint_3"]["inputs"]["height"]) == (64, 64)
    assert prompt["sampler"]["inputs"]["model"] == ["ip_4", 0]


async def test_only_prompts_with_images_count_at_most_four(server):
    client, app, api = await server()
    structural = plan(api, [{"cn_img": None, "cn_type": "ImagePrompt"}, {"cn_img": True, "cn_type": "CPDS"}])
    assert structural["cn_1"]["inputs"]["image"] == ["cn_cpds_1", 0]  # the empty entry is dropped
    assert structural["sampler"]["inputs"]["model"] == ["loras", 0]  # no adapter: no CLIP vision loaded
    none = plan(api, [{"cn_img": None}])
    assert "EmptyLatentImage" in {n["class_type"] for n in none.values()}
    assert "FooocusImagePrompt" not in {n["class_type"] for n in none.values()}  # plain text-to-image


# ----------------------------------------------------------------------------- running

async def test_all_four_types_at_once_and_the_prompt_changes_the_image(server):
    client, app, api = await server()
    image = b64(picture(48, 40))
    plain = await (await client.post("/v1/generation/text-to-image", data=json.dumps(FAST))).json()
    body = {**FAST, "image_prompts": [{"cn_img": image, "cn_type": kind} for kind in
                                      ("ImagePrompt", "FaceSwap", "PyraCanny", "CPDS")]}
    response = await client.post(T2I_IP, data=json.dumps(body))
    items = await response.json()
    assert response.status == 200, items
    assert items[0]["seed"] == plain[0]["seed"] == "11"
    assert not np.array_equal(await pixels(client, items[0]), await pixels(client, plain[0]))


@pytest.mark.timeout(900)
async def test_document_text_to_image_with_ip_example_as_written(server):
    """Sent as written to a server started with --preset lightning (4 steps, CFG 1, at 1152x896)."""
    client, app, api = await server(preset="lightning")
    source, image = picture(64, 64, 1), picture(80, 64, 2)
    params = {"prompt": "A bear", "image_prompts": [
        {"cn_img": b64(source), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
        {"cn_img": b64(image), "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}]}
    response = await client.post(T2I_IP, data=json.dumps(params), headers={"Content-Type": "application/json"})
    items = await response.json()
    assert response.status == 200, items
    assert (await pixels(client, items[0])).shape == (896, 1152, 3)


async def test_v1_and_v2_image_prompt_routes(server):
    client, app, api = await server()
    form = FormData()
    for key, value in {"prompt": "a bear", "base_model_name": "tiny-sdxl.safetensors",
                       "aspect_ratios_selection": "64*64", "advanced_params": json.dumps({"overwrite_step": 1}),
                       "cn_type1": "ImagePrompt", "cn_stop1": "0.6", "cn_weight1": "0.6",
                       "cn_type2": "PyraCanny", "async_process": "true"}.items():
        form.add_field(key, value)
    form.add_field("cn_img1", picture(32, 32), filename="a.png")
    form.add_field("cn_img2", picture(40, 32), filename="b.png")
    submitted = await (await client.post(V1, data=form)).json()
    assert submitted["job_type"] == "Image Prompt"
    job = await wait_for_job(client, submitted["job_id"])
    assert job["job_stage"] == "SUCCESS", job
    record = api.store.get(submitted["job_id"])
    assert [slot["cn_type"] for slot in record.params["image_prompts"]] == ["ImagePrompt", "PyraCanny"]
    assert all(slot["cn_img"].startswith("fooocus/") for slot in record.params["image_prompts"])
    v2 = await client.post(V2, data=json.dumps({**FAST, "image_prompts": [{"cn_img": b64(picture(32, 32)),
                                                                          "cn_type": "FaceSwap"}]}))
    assert (await v2.json())[0]["finish_reason"] == "SUCCESS"


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case,prompts,location", [
    ("unknown cn_type", [{"cn_img": "x", "cn_type": "Depth"}], ["body", "image_prompts", 0, "cn_type"]),
    ("cn_img not an image", [{"cn_img": b64(b"no pixels"), "cn_type": "ImagePrompt"}],
     ["body", "image_prompts", 0, "cn_img"]),
    ("weight out of range", [{"cn_img": "x", "cn_weight": 2.5}], ["body", "image_prompts", 0, "cn_weight"]),
    ("stop out of range", [{"cn_img": "x", "cn_stop": -0.1}], ["body", "image_prompts", 0, "cn_stop"]),
])
async def test_bad_image_prompts_are_422_naming_the_field(server, case, prompts, location):
    client, app, api = await server()
    response = await client.post(T2I_IP, data=json.dumps({**FAST, "image_prompts": prompts}))
    assert response.status == 422, (case, await response.text())
    assert location in [d["loc"] for d in (await response.json())["detail"]], case
    assert (await client.get("/ping")).status == 200


async def test_v2_image_prompt_requires_the_list(server):
    client, app, api = await server()
    response = await client.post(V2, data=json.dumps(FAST))
    assert response.status == 422
    assert ["body", "image_prompts"] in [d["loc"] for d in (await response.json())["detail"]]
