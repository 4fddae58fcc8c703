"""Websocket step previews follow ComfyUI's --preview-method (default none) and the per-prompt
extra_data.preview_method; SaveImageWebsocket frames go out whatever the method; Fooocus'
require_step_preview works under every method.

The client here keeps every binary frame it receives, as ComfyUI client libraries that treat
each binary frame as an output image do.
"""
import asyncio
import base64
import io
import json
import struct
import uuid

import pytest
from PIL import Image

from server.fooocus.setup import attach_fooocus_api

STEPS = 2


def workflow(save_class: str, steps: int = STEPS, seed: int = 1) -> dict:
    save_inputs = {"images": ["decode", 0]}
    if save_class == "SaveImage":
        save_inputs["filename_prefix"] = "previews"
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": save_class, "inputs": save_inputs},
    }


class Frame:
    """One binary websocket frame of type 1: uint32 type, uint32 format (1 JPEG, 2 PNG), image."""

    def __init__(self, data: bytes) -> None:
        self.kind, self.format = struct.unpack(">II", data[:8])
        self.image = Image.open(io.BytesIO(data[8:]))
        self.image.load()


async def collect(ws, prompt_id: str, timeout: float = 120) -> tuple[list[Frame], list[dict]]:
    """Every binary frame and JSON message until `executing {node: null}` of prompt_id."""
    frames, messages = [], []

    async def loop():
        async for message in ws:
            if message.type.name == "BINARY":
                frames.append(Frame(message.data))
                continue
            data = json.loads(message.data)
            messages.append(data)
            if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
                return
    await asyncio.wait_for(loop(), timeout)
    return frames, messages


async def run_prompt(client, prompt: dict, **body) -> tuple[list[Frame], list[dict]]:
    client_id = uuid.uuid4().hex
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    await ws.receive_json()
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id, **body})
    assert response.status == 200, await response.text()
    frames, messages = await collect(ws, (await response.json())["prompt_id"])
    await ws.close()
    assert "execution_success" in [m["type"] for m in messages], messages
    return frames, messages


def previews(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.format == 1]


async def start(aiohttp_client, demo_app_factory, **config):
    app = demo_app_factory(**config)
    return await aiohttp_client(app.make_web_app()), app


async def test_default_method_sends_only_the_saved_image(aiohttp_client, demo_app_factory):
    client, app = await start(aiohttp_client, demo_app_factory)
    assert app.config.preview_method == "none"
    frames, messages = await run_prompt(client, workflow("SaveImageWebsocket"))
    assert [(f.kind, f.format, f.image.format, f.image.size) for f in frames] == [(1, 2, "PNG", (64, 64))]
    assert [m["type"] for m in messages].count("progress") >= STEPS  # progress still flows, as JSON
    frames, _ = await run_prompt(client, workflow("SaveImage", seed=2))
    assert frames == []


async def test_preview_method_auto_sends_step_previews(aiohttp_client, demo_app_factory):
    client, _ = await start(aiohttp_client, demo_app_factory, preview_method="auto")
    frames, _ = await run_prompt(client, workflow("SaveImage"))
    # one JPEG per step, drawn by the linear latent map (auto = latent2rgb, as in ComfyUI): 1 px per latent
    assert [(f.kind, f.format, f.image.format, f.image.size) for f in frames] == [(1, 1, "JPEG", (8, 8))] * STEPS
    frames, _ = await run_prompt(client, workflow("SaveImageWebsocket", seed=2))
    assert [f.format for f in frames] == [1] * STEPS + [2]
    assert frames[-1].image.size == (64, 64)


@pytest.mark.parametrize("server, requested, expected", [
    ("none", "latent2rgb", STEPS), ("none", "auto", STEPS), ("auto", "none", 0), ("auto", "default", STEPS),
    ("none", "default", 0), ("latent2rgb", "NONE", 0),
])
async def test_a_prompt_chooses_its_own_preview_method(aiohttp_client, demo_app_factory, server, requested, expected):
    client, _ = await start(aiohttp_client, demo_app_factory, preview_method=server)
    frames, _ = await run_prompt(client, workflow("SaveImage"), extra_data={"preview_method": requested})
    assert len(previews(frames)) == expected and len(frames) == expected


async def test_a_bad_per_prompt_preview_method_is_a_400_naming_the_field(aiohttp_client, demo_app_factory):
    client, app = await start(aiohttp_client, demo_app_factory)
    for extra in ({"preview_method": "fancy"}, {"preview_method": 3}):
        response = await client.post("/prompt", json={"prompt": workflow("SaveImage"), "extra_data": extra})
        assert response.status == 400
        assert "extra_data.preview_method" in (await response.json())["error"]["message"]
    response = await client.post("/prompt", json={"prompt": workflow("SaveImage"), "extra_data": [1]})
    assert response.status == 400 and "extra_data" in (await response.json())["error"]["message"]
    assert app.queue.remaining() == 0


@pytest.mark.parametrize("method", ["none", "auto"])
async def test_require_step_preview_works_under_every_method(aiohttp_client, demo_app_factory, method):
    app = demo_app_factory(preview_method=method)
    attach_fooocus_api(app)
    client = await aiohttp_client(app.make_web_app())
    ws = await client.ws_connect("/ws?clientId=watcher")
    await ws.receive_json()
    body = {"prompt": "a cat", "base_model_name": "tiny-sdxl.safetensors", "aspect_ratios_selection": "64*64",
            "style_selections": [], "async_process": True, "advanced_params": {"overwrite_step": 3}}
    job = await (await client.post("/v1/generation/text-to-image", data=json.dumps(body))).json()
    frames, _ = await collect(ws, job["job_id"])  # Fooocus jobs are broadcast to every socket
    answer = await (await client.get("/v1/generation/query-job",
                                     params={"job_id": job["job_id"], "require_step_preview": "true"})).json()
    assert answer["job_stage"] == "SUCCESS"
    preview = Image.open(io.BytesIO(base64.b64decode(answer["job_step_preview"])))
    assert preview.format == "PNG" and preview.mode == "RGB"
    # the websocket sees the job's step previews only when the server's method is not none
    assert len(frames) == (0 if method == "none" else 3)
    await ws.close()
