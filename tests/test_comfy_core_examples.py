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


def conditioning_and_ops_graph() -> dict:
    """Masked, ranged and mixed prompts into one KSampler, then the latent and image nodes."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    return {
        "ckpt": node("CheckpointLoaderSimple", ckpt_name="tiny-sd15.safetensors"),
        "pos": node("CLIPTextEncode", text="a red house", clip=["ckpt", 1]),
        "alt": node("CLIPTextEncode", text="a blue lake", clip=["ckpt", 1]),
        "neg": node("CLIPTextEncode", text="blurry", clip=["ckpt", 1]),
        "solid": node("SolidMask", value=1.0, width=32, height=64),
        "canvas": node("SolidMask", value=0.0, width=64, height=64),
        "placed": node("MaskComposite", destination=["canvas", 0], source=["solid", 0], x=32, y=0, operation="add"),
        "soft": node("FeatherMask", mask=["placed", 0], left=8, top=0, right=0, bottom=0),
        "masked": node("ConditioningSetMask", conditioning=["alt", 0], mask=["soft", 0], strength=0.8,
                       set_cond_area="mask bounds"),
        "late": node("ConditioningSetTimestepRange", conditioning=["masked", 0], start=0.3, end=1.0),
        "mixed": node("ConditioningAverage", conditioning_to=["pos", 0], conditioning_from=["alt", 0],
                      conditioning_to_strength=0.7),
        "all": node("ConditioningCombine", conditioning_1=["mixed", 0], conditioning_2=["late", 0]),
        "empty_neg": node("ConditioningZeroOut", conditioning=["neg", 0]),
        "latent": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "sample": node("KSampler", seed=3, steps=2, cfg=6.0, sampler_name="euler", scheduler="normal", denoise=1.0,
                       model=["ckpt", 0], positive=["all", 0], negative=["empty_neg", 0], latent_image=["latent", 0]),
        "turned": node("LatentRotate", samples=["sample", 0], rotation="90 degrees"),
        "twice": node("RepeatLatentBatch", samples=["turned", 0], amount=2),
        "one": node("LatentFromBatch", samples=["twice", 0], batch_index=1, length=1),
        "decode": node("VAEDecode", samples=["one", 0], vae=["ckpt", 2]),
        "blurred": node("ImageBlur", image=["decode", 0], blur_radius=1, sigma=1.0),
        "both": node("ImageBatch", image1=["decode", 0], image2=["blurred", 0]),
        "save": node("SaveImage", images=["both", 0], filename_prefix="ops"),
    }


async def test_conditioning_latent_and_image_nodes_in_one_graph(app, aiohttp_client):
    client = await aiohttp_client(app.make_web_app())
    image = await run(client, app, conditioning_and_ops_graph())
    assert image.shape == (64, 64, 3)

