"""Fooocus's inpaint / outpaint steps as nodes (spec fooocus_pipeline.md §9), so the whole
procedure is a readable graph (workflows/inpaint_outpaint.json):

  LoadImage (+ mask picture) -> FooocusInpaintPrepare (mask rules, outpaint, crop, upscale, fill)
  -> FooocusInpaintEncode (masked-image, fill and latent-mask latents)
  -> FooocusInpaintEngineLoader + FooocusInpaintApply (head feature and patch on the base UNet)
  -> FooocusKSampler (inpaint= : per-call blend of the known region) -> VAEDecode
  -> FooocusInpaintComposite (resize back, feathered paste; or the debug images).

FOOOCUS_INPAINT carries one job's geometry and, once encoded, its latents; the maths lives in
models/inpaint.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from graph import context as graph_context
from models.inpaint.engine import (
    DEFAULT_ENGINE,
    ENGINE_VERSIONS,
    HEAD_FILE,
    HeadFeaturePatch,
    head_feature,
    load_fooocus_patch,
    load_inpaint_head,
    patch_as_lora,
    patch_file_for,
)
from models.inpaint.masks import (
    needs_inpaint,
    outpaint,
    outpaint_distances,
    parse_outpaint_sides,
    prepare_mask,
    to_rgb,
)
from models.inpaint.prepare import DIFFUSION_SHAPE_CEIL, FILL_ABOVE_STRENGTH, InpaintCrop, prepare_crop
from models.inpaint.sampling import fooocus_latent_mask
from models.upscaler import upscale_image

from ..inpaint import gray_out
from ..latents import MAX_RESOLUTION, encode_images
from ..runtime import services, use
from ..sampler_core import latent_to_model

INPAINT_FOLDER = "inpaint"
_SIDE_INPUTS = {"Left": "outpaint_left", "Right": "outpaint_right", "Top": "outpaint_top", "Bottom": "outpaint_bottom"}


@dataclass(frozen=True)
class FooocusInpaintJob:
    """FOOOCUS_INPAINT: the crop plan (models.inpaint.prepare.InpaintCrop) and, after
    FooocusInpaintEncode, the raw VAE latents of the fill and of the masked crop, and the latent
    mask [1, 1, h, w] (1 = repaint)."""

    crop: InpaintCrop
    fill: torch.Tensor | None = None
    masked: torch.Tensor | None = None
    latent_mask: torch.Tensor | None = None

    def encoded(self) -> "FooocusInpaintJob":
        if self.fill is None:
            raise ValueError("inpaint: this job is not encoded yet; pass it through FooocusInpaintEncode first")
        return self


@dataclass(frozen=True)
class FooocusInpaintEngine:
    """FOOOCUS_INPAINT_ENGINE: an engine version with its head and its patch (as a LoRA state
    dict); both None for "None"."""

    version: str
    head: object = None
    patch: dict | None = None


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE [H, W, C] (0..1) as uint8, rounded (exact for pixels that came from uint8)."""
    return (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)


def to_image(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 (or HxW, shown gray) -> IMAGE [1, H, W, 3]."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None]


def _with_alpha(rgb: np.ndarray, transparency: torch.Tensor | None) -> np.ndarray:
    """RGB composited on white where LoadImage's MASK (1 - alpha) says the picture is transparent."""
    if transparency is None:
        return rgb
    alpha = to_uint8(1.0 - transparency.reshape(-1, transparency.shape[-2], transparency.shape[-1])[0])
    if alpha.shape != rgb.shape[:2] or alpha.min() == 255:
        return rgb
    return to_rgb(np.concatenate([rgb, alpha[:, :, None]], axis=2))


class FooocusInpaintPrepare:
    """Mask rules, outpaint padding, respective-field crop, super-resolution of small crops,
    shape ceil and fill (spec §9.4-9.6). `denoise` is the strength the sampler must use
    (1.0 when outpainting, as Fooocus forces)."""
    CATEGORY = "fooocus/inpaint"
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", "FOOOCUS_INPAINT", "FLOAT")
    RETURN_NAMES = ("crop_image", "crop_fill", "crop_mask", "inpaint", "denoise")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        distance = ("INT", {"default": 0, "min": -1, "max": MAX_RESOLUTION,
                            "tooltip": "pixels to add on this side when it is selected; 0 or -1: 30%"})
        return {"required": {
            "image": ("IMAGE",),
            "outpaint_selections": ("STRING", {"default": "", "tooltip": "comma-separated: Left, Right, Top, Bottom"}),
            "outpaint_left": distance, "outpaint_right": distance, "outpaint_top": distance,
            "outpaint_bottom": distance,
            "respective_field": ("FLOAT", {"default": 0.618, "min": 0.0, "max": 1.0, "step": 0.001}),
            "erode_or_dilate": ("INT", {"default": 0, "min": -64, "max": 64}),
            "invert_mask": ("BOOLEAN", {"default": False}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}),
            "shape_ceil": ("INT", {"default": DIFFUSION_SHAPE_CEIL, "min": 64, "max": 4096, "step": 64})},
            "optional": {
                "mask_image": ("IMAGE", {"tooltip": "an uploaded mask picture: white (mean RGB > 127) = repaint"}),
                "mask_alpha": ("MASK", {"tooltip": "LoadImage's mask of the mask picture: transparent = repaint"}),
                "mask": ("MASK", {"tooltip": "a canvas mask (1 = repaint), max-combined with the picture"}),
                "image_alpha": ("MASK", {"tooltip": "LoadImage's mask of the image: composited on white"}),
                "upscale_model": ("UPSCALE_MODEL",)}}

    def prepare(self, image, outpaint_selections, outpaint_left, outpaint_right, outpaint_top, outpaint_bottom,
                respective_field, erode_or_dilate, invert_mask, strength, shape_ceil, mask_image=None,
                mask_alpha=None, mask=None, image_alpha=None, upscale_model=None):
        picture = _with_alpha(to_uint8(image[0])[:, :, :3], image_alpha)
        height, width = picture.shape[:2]
        uploaded = None if mask_image is None else _with_alpha(to_uint8(mask_image[0])[:, :, :3], mask_alpha)
        canvas = None if mask is None else to_uint8(mask.reshape(-1, mask.shape[-2], mask.shape[-1])[0])
        pixel_mask = prepare_mask(height, width, uploaded, canvas, erode_or_dilate, invert_mask)
        try:
            sides = parse_outpaint_sides(outpaint_selections)
        except ValueError as error:
            raise ValueError(f"outpaint_selections: {error}") from None
        if not needs_inpaint(pixel_mask, sides):
            raise ValueError("mask: nothing to inpaint: the mask has no pixel above 127 and no outpaint side is "
                             "selected (without either, Fooocus makes a plain text-to-image generation)")
        distances = {"left": outpaint_left, "right": outpaint_right, "top": outpaint_top, "bottom": outpaint_bottom}
        _check_outpaint_size(height, width, sides, distances)
        picture, pixel_mask = outpaint(picture, pixel_mask, sides, distances)
        if sides:  # Fooocus outpaints the whole picture at full strength
            strength, respective_field = 1.0, 1.0
        crop = prepare_crop(picture, pixel_mask, respective_field, use_fill=strength > FILL_ABOVE_STRENGTH,
                            upscale=None if upscale_model is None else _upscaler(upscale_model),
                            target_ceil=shape_ceil)
        crop_mask = torch.from_numpy(crop.crop_mask.astype(np.float32) / 255.0)[None]
        return (to_image(crop.crop_image), to_image(crop.crop_fill), crop_mask, FooocusInpaintJob(crop),
                float(strength))


def _check_outpaint_size(height: int, width: int, sides, distances: dict) -> None:
    grow = outpaint_distances(height, width, sides, distances)
    for axis, size, pair in (("height", height, ("Top", "Bottom")), ("width", width, ("Left", "Right"))):
        total = size + sum(grow.get(side, 0) for side in pair)
        if total > MAX_RESOLUTION:
            largest = max((side for side in pair if side in grow), key=lambda side: grow[side])
            raise ValueError(f"{_SIDE_INPUTS[largest]}: outpainting makes the image {total} pixels in {axis}; "
                             f"at most {MAX_RESOLUTION} are allowed")


def _upscaler(upscale_model):
    """The crop's super-resolution (Fooocus runs its ESRGAN on crops below the size class)."""
    def upscale(crop: np.ndarray) -> np.ndarray:
        context = graph_context.current()
        with use(upscale_model.handle):
            upscaled = upscale_image(upscale_model.descriptor, to_image(crop), check_interrupt=context.check_interrupt)
        return to_uint8(upscaled[0])

    return upscale


class FooocusInpaintEncode:
    """§9.7: the masked crop (mask pixels gray) and the fill through the VAE, and the latent mask
    (a latent cell is masked when any of its pixels is). The LATENT is where sampling starts:
    the fill, or zeros with `disable_initial_latent`."""
    CATEGORY = "fooocus/inpaint"
    RETURN_TYPES = ("LATENT", "FOOOCUS_INPAINT")
    RETURN_NAMES = ("latent", "inpaint")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("VAE",), "inpaint": ("FOOOCUS_INPAINT",),
                             "disable_initial_latent": ("BOOLEAN", {"default": False})}}

    def encode(self, vae, inpaint, disable_initial_latent):
        crop = inpaint.crop
        pixels = to_image(crop.crop_image)
        pixel_mask = torch.from_numpy(crop.crop_mask.astype(np.float32) / 255.0)[None]
        masked = encode_images(vae, gray_out(pixels, pixel_mask[:, None]))
        fill = encode_images(vae, to_image(crop.crop_fill))
        latent_mask = fooocus_latent_mask(pixel_mask, fill.shape[-2], fill.shape[-1])
        initial = torch.zeros_like(fill) if disable_initial_latent else fill
        return ({"samples": initial}, replace(inpaint, fill=fill, masked=masked, latent_mask=latent_mask))


class FooocusInpaintEngineLoader:
    """The head and the patch of an inpaint engine version from the inpaint/ folder."""
    CATEGORY = "fooocus/inpaint"
    RETURN_TYPES = ("FOOOCUS_INPAINT_ENGINE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"engine": (list(ENGINE_VERSIONS), {"default": DEFAULT_ENGINE})}}

    def load(self, engine):
        patch_name = patch_file_for(engine)
        if patch_name is None:
            return (FooocusInpaintEngine("None"),)
        head = load_inpaint_head(_inpaint_file(HEAD_FILE))
        patch = patch_as_lora(load_fooocus_patch(_inpaint_file(patch_name)))
        return (FooocusInpaintEngine(engine, head, patch),)


def _inpaint_file(name: str):
    folders = services().folders
    try:
        return folders.path(INPAINT_FOLDER, name)
    except FileNotFoundError:
        folder = folders.directories(INPAINT_FOLDER)[0]
        raise FileNotFoundError(f"engine: {name} not found in the {INPAINT_FOLDER} folder ({folder}); it comes "
                                "from the Hugging Face repo lllyasviel/fooocus_inpaint") from None


class FooocusInpaintApply:
    """The engine on the base UNet (§9.2-9.3): the patch merged like a LoRA, the head feature
    added after the first input block. `refiner_model` out is the refiner to sample the last
    steps with: the one given, else the unpatched base (Fooocus's synthetic refiner) when an
    engine is used, else nothing. Engine "None" and 9-channel inpainting UNets (which take the
    mask as input instead) leave the model as it is."""
    CATEGORY = "fooocus/inpaint"
    RETURN_TYPES = ("MODEL", "MODEL")
    RETURN_NAMES = ("model", "refiner_model")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "engine": ("FOOOCUS_INPAINT_ENGINE",),
                             "inpaint": ("FOOOCUS_INPAINT",)},
                "optional": {"refiner_model": ("MODEL",)}}

    def apply(self, model, engine, inpaint, refiner_model=None):
        if engine.head is None or model.info.is_inpaint:
            return (model, refiner_model)
        if model.family != "sdxl" or engine.head.channels != model.info.unet.model_channels:
            graph_context.current().log.warning(
                "inpaint engine %s is for SDXL UNets (%d wide); %s is %s (%d wide): inpainting without it",
                engine.version, engine.head.channels, model.name, model.family, model.info.unet.model_channels)
            return (model, refiner_model)
        job = inpaint.encoded()
        feature = head_feature(engine.head, job.latent_mask, latent_to_model(model, job.masked))
        patched = model.with_changes(loras=model.loras + ((engine.patch, 1.0),),
                                     input_block_patches=model.input_block_patches + (HeadFeaturePatch(feature),))
        return (patched, refiner_model if refiner_model is not None else model)


class FooocusInpaintComposite:
    """The generated crop resized back into its box and feathered into the (outpainted) image
    (§9.7). With `debug_preprocessor` the fill, mask and crop are returned instead and the
    image input is never computed (Fooocus's "Debug Inpaint Preprocessing")."""
    CATEGORY = "fooocus/inpaint"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"inpaint": ("FOOOCUS_INPAINT",), "image": ("IMAGE", {"lazy": True}),
                             "debug_preprocessor": ("BOOLEAN", {"default": False})}}

    def check_lazy_status(self, inpaint, debug_preprocessor, image=None):
        return [] if debug_preprocessor else ["image"]

    def composite(self, inpaint, debug_preprocessor, image=None):
        crop = inpaint.crop
        if debug_preprocessor:
            return (torch.cat([to_image(crop.crop_fill), to_image(crop.crop_mask), to_image(crop.crop_image)]),)
        return (torch.cat([to_image(crop.composite(to_uint8(single[:, :, :3]))) for single in image]),)


NODE_CLASS_MAPPINGS = {
    "FooocusInpaintPrepare": FooocusInpaintPrepare, "FooocusInpaintEncode": FooocusInpaintEncode,
    "FooocusInpaintEngineLoader": FooocusInpaintEngineLoader, "FooocusInpaintApply": FooocusInpaintApply,
    "FooocusInpaintComposite": FooocusInpaintComposite,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FooocusInpaintPrepare": "Fooocus inpaint: prepare (mask, outpaint, crop, fill)",
    "FooocusInpaintEncode": "Fooocus inpaint: encode", "FooocusInpaintEngineLoader": "Fooocus inpaint engine loader",
    "FooocusInpaintApply": "Fooocus inpaint: apply engine", "FooocusInpaintComposite": "Fooocus inpaint: composite",
}
