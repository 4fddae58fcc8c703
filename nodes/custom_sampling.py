"""ComfyUI's custom-sampling nodes: schedulers (SIGMAS), sigma tools, samplers (SAMPLER), noise
(NOISE) and the SamplerCustom / SamplerCustomAdvanced nodes that run them with a GUIDER.

Socket values: SIGMAS is a 1-D float32 CPU tensor (descending, usually ending in 0); SAMPLER a
`models.sampling.registry.Sampler` (with its options); NOISE a `RandomNoiseSource` or `NoNoise`;
GUIDER one of nodes/guiders.py. The run itself reuses the sampler core's pieces (latent scaling,
noise scaling, the LATENT noise mask, progress and previews) so that CFGGuider + KSamplerSelect +
BasicScheduler + RandomNoise is exactly KSampler.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from models.sampling import schedules
from models.sampling.noise import prepare_noise
from models.sampling.registry import get_sampler, make_sigmas

from .guiders import CFGGuide
from .lora_runtime import running_unet
from .sampler_core import (build_denoiser, hold_known_region, latent_concat, latent_from_model, latent_to_model,
                           step_callback)
from .sampling import SAMPLERS, SEED, node_progress

# ComfyUI's comfy.samplers.SCHEDULER_NAMES, in its order (what its BasicScheduler offers)
COMFY_SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]
STEPS = ("INT", {"default": 20, "min": 1, "max": 10000})
DENOISE = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})


def _sigma_input(default: float, maximum: float = 5000.0):
    return ("FLOAT", {"default": default, "min": 0.0, "max": maximum, "step": 0.01, "round": False,
                      "advanced": True})


SIGMA_MAX = _sigma_input(14.614642)
SIGMA_MIN = _sigma_input(0.0291675)
ETA = _sigma_input(1.0, 100.0)
S_NOISE = _sigma_input(1.0, 100.0)
NOISE_DEVICE = (["gpu", "cpu"], {"advanced": True})


# --- NOISE -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomNoiseSource:
    """Seeded initial noise, as KSampler draws it (batch_index honoured)."""

    seed: int

    def generate(self, latent: dict) -> torch.Tensor:
        return prepare_noise(latent["samples"].shape, self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class NoNoise:
    """DisableNoise: zeros; the samplers' own noise is then seeded with 0 (ComfyUI's rule)."""

    seed: int = 0

    def generate(self, latent: dict) -> torch.Tensor:
        return torch.zeros_like(latent["samples"])


# --- the run -----------------------------------------------------------------------------------
def sample_with_guider(guider, sampler, sigmas: torch.Tensor, noise: torch.Tensor, seed: int, latent: dict,
                       progress=None, previews: bool = True) -> tuple[dict, dict]:
    """(output, denoised_output) LATENTs of one custom-sampling run (ComfyUI's guider.sample).

    denoised_output is the last step's x0 prediction; with no step to take both are the output."""
    if len(sigmas) == 0:  # ComfyUI returns the latent untouched for empty sigmas
        return dict(latent), dict(latent)
    model = guider.model
    samples = latent["samples"]
    height, width = samples.shape[-2] * 8, samples.shape[-1] * 8
    sampling = model.model_sampling()
    last = {}
    with running_unet(model) as (unet, device, dtype), torch.inference_mode():
        concat = latent_concat(model, latent)

        def build(positive, negative, guidance):
            return build_denoiser(model, unet, positive, negative, guidance, width, height, sampling, device,
                                  dtype, concat=concat)

        denoiser = hold_known_region(model, guider.make_denoiser(build), latent, noise)
        x = sampling.noise_scaling(sigmas[0], noise.to(device), latent_to_model(model, samples).to(device),
                                   max_denoise=sampling.is_max_denoise(sigmas))
        report = step_callback(model, progress, len(sigmas) - 1, previews)

        def callback(info: dict) -> None:
            last["x0"] = info["denoised"]
            if report is not None:
                report(info)

        result = sampler.sample(denoiser, x, sigmas.to(device), seed=seed, model_sampling=sampling,
                                callback=callback)
        result = sampling.inverse_noise_scaling(sigmas[-1], result)
    out = dict(latent)
    out["samples"] = latent_from_model(model, result.float().cpu())
    if "x0" not in last:
        return out, out
    denoised = dict(latent)
    denoised["samples"] = latent_from_model(model, last["x0"].float().cpu())
    return out, denoised


class SamplerCustom:
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "add_noise": ("BOOLEAN", {"default": True, "advanced": True}), "noise_seed": SEED,
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "sampler": ("SAMPLER",),
            "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    def sample(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        source = RandomNoiseSource(noise_seed) if add_noise else NoNoise()
        # the samplers' own noise follows noise_seed even without initial noise (ComfyUI passes it)
        return sample_with_guider(CFGGuide(model, positive, negative, cfg), sampler, sigmas,
                                  source.generate(latent_image), noise_seed, latent_image, node_progress())


class SamplerCustomAdvanced:
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                             "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    def sample(self, noise, guider, sampler, sigmas, latent_image):
        return sample_with_guider(guider, sampler, sigmas, noise.generate(latent_image), noise.seed, latent_image,
                                  node_progress())


class RandomNoise:
    CATEGORY = "sampling/noise"
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise_seed": SEED}}

    def get_noise(self, noise_seed):
        return (RandomNoiseSource(noise_seed),)


class DisableNoise:
    CATEGORY = "sampling/noise"
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_noise(self):
        return (NoNoise(),)


# --- SIGMAS ------------------------------------------------------------------------------------
class _Scheduler:
    CATEGORY = "sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"


def _model_type(model) -> str:
    return "SD1" if model.family == "sd15" else "SDXL"


class BasicScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scheduler": (COMFY_SCHEDULERS,), "steps": STEPS,
                             "denoise": DENOISE}}

    def get_sigmas(self, model, scheduler, steps, denoise):
        # KSampler's rule: int(steps / denoise) scheduled, the last steps + 1 kept, nothing at denoise 0
        return (make_sigmas(model.model_sampling(), scheduler, steps, denoise, model_type=_model_type(model)),)


class KarrasScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "rho": _sigma_input(7.0, 100.0)}}

    def get_sigmas(self, steps, sigma_max, sigma_min, rho):
        return (schedules.karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN}}

    def get_sigmas(self, steps, sigma_max, sigma_min):
        return (schedules.exponential_sigmas(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": STEPS, "sigma_max": SIGMA_MAX, "sigma_min": SIGMA_MIN,
                             "rho": _sigma_input(1.0, 100.0)}}

    def get_sigmas(self, steps, sigma_max, sigma_min, rho):
        return (schedules.polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


class SDTurboScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "steps": ("INT", {"default": 1, "min": 1, "max": 10}),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, model, steps, denoise):
        return (schedules.sd_turbo_sigmas(model.model_sampling(), steps, denoise),)


class BetaSamplingScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "steps": STEPS, "alpha": _sigma_input(0.6, 50.0),
                             "beta": _sigma_input(0.6, 50.0)}}

    def get_sigmas(self, model, steps, alpha, beta):
        return (schedules.beta_sigmas(model.model_sampling(), steps, alpha, beta),)


class AlignYourStepsScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_type": (["SD1", "SDXL", "SVD"],),
                             "steps": ("INT", {"default": 10, "min": 1, "max": 10000}), "denoise": DENOISE}}

    def get_sigmas(self, model_type, steps, denoise):
        if denoise <= 0.0:
            return (torch.zeros(0),)
        sigmas = schedules.align_your_steps_sigmas(steps, model_type)
        # unlike BasicScheduler, AYS keeps its table and takes its last round(steps * denoise) steps
        kept = steps if denoise >= 1.0 else round(steps * denoise)
        return (sigmas[-(kept + 1):].clone(),)


class _SigmaTool:
    CATEGORY = "sampling/sigmas"
    FUNCTION = "get_sigmas"


class SplitSigmas(_SigmaTool):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}}

    def get_sigmas(self, sigmas, step):
        return sigmas[:step + 1], sigmas[step:]


class SplitSigmasDenoise(_SigmaTool):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",), "denoise": DENOISE}}

    def get_sigmas(self, sigmas, denoise):
        steps = max(sigmas.shape[-1] - 1, 0)
        low_steps = round(steps * denoise)
        # ComfyUI's slices as written: at denoise 0, sigmas[:-0] is empty and low keeps the last sigma
        return sigmas[:-low_steps], sigmas[-(low_steps + 1):]


class FlipSigmas(_SigmaTool):
    RETURN_TYPES = ("SIGMAS",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}}

    def get_sigmas(self, sigmas):
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:  # an ascending schedule cannot start at 0: samplers divide by sigma
            flipped[0] = 0.0001
        return (flipped,)


# --- SAMPLER -----------------------------------------------------------------------------------
class _SamplerNode:
    CATEGORY = "sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"


class KSamplerSelect(_SamplerNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler_name": (SAMPLERS,)}}

    def get_sampler(self, sampler_name):
        return (get_sampler(sampler_name),)


def _with_options(name: str, **options):
    sampler = get_sampler(name)
    return replace(sampler, options={**sampler.options, **options})


class SamplerEulerAncestral(_SamplerNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"eta": ETA, "s_noise": S_NOISE}}

    def get_sampler(self, eta, s_noise):
        return (_with_options("euler_ancestral", eta=eta, s_noise=s_noise),)


class SamplerLMS(_SamplerNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"order": ("INT", {"default": 4, "min": 1, "max": 100, "advanced": True})}}

    def get_sampler(self, order):
        return (_with_options("lms", order=order),)


class SamplerDPMPP_2M_SDE(_SamplerNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"solver_type": (["midpoint", "heun"],), "eta": ETA, "s_noise": S_NOISE,
                             "noise_device": NOISE_DEVICE}}

    def get_sampler(self, solver_type, eta, s_noise, noise_device):
        name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return (_with_options(name, eta=eta, s_noise=s_noise, solver_type=solver_type),)


class SamplerDPMPP_SDE(_SamplerNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"eta": ETA, "s_noise": S_NOISE, "r": _sigma_input(0.5, 100.0),
                             "noise_device": NOISE_DEVICE}}

    def get_sampler(self, eta, s_noise, r, noise_device):
        name = "dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu"
        return (_with_options(name, eta=eta, s_noise=s_noise, r=r),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    SamplerCustom, SamplerCustomAdvanced, RandomNoise, DisableNoise, BasicScheduler, KarrasScheduler,
    ExponentialScheduler, PolyexponentialScheduler, SDTurboScheduler, BetaSamplingScheduler,
    AlignYourStepsScheduler, SplitSigmas, SplitSigmasDenoise, FlipSigmas, KSamplerSelect, SamplerEulerAncestral,
    SamplerLMS, SamplerDPMPP_2M_SDE, SamplerDPMPP_SDE)}
