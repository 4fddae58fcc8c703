import pytest

from server.app import App
from server.config import AppConfig


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
