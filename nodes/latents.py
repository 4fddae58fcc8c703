"""Latent nodes: empty latents and the VAE between images and latents.

IMAGE is [B, H, W, C] float in 0..1 (ComfyUI's layout); LATENT is {"samples": [B, C, h, w]} raw
VAE latents (the MODEL scales them for sampling).
"""
from __future__ import annotations

import torch

from .lora_runtime import running_vae

LATENT_CHANNELS = 4
MAX_RESOLUTION = 16384


def images_to_vae(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] in 0..1 -> [B, 3, H, W] in -1..1, centre-cropped to multiples of 8 (as ComfyUI's
    and Fooocus' VAE encoders crop)."""
    height, width = images.shape[1] // 8 * 8, images.shape[2] // 8 * 8
    top, left = (images.shape[1] % 8) // 2, (images.shape[2] % 8) // 2
    return images[:, top:top + height, left:left + width, :3].movedim(-1, 1) * 2.0 - 1.0


def vae_to_images(decoded: torch.Tensor) -> torch.Tensor:
    return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()


def decode_latents(vae_handle, samples: torch.Tensor, tiled: bool = False, tile_size: int = 64,
                   overlap: int = 16) -> torch.Tensor:
    with running_vae(vae_handle) as (vae, device, dtype), torch.inference_mode():
        decoded = vae.decode(samples.to(device, dtype), tiled=tiled, tile_size=tile_size,
                                                overlap=overlap)
    return vae_to_images(decoded)


def encode_images(vae_handle, images: torch.Tensor, tiled: bool = False, tile_size: int = 512,
                  overlap: int = 64) -> torch.Tensor:
    with running_vae(vae_handle) as (vae, device, dtype), torch.inference_mode():
        latents = vae.encode(images_to_vae(images).to(device, dtype), tiled=tiled,
                                               tile_size=tile_size, overlap=overlap)
    return latents.float().cpu()


class EmptyLatentImage:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                             "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def generate(self, width, height, batch_size=1):
        return ({"samples": torch.zeros([batch_size, LATENT_CHANNELS, height // 8, width // 8])},)


class VAEDecode:
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    def decode(self, vae, samples):
        return (decode_latents(vae, samples["samples"]),)


class VAEDecodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",),
                             "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
                             "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32})}}

    def decode(self, vae, samples, tile_size=512, overlap=64):
        if overlap >= tile_size:
            raise ValueError(f"overlap ({overlap}) must be smaller than tile_size ({tile_size})")
        return (decode_latents(vae, samples["samples"], tiled=True, tile_size=tile_size // 8,
                               overlap=overlap // 8),)


class VAEEncode:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    def encode(self, vae, pixels):
        return ({"samples": encode_images(vae, pixels)},)


class VAEEncodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",),
                             "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
                             "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32})}}

    def encode(self, vae, pixels, tile_size=512, overlap=64):
        if overlap >= tile_size:
            raise ValueError(f"overlap ({overlap}) must be smaller than tile_size ({tile_size})")
        return ({"samples": encode_images(vae, pixels, tiled=True, tile_size=tile_size, overlap=overlap)},)


NODE_CLASS_MAPPINGS = {"EmptyLatentImage": EmptyLatentImage, "VAEDecode": VAEDecode, "VAEDecodeTiled": VAEDecodeTiled,
                       "VAEEncode": VAEEncode, "VAEEncodeTiled": VAEEncodeTiled}
NODE_DISPLAY_NAME_MAPPINGS = {"EmptyLatentImage": "Empty Latent Image", "VAEDecode": "VAE Decode",
                              "VAEEncode": "VAE Encode"}
