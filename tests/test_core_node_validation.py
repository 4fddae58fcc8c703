"""The conditioning, latent, image and mask nodes of issue 16 in /object_info (ComfyUI's shape) and
under validation: every node's bad inputs (wrong socket type, missing input, values out of range,
not in the list, of the wrong type) give ComfyUI's error types and shapes."""
from __future__ import annotations

import pytest

from graph import validate_prompt
from graph.registry import NodeRegistry
from nodes import conditioning, image_ops, latent_ops, mask_ops, register_builtin_nodes

NEW_NODES = {**conditioning.NODE_CLASS_MAPPINGS, **latent_ops.NODE_CLASS_MAPPINGS, **image_ops.NODE_CLASS_MAPPINGS,
             **mask_ops.NODE_CLASS_MAPPINGS}
SOCKETS = ("CONDITIONING", "LATENT", "IMAGE", "MASK")
# ComfyUI's categories and display names (its NODE_DISPLAY_NAME_MAPPINGS; the class name otherwise)
CATEGORIES = {
    "conditioning": ["ConditioningCombine", "ConditioningAverage", "ConditioningConcat", "ConditioningSetArea",
                     "ConditioningSetAreaPercentage", "ConditioningSetAreaStrength", "ConditioningSetMask"],
    "advanced/conditioning": ["ConditioningZeroOut", "ConditioningSetTimestepRange"],
    "latent": ["LatentComposite", "LatentCompositeMasked"], "_for_testing": ["LatentBlend"],
    "latent/advanced": ["LatentAdd", "LatentSubtract", "LatentMultiply"],
    "latent/batch": ["LatentBatch", "RepeatLatentBatch", "LatentFromBatch"],
    "latent/transform": ["LatentCrop", "LatentFlip", "LatentRotate"],
    "image": ["ImageInvert", "ImageBatch", "EmptyImage"], "image/transform": ["ImageCrop"],
    "image/postprocessing": ["ImageBlend", "ImageBlur", "ImageSharpen", "ImageQuantize"],
    "image/batch": ["RepeatImageBatch", "ImageFromBatch"],
    "mask": ["SolidMask", "FeatherMask", "CropMask", "MaskComposite", "ThresholdMask"],
}
DISPLAY = {"ConditioningCombine": "Conditioning (Combine)", "ConditioningConcat": "Conditioning (Concat)",
           "ConditioningSetArea": "Conditioning (Set Area)",
           "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
           "ConditioningSetMask": "Conditioning (Set Mask)", "LatentComposite": "Latent Composite",
           "LatentBlend": "Latent Blend", "LatentFromBatch": "Latent From Batch",
           "RepeatLatentBatch": "Repeat Latent Batch", "LatentCrop": "Crop Latent", "LatentFlip": "Flip Latent",
           "LatentRotate": "Rotate Latent", "ImageInvert": "Invert Image", "ImageBatch": "Batch Images",
           "ImageCrop": "Image Crop", "ImageBlend": "Image Blend", "ImageBlur": "Image Blur",
           "ImageQuantize": "Image Quantize", "ImageSharpen": "Image Sharpen"}


class Source:
    """One output of each socket type the new nodes take."""
    CATEGORY, FUNCTION, RETURN_TYPES = "testing", "run", SOCKETS

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        raise AssertionError("validation only")


class Sink:
    CATEGORY, FUNCTION, RETURN_TYPES, OUTPUT_NODE = "testing", "run", (), True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def run(self, value):
        raise AssertionError("validation only")


@pytest.fixture(scope="module")
def registry():
    registry = NodeRegistry()
    register_builtin_nodes(registry)
    registry.register_mappings({"Source": Source, "Sink": Sink})
    return registry


def valid_prompt(name: str) -> dict:
    """`name` with every socket linked to Source and every widget at its default (first choice)."""
    inputs = {}
    for input_name, spec in NEW_NODES[name].INPUT_TYPES()["required"].items():
        kind = spec[0]
        if isinstance(kind, list):
            inputs[input_name] = kind[0]
        elif kind in SOCKETS:
            inputs[input_name] = ["src", SOCKETS.index(kind)]
        else:
            inputs[input_name] = spec[1]["default"]
    return {"src": {"class_type": "Source", "inputs": {}}, "n": {"class_type": name, "inputs": inputs},
            "out": {"class_type": "Sink", "inputs": {"value": ["n", 0]}}}


def bad_variants(name: str):
    """(input name, bad value, expected error type) for every input of `name`."""
    for input_name, spec in NEW_NODES[name].INPUT_TYPES()["required"].items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if isinstance(kind, list):
            yield input_name, "not-an-option", "value_not_in_list"
        elif kind in SOCKETS:
            wrong = SOCKETS[(SOCKETS.index(kind) + 1) % len(SOCKETS)]
            yield input_name, ["src", SOCKETS.index(wrong)], "return_type_mismatch"
            yield input_name, None, "required_input_missing"
        elif kind in ("INT", "FLOAT"):
            yield input_name, "abc", "invalid_input_type"
            if "max" in options:
                yield input_name, options["max"] + 1, "value_bigger_than_max"
            if "min" in options:
                yield input_name, options["min"] - 1, "value_smaller_than_min"


def test_every_new_node_has_comfyui_object_info(registry):
    assert sorted(NEW_NODES) == sorted(n for names in CATEGORIES.values() for n in names)
    for category, names in CATEGORIES.items():
        for name in names:
            info = registry.object_info(name)
            assert info["category"] == category and info["name"] == name, name
            assert info["display_name"] == DISPLAY.get(name, name)
            assert info["output"] == list(NEW_NODES[name].RETURN_TYPES) == info["output_name"]
            assert info["output_is_list"] == [False] and info["output_node"] is False
            declared = NEW_NODES[name].INPUT_TYPES()
            assert info["input_order"]["required"] == list(declared["required"])
            assert info["input_order"].get("optional", []) == list(declared.get("optional", {}))
            assert valid_prompt(name) and validate_prompt(valid_prompt(name), registry).ok, name


def test_object_info_of_representative_nodes(registry):
    """Values as in a ComfyUI /object_info dump (v0.3.x) for the same nodes."""
    assert registry.object_info("ConditioningSetArea")["input"]["required"] == {
        "conditioning": ["CONDITIONING"],
        "width": ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}],
        "height": ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}],
        "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
        "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
        "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]}
    masked = registry.object_info("LatentCompositeMasked")
    assert masked["input"]["optional"] == {"mask": ["MASK"]}
    assert masked["input_order"] == {"required": ["destination", "source", "x", "y", "resize_source"],
                                     "optional": ["mask"]}
    assert masked["input"]["required"]["resize_source"] == ["BOOLEAN", {"default": False}]
    assert registry.object_info("ConditioningSetMask")["input"]["required"]["set_cond_area"] == [
        ["default", "mask bounds"]]
    assert registry.object_info("ImageQuantize")["input"]["required"]["dither"] == [
        ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]]
    assert registry.object_info("EmptyImage")["input"]["required"]["color"] == [
        "INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}]
    assert registry.object_info("LatentFlip")["input"]["required"]["flip_method"] == [
        ["x-axis: vertically", "y-axis: horizontally"]]


@pytest.mark.parametrize("name", sorted(NEW_NODES))
def test_bad_inputs_have_comfyui_errors(registry, name):
    variants = list(bad_variants(name))
    assert variants, name
    for input_name, value, expected in variants:
        prompt = valid_prompt(name)
        if value is None:
            del prompt["n"]["inputs"][input_name]
        else:
            prompt["n"]["inputs"][input_name] = value
        result = validate_prompt(prompt, registry)
        assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation", (name, input_name)
        entry = result.node_errors["n"]
        assert entry["class_type"] == name and entry["dependent_outputs"] == ["out"]
        (error,) = entry["errors"]
        assert error["type"] == expected, (name, input_name, error)
        assert set(error) == {"type", "message", "details", "extra_info"}
        assert error["extra_info"]["input_name"] == input_name
