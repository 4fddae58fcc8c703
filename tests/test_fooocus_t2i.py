"""Acceptance tests of POST /v1/generation/text-to-image (issue 5) over the real nodes and the
tiny demo models: the API document's request examples, the workflow as ComfyUI JSON, performance
modes, styles, wildcards, LoRAs, seeds, refiner, outputs and metadata, 422s and caching.

Planner checks read the workflow the job would run (`JobPlan.runs[i].prompt`); run checks go
through HTTP against an in-process server. Jobs use 64x64 images and 2-4 steps.
"""
import asyncio
import base64
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.app import App
from server.config import AppConfig
from server.fooocus.metadata import read_metadata
from server.fooocus.requests import CommonRequest
from server.fooocus.setup import attach_fooocus_api
from server.fooocus.validation import validate_request
from server.serve import make_model_manager
from workflows import WORKFLOW_DIR

BASE = "tiny-sdxl.safetensors"
REFINER = "tiny-sdxl-refiner.safetensors"
T2I = "/v1/generation/text-to-image"
ASYNC_KEYS = {"job_id", "job_type", "job_stage", "job_progress", "job_status", "job_step_preview", "job_result"}
RESULT_KEYS = {"base64", "url", "seed", "finish_reason"}
FRUITS = ["apple", "banana", "cherry"]
USER_STYLE = {"name": "my-test style", "prompt": "etching of {prompt}, crosshatch", "negative_prompt": "colour"}


def tiny(body: dict, steps: int = 2) -> dict:
    """The body with the fields that make it fast on the tiny models added (none removed)."""
    advanced = {"overwrite_step": steps, **body.get("advanced_params", {})}
    return {"base_model_name": BASE, "aspect_ratios_selection": "64*64", **body, "advanced_params": advanced}


@pytest.fixture
def models_dir(tmp_path, demo_models_dir):
    """The demo models (linked, not copied) plus our own wildcards and a user style file, so
    tests can add files without touching the shared demo folder."""
    root = tmp_path / "models"
    root.mkdir()
    for entry in Path(demo_models_dir).iterdir():
        if entry.name in ("wildcards", "styles"):
            continue
        if entry.name in ("checkpoints", "loras"):
            for file in entry.rglob("*"):
                if file.is_file():
                    target = root / entry.name / file.relative_to(entry)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(file)
        else:
            (root / entry.name).symlink_to(entry, target_is_directory=True)
    (root / "loras").mkdir(exist_ok=True)
    wildcards = root / "wildcards"
    wildcards.mkdir()
    (wildcards / "fruit.txt").write_text("\n".join(FRUITS) + "\n")
    (wildcards / "dish.txt").write_text("__fruit__ pie\n__fruit__ tart\n")
    (root / "styles").mkdir()
    (root / "styles" / "my_styles.json").write_text(json.dumps([USER_STYLE]))
    return root


def make_app(models_dir: Path, tmp_path: Path, **overrides):
    config = AppConfig(models_dir=models_dir, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True, **overrides)
    app = App(config, model_manager=make_model_manager(config))
    return app, attach_fooocus_api(app)


async def start(aiohttp_client, models_dir, tmp_path, **overrides):
    app, api = make_app(models_dir, tmp_path, **overrides)
    client = await aiohttp_client(app.make_web_app())
    return client, app, api


def plan(api, body: dict):
    """What a request would run, planned as the route plans it."""
    parsed = validate_request(CommonRequest, body, api.routes.vocabulary())
    return api.jobs.planner("Text to Image", api.routes.request_params(parsed), "job-under-test")


def node_inputs(job_plan, node: str, run: int = 0) -> dict:
    return job_plan.runs[run].prompt[node]["inputs"]


def texts(job_plan, node: str, run: int = 0) -> list[str]:
    return json.loads(node_inputs(job_plan, node, run)["texts"])


async def post(client, path, body, **kwargs):
    """As the document's clients do: the dict as JSON text, no Content-Type header."""
    return await client.post(path, data=json.dumps(body).encode(), skip_auto_headers=("Content-Type",), **kwargs)


async def generate(client, body: dict, **kwargs) -> list[dict]:
    response = await post(client, T2I, body, **kwargs)
    assert response.status == 200, await response.text()
    items = await response.json()
    assert [item["finish_reason"] for item in items] == ["SUCCESS"] * len(items), items
    return items


async def fetch(client, url: str) -> bytes:
    response = await client.get("/files/" + url.split("/files/", 1)[1])
    assert response.status == 200
    return await response.read()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def history_entry(client, prompt_id: str, timeout: float = 60.0) -> dict:
    """GET /history/{id} once the worker has written it (a sync answer may come first)."""
    deadline = time.monotonic() + timeout
    while not (history := await (await client.get(f"/history/{prompt_id}")).json()):
        assert time.monotonic() < deadline, f"no history for {prompt_id}"
        await asyncio.sleep(0.02)
    return history[prompt_id]


async def wait_for(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get("/v1/generation/query-job",
                                    params={"job_id": job_id, "require_step_preview": "False"})
        body = await response.json()
        if body["job_stage"] in ("SUCCESS", "ERROR"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


# --- the API document's request examples ---------------------------------------------------------
async def test_document_text_to_image_example(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    # text2img({"prompt": "1girl sitting on the ground", "async_process": True}), with its header
    response = await client.post(T2I, data=json.dumps(tiny({"prompt": "1girl sitting on the ground",
                                                             "async_process": True})),
                                 headers={"Content-Type": "application/json"})
    submitted = await response.json()
    assert response.status == 200 and set(submitted) == ASYNC_KEYS
    assert submitted["job_type"] == "Text to Image" and submitted["job_stage"] == "WAITING"
    assert submitted["job_progress"] == 0 and submitted["job_result"] is None
    done = await wait_for(client, submitted["job_id"])
    assert set(done) == ASYNC_KEYS and done["job_stage"] == "SUCCESS", done
    # "Finished", plus the warning that the preset's offset LoRA is not among the demo models
    assert done["job_progress"] == 100 and done["job_status"].startswith("Finished")
    assert "sd_xl_offset_example-lora_1.0.safetensors not found" in done["job_status"]
    [item] = done["job_result"]
    assert set(item) == RESULT_KEYS and item["finish_reason"] == "SUCCESS" and item["base64"] is None
    assert isinstance(item["seed"], str) and int(item["seed"]) >= 0
    date = item["url"].split("/files/", 1)[1].split("/")[0]
    assert item["url"] == f"http://127.0.0.1:8888/files/{date}/{submitted['job_id']}-0.png"
    with Image.open(io.BytesIO(await fetch(client, item["url"]))) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    queue = await (await client.get("/v1/generation/job-queue")).json()
    assert queue == {"running_size": 0, "finished_size": 1, "last_job_id": submitted["job_id"]}

    # the same example as examples_v1.py sends it (no Content-Type), synchronous
    items = await generate(client, tiny({"prompt": "1girl sitting on the ground"}))
    assert len(items) == 1 and set(items[0]) == RESULT_KEYS and items[0]["base64"] is None


async def test_document_engine_and_ping_examples(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    models = await (await client.get("/v1/engines/all-models")).json()
    assert set(models) == {"model_filenames", "lora_filenames"}
    assert models["model_filenames"] == sorted(p.relative_to(models_dir / "checkpoints").as_posix()
                                               for p in (models_dir / "checkpoints").rglob("*.safetensors"))
    assert BASE in models["model_filenames"] and REFINER in models["model_filenames"]
    # every call rescans; names are relative with their subfolder
    (models_dir / "checkpoints" / "sub").mkdir()
    (models_dir / "checkpoints" / "sub" / "new-model.safetensors").write_bytes(b"")
    (models_dir / "loras" / "style.safetensors").write_bytes(b"")
    models = await (await client.get("/v1/engines/all-models")).json()
    assert "sub/new-model.safetensors" in models["model_filenames"]
    assert "style.safetensors" in models["lora_filenames"]
    refreshed = await client.post("/v1/engines/refresh-models")
    assert refreshed.status == 200 and await refreshed.json() == models

    styles = await (await client.get("/v1/engines/styles")).json()
    assert styles[:3] == ["Fooocus V2", "Random Style", "Fooocus Enhance"]
    assert {"Watercolor 2", "Whimsical And Playful", "SAI Anime", "My Test Style"} <= set(styles)
    assert len(styles) == len(set(styles)) > 270

    ping = await client.get("/ping")
    assert ping.status == 200 and await ping.json() == "pong"


# --- the workflow as ComfyUI API-format JSON -----------------------------------------------------
def test_workflow_file_is_comfy_api_format(models_dir, tmp_path):
    app, api = make_app(models_dir, tmp_path)
    graph = json.loads((WORKFLOW_DIR / "text_to_image.json").read_text())
    for node_id, node in graph.items():
        assert set(node) <= {"class_type", "inputs", "_meta"} and node["class_type"] in app.registry, node_id
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [source node id, output index]
                assert value[0] in graph and isinstance(value[1], int), (node_id, value)
    # the planner only writes values into it: same nodes, same links
    planned = plan(api, tiny({"prompt": "a cat", "style_selections": []})).runs[0].prompt
    assert set(planned) == set(graph)
    for node_id, node in planned.items():
        assert node["class_type"] == graph[node_id]["class_type"]
        links = {k: v for k, v in node["inputs"].items() if isinstance(v, list)}
        assert links.items() <= {k: v for k, v in graph[node_id]["inputs"].items() if isinstance(v, list)}.items()


async def test_job_graph_through_comfy_prompt_gives_the_same_image(aiohttp_client, models_dir, tmp_path):
    client, app, _ = await start(aiohttp_client, models_dir, tmp_path)
    [item] = await generate(client, tiny({"prompt": "a red boat", "image_seed": 42,
                                          "style_selections": ["Fooocus V2", "SAI Anime"]}))
    job_pixels = pixels(await fetch(client, item["url"]))
    job_id = item["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]
    entry = await history_entry(client, job_id)
    graph = entry["prompt"][2]
    assert graph["sampler"]["inputs"]["seed"] == 42 and graph["base"]["inputs"]["ckpt_name"] == BASE

    # a fresh cache, the job's file gone: the plain ComfyUI route must compute it again
    assert (await client.post("/free", json={"free_memory": True})).status == 200
    for path in (tmp_path / "output" / "files").rglob(f"{job_id}-0.png"):
        path.unlink()
    queued = await client.post("/prompt", json={"prompt": graph})
    assert queued.status == 200, await queued.text()
    prompt_id = (await queued.json())["prompt_id"]
    run = await history_entry(client, prompt_id)
    assert run["status"]["status_str"] == "success", run["status"]
    cached = [data["nodes"] for event, data in run["status"]["messages"] if event == "execution_cached"][0]
    assert "sampler" not in cached
    [image] = run["outputs"]["save"]["images"]
    view = await client.get("/view", params={"filename": image["filename"], "subfolder": image["subfolder"],
                                             "type": "output"})
    assert view.status == 200
    np.testing.assert_array_equal(pixels(await view.read()), job_pixels)


# --- performance modes ---------------------------------------------------------------------------
PERFORMANCE = {
    # mode: (steps, sampler, scheduler, restricted, LoRA file, LoRA weight)
    "Speed": (30, None, None, False, None, None),
    "Quality": (60, None, None, False, None, None),
    "Extreme Speed": (8, "lcm", "lcm", True, "sdxl_lcm_lora.safetensors", 1.0),
    "Lightning": (4, "euler", "sgm_uniform", True, "sdxl_lightning_4step_lora.safetensors", 1.0),
    "Hyper-SD": (4, "dpmpp_sde_gpu", "karras", True, "sdxl_hyper_sd_4step_lora.safetensors", 0.8),
}


@pytest.mark.parametrize("mode", list(PERFORMANCE))
def test_performance_mode_settings_reach_the_sampler(mode, models_dir, tmp_path):
    steps, sampler, scheduler, restricted, lora, weight = PERFORMANCE[mode]
    _, api = make_app(models_dir, tmp_path)
    user = {"prompt": "a cat", "performance_selection": mode, "guidance_scale": 6.0, "sharpness": 5.0,
            "base_model_name": BASE, "refiner_model_name": REFINER, "refiner_switch": 0.5,
            "advanced_params": {"sampler_name": "euler_ancestral", "scheduler_name": "exponential",
                                "adaptive_cfg": 5.0, "adm_scaler_positive": 1.7, "adm_scaler_negative": 0.7,
                                "adm_scaler_end": 0.4}}
    without_lora = plan(api, user)
    inputs = node_inputs(without_lora, "sampler")
    assert inputs["steps"] == steps and without_lora.steps_per_run == steps
    if restricted:
        assert (inputs["sampler_name"], inputs["scheduler"]) == (sampler, scheduler)
        assert (inputs["cfg"], inputs["sharpness"], inputs["adaptive_cfg"]) == (1.0, 0.0, 1.0)
        assert (inputs["adm_scaler_positive"], inputs["adm_scaler_negative"], inputs["adm_scaler_end"]) == (1, 1, 0)
        assert "refiner_model" not in inputs  # the refiner is off in the restricted modes
        assert any(lora in warning for warning in without_lora.warnings)
        (models_dir / "loras" / lora).write_bytes(b"")  # planning only lists the folder
        with_lora = plan(api, user)
        assert json.loads(node_inputs(with_lora, "loras")["loras"])[-1] == [lora, weight]
    else:
        assert (inputs["sampler_name"], inputs["scheduler"]) == ("euler_ancestral", "exponential")
        assert (inputs["cfg"], inputs["sharpness"], inputs["adaptive_cfg"]) == (6.0, 5.0, 5.0)
        assert (inputs["adm_scaler_positive"], inputs["adm_scaler_negative"], inputs["adm_scaler_end"]) == \
            (1.7, 0.7, 0.4)
        assert inputs["refiner_switch_step"] == round(steps * 0.5) and "refiner_model" in inputs


async def test_each_performance_mode_runs(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    for mode, (_, sampler, scheduler, restricted, _, _) in PERFORMANCE.items():
        [item] = await generate(client, tiny({"prompt": "a cat", "performance_selection": mode, "image_seed": 3,
                                              "style_selections": []}))
        logged = read_metadata(await fetch(client, item["url"])).parsed
        assert logged["performance"] == mode and logged["steps"] == 2
        if restricted:
            assert (logged["sampler"], logged["scheduler"], logged["guidance_scale"]) == (sampler, scheduler, 1.0)


def test_advanced_params_reach_the_workflow(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    advanced = {"sampler_name": "dpmpp_3m_sde_gpu", "scheduler_name": "align_your_steps", "clip_skip": 1,
                "adaptive_cfg": 9.0, "adm_scaler_positive": 2.0, "adm_scaler_negative": 0.5, "adm_scaler_end": 0.2,
                "freeu_enabled": True, "freeu_b1": 1.1, "freeu_b2": 1.2, "freeu_s1": 0.9, "freeu_s2": 0.2,
                "refiner_swap_method": "vae"}
    planned = plan(api, tiny({"prompt": "a cat", "aspect_ratios_selection": "72×64", "refiner_model_name": REFINER,
                              "advanced_params": advanced}, steps=7))
    sampler = node_inputs(planned, "sampler")
    assert (node_inputs(planned, "latent")["width"], node_inputs(planned, "latent")["height"]) == (72, 64)
    assert sampler["steps"] == 7 and sampler["refiner_swap_method"] == "vae"
    for name in ("adaptive_cfg", "adm_scaler_positive", "adm_scaler_negative", "adm_scaler_end", "freeu_b1",
                 "freeu_b2", "freeu_s1", "freeu_s2"):
        assert sampler[name] == advanced[name], name
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["freeu"]) == \
        ("dpmpp_3m_sde_gpu", "align_your_steps", True)
    assert {node_inputs(planned, node)["clip_skip"] for node in ("positive", "negative")} == {1}
    resized = plan(api, tiny({"prompt": "a cat", "advanced_params": {"overwrite_width": 96, "overwrite_height": 80}}))
    assert (node_inputs(resized, "latent")["width"], node_inputs(resized, "latent")["height"]) == (96, 80)


# --- styles --------------------------------------------------------------------------------------
def test_styles_template_negative_merge_random_and_user_files(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    styles = api.jobs.planner.default.libraries.styles
    anime, cinematic = styles.get("SAI Anime"), styles.get("Fooocus Cinematic")
    planned = plan(api, tiny({"prompt": "a red fox", "negative_prompt": "blurry",
                              "style_selections": ["SAI Anime", "Fooocus Enhance", "Fooocus Cinematic"]}))
    assert texts(planned, "positive") == [anime.prompt.replace("{prompt}", "a red fox"),
                                          cinematic.prompt.replace("{prompt}", "a red fox")]
    assert texts(planned, "positive")[0].startswith("anime illustration of a red fox")
    assert texts(planned, "negative") == [anime.negative_prompt, styles.get("Fooocus Enhance").negative_prompt,
                                          cinematic.negative_prompt, "blurry"]
    # a negative-only style keeps the raw prompt as the first part
    enhance_only = plan(api, tiny({"prompt": "a red fox", "style_selections": ["Fooocus Enhance"]}))
    assert texts(enhance_only, "positive") == ["a red fox"]
    # a style file dropped into the styles folder loads (names normalised as Fooocus does)
    user = plan(api, tiny({"prompt": "a red fox", "style_selections": ["My Test Style"]}))
    assert texts(user, "positive") == ["etching of a red fox, crosshatch"] and texts(user, "negative") == ["colour"]
    # Random Style: one real style per image, the same for the same seed
    first = plan(api, tiny({"prompt": "a red fox", "style_selections": ["Random Style"], "image_seed": 5,
                            "image_number": 2}))
    again = plan(api, tiny({"prompt": "a red fox", "style_selections": ["Random Style"], "image_seed": 5}))
    picked = random.Random(5).choice(styles.style_names())
    assert texts(first, "positive") == texts(again, "positive") != ["a red fox"]
    assert json.loads(node_inputs(first, "save")["metadata"])["styles"] == [picked]


async def test_unknown_style_is_a_422_naming_it(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    response = await post(client, T2I, tiny({"prompt": "x", "style_selections": ["SAI Anime", "Nope Style"]}))
    assert response.status == 422
    [error] = (await response.json())["detail"]
    assert error["loc"] == ["body", "style_selections"] and "Nope Style" in error["msg"]


# --- wildcards, arrays, inline LoRAs -------------------------------------------------------------
def test_wildcards_random_in_order_and_nested(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    body = tiny({"prompt": "a __fruit__ on a table", "style_selections": [], "image_seed": 100, "image_number": 4})
    randomly = plan(api, body)
    expected = [f"a {random.Random(100 + i).choice(FRUITS)} on a table" for i in range(4)]
    assert [texts(randomly, "positive", i) for i in range(4)] == [[e] for e in expected]
    assert [node_inputs(randomly, "expansion", i)["text"] for i in range(4)] == expected
    assert [texts(plan(api, body), "positive", i) for i in range(4)] == [[e] for e in expected]

    in_order = plan(api, {**body, "read_wildcards_in_order": True})
    assert [texts(in_order, "positive", i)[0] for i in range(4)] == \
        ["a apple on a table", "a banana on a table", "a cherry on a table", "a apple on a table"]

    nested = plan(api, tiny({"prompt": "__dish__", "negative_prompt": "__fruit__", "style_selections": [],
                             "image_seed": 9, "image_number": 6}))
    for i in range(6):
        [prompt] = texts(nested, "positive", i)
        fruit, dish = prompt.split(" ")
        assert fruit in FRUITS and dish in ("pie", "tart") and "__" not in prompt
        assert texts(nested, "negative", i)[-1] in FRUITS
    assert len({texts(nested, "positive", i)[0] for i in range(6)}) > 1


def test_arrays_step_through_images(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    planned = plan(api, tiny({"prompt": "a [[red,green]] [[cat,dog,owl]]", "style_selections": [],
                              "image_number": 7}))
    # Fooocus comma-normalises the prompt before arrays ("[[red, green]]"), so elements after
    # the first keep a leading space; CLIP does not see the difference
    assert [" ".join(texts(planned, "positive", i)[0].split()) for i in range(7)] == [
        "a red cat", "a green cat", "a red dog", "a green dog", "a red owl", "a green owl", "a red cat"]


def test_inline_and_unknown_loras(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    (models_dir / "loras" / "detail-tweaker.safetensors").write_bytes(b"")
    (models_dir / "loras" / "sub").mkdir()
    (models_dir / "loras" / "sub" / "ink.safetensors").write_bytes(b"")
    planned = plan(api, tiny({"prompt": "a cat <lora:detail-tweaker:0.7>, sunny <lora:ink:-0.25> <lora:absent:1>",
                              "style_selections": [],
                              "loras": [{"model_name": "missing-lora.safetensors", "weight": 0.4},
                                        {"model_name": "detail-tweaker.safetensors", "weight": 0.3}]}))
    assert json.loads(node_inputs(planned, "loras")["loras"]) == [
        ["detail-tweaker.safetensors", 0.3], ["sub/ink.safetensors", -0.25]]
    assert texts(planned, "positive") == ["a cat, sunny"]
    assert any("missing-lora.safetensors" in warning and "skipped" in warning for warning in planned.warnings)
    logged = json.loads(node_inputs(planned, "save")["metadata"])
    assert logged["loras"] == [["detail-tweaker.safetensors", 0.3], ["sub/ink.safetensors", -0.25]]


def test_inline_tag_picks_the_demo_lora(models_dir, tmp_path):
    demo_loras = sorted(p.name for p in (models_dir / "loras").glob("*.safetensors"))
    if not demo_loras:
        pytest.skip("the demo models have no LoRA")
    _, api = make_app(models_dir, tmp_path)
    name = demo_loras[0]
    planned = plan(api, tiny({"prompt": f"<lora:{Path(name).stem}:0.6> a cat", "style_selections": [], "loras": []}))
    assert json.loads(node_inputs(planned, "loras")["loras"]) == [[name, 0.6]] and not planned.warnings
    assert node_inputs(planned, "loras")["model"] == ["base", 0]


# --- seeds, image_number, refiner ----------------------------------------------------------------
async def test_image_number_and_per_image_seeds(aiohttp_client, models_dir, tmp_path):
    client, _, api = await start(aiohttp_client, models_dir, tmp_path)
    planned = plan(api, tiny({"prompt": "a cat", "image_number": 3, "image_seed": 100}))
    assert planned.seeds == [100, 101, 102]
    assert [node_inputs(planned, "sampler", i)["seed"] for i in range(3)] == [100, 101, 102]
    assert [node_inputs(planned, "expansion", i)["seed"] for i in range(3)] == [100, 101, 102]
    fixed = plan(api, tiny({"prompt": "a cat", "image_number": 3, "image_seed": 100,
                            "advanced_params": {"disable_seed_increment": True}}))
    assert [node_inputs(fixed, "sampler", i)["seed"] for i in range(3)] == [100, 100, 100]
    assert plan(api, tiny({"prompt": "a", "image_number": 2, "image_seed": 2**63 - 1})).seeds == [2**63 - 1, 0]
    assert 0 <= plan(api, tiny({"prompt": "a", "image_seed": -1})).seeds[0] < 2**63

    items = await generate(client, tiny({"prompt": "a cat", "image_number": 2, "image_seed": 7,
                                         "style_selections": []}))
    assert [item["seed"] for item in items] == ["7", "8"]
    assert [item["url"].rsplit("-", 1)[1] for item in items] == ["0.png", "1.png"]
    first, second = [pixels(await fetch(client, item["url"])) for item in items]
    assert not np.array_equal(first, second)
    [again] = await generate(client, tiny({"prompt": "a cat", "image_seed": 7, "style_selections": []}))
    np.testing.assert_array_equal(pixels(await fetch(client, again["url"])), first)


async def test_refiner_switch_joint_and_separate(aiohttp_client, models_dir, tmp_path):
    client, _, api = await start(aiohttp_client, models_dir, tmp_path)
    body = {"prompt": "a cat", "style_selections": [], "image_seed": 1, "refiner_model_name": REFINER}
    for switch, steps in ((0.5, 30), (0.75, 30), (0.1, 30)):
        planned = plan(api, {**body, "base_model_name": BASE, "refiner_switch": switch})
        inputs = node_inputs(planned, "sampler")
        assert inputs["refiner_switch_step"] == round(steps * switch) and inputs["steps"] == steps
        assert planned.runs[0].prompt["refiner"]["inputs"]["ckpt_name"] == REFINER
    # the switch comes from the mode's steps before overwrite_step; 0.1 of 30 = step 3 of 4
    short = plan(api, tiny({**body, "refiner_switch": 0.1}, steps=4))
    assert node_inputs(short, "sampler")["refiner_switch_step"] == 3
    # the document's overwrite_switch is a step number
    forced = plan(api, tiny({**body, "advanced_params": {"overwrite_switch": 2}}, steps=4))
    assert node_inputs(forced, "sampler")["refiner_switch_step"] == 2
    # a refiner equal to the base model is no refiner
    same = plan(api, tiny({**body, "refiner_model_name": BASE}))
    assert "refiner_model" not in node_inputs(same, "sampler")

    # 5 steps, switch at 3: joint swaps after step 3 (the refiner runs step 4), separate runs
    # steps 0-2 on the base and 3-4 on the refiner
    [base_only] = await generate(client, tiny({**body, "refiner_model_name": "None"}, steps=5))
    base_pixels = pixels(await fetch(client, base_only["url"]))
    for method in ("joint", "separate"):
        [item] = await generate(client, tiny({**body, "refiner_switch": 0.1,
                                              "advanced_params": {"refiner_swap_method": method}}, steps=5))
        data = await fetch(client, item["url"])
        logged = read_metadata(data).parsed
        assert logged["refiner_model"] == "tiny-sdxl-refiner" and logged["refiner_switch"] == 0.1
        assert not np.array_equal(pixels(data), base_pixels), method
    # an SD1.5 refiner through the VAE: base to sigma 0, decode, re-encode, refine with new noise
    [base_only] = await generate(client, tiny({**body, "refiner_model_name": "None"}, steps=4))
    base_pixels = pixels(await fetch(client, base_only["url"]))
    [item] = await generate(client, tiny({**body, "refiner_model_name": "tiny-sd15.safetensors", "refiner_switch": 0.1,
                                          "advanced_params": {"refiner_swap_method": "vae"}}, steps=4))
    data = await fetch(client, item["url"])
    assert read_metadata(data).parsed["refiner_model"] == "tiny-sd15"
    assert not np.array_equal(pixels(data), base_pixels)


# --- outputs: extensions, metadata, base64, streaming --------------------------------------------
async def test_save_extensions_with_metadata_in_both_schemes(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    body = tiny({"prompt": "a lighthouse\nat night", "negative_prompt": "fog", "image_seed": 21,
                 "style_selections": ["Fooocus Sharp"], "guidance_scale": 5.5})
    formats = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
    for extension, pil_format in formats.items():
        for scheme in ("fooocus", "a1111"):
            [item] = await generate(client, {**body, "save_extension": extension, "meta_scheme": scheme,
                                             "save_name": f"img-{extension}-{scheme}"})
            assert item["url"].endswith(f"/img-{extension}-{scheme}-0.{extension}")
            data = await fetch(client, item["url"])
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == pil_format and image.size == (64, 64)
            meta = read_metadata(data)
            assert meta is not None and meta.scheme.value == scheme, (extension, scheme)
            if scheme == "fooocus":
                assert meta.parsed["prompt"] == "a lighthouse\nat night" and meta.parsed["seed"] == "21"
                assert meta.parsed["negative_prompt"] == "fog" and meta.parsed["steps"] == 2
                assert meta.parsed["base_model"] == "tiny-sdxl" and meta.parsed["guidance_scale"] == 5.5
                assert meta.parsed["styles"] == "['Fooocus Sharp']" or meta.parsed["styles"] == ["Fooocus Sharp"]
                assert "at night" in meta.parsed["full_prompt"]
            else:
                assert meta.text.startswith("crisp") and "\nNegative prompt: " in meta.text
                params = meta.parsed["parameters"]
                assert meta.parsed["negative_prompt"].endswith("fog")
                assert params["Steps"] == "2" and params["Seed"] == "21"
                assert params["CFG scale"] == "5.5" and params["Model"] == "tiny-sdxl"
    [plain] = await generate(client, {**body, "save_meta": False, "save_name": "plain"})
    assert read_metadata(await fetch(client, plain["url"])) is None


async def test_base64_and_png_streaming(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    body = tiny({"prompt": "a cat", "image_seed": 4, "style_selections": []})
    [item] = await generate(client, {**body, "require_base64": True})
    prefix = "data:image/png;base64,"
    assert item["base64"].startswith(prefix)
    import base64
    assert base64.b64decode(item["base64"][len(prefix):]) == await fetch(client, item["url"])
    expected = pixels(await fetch(client, item["url"]))
    [webp] = await generate(client, {**body, "require_base64": True, "save_extension": "webp"})
    assert webp["base64"].startswith("data:image/webp;base64,")

    for kwargs in ({"headers": {"Accept": "image/png"}}, {"params": {"accept": "image/png"}}):
        streamed = await post(client, T2I, {**body, "image_number": 3, "save_extension": "jpeg"}, **kwargs)
        assert streamed.status == 200 and streamed.headers["Content-Type"] == "image/png"
        data = await streamed.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert pixels(data).shape == expected.shape
    # image_number is forced to 1 when streaming: one file per request
    assert len(list((tmp_path / "output" / "files").rglob("*.jpeg"))) == 2
    # async wins over streaming
    queued = await post(client, T2I, {**body, "async_process": True}, headers={"Accept": "image/png"})
    assert queued.headers["Content-Type"].startswith("application/json")
    assert (await wait_for(client, (await queued.json())["job_id"]))["job_stage"] == "SUCCESS"


# --- validation ----------------------------------------------------------------------------------
async def test_validation_errors_are_422_naming_the_field(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    cases = [
        ({"performance_selection": "Fast"}, ["body", "performance_selection"], "enum"),
        ({"save_extension": "bmp"}, ["body", "save_extension"], "enum"),
        ({"meta_scheme": "exif"}, ["body", "meta_scheme"], "enum"),
        ({"advanced_params": {"refiner_swap_method": "swap"}}, ["body", "advanced_params", "refiner_swap_method"],
         "enum"),
        ({"image_number": 33}, ["body", "image_number"], "less_than_equal"),
        ({"image_number": 0}, ["body", "image_number"], "greater_than_equal"),
        ({"sharpness": 30.5}, ["body", "sharpness"], "less_than_equal"),
        ({"guidance_scale": 0.5}, ["body", "guidance_scale"], "greater_than_equal"),
        ({"refiner_switch": 0.05}, ["body", "refiner_switch"], "greater_than_equal"),
        ({"advanced_params": {"overwrite_step": 201}}, ["body", "advanced_params", "overwrite_step"],
         "less_than_equal"),
        ({"advanced_params": {"clip_skip": 13}}, ["body", "advanced_params", "clip_skip"], "less_than_equal"),
        ({"advanced_params": {"sampler_name": "nope"}}, ["body", "advanced_params", "sampler_name"], "value_error"),
        ({"loras": [{"model_name": "a.safetensors", "weight": 3}]}, ["body", "loras", 0, "weight"],
         "less_than_equal"),
        ({"aspect_ratios_selection": "wide"}, ["body", "aspect_ratios_selection"], "value_error"),
        ({"aspect_ratios_selection": "1000*1001"}, ["body", "aspect_ratios_selection"], "value_error"),
    ]
    for fields, loc, kind in cases:
        response = await post(client, T2I, {"prompt": "a cat", **fields})
        assert response.status == 422, fields
        body = await response.json()
        assert [(e["loc"], e["type"]) for e in body["detail"]] == [(loc, kind)], (fields, body)
        assert body["body"]["prompt"] == "a cat"
    enum_error = await (await post(client, T2I, {"performance_selection": "Fast"})).json()
    assert all(mode in enum_error["detail"][0]["msg"] for mode in PERFORMANCE)

    broken = await client.post(T2I, data=b'{"prompt": "a cat",', skip_auto_headers=("Content-Type",))
    assert broken.status == 422
    body = await broken.json()
    assert body["detail"][0]["type"] == "json_invalid" and body["detail"][0]["loc"][0] == "body"
    assert body["body"] == '{"prompt": "a cat",'
    # nothing was queued by any of them
    assert (await (await client.get("/v1/generation/job-queue")).json())["finished_size"] == 0


# --- caching and fallbacks -----------------------------------------------------------------------
async def test_new_seed_reuses_loaded_model_and_encoded_prompt(aiohttp_client, models_dir, tmp_path):
    client, app, _ = await start(aiohttp_client, models_dir, tmp_path)
    body = tiny({"prompt": "a cat\nin a hat", "negative_prompt": "dog", "style_selections": ["Fooocus Enhance"]})
    await generate(client, {**body, "image_seed": 11})
    assert app.executor.last_run_stats["cached"] == 0
    [item] = await generate(client, {**body, "image_seed": 12})
    job_id = item["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]
    entry = await history_entry(client, job_id)
    cached = [data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached"][0]
    assert {"base", "loras", "positive", "negative", "latent"} <= set(cached)
    assert not {"sampler", "decode", "save"} & set(cached)
    assert app.executor.last_run_stats == {"executed": 3, "cached": len(cached)}


def test_unknown_base_model_falls_back_to_an_sdxl_model_with_a_warning(models_dir, tmp_path):
    _, api = make_app(models_dir, tmp_path)
    planned = plan(api, {"prompt": "a cat", "base_model_name": "missing-model.safetensors",
                         "aspect_ratios_selection": "64*64"})
    assert any("missing-model.safetensors" in warning for warning in planned.warnings)
    # the preset's model is not there either; the pipeline is SDXL, so is the fallback
    assert planned.runs[0].prompt["base"]["inputs"]["ckpt_name"] == BASE



async def test_fallback_warning_stays_in_the_job_status(models_dir, tmp_path, aiohttp_client):
    app, _ = make_app(models_dir, tmp_path)
    client = await aiohttp_client(app.make_web_app())
    body = {"prompt": "a cat", "base_model_name": "missing-model.safetensors", "aspect_ratios_selection": "64*64",
            "style_selections": [], "async_process": True, "advanced_params": {"overwrite_step": 2}}
    job = await (await post(client, T2I, body)).json()
    for _ in range(600):
        status = await (await client.get("/v1/generation/query-job", params={"job_id": job["job_id"]})).json()
        if status["job_stage"] in ("SUCCESS", "ERROR"):
            break
        await asyncio.sleep(0.05)
    assert status["job_stage"] == "SUCCESS"
    assert status["job_status"].startswith("Finished") and "missing-model.safetensors" in status["job_status"]
    # and the sync reply comes after the job's history entry is written
    items = await generate(client, {**body, "async_process": False})
    job_id = items[0]["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]
    assert app.queue.history_item(job_id) is not None


async def test_loras_change_the_image_and_inline_loras_apply(aiohttp_client, models_dir, tmp_path):
    client, app, _ = await start(aiohttp_client, models_dir, tmp_path)
    base = tiny({"prompt": "a lighthouse", "style_selections": [], "image_seed": 11, "loras": []})
    plain = pixels(await fetch(client, (await generate(client, base))[0]["url"]))
    lora = {**base, "loras": [{"model_name": "tiny-sdxl-lora.safetensors", "weight": 1.0}]}
    with_lora = pixels(await fetch(client, (await generate(client, lora))[0]["url"]))
    assert np.abs(plain.astype(int) - with_lora.astype(int)).max() > 0
    inline = {**base, "prompt": "a lighthouse <lora:tiny-sdxl-lora:1.0>"}
    with_inline = pixels(await fetch(client, (await generate(client, inline))[0]["url"]))
    np.testing.assert_array_equal(with_inline, with_lora)
    again = pixels(await fetch(client, (await generate(client, base))[0]["url"]))
    np.testing.assert_array_equal(again, plain)  # the LoRA came off exactly


async def test_step_preview_is_a_base64_png_unless_disabled(aiohttp_client, models_dir, tmp_path):
    client, _, _ = await start(aiohttp_client, models_dir, tmp_path)
    body = tiny({"prompt": "a cat", "style_selections": [], "async_process": True}, steps=3)
    job = await (await post(client, T2I, body)).json()
    await wait_for(client, job["job_id"])
    query = {"job_id": job["job_id"], "require_step_preview": "true"}
    preview = (await (await client.get("/v1/generation/query-job", params=query)).json())["job_step_preview"]
    decoded = pixels(base64.b64decode(preview))
    assert decoded.ndim == 3 and decoded.shape[2] == 3
    # the old spelling of the parameter works too; without it there is no preview
    old = {"job_id": job["job_id"], "require_step_preivew": "true"}
    assert (await (await client.get("/v1/generation/query-job", params=old)).json())["job_step_preview"] == preview
    plain = await (await client.get("/v1/generation/query-job", params={"job_id": job["job_id"]})).json()
    assert plain["job_step_preview"] is None
    hidden = await (await post(client, T2I, {**body, "advanced_params": {"overwrite_step": 2,
                                                                         "disable_preview": True}})).json()
    await wait_for(client, hidden["job_id"])
    answer = await (await client.get("/v1/generation/query-job",
                                     params={"job_id": hidden["job_id"], "require_step_preview": "true"})).json()
    assert answer["job_step_preview"] is None
