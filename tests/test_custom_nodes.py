"""Custom-node packs load unchanged from a folder; broken packs are logged and skipped."""
from pathlib import Path

from graph import ClassicCache, Executor, NodeRegistry, validate_prompt
from toy_nodes import NODE_CLASS_MAPPINGS

FIXTURES = Path(__file__).parent / "fixtures"


def test_good_packs_load_as_file_and_package():
    registry = NodeRegistry()
    registry.load_custom_nodes(FIXTURES / "custom_nodes_good")
    assert "Shout" in registry and "Twice" in registry
    assert registry.object_info("Shout")["display_name"] == "Shout it"
    assert registry.object_info("Shout")["python_module"] == "custom_nodes.single_file"
    assert registry.failed_packs == {}
    registry.register_mappings(NODE_CLASS_MAPPINGS)
    prompt = {"1": {"class_type": "Twice", "inputs": {"text": "ab"}},
              "2": {"class_type": "Shout", "inputs": {"text": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    outcome = Executor(registry, ClassicCache()).execute(prompt, "p", result.outputs, result.constants)
    assert outcome.outputs["3"] == {"values": ["ABAB"]}


def test_broken_packs_are_skipped_with_their_error(caplog):
    registry = NodeRegistry()
    registry.load_custom_nodes(FIXTURES / "custom_nodes_broken")
    assert "crashes_on_import" in registry.failed_packs
    assert "not installed" in registry.failed_packs["crashes_on_import"]
    assert "no_mappings" in registry.failed_packs
    assert "NoFunction" not in registry and "FineFromBrokenPack" in registry
    assert "IMPORT FAILED" in caplog.text


def test_builtin_nodes_cannot_be_overridden():
    registry = NodeRegistry()
    registry.register_mappings(NODE_CLASS_MAPPINGS, builtin=True)
    registry.register_mappings({"Number": NODE_CLASS_MAPPINGS["Add"]}, python_module="custom_nodes.evil")
    assert registry.get("Number").node_class is NODE_CLASS_MAPPINGS["Number"]


def test_missing_folder_is_fine():
    registry = NodeRegistry()
    registry.load_custom_nodes(FIXTURES / "does-not-exist")
    assert list(registry.names()) == []
