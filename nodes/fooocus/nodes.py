"""Fooocus's pipeline as nodes: LoRA stack, multi-part prompt encoding, GPT-2 prompt expansion,
the Fooocus sampler (sharpness, adaptive CFG, ADM guidance, refiner swap, FreeU) and saving.

Lists (LoRAs, prompt parts, metadata) travel as JSON text in STRING inputs, so a workflow stays
plain ComfyUI API-format JSON that the ComfyUI UI can show and edit.
"""
from __future__ import annotations

import contextlib
import json

import torch

from graph import context as graph_context
from models.inpaint.sampling import InpaintBlend, inpaint_concat
from models.sampling.freeu import make_freeu_patch
from models.sampling.guidance import FooocusGuidance
from models.sampling.refiner import SWAP_METHODS, JointRefinerSwitch, split_sigmas_for_refiner, without_controls
from models.sampling.registry import SAMPLER_NAMES, SCHEDULER_NAMES, get_sampler

from ..images import tensor_to_pil
from ..latents import decode_latents, encode_images
from ..lora_runtime import running_unet
from ..runtime import services
from ..sampler_core import (Guidance, build_denoiser, hold_known_region, initial_noise, latent_concat,
                            latent_from_model, latent_to_model, noisy_start, schedule, step_callback)
from ..text import encode
from .expansion import EXPANSION_FOLDER, FooocusExpansion

SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF})


def _json_list(text: str, name: str) -> list:
    try:
        value = json.loads(text) if text else []
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be a JSON list: {exc}") from exc
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a JSON list")
    return value


class FooocusLoraStack:
    """Up to any number of (file in loras/, weight) pairs applied to MODEL and CLIP."""
    CATEGORY = "fooocus"
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",),
                             "loras": ("STRING", {"default": "[]", "multiline": True,
                                                  "tooltip": 'JSON list of ["file.safetensors", weight]'})}}

    def apply(self, model, clip, loras):
        folders = services().folders
        stack = []
        for entry in _json_list(loras, "loras"):
            if not (isinstance(entry, list) and len(entry) == 2):
                raise ValueError(f'each LoRA must be ["file", weight], got {entry!r}')
            name, weight = str(entry[0]), float(entry[1])
            if weight == 0:
                continue
            stack.append((str(folders.path("loras", name)), weight))
        if not stack:
            return (model, clip)
        return (model.with_changes(loras=model.loras + tuple(stack)),
                clip.with_changes(loras=clip.loras + tuple(stack)) if clip is not None else None)


class FooocusTextEncode:
    """Encodes each prompt part on its own and concatenates the tokens; pooled output is the sum
    over the first `pool_count` parts (-1: all). An optional expansion text is the last part and
    adds tokens but no pooled output (spec §7.5)."""
    CATEGORY = "fooocus"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",),
                             "texts": ("STRING", {"default": "[]", "multiline": True,
                                                  "tooltip": "JSON list of prompt parts"}),
                             "pool_count": ("INT", {"default": -1, "min": -1, "max": 1000}),
                             "clip_skip": ("INT", {"default": 2, "min": 1, "max": 12})},
                "optional": {"expansion": ("STRING", {"forceInput": True})}}

    def encode(self, clip, texts, pool_count, clip_skip, expansion=None):
        parts = [str(t) for t in _json_list(texts, "texts") if str(t).strip()] or [""]
        count = len(parts) if pool_count < 0 else min(pool_count, len(parts))
        if expansion:
            parts.append(expansion)
        clip = clip.with_changes(clip_skip=-clip_skip)
        tokens, pooled = [], None
        for index, text in enumerate(parts):
            cond, pool = encode(clip, text, rescale_mean=True)
            tokens.append(cond)
            if index < max(count, 1):
                pooled = pool if pooled is None else pooled + pool
        return ([[torch.cat(tokens, dim=1), {"pooled_output": pooled}]],)


class FooocusPromptExpansion:
    """"Fooocus V2": GPT-2 expansion of the prompt, deterministic per seed. Without the model files
    it returns an empty text and the job goes on without expansion; that, or a prompt longer than
    the model reads, is reported in the ui as "fooocus_warnings" (the job's status shows them)."""
    CATEGORY = "fooocus"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "expand"

    def __init__(self):
        self._expansion: FooocusExpansion | None = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True}), "seed": SEED}}

    def expand(self, text, seed):
        if self._expansion is None:
            folder = services().folders.locate(EXPANSION_FOLDER)  # the first model root that has it
            manager = services().models
            # GPT-2 runs where the diffusion models run (float32: its sampling is seeded per image)
            device = manager.device if manager is not None else "cpu"
            self._expansion = FooocusExpansion.from_folder(folder, device=device)
        result = self._expansion.expand(text, seed)
        if result.message:  # the job's status shows "fooocus_warnings" (server/fooocus/jobs.py)
            graph_context.current().log.warning("%s", result.message)
        ui = {"fooocus_warnings": [result.message]} if result.message else {}
        return {"ui": ui, "result": (result.text if result.expanded else "",)}


class FooocusKSampler:
    CATEGORY = "fooocus"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        unit = {"min": 0.0, "max": 30.0, "step": 0.01}
        return {"required": {
            "model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",), "seed": SEED,
            "steps": ("INT", {"default": 30, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1}),
            "sampler_name": (list(SAMPLER_NAMES),), "scheduler": (list(SCHEDULER_NAMES),),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "sharpness": ("FLOAT", {"default": 2.0, **unit}),
            "adaptive_cfg": ("FLOAT", {"default": 7.0, "min": 1.0, "max": 30.0, "step": 0.01}),
            "adm_scaler_positive": ("FLOAT", {"default": 1.5, "min": 0.1, "max": 3.0, "step": 0.001}),
            "adm_scaler_negative": ("FLOAT", {"default": 0.8, "min": 0.1, "max": 3.0, "step": 0.001}),
            "adm_scaler_end": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.001}),
            "freeu": ("BOOLEAN", {"default": False}),
            "freeu_b1": ("FLOAT", {"default": 1.01, "min": 0.0, "max": 10.0}),
            "freeu_b2": ("FLOAT", {"default": 1.02, "min": 0.0, "max": 10.0}),
            "freeu_s1": ("FLOAT", {"default": 0.99, "min": 0.0, "max": 10.0}),
            "freeu_s2": ("FLOAT", {"default": 0.95, "min": 0.0, "max": 10.0}),
            "refiner_switch_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "refiner_swap_method": (list(SWAP_METHODS),)},
            "optional": {"refiner_model": ("MODEL",), "refiner_positive": ("CONDITIONING",),
                         "refiner_negative": ("CONDITIONING",), "vae": ("VAE",), "refiner_vae": ("VAE",),
                         "inpaint": ("FOOOCUS_INPAINT", {"tooltip": "an encoded inpaint job: its known region is "
                                                         "held at every model call (Fooocus's inpaint blend)"})}}

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
               sharpness, adaptive_cfg, adm_scaler_positive, adm_scaler_negative, adm_scaler_end, freeu, freeu_b1,
               freeu_b2, freeu_s1, freeu_s2, refiner_switch_step, refiner_swap_method, refiner_model=None,
               refiner_positive=None, refiner_negative=None, vae=None, refiner_vae=None, inpaint=None):
        context = graph_context.current()
        if freeu:
            patch = make_freeu_patch(freeu_b1, freeu_b2, freeu_s1, freeu_s2, model.info.unet.model_channels)
            model = model.with_changes(output_block_patches=model.output_block_patches + (patch,))
        sampling, sigmas = schedule(model, scheduler, steps, denoise, sampler_name)
        if len(sigmas) < 2:
            return (dict(latent_image),)
        total = len(sigmas) - 1
        use_refiner = refiner_model is not None and refiner_switch_step < total
        if use_refiner and (refiner_positive is None or refiner_negative is None):
            if refiner_model.family != model.family:
                raise ValueError("the refiner needs refiner_positive and refiner_negative conditioning")
            # a refiner of the base's own kind (e.g. Fooocus's synthetic inpaint refiner) reads its prompts
            refiner_positive, refiner_negative = positive, negative
        refiner_positive, refiner_negative = without_controls(refiner_positive), without_controls(refiner_negative)
        run = _FooocusRun(context, sampler_name, seed, sampling, cfg, sharpness, adaptive_cfg,
                          (adm_scaler_positive, adm_scaler_negative, adm_scaler_end), total,
                          not context.extra_data.get("disable_preview", False))
        run.latent, run.inpaint = latent_image, None if inpaint is None else inpaint.encoded()
        if not use_refiner:
            return (run.single(model, positive, negative, latent_image, sigmas),)
        # Fooocus clears the transformer patches on the swap: the refiner runs without image prompts
        refiner = (refiner_model.with_changes(attn2_kv_patches=()), refiner_positive, refiner_negative)
        if refiner_swap_method == "joint":
            return (run.joint(model, positive, negative, refiner, latent_image, sigmas, refiner_switch_step),)
        if refiner_swap_method == "separate":
            return (run.separate(model, positive, negative, refiner, latent_image, sigmas, refiner_switch_step),)
        if vae is None or refiner_vae is None:
            raise ValueError("the 'vae' refiner swap needs the base vae and refiner_vae inputs")
        return (run.through_vae(model, positive, negative, refiner, latent_image, sigmas, refiner_switch_step,
                                vae, refiner_vae),)


class _FooocusRun:
    """The state shared by the parts of one Fooocus sampling run."""

    def __init__(self, context, sampler_name, seed, sampling, cfg, sharpness, adaptive_cfg, adm, total, previews):
        self.context = context
        self.sampler = get_sampler(sampler_name)
        self.seed = seed
        self.sampling = sampling
        self.guidance = Guidance(cfg, FooocusGuidance(sampling, sharpness, adaptive_cfg), adm)
        self.total = total
        self.previews = previews
        self.latent: dict = {}  # the LATENT sampled (its noise_mask, if any, holds its known region)
        self.inpaint = None  # an encoded FooocusInpaintJob: Fooocus's blend and a 9-channel UNet's input

    def _denoiser(self, model, unet, positive, negative, latent, device, dtype):
        height, width = latent.shape[-2] * 8, latent.shape[-1] * 8
        return build_denoiser(model, unet, positive, negative, self.guidance, width, height, self.sampling, device,
                              dtype, concat=self._concat(model, latent))

    def _concat(self, model, latent):
        """A 9-channel inpainting UNet's mask + masked-image channels for this run."""
        if self.inpaint is not None and model.info.is_inpaint:
            return inpaint_concat(latent.shape, self.inpaint.latent_mask, latent_to_model(model, self.inpaint.masked))
        return latent_concat(model, self.latent)

    def _hold(self, model, denoiser):
        """The known region: Fooocus's per-call blend toward the fill (noise from seed + 1) for an
        inpaint job, else ComfyUI's for a LATENT noise mask."""
        if self.inpaint is not None:
            return InpaintBlend.fooocus(denoiser, latent_to_model(model, self.inpaint.fill), self.inpaint.latent_mask,
                                        self.seed)
        if self.latent.get("noise_mask") is None:
            return denoiser
        return hold_known_region(model, denoiser, self.latent, initial_noise(self.latent, self.seed))

    def _sample(self, denoiser, x, sigmas, callback, seed, device):
        return self.sampler.sample(denoiser, x, sigmas.to(device), seed=seed, model_sampling=self.sampling,
                                   callback=callback)

    def single(self, model, positive, negative, latent, sigmas):
        samples = latent["samples"]
        with running_unet(model) as (unet, device, dtype), torch.inference_mode():
            denoiser = self._hold(model, self._denoiser(model, unet, positive, negative, samples, device, dtype))
            x = self._start(model, latent, sigmas, device)
            callback = step_callback(model, self.context.progress, self.total, self.previews)
            result = self._sample(denoiser, x, sigmas, callback, self.seed, device)
        return {**latent, "samples": latent_from_model(model, result.float().cpu())}

    def _start(self, model, latent, sigmas, device):
        return noisy_start(model, latent, sigmas, self.sampling, self.seed, device)

    def joint(self, model, positive, negative, refiner, latent, sigmas, switch):
        refiner_model, refiner_positive, refiner_negative = refiner
        samples = latent["samples"]
        # Fooocus's synthetic refiner is the base UNet itself with other patches: its weights
        # are swapped when the refiner first runs, not held by two contexts at once.
        shared = refiner_model.network is model.network
        with contextlib.ExitStack() as stack, torch.inference_mode():
            unet, device, dtype = stack.enter_context(running_unet(model))
            base = self._denoiser(model, unet, positive, negative, samples, device, dtype)
            if shared:
                second = _SwapOnFirstCall(
                    self._denoiser(refiner_model, unet, refiner_positive, refiner_negative, samples, device, dtype),
                    lambda: stack.enter_context(running_unet(refiner_model)))
            else:
                refiner_unet, _, _ = stack.enter_context(running_unet(refiner_model))
                second = self._denoiser(refiner_model, refiner_unet, refiner_positive, refiner_negative, samples,
                                        device, dtype)
            callback = step_callback(model, self.context.progress, self.total, self.previews)
            switcher = JointRefinerSwitch(base, second, switch, callback)
            result = self._sample(self._hold(model, switcher.denoiser), self._start(model, latent, sigmas, device),
                                  sigmas, switcher.callback, self.seed, device)
        return {**latent, "samples": latent_from_model(model, result.float().cpu())}

    def _base_part(self, model, positive, negative, latent, sigmas, base_sigmas):
        """The base model's share of a two-model run: from the start to the switch step."""
        with running_unet(model) as (unet, device, dtype), torch.inference_mode():
            denoiser = self._hold(model, self._denoiser(model, unet, positive, negative, latent["samples"], device,
                                                        dtype))
            callback = step_callback(model, self.context.progress, len(base_sigmas) - 1, self.previews, 0, self.total)
            return self._sample(denoiser, self._start(model, latent, sigmas, device), base_sigmas, callback,
                                self.seed, device)

    def separate(self, model, positive, negative, refiner, latent, sigmas, switch):
        refiner_model, refiner_positive, refiner_negative = refiner
        base_sigmas, refiner_sigmas = split_sigmas_for_refiner(sigmas, switch, "separate")
        samples = latent["samples"]
        x = self._base_part(model, positive, negative, latent, sigmas, base_sigmas)
        with running_unet(refiner_model) as (refiner_unet, device, dtype), torch.inference_mode():
            denoiser = self._hold(refiner_model, self._denoiser(refiner_model, refiner_unet, refiner_positive,
                                                                refiner_negative, samples, device, dtype))
            callback = step_callback(refiner_model, self.context.progress, len(refiner_sigmas) - 1, self.previews,
                                     switch, self.total)
            result = self._sample(denoiser, x, refiner_sigmas, callback, self.seed, device)
        return {**latent, "samples": latent_from_model(model, result.float().cpu())}

    def through_vae(self, model, positive, negative, refiner, latent, sigmas, switch, vae, refiner_vae):
        """Base to sigma 0, decode with the base VAE, encode with the refiner's, refine with fresh noise."""
        refiner_model, refiner_positive, refiner_negative = refiner
        base_sigmas, refiner_sigmas = split_sigmas_for_refiner(sigmas, switch, "vae")
        x = self._base_part(model, positive, negative, latent, sigmas, base_sigmas)
        images = decode_latents(vae, latent_from_model(model, x.float().cpu()))
        refined_latent = {"samples": encode_images(refiner_vae, images)}
        refiner_sampling = refiner_model.model_sampling()
        with running_unet(refiner_model) as (refiner_unet, device, dtype), torch.inference_mode():
            x = noisy_start(refiner_model, refined_latent, refiner_sigmas, refiner_sampling, self.seed + 1, device,
                            max_denoise=False)
            saved, self.sampling = self.sampling, refiner_sampling
            try:
                denoiser = self._denoiser(refiner_model, refiner_unet, refiner_positive, refiner_negative,
                                          refined_latent["samples"], device, dtype)
                callback = step_callback(refiner_model, self.context.progress, len(refiner_sigmas) - 1,
                                         self.previews, switch, self.total)
                result = self._sample(denoiser, x, refiner_sigmas, callback, self.seed + 1, device)
            finally:
                self.sampling = saved
        return {"samples": latent_from_model(refiner_model, result.float().cpu())}


class _SwapOnFirstCall:
    """A denoiser whose `enter` (putting its weights on a shared UNet) runs before its first call."""

    def __init__(self, denoiser, enter):
        self.denoiser, self.enter = denoiser, enter

    def __call__(self, x, sigma, **extra):
        if self.enter is not None:
            self.enter()
            self.enter = None
        return self.denoiser(x, sigma, **extra)


class FooocusSaveImage:
    """Saves a Fooocus job's image as files/<date>/<name>-<index>.<ext> with its metadata, through
    the App's Fooocus image writer; also listed as an ordinary output image."""
    CATEGORY = "fooocus"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "job_id": ("STRING", {"default": "fooocus"}),
                             "index": ("INT", {"default": 0, "min": 0, "max": 10000}),
                             "extension": (["png", "jpeg", "jpg", "webp"],),
                             "save_name": ("STRING", {"default": ""}),
                             "meta_scheme": (["fooocus", "a1111", "none"],),
                             "metadata": ("STRING", {"default": "{}", "multiline": True})},
                "optional": {"prompt_expansion": ("STRING", {"forceInput": True})}}

    def save(self, images, job_id, index, extension, save_name, meta_scheme, metadata, prompt_expansion=None):
        writer = services().extras.get("fooocus_writer")
        if writer is None:
            raise RuntimeError("FooocusSaveImage needs the Fooocus API's image writer (start the server with it)")
        try:
            record = json.loads(metadata) if metadata else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata must be a JSON object: {exc}") from exc
        if prompt_expansion:
            record["prompt_expansion"] = prompt_expansion
            record["full_prompt"] = list(record.get("full_prompt", [])) + [prompt_expansion]
        saved, listed = [], []
        for offset, image in enumerate(images):
            result = writer.save(tensor_to_pil(image), job_id=job_id, index=index + offset, extension=extension,
                                 save_name=save_name, scheme=meta_scheme, metadata=record)
            saved.append(result["fooocus"])
            listed.append(result["image"])
        return {"ui": {"fooocus_images": saved, "images": listed}}


NODE_CLASS_MAPPINGS = {"FooocusLoraStack": FooocusLoraStack, "FooocusTextEncode": FooocusTextEncode,
                       "FooocusPromptExpansion": FooocusPromptExpansion, "FooocusKSampler": FooocusKSampler,
                       "FooocusSaveImage": FooocusSaveImage}
NODE_DISPLAY_NAME_MAPPINGS = {"FooocusLoraStack": "Fooocus LoRA stack", "FooocusTextEncode": "Fooocus text encode",
                              "FooocusPromptExpansion": "Fooocus V2 prompt expansion",
                              "FooocusKSampler": "Fooocus KSampler", "FooocusSaveImage": "Fooocus save image"}
