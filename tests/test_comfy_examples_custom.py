"""ComfyUI's example graphs for SDXL-Turbo custom sampling (SamplerCustom + KSamplerSelect +
SDTurboScheduler) and textual inversion, in API format in tests/fixtures/comfy_examples/, run
through POST /prompt with the demo models under the file names the examples use (at 64x64 and 2
steps instead of 512x512 and 20, to keep the suite fast)."""
from __future__ import annotations

import asyncio
import json
import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nodes.model_services import make_model_manager
from server.app import App
from server.config import AppConfig

FIXTURES = Path(__file__).parent / "fixtures" / "comfy_examples"


@pytest.fixture
async def server(aiohttp_client, tmp_path, demo_models_dir):
    models = tmp_path / "models"
    shutil.copytree(demo_models_dir, models)
    checkpoints = models / "checkpoints"
    shutil.copy(checkpoints / "tiny-sdxl.safetensors", checkpoints / "sd_xl_turbo_1.0_fp16.safetensors")
    shutil.copy(checkpoints / "tiny-sd15.safetensors", checkpoints / "v1-5-pruned-emaonly.safetensors")
    (models / "embeddings").mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(8)
    save_file({"emb_params": torch.randn(2, 32, generator=g) * 3}, models / "embeddings/lighthouse_style.safetensors")
    torch.save({"string_to_param": {"*": torch.randn(4, 32, generator=g) * 3}}, models / "embeddings/EasyNegative.pt")
    config = AppConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                       temp_dir=tmp_path / "tmp", custom_nodes_dir=None, cpu=True)
    app = App(config, model_manager=make_model_manager(config))
    return await aiohttp_client(app.make_web_app()), config


async def _run(client, prompt: dict) -> dict:
    response = await client.post("/prompt", data=json.dumps({"prompt": prompt}))
    body = await response.json()
    assert response.status == 200, body
    prompt_id = body["prompt_id"]
    for _ in range(1200):
        history = await (await client.get(f"/history/{prompt_id}")).json()
        if history:
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success", entry["status"]
            return entry["outputs"]
        await asyncio.sleep(0.05)
    raise AssertionError("the prompt did not finish")


async def _image(client, outputs: dict, node: str) -> np.ndarray:
    image = outputs[node]["images"][0]
    response = await client.get("/view", params={k: image[k] for k in ("filename", "subfolder", "type")})
    assert response.status == 200
    return np.asarray(Image.open(BytesIO(await response.read()))).astype(int)


def _example(name: str, size: int = 64) -> dict:
    prompt = json.loads((FIXTURES / name).read_text())
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=size, height=size)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


async def test_sdxl_turbo_example_runs_through_prompt(server):
    client, _ = server
    outputs = await _run(client, _example("sdxl_turbo.json"))
    image = await _image(client, outputs, "25")
    assert image.shape == (64, 64, 3)


async def test_textual_inversion_example_runs_and_uses_the_embeddings(server):
    client, _ = server
    prompt = _example("textual_inversion.json")
    with_embeddings = await _image(client, await _run(client, prompt), "9")
    for node, text in (("6", "a photograph of a lighthouse on a cliff, sunset"), ("7", "text, watermark")):
        prompt[node]["inputs"]["text"] = text
    without = await _image(client, await _run(client, prompt), "9")
    assert with_embeddings.shape == without.shape == (64, 64, 3)
    assert np.abs(with_embeddings - without).max() > 0
