"""A whole SD1.5 ControlNet run through ComfyUI's nodes (CheckpointLoaderSimple, ControlNetLoader,
ControlNetApplyAdvanced, KSampler euler/karras, VAEDecode) equals diffusers'
StableDiffusionControlNetPipeline given the same start latents, hint, prompt embeddings and
sigmas (the oracle set-up of test_txt2img_parity: its quantized-timestep Euler, our start handed
in divided by sigma_max). The pipeline's ControlNet is diffusers' ControlNetModel converted by
diffusers from the same tiny single file."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from graph import validate_prompt
from models.controlnet import controlnet_config_for_unet
from models.sampling.noise import prepare_noise
from models.tiny import tiny_sd15_spec, write_tiny_checkpoint
from models.tiny_controlnet import write_tiny_controlnet
from models.tiny_text import write_tiny_tokenizer
from nodes import register_builtin_nodes
from nodes.loaders import TINY_TOKENIZER_DIR
from oracle_diffusers import relative_error
from server.app import App
from server.config import AppConfig

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
from test_controlnet import diffusers_controlnet  # noqa: E402
from test_txt2img_parity import CFG, NEGATIVE, POSITIVE, SEED, SIZE, STEPS, build_pipeline, oracle_embeddings  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
STRENGTH = 0.8
RTOL = 2e-5


def capture_node(store: dict):
    class CaptureControlParity:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "images": ("IMAGE",)}}

        @classmethod
        def IS_CHANGED(cls, **_):
            return float("nan")

        def capture(self, samples, images):
            store.update(samples=samples["samples"], images=images)
            return ()

    return CaptureControlParity


def workflow(ckpt: str, control: str, strength: float) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": POSITIVE}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": NEGATIVE}},
        "hint": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "cn": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control}},
        "apply": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "karras", "positive": ["apply", 0], "negative": ["apply", 1], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "capture": {"class_type": "CaptureControlParity", "inputs": {"samples": ["sample", 0],
                                                                      "images": ["decode", 0]}},
    }


def test_sd15_controlnet_run_equals_diffusers_pipeline(tmp_path):
    models = tmp_path / "models"
    spec = tiny_sd15_spec()
    checkpoint = write_tiny_checkpoint(models / "checkpoints/cn-sd15.safetensors", spec, seed=41)
    control = write_tiny_controlnet(models / "controlnet/cn.safetensors", controlnet_config_for_unet(spec.unet),
                                    seed=42)
    tokenizer_dir = write_tiny_tokenizer(models / TINY_TOKENIZER_DIR)
    inputs = tmp_path / "in"
    inputs.mkdir()
    hint = Image.fromarray(np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    hint.save(inputs / "hint.png")
    store: dict = {}

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"CaptureControlParity": capture_node(store)})

    app = App(AppConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=inputs, temp_dir=tmp_path / "tmp",
                        custom_nodes_dir=None, demo_models=False), register_nodes=register)
    prompt = workflow(checkpoint.name, control.name, STRENGTH)
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(prompt, "cn-parity", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error

    base = build_pipeline("sd15", checkpoint, tokenizer_dir, tmp_path)
    pipe = diffusers.StableDiffusionControlNetPipeline(**{k: v for k, v in base.components.items()
                                                          if k != "image_encoder"},
                                                       controlnet=diffusers_controlnet(control, spec.unet),
                                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    embeddings = oracle_embeddings(pipe, "sd15")
    pipe.scheduler.set_timesteps(STEPS)
    sigma_max = float(pipe.scheduler.sigmas.max())
    noise = prepare_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"].clone()
        return tensors

    with torch.no_grad():
        images = pipe(image=hint, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                      latents=noise * math.sqrt(1 + sigma_max ** 2) / sigma_max, controlnet_conditioning_scale=STRENGTH,
                      output_type="pt", callback_on_step_end=keep_latents, **embeddings).images
    scale = pipe.vae.config.scaling_factor
    error = relative_error(store["samples"] * scale, final["latents"])
    assert error < RTOL, f"latents differ: relative error {error:.3g}"
    assert relative_error(store["images"], images.movedim(1, -1)) < RTOL

    # the ControlNet mattered: without it the run is another image
    plain = workflow(checkpoint.name, control.name, 0.0)
    result = validate_prompt(plain, app.registry)
    outcome = app.executor.execute(plain, "cn-parity-0", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error
    assert relative_error(store["samples"] * scale, final["latents"]) > 1e-3
