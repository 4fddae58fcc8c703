"""ComfyUI's MODEL patch nodes: ModelSamplingDiscrete, RescaleCFG, FreeU, FreeU_V2.

Each returns a changed copy of the MODEL socket (the network is shared, nothing is mutated):
a replacement model sampling, a CFG combine rule, or a UNet output-block patch. The maths lives in
models/sampling (model_sampling.py, guiders.py, freeu.py).
"""
from __future__ import annotations

from models.sampling.freeu import make_freeu_patch
from models.sampling.guiders import make_rescale_cfg
from models.sampling.model_sampling import DiscreteModelSampling, DistilledModelSampling

# ComfyUI's sampling names -> our prediction names
PREDICTION_BY_SAMPLING = {"eps": "eps", "v_prediction": "v", "lcm": "lcm", "x0": "x0"}


class ModelSamplingDiscrete:
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "sampling": (list(PREDICTION_BY_SAMPLING),),
                             "zsnr": ("BOOLEAN", {"default": False, "advanced": True})}}

    def patch(self, model, sampling, zsnr):
        # SD1.5 and SDXL share the scaled-linear betas; lcm reads the distilled 50-step table
        if sampling == "lcm":
            table = DistilledModelSampling("lcm", zero_terminal_snr=zsnr)
        else:
            table = DiscreteModelSampling(PREDICTION_BY_SAMPLING[sampling], zero_terminal_snr=zsnr)
        return (model.with_changes(sampling_override=table),)


class RescaleCFG:
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def patch(self, model, multiplier):
        return (model.with_changes(cfg_combine=make_rescale_cfg(multiplier)),)


def _freeu_inputs(b1: float, b2: float, s1: float, s2: float) -> dict:
    def factor(default):
        return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01})

    return {"required": {"model": ("MODEL",), "b1": factor(b1), "b2": factor(b2), "s1": factor(s1),
                         "s2": factor(s2)}}


class FreeU:
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    VERSION = 1

    @classmethod
    def INPUT_TYPES(cls):
        return _freeu_inputs(1.1, 1.2, 0.9, 0.2)

    def patch(self, model, b1, b2, s1, s2):
        patch = make_freeu_patch(b1, b2, s1, s2, model_channels=model.info.unet.model_channels,
                                 version=self.VERSION)
        return (model.with_changes(output_block_patches=model.output_block_patches + (patch,)),)


class FreeU_V2(FreeU):
    VERSION = 2

    @classmethod
    def INPUT_TYPES(cls):
        return _freeu_inputs(1.3, 1.4, 0.9, 0.2)


NODE_CLASS_MAPPINGS = {"ModelSamplingDiscrete": ModelSamplingDiscrete, "RescaleCFG": RescaleCFG, "FreeU": FreeU,
                       "FreeU_V2": FreeU_V2}
