"""ComfyUI's GUIDER nodes: CFGGuider, BasicGuider, DualCFGGuider, PerpNegGuider.

A GUIDER value is a MODEL plus its conditionings and a rule. At sampling time
(`nodes.custom_sampling.sample_with_guider`) it gets `build(positive, negative, guidance)`, the
sampler core's conditioning evaluation (`sampler_core.build_denoiser` bound to the running UNet and
latent), and returns the k-diffusion denoiser. Multi-prompt rules prepare each conditioning with
it and evaluate them together per step (guidance.evaluate_conditions), mixing their x0 predictions
(models/sampling/guiders.py), so whatever the core evaluates for a conditioning (ControlNet, areas,
masks) applies to every guider alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.sampling.guidance import standard_cfg
from models.sampling.guiders import DualCFGDenoiser, PerpNegDenoiser

from .sampler_core import Guidance
from .sockets import ModelSocket

CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})


def _prepared(build, conditionings):
    """The sampler core's conditioned denoiser and each conditioning's prepared inputs: one
    single-prompt build_denoiser per conditioning (so areas, masks and ControlNets are read as the
    core reads them), evaluated together per step by the guider."""
    singles = [build(conditioning, None, Guidance(1.0)) for conditioning in conditionings]
    return singles[0].denoiser, [single.positive for single in singles]


@dataclass(frozen=True, eq=False)
class CFGGuide:
    """CFGGuider (and BasicGuider: no negative, scale 1): exactly the KSampler's guidance."""

    model: ModelSocket
    positive: Any
    negative: Any
    cfg: float

    def make_denoiser(self, build):
        return build(self.positive, self.negative, Guidance(self.cfg))


@dataclass(frozen=True, eq=False)
class DualCFGGuide:
    model: ModelSocket
    cond1: Any
    cond2: Any
    negative: Any
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool

    def make_denoiser(self, build):
        denoiser, sides = _prepared(build, (self.cond1, self.cond2, self.negative))
        return DualCFGDenoiser(denoiser, *sides, self.cfg_conds, self.cfg_cond2_negative, self.nested,
                               self.model.cfg_combine or standard_cfg)


@dataclass(frozen=True, eq=False)
class PerpNegGuide:
    model: ModelSocket
    positive: Any
    negative: Any
    empty: Any
    cfg: float
    neg_scale: float

    def make_denoiser(self, build):
        denoiser, sides = _prepared(build, (self.positive, self.negative, self.empty))
        return PerpNegDenoiser(denoiser, *sides, self.cfg, self.neg_scale)


class CFGGuider:
    CATEGORY = "sampling/guiders"
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": CFG}}

    def get_guider(self, model, positive, negative, cfg):
        return (CFGGuide(model, positive, negative, cfg),)


class BasicGuider:
    CATEGORY = "sampling/guiders"
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    def get_guider(self, model, conditioning):
        return (CFGGuide(model, conditioning, None, 1.0),)


class DualCFGGuider:
    CATEGORY = "sampling/guiders"
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "cfg_conds": CFG, "cfg_cond2_negative": CFG,
                             "style": (["regular", "nested"],)}}

    def get_guider(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style="regular"):
        return (DualCFGGuide(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style == "nested"),)


class PerpNegGuider:
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "empty_conditioning": ("CONDITIONING",), "cfg": CFG,
                             "neg_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01})}}

    def get_guider(self, model, positive, negative, empty_conditioning, cfg, neg_scale):
        return (PerpNegGuide(model, positive, negative, empty_conditioning, cfg, neg_scale),)


NODE_CLASS_MAPPINGS = {"CFGGuider": CFGGuider, "BasicGuider": BasicGuider, "DualCFGGuider": DualCFGGuider,
                       "PerpNegGuider": PerpNegGuider}
NODE_DISPLAY_NAME_MAPPINGS = {"CFGGuider": "CFG Guider", "BasicGuider": "Basic Guider",
                              "DualCFGGuider": "Dual CFG Guider", "PerpNegGuider": "PerpNegGuider"}
