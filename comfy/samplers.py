"""ComfyUI's `comfy.samplers`: the sampler and scheduler names, and sigma schedules."""
from __future__ import annotations

from comfy_compat import missing_attribute, not_provided
from nodes.sampling import SAMPLERS, SCHEDULERS

__getattr__ = missing_attribute("comfy.samplers")
SAMPLER_NAMES = list(SAMPLERS)
SCHEDULER_NAMES = list(SCHEDULERS)
KSAMPLER_NAMES = list(SAMPLERS)


class KSampler:
    """The name lists packs read (KSampler.SAMPLERS / SCHEDULERS). Sampling itself goes through
    nodes.common_ksampler: ComfyUI's KSampler object model is not ours."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES

    def __init__(self, *args, **kwargs) -> None:
        raise not_provided("comfy.samplers.KSampler(...)", "sample with nodes.common_ksampler")


def calculate_sigmas(model_sampling, scheduler_name: str, steps: int):
    """The sigma schedule of `scheduler_name` for a model's sampling (our ModelSampling)."""
    from models.sampling.registry import make_sigmas

    return make_sigmas(model_sampling, scheduler_name, steps)
