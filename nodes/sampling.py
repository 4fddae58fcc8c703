"""ComfyUI's sampler nodes."""
from __future__ import annotations

from graph import context as graph_context
from models.sampling.registry import EXTRA_SAMPLER_NAMES, EXTRA_SCHEDULER_NAMES, SAMPLER_NAMES, SCHEDULER_NAMES

from .sampler_core import Guidance, sample

SAMPLERS = list(SAMPLER_NAMES + EXTRA_SAMPLER_NAMES)
SCHEDULERS = list(SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES)
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})


def node_progress():
    context = graph_context.current()
    return context.progress


class KSampler:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "seed": SEED,
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0):
        return (sample(model, positive, negative, latent_image, seed=seed, steps=steps, guidance=Guidance(cfg),
                       sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, progress=node_progress()),)


class KSamplerAdvanced:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "add_noise": (["enable", "disable"],), "noise_seed": SEED,
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "return_with_leftover_noise": (["disable", "enable"],)}}

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        return (sample(model, positive, negative, latent_image, seed=noise_seed, steps=steps, guidance=Guidance(cfg),
                       sampler_name=sampler_name, scheduler=scheduler, add_noise=add_noise == "enable",
                       start_step=start_at_step, last_step=end_at_step,
                       force_full_denoise=return_with_leftover_noise != "enable", progress=node_progress()),)


NODE_CLASS_MAPPINGS = {"KSampler": KSampler, "KSamplerAdvanced": KSamplerAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {"KSampler": "KSampler", "KSamplerAdvanced": "KSampler (Advanced)"}
