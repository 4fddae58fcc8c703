"""One sampling run over a MODEL handle: conditioning -> denoiser -> sampler -> latent.

Shared by KSampler, KSamplerAdvanced and the Fooocus sampler. The maths lives in
models/sampling; this file only wires handles, devices, progress and previews to it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from models.conditioning import sdxl_adm, sdxl_refiner_adm
from models.inpaint.sampling import InpaintBlend, inpaint_concat, resize_mask
from models.sampling.adm import fooocus_adm_y, select_adm
from models.sampling.areas import RegionCond, has_region_keys, pair_opposite_areas, region_from_extras
from models.sampling.guidance import CFGDenoiser, standard_cfg
from models.sampling.model_sampling import make_denoiser, model_sampling_for_scheduler
from models.sampling.noise import prepare_noise
from models.sampling.registry import get_sampler, make_sigmas
from models.unclip import unclip_pooled

from .controlnet import control_residuals
from .sockets import ModelSocket
from .lora_runtime import running_unet
from .previews import make_previewer


def latent_to_model(model: ModelSocket, samples: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> the UNet's latent space (scale, and per-channel statistics for EDM files)."""
    info = model.info
    if info.latents_mean is not None and info.latents_std is not None:
        mean = torch.tensor(info.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(info.latents_std).view(1, -1, 1, 1)
        return (samples - mean) * info.latent_scale_factor / std
    return samples * info.latent_scale_factor


def latent_from_model(model: ModelSocket, latents: torch.Tensor) -> torch.Tensor:
    info = model.info
    if info.latents_mean is not None and info.latents_std is not None:
        mean = torch.tensor(info.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(info.latents_std).view(1, -1, 1, 1)
        return latents * std / info.latent_scale_factor + mean
    return latents / info.latent_scale_factor


def conditioning_kwargs(model: ModelSocket, conditioning, width: int, height: int,
                        adm_scaler: float | None = None, aesthetic_score: float = 6.0) -> dict:
    """The UNet's keyword inputs for one CONDITIONING: `context` tokens and, for SDXL, `y`."""
    if not conditioning:
        raise ValueError("empty conditioning")
    tokens, extras = conditioning[0][0], conditioning[0][1]
    kwargs = {"context": tokens}
    pooled = extras.get("pooled_output")
    if model.family == "sdxl" and extras.get("unclip_conditioning"):  # unCLIPConditioning: image embeds as pooled
        pooled = unclip_pooled(extras["unclip_conditioning"], 1280 if pooled is None else pooled.shape[-1])
    if model.family == "sdxl":
        if pooled is None:
            raise ValueError("SDXL needs pooled text output: encode the prompt with this model's CLIP")
        if adm_scaler is not None:
            kwargs["y"] = fooocus_adm_y(pooled, width, height, adm_scaler)
        else:
            kwargs["y"] = sdxl_adm(pooled, height=extras.get("height", height), width=extras.get("width", width),
                                   crop_h=extras.get("crop_h", 0), crop_w=extras.get("crop_w", 0),
                                   target_height=extras.get("target_height", height),
                                   target_width=extras.get("target_width", width))
    elif model.family == "sdxl_refiner":
        if pooled is None:
            raise ValueError("the SDXL refiner needs pooled text output from its own CLIP")
        kwargs["y"] = sdxl_refiner_adm(pooled, extras.get("height", height), extras.get("width", width),
                                       extras.get("aesthetic_score", aesthetic_score))
    if extras.get("control") is not None:  # ControlNetApply(Advanced): run per UNet call
        kwargs["control"] = extras["control"]
    if model.info.is_inpaint and ("concat_latent_image" in extras or "concat_mask" in extras):
        # InpaintModelConditioning's entries: the inpainting UNet's mask and masked-image channels
        latent = extras.get("concat_latent_image")
        kwargs["concat"] = inpaint_concat((1, model.info.latent_channels, height // 8, width // 8),
                                          extras.get("concat_mask"),
                                          None if latent is None else latent_to_model(model, latent))
    return kwargs


@dataclass
class Guidance:
    """How positive and negative predictions combine (standard CFG, or Fooocus's)."""

    cfg: float
    combine: Callable = standard_cfg
    adm_scalers: tuple[float, float, float] | None = None  # (positive, negative, end): Fooocus ADM


def build_denoiser(model: ModelSocket, unet, positive, negative, guidance: Guidance, width: int, height: int,
                   model_sampling, device, dtype, concat: torch.Tensor | None = None):
    """A CFG denoiser over `unet` (already on device) for one model and its conditioning.

    concat: a 9-channel inpainting UNet's mask + masked-image channels ([B, 5, h, w], model
    space) for conditioning that carries none; without it such a UNet gets "repaint everything"."""
    adm = guidance.adm_scalers
    adm_end = adm[2] if adm is not None and model.family == "sdxl" else None
    options = {"output_block_patch": list(model.output_block_patches),
               "input_block_patch": list(model.input_block_patches)}
    if model.attn2_kv_patches:
        options["attn2_kv_patch"] = list(model.attn2_kv_patches)

    def unet_apply(x_in, timesteps, context, y=None, concat=None, control=None, sides=None):
        if y is not None and adm_end is not None:
            y = select_adm(y, timesteps, adm_end, model.info.unet.adm_in_channels)
        call_options = options
        if "attn2_kv_patch" in options:  # kv patches pick cond/uncond tokens per row and stop by step
            call_options = {**options, "sides": sides, "timesteps": timesteps}
        if control is not None:  # the ControlNets see the 4-channel latent, as the UNet's own input
            chain, sigma = control
            residuals = control_residuals(chain, model, unet, model_sampling, sigma, x_in.to(dtype), timesteps,
                                          context.to(device, dtype), None if y is None else y.to(device, dtype))
            if residuals is not None:
                call_options = {**call_options, "control": residuals}
        if concat is not None:  # inpainting UNets: latent, then mask and masked-image latent
            x_in = torch.cat([x_in, concat.to(x_in)], dim=1)
        return unet(x_in.to(dtype), timesteps, context.to(device, dtype),
                    y=None if y is None else y.to(device, dtype), transformer_options=call_options)

    fallback = None
    if model.info.is_inpaint:
        fallback = concat if concat is not None else inpaint_concat((1, model.info.latent_channels, height // 8,
                                                                       width // 8))

    def entry_inputs(entry, adm_scaler, aesthetic: float, side: int) -> dict:
        kwargs = conditioning_kwargs(model, [entry], width, height, adm_scaler, aesthetic)
        if fallback is not None:
            kwargs.setdefault("concat", fallback)
        if model.attn2_kv_patches:  # batched by CFG along with the conditioning: 0 = cond row, 1 = uncond row
            kwargs["sides"] = torch.full((1,), float(side))
        return _on_device(kwargs, device)

    sides = [(positive, adm[0] if adm_end is not None else None, 6.0)]
    if negative is not None:
        sides.append((negative, adm[1] if adm_end is not None else None, 2.5))
    if not any(uses_regions(conditioning) for conditioning, _, _ in sides):
        # one whole-latent entry per side: the plain CFG batch, ComfyUI's result for this case
        inputs = [entry_inputs(conditioning[0], scaler, aesthetic, i) for i, (conditioning, scaler, aesthetic)
                  in enumerate(sides)]
    else:
        dims = (height // 8, width // 8)
        inputs = [[_region_on_device(region_from_extras(entry_inputs(entry, scaler, aesthetic, i), entry[1], dims,
                                                        model_sampling.percent_to_sigma), device)
                   for entry in conditioning] for i, (conditioning, scaler, aesthetic) in enumerate(sides)]
        inputs = pair_opposite_areas(inputs)
    pos, neg = inputs[0], inputs[1] if negative is not None else None
    denoiser = make_denoiser(unet_apply, model_sampling)

    def with_sigma_for_control(x, sigma, control=None, **kwargs):
        # a ControlNet's start/end range is in sigmas (ComfyUI/Fooocus), finer than the UNet's timesteps
        if control is not None:
            kwargs["control"] = (control, sigma)
        return denoiser(x, sigma, **kwargs)

    # a MODEL patched with its own CFG rule (RescaleCFG) replaces standard CFG only, as ComfyUI's
    # sampler_cfg_function does; Fooocus' guidance keeps its own rule
    combine = model.cfg_combine if model.cfg_combine is not None and guidance.combine is standard_cfg \
        else guidance.combine
    return CFGDenoiser(with_sigma_for_control, pos, neg, guidance.cfg, combine)


def uses_regions(conditioning) -> bool:
    """Whether a CONDITIONING needs ComfyUI's per-region blending: several entries (combined
    prompts), or an area, mask, strength or timestep range on one."""
    if not conditioning:
        raise ValueError("empty conditioning")
    return len(conditioning) > 1 or has_region_keys(conditioning[0][1])


def _region_on_device(region: RegionCond, device) -> RegionCond:
    return region if region.mask is None else replace(region, mask=region.mask.to(device))


def _on_device(kwargs: dict, device) -> dict:
    """Tensors moved to `device`; other values (an applied ControlNet chain) kept as they are."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def schedule(model: ModelSocket, scheduler: str, steps: int, denoise: float, sampler_name: str):
    """(model sampling used by the sampler, sigmas) for this model and scheduler."""
    base = model.model_sampling()
    sampling = model_sampling_for_scheduler(scheduler, base)
    sigmas = make_sigmas(sampling, scheduler, steps, denoise, sampler_name=sampler_name,
                         model_type="SD1" if model.family == "sd15" else "SDXL")
    return sampling, sigmas


def initial_noise(latent: dict, seed: int) -> torch.Tensor:
    samples = latent["samples"]
    return prepare_noise(samples.shape, seed, latent.get("batch_index"))


def latent_concat(model: ModelSocket, latent: dict) -> torch.Tensor | None:
    """An inpainting UNet's extra channels from a LATENT's noise mask and image (ComfyUI's fallback
    when the conditioning carries none); None for other UNets or without a noise mask."""
    if not model.info.is_inpaint or latent.get("noise_mask") is None:
        return None
    samples = latent["samples"]
    return inpaint_concat(samples.shape, latent["noise_mask"], latent_to_model(model, samples))


def hold_known_region(model: ModelSocket, denoiser, latent: dict, noise: torch.Tensor):
    """ComfyUI's LATENT["noise_mask"]: outside the mask (0) every model call sees the latent's own
    image re-noised with the sampling's noise, and predicts it unchanged."""
    mask = latent.get("noise_mask")
    if mask is None:
        return denoiser
    samples = latent["samples"]
    return InpaintBlend(denoiser, latent_to_model(model, samples), resize_mask(mask, samples.shape), noise=noise)


def noisy_start(model: ModelSocket, latent: dict, sigmas: torch.Tensor, sampling, seed: int, device,
                add_noise: bool = True, max_denoise: bool | None = None) -> torch.Tensor:
    """The sampler's first x: the latent in the model's space plus seeded noise scaled to sigmas[0]."""
    samples = latent["samples"]
    noise = initial_noise(latent, seed) if add_noise else torch.zeros_like(samples)
    if max_denoise is None:
        max_denoise = sampling.is_max_denoise(sigmas)
    return sampling.noise_scaling(sigmas[0], noise.to(device), latent_to_model(model, samples).to(device),
                                  max_denoise=max_denoise)


def sample(model: ModelSocket, positive, negative, latent: dict, *, seed: int, steps: int, guidance: Guidance,
           sampler_name: str, scheduler: str, denoise: float = 1.0, add_noise: bool = True, start_step: int = 0,
           last_step: int | None = None, force_full_denoise: bool = True, progress=None,
           previews: bool = True) -> dict:
    """ComfyUI's KSampler(Advanced) semantics; returns a new LATENT dict."""
    sampler = get_sampler(sampler_name)
    sampling, sigmas = schedule(model, scheduler, steps, denoise, sampler_name)
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0.0
    if start_step:
        if start_step >= len(sigmas) - 1:
            return dict(latent)
        sigmas = sigmas[start_step:]
    samples = latent["samples"]
    height, width = samples.shape[-2] * 8, samples.shape[-1] * 8
    with running_unet(model) as (unet, device, dtype), torch.inference_mode():
        denoiser = build_denoiser(model, unet, positive, negative, guidance, width, height, sampling, device, dtype,
                                  concat=latent_concat(model, latent))
        x = noisy_start(model, latent, sigmas, sampling, seed, device, add_noise)
        noise = initial_noise(latent, seed) if add_noise else torch.zeros_like(samples)
        denoiser = hold_known_region(model, denoiser, latent, noise)
        total = len(sigmas) - 1
        callback = step_callback(model, progress, total, previews)
        result = sampler.sample(denoiser, x, sigmas.to(device), seed=seed, model_sampling=sampling,
                                callback=callback)
        result = sampling.inverse_noise_scaling(sigmas[-1], result)
    out = dict(latent)
    out["samples"] = latent_from_model(model, result.float().cpu())
    return out


def step_callback(model: ModelSocket, progress, total: int, previews: bool, offset: int = 0, overall: int | None = None):
    """Per-step progress (with a preview image: TAESD or a linear map); an interrupt raises from inside it."""
    if progress is None:
        return None
    overall = overall or total
    previewer = make_previewer(model.family, model.info) if previews else None

    def callback(info: dict) -> None:
        # a callable: the preview is only rendered if a websocket client or a job query wants it
        preview = (lambda denoised=info["denoised"]: previewer(denoised)) if previewer is not None else None
        # Adaptive samplers (dpm_adaptive) take more steps than the schedule has: clamp, as
        # ComfyUI's progress bar does, so clients never see value > max.
        progress(offset + min(info["i"] + 1, total), overall, preview)

    return callback
