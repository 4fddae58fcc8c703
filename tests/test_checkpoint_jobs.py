"""Checkpoints through the ComfyUI API: each tiny family runs a graph whose PNG /view serves, and
bad checkpoint files fail their job with a clear execution_error while the server keeps serving."""
import asyncio
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from server.app import App
from server.config import AppConfig


def decode_graph(ckpt_name: str) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode / EmptyLatentImage -> VAEDecode -> SaveImage."""
    return {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
            "text": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["ckpt", 1]}},
            "preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["latent", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "ckpt/test"}},
            "sink": {"class_type": "CLIPTextEncodeSinkForTest", "inputs": {"conditioning": ["text", 0]}}}


class CLIPTextEncodeSinkForTest:
    """Makes the CLIPTextEncode branch an execution root, and checks its output shape."""
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    def run(self, conditioning):
        tokens, extras = conditioning[0]
        return {"ui": {"shape": [list(tokens.shape)], "pooled": [extras["pooled_output"] is not None]}}


@pytest.fixture
async def client(aiohttp_client, tmp_path, demo_models_dir):
    models = tmp_path / "models"
    shutil.copytree(demo_models_dir, models)
    config = AppConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                       temp_dir=tmp_path / "tmp", custom_nodes_dir=None)
    app = App(config)
    app.registry.register("CLIPTextEncodeSinkForTest", CLIPTextEncodeSinkForTest)
    client = await aiohttp_client(app.make_web_app())
    client.models_dir = models
    return client


async def run_prompt(client, prompt, timeout=120):
    ws = await client.ws_connect("/ws?clientId=ckpt-test")
    await ws.receive_json()
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": "ckpt-test"})
    assert response.status == 200, await response.text()
    prompt_id = (await response.json())["prompt_id"]
    messages = []

    async def collect():
        async for message in ws:
            if message.type.name != "TEXT":
                continue
            data = json.loads(message.data)
            messages.append(data)
            if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
                return
    await asyncio.wait_for(collect(), timeout)
    await ws.close()
    history = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    return messages, history


@pytest.mark.parametrize("ckpt", ["tiny-sd15.safetensors", "tiny-sdxl.safetensors", "tiny-sdxl-refiner.safetensors"])
async def test_each_family_runs_and_view_serves_the_png(client, ckpt):
    messages, history = await run_prompt(client, decode_graph(ckpt))
    assert history["status"]["status_str"] == "success", [m for m in messages if m["type"] == "execution_error"]
    image = history["outputs"]["save"]["images"][0]
    assert image["subfolder"] == "ckpt" and image["filename"].startswith("test_")
    view = await client.get("/view", params=image)
    body = await view.read()
    assert view.status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(body)).size == (64, 48)
    assert history["outputs"]["sink"]["pooled"] == [True]
    assert history["outputs"]["sink"]["shape"][0][1] == 77
    preview = history["outputs"]["preview"]["images"][0]
    assert preview["type"] == "temp" and (await client.get("/view", params=preview)).status == 200


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def write_bad_checkpoints(folder, good_bytes: bytes) -> dict[str, str]:
    """file name -> words its error message must contain."""
    (folder / "truncated.safetensors").write_bytes(good_bytes[: len(good_bytes) // 3])
    save_file({"lora_unet_down_blocks_0.lora_up.weight": torch.ones(4, 2)}, str(folder / "wrong-keys.safetensors"))
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.ones(3, 3)}, str(folder / "flux-like.safetensors"))
    with open(folder / "unsafe.ckpt", "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.ones(1)}, "payload": _Exploit()}, handle)
    return {"truncated.safetensors": "truncated.safetensors", "wrong-keys.safetensors": "wrong-keys.safetensors",
            "flux-like.safetensors": "Flux", "unsafe.ckpt": "refused"}


async def test_bad_checkpoints_fail_their_job_and_the_server_keeps_serving(client):
    checkpoints = client.models_dir / "checkpoints"
    expected = write_bad_checkpoints(checkpoints, (checkpoints / "tiny-sd15.safetensors").read_bytes())
    for name, words in expected.items():
        messages, history = await run_prompt(client, decode_graph(name))
        errors = [m["data"] for m in messages if m["type"] == "execution_error"]
        assert errors, name
        assert errors[0]["node_id"] == "ckpt" and errors[0]["node_type"] == "CheckpointLoaderSimple"
        assert words in errors[0]["exception_message"], errors[0]["exception_message"]
        assert errors[0]["exception_type"].endswith("CheckpointError")
        assert history["status"]["status_str"] == "error"
    assert (await client.get("/ping")).status == 200
    messages, history = await run_prompt(client, decode_graph("tiny-sd15.safetensors"))
    assert history["status"]["status_str"] == "success"
