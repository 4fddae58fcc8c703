"""Text-to-image through the node graph equals diffusers' pipelines built from the same file.

Our side is a real ComfyUI workflow (CheckpointLoaderSimple -> CLIPTextEncode x2 / EmptyLatentImage
-> KSampler -> VAEDecode) run by graph.validate_prompt + graph.Executor with an App's services.
The oracle is StableDiffusionPipeline / StableDiffusionXLPipeline made by diffusers' own
`from_single_file` conversion of the same tiny checkpoint (local config directory, offline).

Like is compared with like (see the oracle pitfalls in ARCHITECTURE.md):
- prompts: the pipeline's own `encode_prompt` (transformers CLIP over the same weights and BPE
  files) must equal our CLIPTextEncode output; those embeddings are then handed to the pipeline,
  so SDXL's `force_zeros_for_empty_prompt` never applies.
- initial latents: ComfyUI starts from prepare_noise(seed) * sqrt(1 + sigma_max^2). Euler (linspace
  spacing) multiplies handed-in latents by init_noise_sigma = sigma_max, so it gets
  noise * sqrt(1 + sigma_max^2) / sigma_max; DPM-Solver works in the variance-preserving frame
  (x / sqrt(1 + sigma^2), init_noise_sigma 1), so it gets the noise itself.
- schedules: karras sigmas over the model's whole sigma range, a final 0, and for DPM++ 2M the
  first-order last step (lower_order_final). Both schedules are asserted equal to ours.
- SDXL size conditioning: original = target = latent size * 8, crop (0, 0) on both sides.
- timesteps: ComfyUI/Fooocus call the UNet at each sigma's nearest training timestep (an integer);
  diffusers' DPM-Solver rounds its karras timesteps the same way, but its Euler feeds the continuous
  t. The Euler oracle below rounds t (nothing else changes); a separate test shows that the
  continuous t alone moves the result well outside our tolerance.

Tolerance: both sides run float32 on the CPU with the same weights and agree exactly in float64
maths; they differ only in operation order (attention kernels, batched GEMMs, float64 vs float32
step coefficients and sigma tables). Measured here over 5 steps at cfg 7: each side's float32 run
is ~3e-6 relative from its own float64 run, and ours vs diffusers is <= ~4e-6 relative on the
latents and images. We allow 2e-5 (5x margin); evaluating the UNet at the continuous instead of the
nearest timestep (a <= 0.5 shift of t) gives ~1.4e-4.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from graph import validate_prompt
from models.sampling.model_sampling import DiscreteModelSampling
from models.sampling.noise import prepare_noise
from models.sampling.registry import make_sigmas
from models.tiny import TinyCheckpointSpec, tiny_sd15_spec, tiny_sdxl_spec, write_tiny_checkpoint
from models.tiny_text import write_tiny_tokenizer
from nodes import register_builtin_nodes
from nodes.loaders import TINY_TOKENIZER_DIR
from oracle_diffusers import diffusers_unet_config, diffusers_vae_config, relative_error
from server.app import App
from server.config import AppConfig

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
# diffusers' schedulers call np.array on a tensor with copy=False (harmless, from numpy 2)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SEED = 20240611
STEPS = 5
CFG = 7.0
SIZE = 64  # pixels; 8x8 latents
POSITIVE = "a photo of a cat sitting on a wooden table, highly detailed"
NEGATIVE = "blurry, low quality"
RTOL = 2e-5
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@dataclass(frozen=True)
class Family:
    file: str
    spec: TinyCheckpointSpec
    pipeline: str
    scaling_factor: float


FAMILIES = {
    "sd15": Family("parity-sd15.safetensors", tiny_sd15_spec(), "StableDiffusionPipeline", 0.18215),
    "sdxl": Family("parity-sdxl.safetensors", tiny_sdxl_spec(), "StableDiffusionXLPipeline", 0.13025),
}


# --- the oracle ---------------------------------------------------------------------------------

def quantized_timestep_euler(**config):
    """diffusers' EulerDiscreteScheduler feeding the UNet each sigma's NEAREST training timestep, as
    ComfyUI/Fooocus (ModelSamplingDiscrete.timestep: argmin over the log-sigma table) and diffusers'
    own DPM-Solver (karras timesteps `.round()`) do, instead of the continuous t. Nearest in log sigma
    equals rounding t, since t interpolates log sigma linearly between integers. Maths unchanged."""
    from diffusers import EulerDiscreteScheduler

    class QuantizedTimestepEuler(EulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None, sigmas=None):
            super().set_timesteps(num_inference_steps, device, timesteps, sigmas)
            self.timesteps = self.timesteps.round()

    return QuantizedTimestepEuler(**config)


def oracle_scheduler(sampler: str, quantized_t: bool = True):
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    if sampler == "euler":
        config = dict(SD_BETAS, use_karras_sigmas=True, timestep_spacing="linspace", final_sigmas_type="zero",
                      steps_offset=1)
        return quantized_timestep_euler(**config) if quantized_t else EulerDiscreteScheduler(**config)
    return DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="dpmsolver++", solver_order=2,
                                       solver_type="midpoint", use_karras_sigmas=True, lower_order_final=True,
                                       final_sigmas_type="zero", timestep_spacing="linspace", steps_offset=1)


def clip_config(cfg, tokenizer):
    return transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, projection_dim=cfg.projection_dim or cfg.width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def write_pipeline_config(root: Path, family: Family, tokenizers: dict) -> Path:
    """A local diffusers repo holding only configs, for `from_single_file(config=root)`."""
    spec = family.spec
    index = {"_class_name": family.pipeline, "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    for sub, config in (("unet", diffusers_unet_config(spec.unet)),
                        ("vae", diffusers_vae_config(spec.vae, family.scaling_factor))):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / "config.json").write_text(json.dumps(config))
    if family.pipeline == "StableDiffusionPipeline":
        clip_config(spec.clip_l, tokenizers["tokenizer"]).save_pretrained(root / "text_encoder")
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"],
                     safety_checker=[None, None], feature_extractor=[None, None], image_encoder=[None, None],
                     requires_safety_checker=False)
    else:
        clip_config(spec.clip_l, tokenizers["tokenizer"]).save_pretrained(root / "text_encoder")
        clip_config(spec.clip_g, tokenizers["tokenizer_2"]).save_pretrained(root / "text_encoder_2")
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"],
                     text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], image_encoder=[None, None],
                     feature_extractor=[None, None], force_zeros_for_empty_prompt=True)
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def oracle_tokenizers(tokenizer_dir: Path, family: str) -> dict:
    """transformers' CLIPTokenizer over our tiny BPE files, padded as the real repos pad: CLIP-L with
    the end token, SDXL's OpenCLIP-G with "!" (id 0)."""
    load = transformers.CLIPTokenizer.from_pretrained
    tokenizers = {"tokenizer": load(str(tokenizer_dir), model_max_length=77)}
    if family == "sdxl":
        tokenizers["tokenizer_2"] = load(str(tokenizer_dir), model_max_length=77, pad_token="!")
        assert tokenizers["tokenizer_2"].pad_token_id == 0
    return tokenizers


def build_pipeline(name: str, checkpoint: Path, tokenizer_dir: Path, workdir: Path):
    family = FAMILIES[name]
    tokenizers = oracle_tokenizers(tokenizer_dir, name)
    config_dir = write_pipeline_config(workdir / f"{name}_pipeline_config", family, tokenizers)
    pipeline_class = getattr(diffusers, family.pipeline)
    extra = {"safety_checker": None, "feature_extractor": None} if name == "sd15" else {"add_watermarker": False}
    pipe = pipeline_class.from_single_file(str(checkpoint), config=str(config_dir), local_files_only=True,
                                           torch_dtype=torch.float32, scheduler=oracle_scheduler("euler"),
                                           **tokenizers, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def oracle_embeddings(pipe, name: str) -> dict:
    """The pipeline's own prompt encoding, as keyword arguments for the pipeline call."""
    with torch.no_grad():
        if name == "sd15":
            positive, negative = pipe.encode_prompt(POSITIVE, "cpu", 1, True, NEGATIVE)
            return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            POSITIVE, device="cpu", do_classifier_free_guidance=True, negative_prompt=NEGATIVE)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative,
            "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}


def run_pipeline(pipe, name: str, sampler: str, embeddings: dict, noise: torch.Tensor, quantized_t: bool = True):
    pipe.scheduler = oracle_scheduler(sampler, quantized_t)
    pipe.scheduler.set_timesteps(STEPS)
    sigma_max = float(pipe.scheduler.sigmas.max())
    # ComfyUI's start: noise * sqrt(1 + sigma_max^2) in k-diffusion's frame (see the module doc).
    latents = noise * math.sqrt(1 + sigma_max ** 2) / sigma_max if sampler == "euler" else noise.clone()
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"].clone()
        return tensors

    extra = {"original_size": (SIZE, SIZE), "target_size": (SIZE, SIZE), "crops_coords_top_left": (0, 0)} \
        if name == "sdxl" else {}
    with torch.no_grad():
        images = pipe(height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG, latents=latents,
                      output_type="pt", callback_on_step_end=keep_latents, **embeddings, **extra).images
    return final["latents"], images, pipe.scheduler


# --- our side: a workflow through the engine ----------------------------------------------------

def capture_node(store: dict):
    """A test-only output node that hands the workflow's tensors back to the test."""

    class CaptureParityOutputs:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "images": ("IMAGE",), "positive": ("CONDITIONING",),
                                 "negative": ("CONDITIONING",)}}

        @classmethod
        def IS_CHANGED(cls, **_):
            return float("nan")  # always run: each run refills the store

        def capture(self, samples, images, positive, negative):
            store.update(samples=samples["samples"], images=images, positive=positive, negative=negative)
            return ()

    return CaptureParityOutputs


def txt2img_workflow(ckpt: str, sampler: str, scheduler: str = "karras") -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": POSITIVE}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": NEGATIVE}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "CaptureParityOutputs", "inputs": {
            "samples": ["3", 0], "images": ["8", 0], "positive": ["6", 0], "negative": ["7", 0]}},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("txt2img_parity")
    models = root / "models"
    checkpoints = {name: write_tiny_checkpoint(models / "checkpoints" / family.file, family.spec, seed=11 + index)
                   for index, (name, family) in enumerate(FAMILIES.items())}
    tokenizer_dir = write_tiny_tokenizer(models / TINY_TOKENIZER_DIR)
    store: dict = {}

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"CaptureParityOutputs": capture_node(store)})

    app = App(AppConfig(models_dir=models, output_dir=root / "out", input_dir=root / "in", temp_dir=root / "tmp",
                        custom_nodes_dir=None, demo_models=False), register_nodes=register)
    return app, store, checkpoints, tokenizer_dir, root


@pytest.fixture(scope="module")
def pipelines():
    return {}  # name -> (pipeline, its prompt embeddings), built on first use


def pipeline_for(name, setup, pipelines):
    if name not in pipelines:
        _, _, checkpoints, tokenizer_dir, root = setup
        pipe = build_pipeline(name, checkpoints[name], tokenizer_dir, root)
        pipelines[name] = (pipe, oracle_embeddings(pipe, name))
    return pipelines[name]


def run_ours(app, store: dict, name: str, sampler: str) -> dict:
    prompt = txt2img_workflow(FAMILIES[name].file, sampler)
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.response_error()
    store.clear()
    outcome = app.executor.execute(prompt, f"parity-{name}-{sampler}", result.outputs, result.constants,
                                   links=result.links)
    assert outcome.status == "success", outcome.error
    return dict(store)


# --- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_txt2img_matches_diffusers_pipeline(name, sampler, setup, pipelines):
    app, store, *_ = setup
    pipe, embeddings = pipeline_for(name, setup, pipelines)
    ours = run_ours(app, store, name, sampler)

    # 1. the prompts: our CLIPTextEncode equals the pipeline's encode_prompt
    for side, key in (("positive", "prompt_embeds"), ("negative", "negative_prompt_embeds")):
        assert relative_error(ours[side][0][0], embeddings[key]) < 1e-5, side
    if name == "sdxl":
        assert relative_error(ours["positive"][0][1]["pooled_output"], embeddings["pooled_prompt_embeds"]) < 1e-5
        assert relative_error(ours["negative"][0][1]["pooled_output"],
                              embeddings["negative_pooled_prompt_embeds"]) < 1e-5

    # 2. the same schedule
    noise = prepare_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    latents, images, scheduler = run_pipeline(pipe, name, sampler, embeddings, noise)
    sigmas = make_sigmas(DiscreteModelSampling(), "karras", STEPS, sampler_name=sampler)
    # diffusers derives sigmas in float32 from float32 alphas_cumprod: ~1e-5 relative at sigma_min
    torch.testing.assert_close(sigmas.float(), scheduler.sigmas.float(), rtol=1e-4, atol=0)

    # 3. the final latents (ours are raw VAE latents; the pipeline's are scaled for the UNet)
    scale = FAMILIES[name].scaling_factor
    theirs_latents = latents
    assert ours["samples"].shape == theirs_latents.shape == (1, 4, SIZE // 8, SIZE // 8)
    error = relative_error(ours["samples"] * scale, theirs_latents)
    assert error < RTOL, f"latents differ: relative error {error:.3g}"

    # 4. the decoded images: ours [B, H, W, C], theirs [B, C, H, W], both 0..1
    theirs_images = images.movedim(1, -1)
    assert ours["images"].shape == theirs_images.shape == (1, SIZE, SIZE, 3)
    error = relative_error(ours["images"], theirs_images)
    assert error < RTOL, f"images differ: relative error {error:.3g}"
    assert (ours["images"] - theirs_images).abs().max() < 1e-4


def test_tolerance_catches_a_sub_step_timestep_error(setup, pipelines):
    """Stock diffusers Euler feeds the UNet the continuous t (a shift of t by < 0.5 against ComfyUI's
    nearest timestep): that alone moves the result well outside RTOL, so the parity tests would catch
    any timestep-level mistake."""
    app, store, *_ = setup
    pipe, embeddings = pipeline_for("sd15", setup, pipelines)
    ours = run_ours(app, store, "sd15", "euler")
    noise = prepare_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    continuous, _, scheduler = run_pipeline(pipe, "sd15", "euler", embeddings, noise, quantized_t=False)
    assert not torch.equal(scheduler.timesteps, scheduler.timesteps.round())
    error = relative_error(ours["samples"] * FAMILIES["sd15"].scaling_factor, continuous)
    assert error > 3 * RTOL, f"the continuous timesteps changed the latents by only {error:.3g}"
