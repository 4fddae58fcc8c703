"""Image-prompt nodes over the demo models: same seed, an image prompt of weight > 0 changes the
latent; stop 0 is the plain model; the Fooocus refiner phase runs without the adapter."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from graph import validate_prompt

STEPS = 3


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models_dir):
    from nodes.model_services import make_model_manager
    from server.app import App
    from server.config import AppConfig

    root = tmp_path_factory.mktemp("ip_app")
    config = AppConfig(models_dir=demo_models_dir, output_dir=root / "out", input_dir=root / "in",
                       temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True, cache="lru:64")
    app = App(config, model_manager=make_model_manager(config))
    config.input_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(config.input_dir / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(config.input_dir / "b.png")
    return app


def _graph(prompts=(), refiner_from=None, switch=10000):
    """prompts: ((image, cn_type, stop, weight), ...) chained on the model; the latent is node "out"."""
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
         "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a cat"}},
         "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
         "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_vit_h.safetensors"}},
         "ip": {"class_type": "IPAdapterPlusLoader", "inputs": {"ipadapter_name": "ip-adapter-plus_sdxl_vit-h.bin",
                                                              "negative_name": "fooocus_ip_negative.safetensors"}},
         "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    model = ["ckpt", 0]
    for n, (image, cn_type, stop, weight) in enumerate(prompts):
        g[f"img{n}"] = {"class_type": "LoadImage", "inputs": {"image": image}}
        g[f"p{n}"] = {"class_type": "FooocusImagePrompt", "inputs": {
            "model": model, "clip_vision": ["cv", 0], "ipadapter": ["ip", 0], "image": [f"img{n}", 0],
            "cn_type": cn_type, "stop": stop, "weight": weight, "skip_preprocessors": False}}
        model = [f"p{n}", 0]
    inputs = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
              "seed": 3, "steps": STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0,
              "sharpness": 2.0, "adaptive_cfg": 7.0, "adm_scaler_positive": 1.5, "adm_scaler_negative": 0.8,
              "adm_scaler_end": 0.3, "freeu": False, "freeu_b1": 1.01, "freeu_b2": 1.02, "freeu_s1": 0.99,
              "freeu_s2": 0.95, "refiner_switch_step": switch, "refiner_swap_method": "joint"}
    if refiner_from is not None:
        inputs["refiner_model"] = refiner_from(model)
    g["out"] = {"class_type": "FooocusKSampler", "inputs": inputs}
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["out", 0], "vae": ["ckpt", 2]}}
    g["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "ip"}}
    return g


def _run(app, graph) -> np.ndarray:
    result = validate_prompt(graph, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(graph, "p", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error and outcome.error.get("exception_message")
    entry = outcome.outputs["save"]["images"][0]
    return np.asarray(Image.open(app.config.output_dir / entry["filename"])).astype(np.int16)


def test_image_prompt_changes_the_image_and_stop_zero_is_plain(app):
    plain = _run(app, _graph())
    prompted = _run(app, _graph([("a.png", "ImagePrompt", 0.5, 1.5)]))
    assert np.abs(prompted - plain).max() > 0
    assert np.array_equal(_run(app, _graph([("a.png", "ImagePrompt", 0.0, 1.5)])), plain)
    two = _run(app, _graph([("a.png", "ImagePrompt", 0.5, 1.5), ("b.png", "FaceSwap", 0.9, 1.5)]))
    assert np.abs(two - prompted).max() > 0


def test_refiner_phase_runs_without_the_adapter(app):
    """Refiner = the image-prompted model itself after step 1: equal to refining with the plain model."""
    prompts = [("a.png", "ImagePrompt", 1.0, 1.5)]
    with_itself = _run(app, _graph(prompts, refiner_from=lambda model: model, switch=0))
    with_plain = _run(app, _graph(prompts, refiner_from=lambda model: ["ckpt", 0], switch=0))
    never = _run(app, _graph(prompts))
    assert np.array_equal(with_itself, with_plain)
    assert np.abs(never - with_plain).max() > 0
