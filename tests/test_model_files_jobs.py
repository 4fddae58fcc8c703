"""Model files through the APIs: a first-use download that shows its progress in query-job's
job_status and on the websocket, a failed one that fails only its job, --no-download (no request,
a job error naming the file), and an extra_model_paths.yaml with two roots whose checkpoints and
LoRAs both APIs use by name."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
from aiohttp import FormData
from PIL import Image

from main import build_parser, config_from_args
from server.app import App
from server.downloads import Catalog, Downloader, DownloadLimits, KnownFile, ModelFetcher
from server.fooocus.setup import attach_fooocus_api
from server.serve import make_model_manager

from download_server import Served, start_file_server
from fooocus_client import b64, wait_for_job
from waiting import is_event, until, until_message

UPSCALER = "fooocus_upscaler_s409985e5.bin"
UPSCALER_PATH = "/lllyasviel/misc/resolve/main/" + UPSCALER
FAST_2X = "/v2/generation/image-upscale-vary"


def png_bytes(width: int, height: int) -> bytes:
    array = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def install_without(demo: Path, target: Path, *left_out: str) -> Path:
    """An 'existing install': the demo folders linked into `target`, except those left out."""
    target.mkdir(parents=True)
    for child in demo.iterdir():
        if child.name not in left_out:
            (target / child.name).symlink_to(child, target_is_directory=child.is_dir())
    return target


async def start(aiohttp_client, tmp_path, demo_models_dir, args: list[str], base: str | None, served: bytes | None,
                left_out: tuple[str, ...] = ("upscale_models",)):
    """An in-process server from command-line flags; our models dir is empty but for the tokenizer,
    the demo install (without `left_out`) is a --fooocus-models root; the fetcher's table names
    the upscaler with its real Hugging Face URL, which HF_MIRROR sends to the local file server."""
    ours = tmp_path / "ours"
    (ours / "text_encoders").mkdir(parents=True)
    (ours / "text_encoders" / "tiny_clip_tokenizer").symlink_to(demo_models_dir / "text_encoders/tiny_clip_tokenizer")
    install = install_without(demo_models_dir, tmp_path / "fooocus_models", *left_out)
    config = config_from_args(build_parser().parse_args([
        "--models-dir", str(ours), "--fooocus-models", str(install), "--output-dir", str(tmp_path / "out"),
        "--input-dir", str(tmp_path / "in"), "--temp-dir", str(tmp_path / "tmp"), "--cpu", *args]))
    app = App(config, model_manager=make_model_manager(config))
    known = KnownFile("upscale_models", UPSCALER, "https://huggingface.co" + UPSCALER_PATH,
                      size=len(served) if served else None,
                      sha256=hashlib.sha256(served).hexdigest() if served else None)
    loader = Downloader(DownloadLimits(attempts=2, backoff_s=0.0, read_timeout_s=10.0), mirror=base,
                        progress_bar=False)
    app.fetcher = ModelFetcher(app.folders, Catalog([known]), loader, enabled=config.download)
    attach_fooocus_api(app)
    return await aiohttp_client(app.make_web_app()), app, ours


async def submit_fast_2x(client) -> str:
    body = {"uov_method": "Upscale (Fast 2x)", "input_image": b64(png_bytes(32, 24)), "async_process": True}
    response = await client.post(FAST_2X, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    return (await response.json())["job_id"]


async def query(client, job_id: str) -> dict:
    return await (await client.get("/v1/generation/query-job", params={"job_id": job_id})).json()


async def test_a_first_use_download_shows_its_progress_then_the_job_runs(aiohttp_client, aiohttp_server,
                                                                        tmp_path, demo_models_dir):
    upscaler = (demo_models_dir / "upscale_models" / UPSCALER).read_bytes()
    files, base = await start_file_server(aiohttp_server)
    files.files[UPSCALER_PATH] = Served(upscaler, hold_at=len(upscaler) // 2)  # half, then wait for the test
    client, app, ours = await start(aiohttp_client, tmp_path, demo_models_dir, [], base, upscaler)
    ws = await client.ws_connect("/ws?clientId=watcher")
    job_id = await submit_fast_2x(client)

    async def downloading():
        body = await query(client, job_id)
        match = re.fullmatch(rf"downloading {UPSCALER} (\d+)%", body["job_status"] or "")
        return match and 0 < int(match.group(1)) < 100 and body
    body = await until(downloading, what="a download status in job_status")
    assert body["job_stage"] == "RUNNING" and 1 <= body["job_progress"] < 15
    event = await until_message(ws, is_event("download_progress", job_id, file=UPSCALER))
    assert event["data"]["max"] == len(upscaler) and event["data"]["folder"] == "upscale_models"
    assert not (ours / "upscale_models" / UPSCALER).exists()  # only the .part until it is complete
    files.files[UPSCALER_PATH].release.set()
    done = await wait_for_job(client, job_id, timeout=60)
    assert done["job_stage"] == "SUCCESS", done
    assert (ours / "upscale_models" / UPSCALER).read_bytes() == upscaler  # into our models dir
    assert done["job_result"][0]["finish_reason"] == "SUCCESS"
    second = await wait_for_job(client, await submit_fast_2x(client), timeout=60)
    assert second["job_stage"] == "SUCCESS" and len(files.requests) == 1  # fetched once
    await ws.close()


async def test_a_failed_download_fails_its_job_and_the_server_keeps_serving(aiohttp_client, aiohttp_server,
                                                                          tmp_path, demo_models_dir):
    files, base = await start_file_server(aiohttp_server)  # nothing served: a 404
    client, app, ours = await start(aiohttp_client, tmp_path, demo_models_dir, [], base, None)
    failed = await wait_for_job(client, await submit_fast_2x(client), timeout=60)
    assert failed["job_stage"] == "ERROR"
    assert failed["job_status"] == (f"Error: could not download {UPSCALER} from {base}{UPSCALER_PATH}: "
                                    "HTTP 404 Not Found")
    assert (await client.get("/ping")).status == 200
    models = await (await client.get("/v1/engines/all-models")).json()
    assert "tiny-sdxl.safetensors" in models["model_filenames"]
    upscaler = (demo_models_dir / "upscale_models" / UPSCALER).read_bytes()
    files.files[UPSCALER_PATH] = Served(upscaler)  # the next job's download works
    app.fetcher.catalog = Catalog([KnownFile("upscale_models", UPSCALER, "https://huggingface.co" + UPSCALER_PATH)])
    assert (await wait_for_job(client, await submit_fast_2x(client), timeout=60))["job_stage"] == "SUCCESS"


async def test_no_download_makes_no_request_and_names_the_missing_file(aiohttp_client, aiohttp_server,
                                                                     tmp_path, demo_models_dir):
    upscaler = (demo_models_dir / "upscale_models" / UPSCALER).read_bytes()
    files, base = await start_file_server(aiohttp_server)
    files.files[UPSCALER_PATH] = Served(upscaler)
    client, app, ours = await start(aiohttp_client, tmp_path, demo_models_dir, ["--no-download"], base, upscaler)
    failed = await wait_for_job(client, await submit_fast_2x(client), timeout=60)
    assert failed["job_stage"] == "ERROR" and UPSCALER in failed["job_status"]
    assert str(ours / "upscale_models") in failed["job_status"]
    assert files.requests == []


# --------------------------------------------------------------------------- existing installs

EXTRA_PATHS = """
comfyui:
    base_path: comfy/
    is_default: true
    checkpoints: models/checkpoints/
    loras: models/loras
other:
    base_path: other
    checkpoints: ckpts
    loras: |
        loras_one
        loras_two
    hypernetworks: hyper
"""


def two_roots(tmp_path: Path, demo: Path) -> Path:
    """comfy/ holds tiny-sdxl and a LoRA; other/ holds tiny-sd15 and a second SDXL checkpoint in
    sub-folders, a second LoRA in its second LoRA directory, and a different file under tiny-sdxl's
    name (the first root wins)."""
    layout = {
        "comfy/models/checkpoints/tiny-sdxl.safetensors": "checkpoints/tiny-sdxl.safetensors",
        "comfy/models/loras/comfy-lora.safetensors": "loras/tiny-sdxl-lora.safetensors",
        "other/ckpts/sd15/tiny-sd15.safetensors": "checkpoints/tiny-sd15.safetensors",
        "other/ckpts/sdxl/other-sdxl.safetensors": "checkpoints/tiny-sdxl.safetensors",
        "other/ckpts/tiny-sdxl.safetensors": "checkpoints/tiny-sd15.safetensors",
        "other/loras_two/other-lora.safetensors": "loras/tiny-sdxl-lora.safetensors",
    }
    for target, source in layout.items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target).symlink_to(demo / source)
    (tmp_path / "extra_model_paths.yaml").write_text(EXTRA_PATHS)
    return tmp_path / "extra_model_paths.yaml"


async def test_extra_model_paths_with_two_roots_serve_both_apis(aiohttp_client, tmp_path, demo_models_dir):
    yaml_file = two_roots(tmp_path / "installs", demo_models_dir)
    ours = tmp_path / "ours"
    (ours / "text_encoders").mkdir(parents=True)
    (ours / "text_encoders" / "tiny_clip_tokenizer").symlink_to(demo_models_dir / "text_encoders/tiny_clip_tokenizer")
    config = config_from_args(build_parser().parse_args([
        "--models-dir", str(ours), "--extra-model-paths", str(yaml_file), "--output-dir", str(tmp_path / "out"),
        "--input-dir", str(tmp_path / "in"), "--temp-dir", str(tmp_path / "tmp"), "--cpu", "--no-download"]))
    app = App(config, model_manager=make_model_manager(config))
    attach_fooocus_api(app)
    client = await aiohttp_client(app.make_web_app())
    installs = tmp_path / "installs"
    assert app.folders.path("checkpoints", "tiny-sdxl.safetensors") == \
        installs / "comfy/models/checkpoints/tiny-sdxl.safetensors"  # the first root wins
    assert app.folders.directories("loras")[0] == ours / "loras"  # ours first

    models = await (await client.get("/v1/engines/all-models")).json()
    assert models == {"model_filenames": ["sd15/tiny-sd15.safetensors", "sdxl/other-sdxl.safetensors",
                                          "tiny-sdxl.safetensors"],
                      "lora_filenames": ["comfy-lora.safetensors", "other-lora.safetensors"]}
    assert await (await client.get("/models/loras")).json() == models["lora_filenames"]
    info = await (await client.get("/object_info/CheckpointLoaderSimple")).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == models["model_filenames"]

    # Fooocus: the base model from one root, a LoRA from the other, by name
    body = {"prompt": "a cat", "base_model_name": "tiny-sdxl.safetensors", "aspect_ratios_selection": "64*64",
            "style_selections": [], "performance_selection": "Speed", "image_seed": 1,
            "loras": [{"model_name": "other-lora.safetensors", "weight": 0.5}],
            "advanced_params": {"overwrite_step": 1}, "async_process": True}
    job = await (await client.post("/v1/generation/text-to-image", data=json.dumps(body))).json()
    done = await wait_for_job(client, job["job_id"], timeout=60)
    assert done["job_stage"] == "SUCCESS", done
    assert "not found" not in done["job_status"]  # neither the model nor the LoRA fell back

    # ComfyUI: a checkpoint of the second root (in a sub-folder), a LoRA of the first, by name
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl/other-sdxl.safetensors"}},
        "7": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "strength_model": 0.5,
                                                     "strength_clip": 0.5, "lora_name": "comfy-lora.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["7", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["7", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                   "latent_image": ["3", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "extra"}},
    }
    queued = await (await client.post("/prompt", json={"prompt": prompt})).json()
    assert "prompt_id" in queued, queued

    async def finished():
        entry = (await (await client.get(f"/history/{queued['prompt_id']}")).json()).get(queued["prompt_id"])
        return entry and entry["status"]["completed"] and entry
    entry = await until(finished, what="the ComfyUI prompt's history entry")
    assert entry["outputs"]["6"]["images"][0]["filename"].startswith("extra")


async def test_describe_fetches_its_models_on_first_use(aiohttp_client, aiohttp_server, tmp_path, demo_models_dir):
    """The tiny tagger served under Fooocus' names: the first Anime describe downloads both files."""
    onnx = (demo_models_dir / "clip_vision" / "tiny-wd14-tagger.onnx").read_bytes()
    tags = (demo_models_dir / "clip_vision" / "tiny-wd14-tagger.csv").read_bytes()
    files, base = await start_file_server(aiohttp_server)
    files.files["/misc/wd-v1-4-moat-tagger-v2.onnx"] = Served(onnx)
    files.files["/misc/wd-v1-4-moat-tagger-v2.csv"] = Served(tags)
    client, app, ours = await start(aiohttp_client, tmp_path, demo_models_dir, [], base, None,
                                    left_out=("clip_vision",))
    app.fetcher.catalog = Catalog([KnownFile("clip_vision", name, "https://huggingface.co/misc/" + name,
                                             size=len(data), capability="describe_anime")
                                   for name, data in (("wd-v1-4-moat-tagger-v2.onnx", onnx),
                                                      ("wd-v1-4-moat-tagger-v2.csv", tags))])
    form = FormData()
    form.add_field("image", png_bytes(32, 32), filename="cat.png", content_type="image/png")
    response = await client.post("/v1/tools/describe-image", params={"image_type": "Anime"}, data=form)
    assert response.status == 200, await response.text()
    assert isinstance((await response.json())["describe"], str)
    assert (ours / "clip_vision" / "wd-v1-4-moat-tagger-v2.onnx").read_bytes() == onnx
    assert sorted(path for path, _ in files.requests) == ["/misc/wd-v1-4-moat-tagger-v2.csv",
                                                          "/misc/wd-v1-4-moat-tagger-v2.onnx"]
