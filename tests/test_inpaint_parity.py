"""9-channel inpainting checkpoints against diffusers, built from the same tiny single files.

1. One model call: our denoiser feeding an inpainting UNet (in_channels 9) the mask and
   masked-image latent from InpaintModelConditioning-style conditioning equals diffusers'
   UNet2DConditionModel called on concat(c_in * x, mask, masked latent) -- SD1.5 and SDXL.
2. A whole SD1.5 inpaint run through ComfyUI's nodes (LoadImage, LoadImageMask,
   InpaintModelConditioning with noise_mask off, KSampler euler/karras, VAEDecode) equals
   StableDiffusionInpaintPipeline given the same start latents, mask and masked-image latent.
   Like is compared with like (ARCHITECTURE.md oracle pitfalls): the pipeline's own prompt
   embeddings are handed in (and checked equal to ours), its Euler feeds the nearest integer
   timestep, our start x = latent + noise * sqrt(1 + sigma_max^2) is handed in divided by
   sigma_max (its init_noise_sigma with linspace spacing). The pipeline would draw the
   masked-image latent as a VAE *sample*; ours is the posterior mean, so we hand ours in and check
   it separately against its VAE's mean on its own preprocessed masked image. The mask is aligned
   to 8-pixel cells, where diffusers' nearest and ComfyUI's bilinear+round latent masks agree.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graph import validate_prompt
from models.loading import load_checkpoint
from models.sampling.model_sampling import DiscreteModelSampling
from models.sampling.noise import prepare_noise
from models.sampling.registry import make_sigmas
from models.tiny import tiny_sd15_spec, tiny_sdxl_spec, write_tiny_checkpoint
from models.tiny_text import write_tiny_tokenizer
from nodes import register_builtin_nodes
from nodes.loaders import TINY_TOKENIZER_DIR
from nodes.sampler_core import Guidance, build_denoiser
from nodes.runtime import Unmanaged
from nodes.sockets import ModelSocket
from oracle_diffusers import (diffusers_unet_config, diffusers_unet_from_single_file, diffusers_vae_config,
                              relative_error)
from server.app import App
from server.config import AppConfig

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
from test_txt2img_parity import SD_BETAS, clip_config, oracle_scheduler, oracle_tokenizers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SEED, STEPS, CFG, SIZE = 424242, 5, 7.0, 64
POSITIVE, NEGATIVE = "a red apple on a wooden table", "blurry"
RTOL = 2e-5  # as the text-to-image parity: both sides float32 on the CPU, differing in operation order


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_nine_channel_unet_call_equals_diffusers(family, tmp_path):
    spec = tiny_sd15_spec(in_channels=9) if family == "sd15" else tiny_sdxl_spec(in_channels=9)
    path = write_tiny_checkpoint(tmp_path / f"{family}-inpaint.safetensors", spec, seed=21)
    loaded = load_checkpoint(path)
    assert loaded.info.is_inpaint and loaded.info.unet.in_channels == 9  # detected from the first conv
    reference = diffusers_unet_from_single_file(path, spec.unet, tmp_path)
    model = ModelSocket(Unmanaged(loaded.unet), loaded.info, path.name)
    generator = torch.Generator().manual_seed(5)
    height = width = 16
    x = torch.randn(1, 4, height, width, generator=generator) * 3.0
    pixel_mask = torch.zeros(1, height * 8, width * 8)
    pixel_mask[:, 40:96, 16:72] = 1.0  # 8-aligned: the latent mask is exact
    masked_raw = torch.randn(1, 4, height, width, generator=generator)
    tokens = torch.randn(1, 9, spec.unet.context_dim, generator=generator)
    extras = {"concat_latent_image": masked_raw, "concat_mask": pixel_mask}
    added = {}
    if family == "sdxl":
        pooled = torch.randn(1, spec.clip_g.projection_dim, generator=generator)
        extras["pooled_output"] = pooled
        added = {"added_cond_kwargs": {"text_embeds": pooled,
                                       "time_ids": torch.tensor([[height * 8.0, width * 8.0, 0, 0, height * 8.0,
                                                                  width * 8.0]])}}
    sampling = DiscreteModelSampling()
    sigma = torch.tensor([4.2])
    with torch.no_grad():
        denoiser = build_denoiser(model, loaded.unet, [[tokens, extras]], None, Guidance(1.0), width * 8, height * 8,
                                  sampling, torch.device("cpu"), torch.float32)
        ours_eps = (x - denoiser(x, sigma)) / sigma
        latent_mask = pixel_mask[:, None, ::8, ::8]
        feed = torch.cat([x / math.sqrt(1 + 4.2 ** 2), latent_mask, masked_raw * loaded.info.latent_scale_factor], 1)
        theirs_eps = reference(feed, sampling.timestep(sigma), tokens, **added).sample
    assert relative_error(ours_eps, theirs_eps) < 1e-4

    # without conditioning channels an inpainting UNet gets "repaint everything" (ComfyUI's default)
    with torch.no_grad():
        blank = build_denoiser(model, loaded.unet, [[tokens, {k: v for k, v in extras.items() if "concat" not in k}]],
                               None, Guidance(1.0), width * 8, height * 8, sampling, torch.device("cpu"), torch.float32)
        assert relative_error((x - blank(x, sigma)) / sigma, ours_eps) > 1e-3


# --- a whole SD1.5 inpaint run ------------------------------------------------------------------

def write_inpaint_pipeline_config(root: Path, spec, tokenizer) -> Path:
    index = {"_class_name": "StableDiffusionInpaintPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False}
    for sub, config in (("unet", diffusers_unet_config(spec.unet)), ("vae", diffusers_vae_config(spec.vae, 0.18215))):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / "config.json").write_text(json.dumps(config))
    clip_config(spec.clip_l, tokenizer).save_pretrained(root / "text_encoder")
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def capture_node(store: dict):
    class CaptureInpaintParity:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "images": ("IMAGE",), "start": ("LATENT",),
                                 "positive": ("CONDITIONING",), "negative": ("CONDITIONING",)}}

        @classmethod
        def IS_CHANGED(cls, **_):
            return float("nan")

        def capture(self, samples, images, start, positive, negative):
            store.update(samples=samples["samples"], images=images, start=start, positive=positive, negative=negative)
            return ()

    return CaptureInpaintParity


def inpaint_workflow(ckpt: str) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": POSITIVE}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": NEGATIVE}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "source.png"}},
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "cond": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["image", 0],
            "mask": ["mask", 0], "noise_mask": False}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "karras", "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["cond", 2],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "capture": {"class_type": "CaptureInpaintParity", "inputs": {
            "samples": ["sample", 0], "images": ["decode", 0], "start": ["cond", 2], "positive": ["cond", 0],
            "negative": ["cond", 1]}},
    }


def test_sd15_inpaint_run_through_comfyui_nodes_equals_diffusers_pipeline(tmp_path):
    models = tmp_path / "models"
    spec = tiny_sd15_spec(in_channels=9)
    checkpoint = write_tiny_checkpoint(models / "checkpoints/sd15-inpainting.safetensors", spec, seed=31)
    tokenizer_dir = write_tiny_tokenizer(models / TINY_TOKENIZER_DIR)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    source = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    source.save(inputs / "source.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:40, 24:56] = 255
    mask_image = Image.fromarray(mask).convert("RGB")
    mask_image.save(inputs / "mask.png")
    store: dict = {}

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"CaptureInpaintParity": capture_node(store)})

    app = App(AppConfig(models_dir=models, output_dir=tmp_path / "out", input_dir=inputs, temp_dir=tmp_path / "tmp",
                        custom_nodes_dir=None, demo_models=False), register_nodes=register)
    prompt = inpaint_workflow(checkpoint.name)
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    outcome = app.executor.execute(prompt, "inpaint-parity", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error

    tokenizers = oracle_tokenizers(tokenizer_dir, "sd15")
    config_dir = write_inpaint_pipeline_config(tmp_path / "pipeline_config", spec, tokenizers["tokenizer"])
    pipe = diffusers.StableDiffusionInpaintPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True, torch_dtype=torch.float32,
        scheduler=oracle_scheduler("euler"), safety_checker=None, feature_extractor=None, **tokenizers)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.vae.config.scaling_factor
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(POSITIVE, "cpu", 1, True, NEGATIVE)
    assert relative_error(store["positive"][0][0], positive) < 1e-5
    assert relative_error(store["negative"][0][0], negative) < 1e-5

    # our masked-image latent is the pipeline's VAE mean of its own masked image
    with torch.no_grad():
        init_image = pipe.image_processor.preprocess(source, height=SIZE, width=SIZE)
        mask_condition = pipe.mask_processor.preprocess(mask_image, height=SIZE, width=SIZE)
        theirs_masked = pipe.vae.encode(init_image * (mask_condition < 0.5)).latent_dist.mode() * scale
    ours_masked = store["positive"][0][1]["concat_latent_image"] * scale
    assert relative_error(ours_masked, theirs_masked) < 1e-5

    pipe.scheduler.set_timesteps(STEPS)
    sigmas = make_sigmas(DiscreteModelSampling(), "karras", STEPS, sampler_name="euler")
    torch.testing.assert_close(sigmas.float(), pipe.scheduler.sigmas.float(), rtol=1e-4, atol=0)
    sigma_max = float(pipe.scheduler.sigmas.max())
    noise = prepare_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    start = store["start"]["samples"] * scale + noise * math.sqrt(1 + sigma_max ** 2)
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"].clone()
        return tensors

    with torch.no_grad():
        images = pipe(image=source, mask_image=mask_image, masked_image_latents=ours_masked, height=SIZE, width=SIZE,
                      num_inference_steps=STEPS, guidance_scale=CFG, latents=start / sigma_max,
                      prompt_embeds=positive, negative_prompt_embeds=negative, output_type="pt",
                      callback_on_step_end=keep_latents).images
    error = relative_error(store["samples"] * scale, final["latents"])
    assert error < RTOL, f"latents differ: relative error {error:.3g}"
    error = relative_error(store["images"], images.movedim(1, -1))
    assert error < RTOL, f"images differ: relative error {error:.3g}"
