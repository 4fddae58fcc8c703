"""ComfyUI's example graphs for area composition, hires fix and noisy latent composition, in API
format under tests/fixtures/comfy_examples/ (the examples' node graphs and settings, sizes scaled
down to the tiny demo checkpoint), run through POST /prompt."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from waiting import DEADLINE_S, until

FIXTURES = Path(__file__).parent / "fixtures" / "comfy_examples"


def example(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def app(demo_app_factory):
    return demo_app_factory()


async def run(client, app, prompt) -> np.ndarray:
    response = await client.post("/prompt", data=json.dumps({"prompt": prompt}))
    body = await response.json()
    assert response.status == 200, body
    prompt_id = body["prompt_id"]

    async def finished():
        return (await (await client.get(f"/history/{prompt_id}")).json()).get(prompt_id)

    entry = await until(finished, timeout=DEADLINE_S * 3, what="the example's history entry")
    assert entry["status"]["status_str"] == "success", entry["status"]
    (images,) = [output["images"] for output in entry["outputs"].values() if "images" in output]
    return np.asarray(Image.open(app.config.output_dir / images[0]["subfolder"] / images[0]["filename"]))


async def test_area_composition_hires_fix_and_noisy_latent_composition(app, aiohttp_client):
    """One server for the three examples (the checkpoint loads once)."""
    client = await aiohttp_client(app.make_web_app())
    composed = await run(client, app, example("area_composition"))
    assert composed.shape == (96, 288, 3)  # the first pass at 192x64, then LatentUpscale to 288x96
    plain = example("area_composition")
    plain["3"]["inputs"]["positive"] = ["6", 0]  # the same graph without the area prompts
    plain["9"]["inputs"]["filename_prefix"] = "plain"
    assert not np.array_equal(await run(client, app, plain), composed)

    assert (await run(client, app, example("hires_fix"))).shape == (128, 128, 3)
    assert (await run(client, app, example("noisy_latent_composition"))).shape == (64, 128, 3)
