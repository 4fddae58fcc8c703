"""ComfyUI's `comfy` package, mapped onto our model layer (see comfy_compat for the rules).

Only the submodules with a real mapping exist: utils, model_management, samplers, sample, sd,
cli_args, comfy_types.
"""
from comfy_compat import missing_attribute

__getattr__ = missing_attribute("comfy")
