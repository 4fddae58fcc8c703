"""Validation errors: every ComfyUI error type, in ComfyUI's response shape."""
import pytest

from graph import GraphBuilder, validate_prompt
from toy_nodes import make_registry


@pytest.fixture
def registry():
    return make_registry()


def _types(result):
    return {e["type"] for entry in result.node_errors.values() for e in entry["errors"]}


def test_valid_prompt_lists_outputs_and_coerces_constants(registry):
    g = GraphBuilder()
    n = g.node("Number", value="7")
    s = g.node("Scale", x=n, factor=2)
    g.node("Output", "out", value=s)
    result = validate_prompt(g.finalize(), registry)
    assert result.ok and result.outputs == ["out"]
    assert result.constants["1"]["value"] == 7 and isinstance(result.constants["2"]["factor"], float)


def test_unknown_class_is_invalid_prompt(registry):
    result = validate_prompt({"1": {"class_type": "Nope", "inputs": {}}}, registry)
    assert not result.ok and result.error["type"] == "invalid_prompt"
    assert "Nope" in result.error["message"] and result.node_errors == {}


def test_missing_class_type_is_invalid_prompt(registry):
    result = validate_prompt({"1": {"inputs": {}}}, registry)
    assert result.error["type"] == "invalid_prompt"


def test_no_output_nodes(registry):
    result = validate_prompt({"1": {"class_type": "Number", "inputs": {"value": 1}}}, registry)
    assert result.error["type"] == "prompt_no_outputs"


@pytest.mark.parametrize("inputs,expected", [
    ({}, "required_input_missing"),
    ({"value": ["1"]}, "bad_linked_input"),
    ({"value": [1, 0]}, "bad_linked_input"),
    ({"value": ["missing", 0]}, "bad_linked_input"),
])
def test_link_errors(registry, inputs, expected):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Output", "inputs": inputs}}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert expected in _types(result)
    assert result.node_errors["2"]["dependent_outputs"] == ["2"]
    assert result.node_errors["2"]["class_type"] == "Output"


def test_return_type_mismatch(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "a"}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    error = result.node_errors["2"]["errors"][0]
    assert error["type"] == "return_type_mismatch"
    assert error["extra_info"]["received_type"] == "STRING"
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]


def test_wildcard_accepts_any_type(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "a"}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    assert validate_prompt(prompt, registry).ok


@pytest.mark.parametrize("value,expected", [
    ("abc", "invalid_input_type"),
    (-5000, "value_smaller_than_min"),
    (5000, "value_bigger_than_max"),
])
def test_constant_errors(registry, value, expected):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": value}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert _types(result) == {expected}
    assert result.node_errors["1"]["errors"][0]["extra_info"]["input_name"] == "value"


def test_value_not_in_list(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 1, "mode": "pow"}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    error = result.node_errors["2"]["errors"][0]
    assert error["type"] == "value_not_in_list" and "pow" in error["details"] and "mul" in error["details"]


def test_folder_combo_resolved_per_request(registry):
    class Loader:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"name": ("COMBO", {"folder": "things"})}}

        def run(self, name):
            return (name,)

    files = {"things": ["a.bin"]}
    registry.resolve_folder = lambda folder: files[folder]
    registry.register("Loader", Loader)
    prompt = {"1": {"class_type": "Loader", "inputs": {"name": "b.bin"}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    assert _types(validate_prompt(prompt, registry)) == {"value_not_in_list"}
    files["things"].append("b.bin")
    assert validate_prompt(prompt, registry).ok
    assert registry.object_info("Loader")["input"]["required"]["name"][0] == ["a.bin", "b.bin"]


def test_custom_validation(registry):
    prompt = {"1": {"class_type": "Even", "inputs": {"x": 3}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    error = result.node_errors["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed" and "3 is odd" in error["details"]
    prompt["1"]["inputs"]["x"] = 4
    assert validate_prompt(prompt, registry).ok


def test_exception_during_validation(registry):
    prompt = {"1": {"class_type": "Broken", "inputs": {"x": 3}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert _types(result) == {"exception_during_validation"}
    assert "validator crashed" in result.node_errors["1"]["errors"][0]["details"]


def test_cycle_is_a_clear_validation_error(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"
    errors = [e for entry in result.node_errors.values() for e in entry["errors"]]
    assert {e["type"] for e in errors} == {"dependency_cycle"}
    assert set(result.node_errors) == {"1", "2"}
    assert "->" in errors[0]["details"]


def test_long_chain_does_not_hit_recursion_limit(registry):
    g = GraphBuilder()
    ref = g.node("Number", value=1)
    for _ in range(3000):
        ref = g.node("Add", a=ref, b=1)
    g.node("Output", value=ref)
    assert validate_prompt(g.finalize(), registry).ok


def test_partial_outputs_survive(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {}}}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["2"] and "3" in result.node_errors


def test_partial_execution_targets(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    assert validate_prompt(prompt, registry, partial_targets=["3"]).outputs == ["3"]


def test_list_constant_is_wrapped(registry):
    prompt = {"1": {"class_type": "Output", "inputs": {"value": {"__value__": [1, 2]}}}}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.constants["1"]["value"] == [1, 2]


def test_socket_input_given_a_constant_is_rejected(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": 1, "b": 1}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = validate_prompt(prompt, registry)
    assert result.ok  # INT is a primitive: a constant is fine
    class Needs:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL",)}}

        def run(self, model):
            return ()
    registry.register("Needs", Needs)
    result = validate_prompt({"1": {"class_type": "Needs", "inputs": {"model": "x"}}}, registry)
    assert _types(result) == {"invalid_input_type"} and "MODEL" in result.node_errors["1"]["errors"][0]["message"]
