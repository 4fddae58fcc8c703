"""Fooocus performance modes (spec 1): step counts and the settings some modes force.

Quality and Speed only choose a step count. The three "restricted" modes (Extreme Speed,
Lightning, Hyper-SD) add a distilled LoRA after the user LoRAs and force sampler, scheduler,
CFG 1, sharpness 0, adaptive CFG 1, neutral ADM and no refiner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

QUALITY = "Quality"
SPEED = "Speed"
EXTREME_SPEED = "Extreme Speed"
LIGHTNING = "Lightning"
HYPER_SD = "Hyper-SD"
PERFORMANCE_NAMES = (QUALITY, SPEED, EXTREME_SPEED, LIGHTNING, HYPER_SD)

LCM_LORA = "sdxl_lcm_lora.safetensors"
LIGHTNING_LORA = "sdxl_lightning_4step_lora.safetensors"
HYPER_SD_LORA = "sdxl_hyper_sd_4step_lora.safetensors"


@dataclass(frozen=True)
class PerformanceMode:
    name: str
    steps: int
    uov_steps: int  # steps for Upscale 1.5x/2x (Vary uses `steps`)
    lora: Optional[tuple[str, float]] = None  # (loras-folder file name, weight)
    sampler: Optional[str] = None  # forced sampler / scheduler, None = the user's
    scheduler: Optional[str] = None

    @property
    def restricted(self) -> bool:
        return self.lora is not None


_MODES = {
    QUALITY: PerformanceMode(QUALITY, 60, 36),
    SPEED: PerformanceMode(SPEED, 30, 18),
    EXTREME_SPEED: PerformanceMode(EXTREME_SPEED, 8, 8, (LCM_LORA, 1.0), "lcm", "lcm"),
    LIGHTNING: PerformanceMode(LIGHTNING, 4, 4, (LIGHTNING_LORA, 1.0), "euler", "sgm_uniform"),
    HYPER_SD: PerformanceMode(HYPER_SD, 4, 4, (HYPER_SD_LORA, 0.8), "dpmpp_sde_gpu", "karras"),
}


def performance_mode(name: str) -> PerformanceMode:
    try:
        return _MODES[name]
    except KeyError:
        raise ValueError(f"unknown performance {name!r}; expected one of {', '.join(PERFORMANCE_NAMES)}") from None


def performance_lora_filenames() -> tuple[str, ...]:
    return tuple(mode.lora[0] for mode in _MODES.values() if mode.lora is not None)


@dataclass(frozen=True)
class SamplingSettings:
    """The settings a performance mode may override, before and after ``apply_performance``."""

    performance: str = SPEED
    sampler: str = "dpmpp_2m_sde_gpu"
    scheduler: str = "karras"
    cfg_scale: float = 4.0
    sharpness: float = 2.0
    adaptive_cfg: float = 7.0
    adm_scaler_positive: float = 1.5
    adm_scaler_negative: float = 0.8
    adm_scaler_end: float = 0.3
    refiner_model: str = "None"
    refiner_switch: float = 0.5
    steps: int = 30
    uov_steps: int = 18
    performance_lora: Optional[tuple[str, float]] = None


def apply_performance(settings: SamplingSettings) -> SamplingSettings:
    """Settings with ``settings.performance``'s steps, LoRA and forced values applied."""
    mode = performance_mode(settings.performance)
    out = replace(settings, steps=mode.steps, uov_steps=mode.uov_steps, performance_lora=mode.lora)
    if not mode.restricted:
        return out
    return replace(
        out,
        sampler=mode.sampler,
        scheduler=mode.scheduler,
        cfg_scale=1.0,
        sharpness=0.0,
        adaptive_cfg=1.0,
        adm_scaler_positive=1.0,
        adm_scaler_negative=1.0,
        adm_scaler_end=0.0,
        refiner_model="None",
        refiner_switch=1.0,
    )


@dataclass(frozen=True)
class StepPlan:
    steps: int  # sampling steps actually run
    switch: int  # step at which the refiner takes over


def plan_steps(
    mode: PerformanceMode,
    *,
    refiner_switch: float,
    upscale: bool = False,
    overwrite_step: int = -1,
    overwrite_switch: float = -1.0,
) -> StepPlan:
    """Step count and refiner switch step.

    The switch is computed from the mode's step count (the upscale count for Upscale 1.5x/2x)
    *before* "overwrite_step" replaces the step count (spec gotcha); "overwrite_switch" > 0 is a
    fraction of that same count.
    """
    base = mode.uov_steps if upscale else mode.steps
    switch = int(round(base * refiner_switch))
    if overwrite_switch > 0:
        switch = int(base * overwrite_switch)
    steps = int(overwrite_step) if overwrite_step > 0 else base
    return StepPlan(steps=steps, switch=switch)
