"""Step previews: TAESD (the tiny autoencoder) when its decoder file is in vae_approx/, else a
fixed linear map from the 4 latent channels to RGB.

Which one a sampler draws follows ComfyUI's `--preview-method` (default none: no previews), or
the prompt's own `extra_data.preview_method` (ComfyUI's per-prompt override; "default" means
the server's flag). As ComfyUI does today, auto and latent2rgb both mean the linear map; taesd
means TAESD, or the linear map with a warning when its file is missing. A job owner that keeps
step previews itself (the Fooocus API's require_step_preview) marks its prompts with
JOB_PREVIEWS_KEY: they are drawn whatever the flag, with TAESD when present.

The linear factors are the least-squares fits of latent to RGB that the Stable Diffusion
community publishes for each latent space (the "latent2rgb" preview). TAESD files are the ones
ComfyUI and Fooocus look for: taesd_decoder.* (SD1.x) and taesdxl_decoder.* (SDXL). Both kinds of
preview take the UNet's latent (VAE latent * scale factor), which is what TAESD was trained on.
A preview never fails a job: any TAESD trouble logs a warning and the linear map takes over.
"""
from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from graph import context as graph_context
from models.detection import LATENT_SCALE
from models.taesd import load_taesd_decoder

from .runtime import manage, placement, services, use

log = logging.getLogger(__name__)

_FACTORS = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0273]),
}

APPROX_FOLDER = "vae_approx"
TAESD_STEMS = {"sd15": "taesd_decoder", "sdxl": "taesdxl_decoder", "sdxl_refiner": "taesdxl_decoder"}
TAESD_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt")  # most preferred first
CACHE_KEY = "taesd_decoders"  # services().extras: {file path: ((mtime, size), managed decoder | None)}

Previewer = Callable[[torch.Tensor], "Image.Image | None"]

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
PROMPT_METHOD_KEY = "preview_method"  # ComfyUI's per-prompt override in extra_data
DEFAULT_METHOD = "default"  # a per-prompt value meaning "the server's flag"
JOB_PREVIEWS_KEY = "job_step_previews"  # extra_data flag of jobs whose owner keeps step previews


def prompt_preview_method(extra_data: dict, server_default: str) -> str:
    """The preview method of one prompt: its own extra_data.preview_method, else the server's."""
    requested = extra_data.get(PROMPT_METHOD_KEY)
    if isinstance(requested, str) and requested.lower() in PREVIEW_METHODS:
        return requested.lower()
    return server_default


def running_preview_method() -> str:
    """The preview method of the prompt whose node runs now (taesd for jobs that keep previews)."""
    try:
        context = graph_context.current()
    except RuntimeError:  # a direct call outside any node (engine tests): the cheap linear map
        return "latent2rgb"
    if context.extra_data.get(JOB_PREVIEWS_KEY):
        return "taesd"
    return prompt_preview_method(context.extra_data, getattr(context.services.options, "preview_method", "none"))


def _job_keeps_previews() -> bool:
    try:
        return bool(graph_context.current().extra_data.get(JOB_PREVIEWS_KEY))
    except RuntimeError:
        return False


def latent_preview(family: str, denoised: torch.Tensor, max_size: int = 512) -> Image.Image | None:
    """RGB preview of the first latent of a batch (model space), or None for unknown layouts."""
    factors, bias = _FACTORS["sd15" if family == "sd15" else "sdxl"]
    latent = denoised[0].detach().float().cpu()
    if latent.shape[0] != len(factors):
        return None
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    array = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).byte().numpy()
    image = Image.fromarray(array)
    if max(image.size) > max_size:
        image.thumbnail((max_size, max_size))
    return image


def make_previewer(family: str, info=None, max_size: int = 512, method: str | None = None) -> Previewer | None:
    """denoised (model space) -> preview image, for one sampling run of a `family` model; None
    when the preview method is none.

    info: the model's CheckpointInfo; checkpoints with their own latent statistics (Playground
    2.5) are brought back to the standard scaled VAE space that both previews expect.
    method: one of PREVIEW_METHODS; by default the running prompt's (see the module docstring)."""
    method = running_preview_method() if method is None else method
    if method == "none":
        return None
    to_standard = _standard_space(info)

    def linear(denoised: torch.Tensor) -> Image.Image | None:
        return latent_preview(family, to_standard(denoised), max_size)

    decoder = _taesd_decoder(family) if method == "taesd" else None
    if decoder is None:
        if method == "taesd" and not _job_keeps_previews():
            log.warning("TAESD previews asked for, but vae_approx/ holds no %s.*; previewing with the linear "
                        "latent map", TAESD_STEMS.get(family, "TAESD decoder"))
        return linear
    return TAESDPreviewer(decoder, to_standard, linear, max_size)


class TAESDPreviewer:
    """Decodes the first latent with TAESD on the compute device; after a failure, warns once and
    uses the linear map for the rest of the run."""

    def __init__(self, decoder, to_standard: Callable, fallback: Previewer, max_size: int) -> None:
        self.decoder = decoder  # a managed (or Unmanaged) models.taesd.TAESDDecoder
        self.to_standard = to_standard
        self.fallback = fallback
        self.max_size = max_size
        self.failed = False

    def __call__(self, denoised: torch.Tensor) -> Image.Image | None:
        if self.failed or denoised.dim() != 4 or denoised.shape[1] != 4:
            return self.fallback(denoised)
        try:
            return self._decode(denoised)
        except Exception:
            log.warning("TAESD preview failed; using the linear latent preview for this run", exc_info=True)
            self.failed = True
            return self.fallback(denoised)

    def _decode(self, denoised: torch.Tensor) -> Image.Image:
        with use(self.decoder) as (decoder,), torch.inference_mode():
            device, dtype = placement(self.decoder)
            latent = self.to_standard(denoised[:1].detach()).to(device=device, dtype=dtype)
            # TAESD costs ~O(output pixels): decode no larger than the preview is shown (a
            # 1024px SDXL image decoded in full costs seconds per step on a CPU).
            longest = self.max_size // 8
            if max(latent.shape[-2:]) > longest:
                scale = longest / max(latent.shape[-2:])
                size = (max(1, round(latent.shape[-2] * scale)), max(1, round(latent.shape[-1] * scale)))
                latent = F.interpolate(latent, size=size, mode="area")
            rgb = decoder(latent)[0]
        array = rgb.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)


def taesd_file(folders, family: str) -> str | None:
    """The vae_approx/ file name of the TAESD decoder for `family`, or None."""
    stem = TAESD_STEMS.get(family)
    if stem is None:
        return None
    found = {}
    for name in folders.list(APPROX_FOLDER):
        path = PurePosixPath(name)
        if path.stem.lower() == stem and path.suffix.lower() in TAESD_EXTENSIONS:
            found.setdefault(path.suffix.lower(), name)
    return next((found[ext] for ext in TAESD_EXTENSIONS if ext in found), None)


def _taesd_decoder(family: str):
    """The App's loaded TAESD decoder for `family` (loaded once per file version), or None."""
    try:
        svc = services()
    except RuntimeError:  # no node is running (direct calls in tests): nothing to look in
        return None
    try:
        name = taesd_file(svc.folders, family)
        if name is None:
            return None
        path = svc.folders.path(APPROX_FOLDER, name)
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        log.warning("could not look for a TAESD decoder in %s/", APPROX_FOLDER, exc_info=True)
        return None
    cache = svc.extras.setdefault(CACHE_KEY, {})
    cached = cache.get(str(path))
    if cached is not None and cached[0] == version:
        return cached[1]
    try:
        decoder = manage(load_taesd_decoder(path), name=f"TAESD {name}")
    except Exception as error:  # a broken or foreign file: previews go on with the linear map
        log.warning("cannot use %s/%s as a TAESD decoder (%s); using the linear latent preview",
                    APPROX_FOLDER, name, error)
        decoder = None
    cache[str(path)] = (version, decoder)  # a broken file is not retried until it changes
    return decoder


def _standard_space(info) -> Callable[[torch.Tensor], torch.Tensor]:
    """Model-space latents -> VAE latent * the family's standard scale factor."""
    if info is None or info.latents_mean is None or info.latents_std is None:
        return lambda latents: latents
    standard = LATENT_SCALE.get(info.family, info.latent_scale_factor)

    def convert(latents: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(info.latents_mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        std = torch.tensor(info.latents_std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        return (latents * std / info.latent_scale_factor + mean) * standard

    return convert
