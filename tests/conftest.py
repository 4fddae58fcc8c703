import pytest

from server.app import App
from server.config import AppConfig


def pytest_configure(config):
    """One intra-op thread: the tiny test networks gain nothing from more, and on a busy 2-core
    machine OpenMP workers spinning against each other make them up to 70x slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def toy_app_factory(tmp_path):
    """Builds an App whose registry holds the torch-free toy nodes."""
    from toy_nodes import NODE_CLASS_MAPPINGS

    def build(**overrides) -> App:
        config = AppConfig(models_dir=tmp_path / "models", output_dir=tmp_path / "output",
                           input_dir=tmp_path / "input", temp_dir=tmp_path / "temp", custom_nodes_dir=None,
                           **overrides)
        return App(config, register_nodes=lambda r: r.register_mappings(NODE_CLASS_MAPPINGS, builtin=True))

    return build


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory):
    """The offline demo models (tiny checkpoints, LoRA, tokenizer, expansion), written once."""
    from server.demo import write_demo_models

    root = tmp_path_factory.mktemp("demo_models")
    write_demo_models(root)
    return root


@pytest.fixture
def demo_app_factory(tmp_path, demo_models_dir):
    """Builds an App with the real built-in nodes over the demo models."""

    def build(**overrides) -> App:
        from nodes.model_services import make_model_manager

        config = AppConfig(models_dir=demo_models_dir, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                           temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True, **overrides)
        return App(config, model_manager=make_model_manager(config))

    return build
