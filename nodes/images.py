"""Image nodes: load from input/, save to output/ (ComfyUI naming and PNG text), previews,
scaling and the websocket image sink."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

from graph import context as graph_context

from .runtime import services

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_PIL_RESAMPLE = {"nearest-exact": Image.NEAREST, "bilinear": Image.BILINEAR, "area": Image.BOX,
                 "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    array = (image.detach().float().cpu().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    tokens = {"%year%": f"{now.tm_year}", "%month%": f"{now.tm_mon:02d}", "%day%": f"{now.tm_mday:02d}",
              "%hour%": f"{now.tm_hour:02d}", "%minute%": f"{now.tm_min:02d}", "%second%": f"{now.tm_sec:02d}",
              "%width%": str(width), "%height%": str(height)}
    for token, value in tokens.items():
        prefix = prefix.replace(token, value)
    return prefix


def output_path_for(base: Path, prefix: str) -> tuple[Path, str, int]:
    """(folder, file stem, next counter) for `prefix` under `base`; refuses prefixes that leave it."""
    base = base.resolve()
    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
    folder = (base / subfolder).resolve()
    if folder != base and base not in folder.parents:
        raise ValueError(f"filename_prefix {prefix!r} would save outside the output folder")
    if not stem:
        raise ValueError("filename_prefix must end with a file name")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(stem) + r"_(\d+)_\.png$")
    counters = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.match(name))]
    return folder, stem, max(counters, default=0) + 1


def save_images(images: torch.Tensor, prefix: str, base: Path, kind: str, prompt=None, extra_pnginfo=None,
                compress_level: int = 4) -> list[dict]:
    height, width = int(images.shape[1]), int(images.shape[2])
    folder, stem, counter = output_path_for(base, expand_prefix(prefix, width, height))
    subfolder = folder.relative_to(base.resolve()).as_posix() if folder != base.resolve() else ""
    results = []
    for image in images:
        info = PngImagePlugin.PngInfo()
        if prompt is not None:
            info.add_text("prompt", json.dumps(prompt))
        for key, value in (extra_pnginfo or {}).items():
            info.add_text(key, json.dumps(value))
        name = f"{stem}_{counter:05d}_.png"
        tensor_to_pil(image).save(folder / name, pnginfo=info, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


class SaveImage:
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    DESCRIPTION = "Saves images to the output folder as <prefix>_00001_.png with the workflow in PNG text."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        results = save_images(images, filename_prefix, Path(services().output_dir), "output", prompt, extra_pnginfo)
        return {"ui": {"images": results}}


class PreviewImage:
    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, prompt=None, extra_pnginfo=None):
        suffix = f"ComfyUI_temp_{os.urandom(3).hex()}"
        results = save_images(images, suffix, Path(services().temp_dir), "temp", prompt, extra_pnginfo, 1)
        return {"ui": {"images": results}}


class SaveImageWebsocket:
    """Sends each image as a full-size PNG frame to the submitter's websocket; saves nothing."""
    CATEGORY = "api node/image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    @classmethod
    def IS_CHANGED(cls, images=None):
        return time.time()

    def save_images(self, images):
        context = graph_context.current()
        for index, image in enumerate(images):
            context.progress(index + 1, len(images))
            context.send_binary_image(tensor_to_pil(image))
        return {}


class LoadImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("COMBO", {"folder": "__input__", "image_upload": True})}}

    @classmethod
    def IS_CHANGED(cls, image=None):
        """A new upload under the same name must re-run the graph: the file's size and mtime count."""
        path = Path(services().input_dir) / str(image)
        stat = path.stat() if path.is_file() else None
        return f"{image}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(image)

    def load_image(self, image):
        base = Path(services().input_dir).resolve()
        path = (base / image).resolve()
        if base not in path.parents or not path.is_file():
            raise FileNotFoundError(f"input image {image!r} not found in the input folder")
        with Image.open(path) as opened:
            opened = ImageOps.exif_transpose(opened)
            pixels = pil_to_tensor(opened)[None]
            if "A" in opened.getbands():
                alpha = torch.from_numpy(np.asarray(opened.getchannel("A"), dtype=np.float32) / 255.0)
                mask = 1.0 - alpha
            else:
                mask = torch.zeros(pixels.shape[1:3], dtype=torch.float32)
        return (pixels, mask[None])


class ImageScale:
    CATEGORY = "image/upscaling"
    upscale_methods = UPSCALE_METHODS  # ComfyUI's class attribute, read by custom-node packs
    crop_methods = ["disabled", "center"]
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
                             "width": ("INT", {"default": 512, "min": 0, "max": 16384, "step": 1}),
                             "height": ("INT", {"default": 512, "min": 0, "max": 16384, "step": 1}),
                             "crop": (["disabled", "center"],)}}

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        source_h, source_w = int(image.shape[1]), int(image.shape[2])
        width = width or max(1, round(source_w * height / source_h))
        height = height or max(1, round(source_h * width / source_w))
        results = []
        for single in image:
            pil = tensor_to_pil(single)
            if crop == "center":
                pil = ImageOps.fit(pil, (width, height), method=_PIL_RESAMPLE[upscale_method])
            else:
                pil = pil.resize((width, height), _PIL_RESAMPLE[upscale_method])
            results.append(pil_to_tensor(pil))
        return (torch.stack(results),)


NODE_CLASS_MAPPINGS = {"SaveImage": SaveImage, "PreviewImage": PreviewImage, "SaveImageWebsocket": SaveImageWebsocket,
                       "LoadImage": LoadImage, "ImageScale": ImageScale}
NODE_DISPLAY_NAME_MAPPINGS = {"SaveImage": "Save Image", "PreviewImage": "Preview Image", "LoadImage": "Load Image",
                              "ImageScale": "Upscale Image"}
