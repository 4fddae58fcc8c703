"""Refiner switching for Fooocus's three swap methods (spec fooocus_pipeline.md §6).

- joint: one sampler run; after the callback of step `switch` the denoiser becomes the refiner
  (sampler history such as DPM++ 2M momentum is kept). Base evaluates steps 0..switch.
- separate: base on sigmas[:switch+1] (no final denoise), refiner on sigmas[switch:] without new noise.
- vae: base on sigmas[:switch+1] with its last sigma forced to 0 (fully denoised); refiner (SD1.5) on
  sigmas[switch:] * 1.4 (ratio of the SD1.5 and SDXL latent scales) with fresh noise, seed + 1.
"""
from __future__ import annotations

import torch

SWAP_METHODS = ("joint", "separate", "vae")
SD15_OVER_SDXL_SIGMA_SCALE = 1.4


def refiner_switch_step(steps: int, refiner_switch: float) -> int:
    """switch = round(steps * refiner_switch) (Python rounding, as Fooocus)."""
    return int(round(steps * float(refiner_switch)))


def split_sigmas_for_refiner(sigmas: torch.Tensor, switch: int, method: str = "joint"):
    """(base_sigmas, refiner_sigmas) for the separate / vae methods; for joint the full schedule
    is returned as the base part and None for the refiner (the swap happens inside one run)."""
    if method not in SWAP_METHODS:
        raise ValueError(f"unknown refiner swap method {method!r}; valid: {', '.join(SWAP_METHODS)}")
    if method == "joint":
        return sigmas, None
    base = sigmas[:switch + 1].clone()
    refiner = sigmas[switch:].clone()
    if method == "vae":
        base[-1] = 0.0
        refiner = refiner * SD15_OVER_SDXL_SIGMA_SCALE
    return base, refiner


def sd15_refiner_partial_denoise_choice(steps: int, switch: int, denoise: float) -> str:
    """For an SD1.5 refiner at denoise <= 0.9: "base" if denoise > ((steps - switch)/steps)^0.834,
    else "refiner" (which then runs alone with its own VAE)."""
    return "base" if denoise > ((steps - switch) / steps) ** 0.834 else "refiner"


class JointRefinerSwitch:
    """Denoiser plus callback pair for the joint method.

    Use `switcher.denoiser` as the sampler's model and `switcher.callback` as its callback; the
    callback forwards to `callback` and, after step `switch`, routes later evaluations to
    `refiner`. switch >= number of steps (or refiner None) never swaps.
    """

    def __init__(self, base, refiner, switch: int, callback=None):
        self.base, self.refiner, self.switch = base, refiner, int(switch)
        self.user_callback = callback
        self.on_refiner = False

    def denoiser(self, x, sigma, **extra):
        model = self.refiner if self.on_refiner else self.base
        return model(x, sigma, **extra)

    def callback(self, info: dict) -> None:
        if self.user_callback is not None:
            self.user_callback(info)
        if self.refiner is not None and info["i"] == self.switch:
            self.on_refiner = True


def without_controls(conditioning):
    """A CONDITIONING copy with no ControlNet attached: Fooocus never runs ControlNets on the refiner."""
    if conditioning is None:
        return None
    return [[tokens, {k: v for k, v in extras.items() if k != "control"}] for tokens, extras in conditioning]
