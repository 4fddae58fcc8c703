"""LoRA through the node graph: LoraLoader changes the image, the originals come back exactly when
a later graph has no LoRA, and an unchanged LoRA set is not re-applied."""
import numpy as np
import pytest
from PIL import Image

from graph import validate_prompt


def graph(lora: bool, seed: int = 3) -> dict:
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                        "negative": ["neg", 0], "latent_image": ["latent", 0],
                                                        "seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
                                                        "scheduler": "karras", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "lora"}},
    }
    if lora:
        prompt["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                                 "lora_name": "tiny-sdxl-lora.safetensors",
                                                                 "strength_model": 1.0, "strength_clip": 1.0}}
        for node in ("pos", "neg"):
            prompt[node]["inputs"]["clip"] = ["lora", 1]
        prompt["sample"]["inputs"]["model"] = ["lora", 0]
    return prompt


def run(app, prompt):
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(prompt, "p", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error and outcome.error["exception_message"]
    image = outcome.outputs["save"]["images"][0]
    return np.asarray(Image.open(app.config.output_dir / image["filename"])), outcome


def test_lora_changes_the_image_and_is_removed_exactly(demo_app_factory, caplog):
    app = demo_app_factory(cache="lru:64")
    plain, _ = run(app, graph(lora=False))
    patched, outcome = run(app, graph(lora=True))
    assert np.abs(plain.astype(int) - patched.astype(int)).max() > 0
    assert "matched nothing" not in caplog.text
    again, _ = run(app, graph(lora=False, seed=4))
    plain_again, _ = run(app, graph(lora=False, seed=3))
    assert outcome.cached  # the loaded checkpoint came from the cache
    np.testing.assert_array_equal(plain, plain_again)


def test_unchanged_lora_set_is_not_reapplied(demo_app_factory):
    app = demo_app_factory(cache="lru:64")
    run(app, graph(lora=True, seed=1))
    model = next(value.values[0][0] for key, value in _cache_entries(app) if value.values
                 and hasattr(value.values[0][0], "patcher") and value.values[0][0].loras)
    written = model.patcher.weights_written
    run(app, graph(lora=True, seed=2))
    assert model.patcher.weights_written == written


def _cache_entries(app):
    return [(key, entry[1]) for key, entry in app.executor.cache._entries.items()]
