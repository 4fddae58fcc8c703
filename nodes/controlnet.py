"""ControlNet nodes (ComfyUI's names and shapes) and the control evaluated at sampling time.

A CONTROL_NET value is a `ControlNetFile`: a full ControlNet (SD1.5/SDXL, single-file or diffusers
layout) or a Control-LoRA, which becomes a ControlNet only against a base UNet's weights (built
on first use with a model, then kept). Applying one attaches an `AppliedControl` to every entry
of a CONDITIONING under "control" (ComfyUI's place); the sampler runs the chain once per UNet call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.checkpoint import CheckpointError, read_state_dict, strip_common_prefix
from models.control_lora import build_control_lora, is_control_lora
from models.controlnet import (ControlNet, detect_controlnet_config, resize_hint, scaled_residuals,
                               sum_residuals)
from models.controlnet_diffusers import controlnet_diffusers_to_ldm, is_diffusers_controlnet
from models.preprocessors import canny

from .runtime import manage, placement, services, use


class ControlNetFile:
    """A loaded control file: `network` (managed ControlNet) or `lora` (a Control-LoRA state dict)."""

    def __init__(self, name: str, network=None, lora: dict | None = None):
        self.name, self.network, self.lora = name, network, lora
        self._built: dict[int, object] = {}  # Control-LoRA: id(base network handle) -> managed ControlNet

    def network_for(self, model, unet):
        """The managed ControlNet to run with `model` (whose running UNet is `unet`)."""
        if self.lora is None:
            return self.network
        key = id(model.network)
        if key not in self._built:
            base = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in unet.state_dict().items()}
            self._built[key] = manage(build_control_lora(self.lora, base, model.info.unet, self.name),
                                      f"{self.name} (on {model.name})")
        return self._built[key]


def read_control_file(path, name: str) -> ControlNet | dict:
    """A ControlNet (LDM `control_model.`, bare LDM, diffusers layout) or a Control-LoRA's state
    dict; any other file is a CheckpointError naming it."""
    state = read_state_dict(path)
    if is_control_lora(state):
        return state
    if is_diffusers_controlnet(state):
        state = controlnet_diffusers_to_ldm(state, name)
    state = strip_common_prefix(state, ("control_model.",))
    if "input_hint_block.0.weight" not in state:
        sample = ", ".join(sorted(state)[:3]) or "none"
        raise CheckpointError(f"{name}: not a ControlNet or Control-LoRA (keys seen: {sample})")
    return ControlNet.from_state_dict(state, detect_controlnet_config(state, name))


def load_control_file(path, name: str) -> ControlNetFile:
    """read_control_file, registered with the model manager (inside a node)."""
    loaded = read_control_file(path, name)
    if isinstance(loaded, dict):
        return ControlNetFile(name, lora=loaded)
    return ControlNetFile(name, network=manage(loaded, name))


@dataclass(frozen=True, eq=False)
class AppliedControl:
    """One ControlNet applied to a conditioning, chained to the one applied before it.

    Active for calls whose sigma lies in [sigma(end_percent), sigma(start_percent)]; residuals
    scaled by strength and Fooocus's per-level softness."""

    control: ControlNetFile
    hint: torch.Tensor  # (B, C, H, W) floats in 0..1
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0
    softness: float = 0.0
    previous: "AppliedControl | None" = None
    _hints: dict = field(default_factory=dict, repr=False)

    def chain(self) -> list["AppliedControl"]:
        items, node = [], self
        while node is not None:
            items.append(node)
            node = node.previous
        return items[::-1]

    def sized_hint(self, x: torch.Tensor) -> torch.Tensor:
        """The hint at 8x the latent size on x's device, batch matching x."""
        height, width = x.shape[-2] * 8, x.shape[-1] * 8
        key = (height, width, x.device, x.dtype)
        if key not in self._hints:
            self._hints.clear()
            self._hints[key] = resize_hint(self.hint.float(), width, height).to(x.device, x.dtype)
        hint = self._hints[key]
        if hint.shape[0] == x.shape[0]:
            return hint
        if x.shape[0] % hint.shape[0]:
            raise ValueError(f"ControlNet hint batch {hint.shape[0]} does not divide latent batch {x.shape[0]}")
        return hint.repeat(x.shape[0] // hint.shape[0], 1, 1, 1)


def control_residuals(applied: AppliedControl, model, unet, model_sampling, sigma, x, timesteps, context, y):
    """Summed (inputs, middle) residuals of a control chain for one UNet call at `sigma`, or None
    when no ControlNet of the chain is active there."""
    total = None
    sigma = float(torch.as_tensor(sigma).reshape(-1)[0])
    for item in applied.chain():
        if item.strength == 0.0 or not _active(item, model_sampling, sigma):
            continue
        handle = item.control.network_for(model, unet)
        with use(handle) as (network,):
            _, dtype = placement(handle)
            inputs, middle = network(x.to(dtype), item.sized_hint(x.to(dtype)), timesteps, context.to(x.device, dtype),
                                     None if y is None else y.to(x.device, dtype))
        inputs, middle = scaled_residuals(inputs, middle, item.strength, item.softness)
        total = sum_residuals(total, (inputs, middle))
    if total is None:
        return None
    return [r.to(x.dtype) for r in total[0]], total[1].to(x.dtype)


def _active(item: AppliedControl, model_sampling, sigma: float) -> bool:
    """sigma(end_percent) <= sigma <= sigma(start_percent), as ComfyUI's timestep_range."""
    return model_sampling.percent_to_sigma(item.end_percent) <= sigma <= model_sampling.percent_to_sigma(
        item.start_percent)


def image_to_hint(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> hint [B, C, H, W] (RGB)."""
    return image[..., :3].movedim(-1, 1).float().cpu()


def apply_control(conditioning, control: ControlNetFile, image, strength: float, start_percent: float = 0.0,
                  end_percent: float = 1.0, softness: float = 0.0, hints: dict | None = None):
    """A copy of `conditioning` with `control` chained onto each entry's "control". `hints`
    shares one AppliedControl between positive and negative entries of the same previous chain,
    so the batched CFG call runs the ControlNet once."""
    hints = {} if hints is None else hints
    out = []
    for tokens, extras in conditioning:
        previous = extras.get("control")
        key = id(previous)
        if key not in hints:
            hints[key] = AppliedControl(control, image_to_hint(image), float(strength), float(start_percent),
                                        float(end_percent), float(softness), previous)
        out.append([tokens, {**extras, "control": hints[key]}])
    return out


class ControlNetLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control_net_name": ("COMBO", {"folder": "controlnet"})}}

    def load_controlnet(self, control_net_name):
        return (load_control_file(services().folders.path("controlnet", control_net_name), control_net_name),)


class DiffControlNetLoader(ControlNetLoader):
    """ComfyUI's loader that takes the model: ours binds Control-LoRAs to the model at sampling."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "control_net_name": ("COMBO", {"folder": "controlnet"})}}

    def load_controlnet(self, model, control_net_name):
        return super().load_controlnet(control_net_name)


_STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


class ControlNetApply:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
                             "image": ("IMAGE",), "strength": _STRENGTH}}

    def apply_controlnet(self, conditioning, control_net, image, strength):
        if strength == 0:
            return (conditioning,)
        return (apply_control(conditioning, control_net, image, strength),)


class ControlNetApplyAdvanced:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "control_net": ("CONTROL_NET",), "image": ("IMAGE",), "strength": _STRENGTH,
                             "start_percent": ("FLOAT", {"default": 0.0, **_PERCENT}),
                             "end_percent": ("FLOAT", {"default": 1.0, **_PERCENT})},
                "optional": {"vae": ("VAE",)}}

    def apply_controlnet(self, positive, negative, control_net, image, strength, start_percent, end_percent,
                         vae=None, softness: float = 0.0):
        if strength == 0:
            return (positive, negative)
        hints: dict = {}
        return (apply_control(positive, control_net, image, strength, start_percent, end_percent, softness, hints),
                apply_control(negative, control_net, image, strength, start_percent, end_percent, softness, hints))


class Canny:
    """ComfyUI's Canny edge image (OpenCV's Canny on 8-bit luminance; thresholds as 0..1 fractions)."""

    CATEGORY = "image/preprocessors"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "detect_edge"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "low_threshold": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}),
                             "high_threshold": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01})}}

    def detect_edge(self, image, low_threshold, high_threshold):
        out = []
        for item in image:
            rgb = np.clip(item[..., :3].cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
            edges = canny(rgb, low_threshold * 255.0, high_threshold * 255.0)
            out.append(torch.from_numpy(edges.astype(np.float32) / 255.0)[..., None].expand(-1, -1, 3))
        return (torch.stack(out),)


NODE_CLASS_MAPPINGS = {
    "ControlNetLoader": ControlNetLoader,
    "DiffControlNetLoader": DiffControlNetLoader,
    "ControlNetApply": ControlNetApply,
    "ControlNetApplyAdvanced": ControlNetApplyAdvanced,
    "Canny": Canny,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ControlNetLoader": "Load ControlNet Model",
    "DiffControlNetLoader": "Load ControlNet Model (diff)",
    "ControlNetApply": "Apply ControlNet (OLD)",
    "ControlNetApplyAdvanced": "Apply ControlNet",
    "Canny": "Canny",
}
