"""The custom-sampling, guider, model-patch and advanced-loader nodes as ComfyUI declares them:
their /object_info shape, and ComfyUI's validation errors for bad inputs to each of them
(wrong link types, values out of range, unconvertible values, unknown options, missing inputs)."""
from __future__ import annotations

import pytest

from graph import validate_prompt
from graph.registry import NodeRegistry
from nodes import register_builtin_nodes

LATENTS = ["LATENT", "LATENT"]
# name: (category, display name, required inputs in order, optional inputs, outputs, output names)
COMFYUI = {
    "SamplerCustom": ("sampling/custom_sampling", "SamplerCustom",
                      ["model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas",
                       "latent_image"], [], LATENTS, ["output", "denoised_output"]),
    "SamplerCustomAdvanced": ("sampling/custom_sampling", "SamplerCustomAdvanced",
                              ["noise", "guider", "sampler", "sigmas", "latent_image"], [], LATENTS,
                              ["output", "denoised_output"]),
    "KSamplerSelect": ("sampling/samplers", "KSamplerSelect", ["sampler_name"], [], ["SAMPLER"], None),
    "SamplerEulerAncestral": ("sampling/samplers", "SamplerEulerAncestral", ["eta", "s_noise"], [], ["SAMPLER"],
                              None),
    "SamplerDPMPP_2M_SDE": ("sampling/samplers", "SamplerDPMPP_2M_SDE", ["solver_type", "eta", "s_noise",
                                                                        "noise_device"], [], ["SAMPLER"], None),
    "SamplerDPMPP_SDE": ("sampling/samplers", "SamplerDPMPP_SDE", ["eta", "s_noise", "r", "noise_device"], [],
                         ["SAMPLER"], None),
    "SamplerLMS": ("sampling/samplers", "SamplerLMS", ["order"], [], ["SAMPLER"], None),
    "BasicScheduler": ("sampling/schedulers", "BasicScheduler", ["model", "scheduler", "steps", "denoise"], [],
                       ["SIGMAS"], None),
    "KarrasScheduler": ("sampling/schedulers", "KarrasScheduler", ["steps", "sigma_max", "sigma_min", "rho"], [],
                        ["SIGMAS"], None),
    "ExponentialScheduler": ("sampling/schedulers", "ExponentialScheduler", ["steps", "sigma_max", "sigma_min"],
                             [], ["SIGMAS"], None),
    "PolyexponentialScheduler": ("sampling/schedulers", "PolyexponentialScheduler",
                                 ["steps", "sigma_max", "sigma_min", "rho"], [], ["SIGMAS"], None),
    "SDTurboScheduler": ("sampling/schedulers", "SDTurboScheduler", ["model", "steps", "denoise"], [], ["SIGMAS"],
                         None),
    "BetaSamplingScheduler": ("sampling/schedulers", "BetaSamplingScheduler", ["model", "steps", "alpha", "beta"],
                              [], ["SIGMAS"], None),
    "AlignYourStepsScheduler": ("sampling/schedulers", "AlignYourStepsScheduler", ["model_type", "steps",
                                                                                  "denoise"], [], ["SIGMAS"], None),
    "SplitSigmas": ("sampling/sigmas", "SplitSigmas", ["sigmas", "step"], [], ["SIGMAS", "SIGMAS"],
                    ["high_sigmas", "low_sigmas"]),
    "SplitSigmasDenoise": ("sampling/sigmas", "SplitSigmasDenoise", ["sigmas", "denoise"], [], ["SIGMAS", "SIGMAS"],
                           ["high_sigmas", "low_sigmas"]),
    "FlipSigmas": ("sampling/sigmas", "FlipSigmas", ["sigmas"], [], ["SIGMAS"], None),
    "RandomNoise": ("sampling/noise", "RandomNoise", ["noise_seed"], [], ["NOISE"], None),
    "DisableNoise": ("sampling/noise", "DisableNoise", [], [], ["NOISE"], None),
    "CFGGuider": ("sampling/guiders", "CFG Guider", ["model", "positive", "negative", "cfg"], [], ["GUIDER"], None),
    "BasicGuider": ("sampling/guiders", "Basic Guider", ["model", "conditioning"], [], ["GUIDER"], None),
    "DualCFGGuider": ("sampling/guiders", "Dual CFG Guider", ["model", "cond1", "cond2", "negative", "cfg_conds",
                                                             "cfg_cond2_negative", "style"], [], ["GUIDER"], None),
    "PerpNegGuider": ("_for_testing", "PerpNegGuider", ["model", "positive", "negative", "empty_conditioning", "cfg",
                                                        "neg_scale"], [], ["GUIDER"], None),
    "ModelSamplingDiscrete": ("advanced/model", "ModelSamplingDiscrete", ["model", "sampling", "zsnr"], [],
                              ["MODEL"], None),
    "RescaleCFG": ("advanced/model", "RescaleCFG", ["model", "multiplier"], [], ["MODEL"], None),
    "FreeU": ("model_patches/unet", "FreeU", ["model", "b1", "b2", "s1", "s2"], [], ["MODEL"], None),
    "FreeU_V2": ("model_patches/unet", "FreeU_V2", ["model", "b1", "b2", "s1", "s2"], [], ["MODEL"], None),
    "CheckpointLoader": ("advanced/loaders", "Load Checkpoint With Config (DEPRECATED)", ["config_name", "ckpt_name"],
                         [], ["MODEL", "CLIP", "VAE"], None),
    "UNETLoader": ("advanced/loaders", "Load Diffusion Model", ["unet_name", "weight_dtype"], [], ["MODEL"], None),
    "CLIPLoader": ("advanced/loaders", "Load CLIP", ["clip_name", "type"], ["device"], ["CLIP"], None),
    "DualCLIPLoader": ("advanced/loaders", "DualCLIPLoader", ["clip_name1", "clip_name2", "type"], ["device"],
                       ["CLIP"], None),
}
SOCKET_TYPES = ("MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "SIGMAS", "SAMPLER", "NOISE", "GUIDER")


def _source(kind: str) -> type:
    class Source:
        RETURN_TYPES = (kind,)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return (None,)

    return Source


class Sink:
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def run(self, value):
        return ()


@pytest.fixture(scope="module")
def registry():
    registry = NodeRegistry(resolve_folder=lambda folder: [f"a-{folder}.safetensors"])
    register_builtin_nodes(registry)
    registry.register_mappings({f"Source{kind}": _source(kind) for kind in SOCKET_TYPES} | {"Sink": Sink})
    return registry


@pytest.mark.parametrize("name", sorted(COMFYUI))
def test_object_info_has_comfyuis_shape(registry, name):
    category, display, required, optional, outputs, names = COMFYUI[name]
    info = registry.object_info(name)
    assert info["category"] == category and info["display_name"] == display and info["name"] == name
    assert info["input_order"]["required"] == required and info["input_order"].get("optional", []) == optional
    assert list(info["input"]["required"]) == required and list(info["input"].get("optional", {})) == optional
    assert "hidden" not in info["input"]
    assert info["output"] == outputs and info["output_name"] == (names or outputs)
    assert info["output_is_list"] == [False] * len(outputs) and info["output_node"] is False
    assert info.get("deprecated", False) == (name == "CheckpointLoader")
    assert info.get("experimental", False) == (name == "PerpNegGuider")


def test_comfyui_option_lists_and_defaults(registry):
    required = lambda name: registry.object_info(name)["input"]["required"]  # noqa: E731
    assert required("SamplerCustom")["add_noise"] == ["BOOLEAN", {"default": True, "advanced": True}]
    assert required("SamplerCustom")["noise_seed"][1]["max"] == 0xFFFFFFFFFFFFFFFF
    assert required("BasicScheduler")["scheduler"][0] == ["simple", "sgm_uniform", "karras", "exponential",
                                                          "ddim_uniform", "beta", "normal", "linear_quadratic",
                                                          "kl_optimal"]
    assert required("KarrasScheduler")["sigma_max"][1] == {"default": 14.614642, "min": 0.0, "max": 5000.0,
                                                           "step": 0.01, "round": False, "advanced": True}
    assert required("SDTurboScheduler")["steps"][1] == {"default": 1, "min": 1, "max": 10}
    assert required("AlignYourStepsScheduler")["model_type"][0] == ["SD1", "SDXL", "SVD"]
    assert required("ModelSamplingDiscrete")["sampling"][0] == ["eps", "v_prediction", "lcm", "x0"]
    assert required("FreeU")["b1"][1]["default"] == 1.1 and required("FreeU_V2")["b1"][1]["default"] == 1.3
    assert required("UNETLoader")["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
    assert required("DualCFGGuider")["style"][0] == ["regular", "nested"]
    assert "euler" in required("KSamplerSelect")["sampler_name"][0]


def _baseline(registry, name: str) -> dict:
    """A valid prompt around node "n": typed sources for its links, defaults or first options for its values."""
    schema = registry.get(name)
    prompt = {f"s{kind}": {"class_type": f"Source{kind}", "inputs": {}} for kind in SOCKET_TYPES}
    inputs = {}
    for spec in schema.inputs:
        if not spec.required:
            continue
        if spec.is_combo:
            inputs[spec.name] = spec.combo_choices(registry.resolve_folder)[0]
        elif spec.is_primitive:
            inputs[spec.name] = spec.options.get("default", 0)
        else:
            inputs[spec.name] = [f"s{spec.type}", 0]
    prompt["n"] = {"class_type": name, "inputs": inputs}
    prompt["out"] = {"class_type": "Sink", "inputs": {"value": ["n", 0]}}
    return prompt


def _bad_inputs(registry, name: str):
    """(input, bad value, expected ComfyUI error type) for every input of the node."""
    for spec in registry.get(name).inputs:
        if not spec.required:
            continue
        yield spec.name, None, "required_input_missing"
        if spec.is_combo:
            yield spec.name, "no-such-option", "value_not_in_list"
        elif spec.type in ("INT", "FLOAT"):
            yield spec.name, "abc", "invalid_input_type"
            if spec.options.get("min") is not None:
                yield spec.name, spec.options["min"] - 1, "value_smaller_than_min"
            if spec.options.get("max") is not None:
                yield spec.name, spec.options["max"] + 1, "value_bigger_than_max"
        elif spec.type == "BOOLEAN":
            yield spec.name, "maybe", "invalid_input_type"
        else:  # a socket: linked from a source of another type
            other = "SIGMAS" if spec.type != "SIGMAS" else "NOISE"
            yield spec.name, [f"s{other}", 0], "return_type_mismatch"


@pytest.mark.parametrize("name", sorted(COMFYUI))
def test_bad_inputs_give_comfyuis_errors(registry, name):
    baseline = _baseline(registry, name)
    assert validate_prompt(baseline, registry).ok, validate_prompt(baseline, registry).node_errors
    cases = list(_bad_inputs(registry, name))
    if not cases:  # DisableNoise has no inputs: its NOISE is refused where SIGMAS are expected
        baseline["flip"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": ["n", 0]}}
        baseline["out"]["inputs"]["value"] = ["flip", 0]
        result = validate_prompt(baseline, registry)
        assert result.node_errors["flip"]["errors"][0]["extra_info"]["received_type"] == "NOISE"
        return
    for input_name, value, expected in cases:
        prompt = {node_id: {**node, "inputs": dict(node["inputs"])} for node_id, node in baseline.items()}
        if value is None:
            del prompt["n"]["inputs"][input_name]
        else:
            prompt["n"]["inputs"][input_name] = value
        result = validate_prompt(prompt, registry)
        assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation", (input_name, value)
        entry = result.node_errors["n"]
        assert entry["class_type"] == name and entry["dependent_outputs"] == ["out"]
        errors = entry["errors"]
        assert [e["type"] for e in errors] == [expected], (input_name, value, errors)
        assert set(errors[0]) == {"type", "message", "details", "extra_info"}
        assert errors[0]["extra_info"]["input_name"] == input_name
