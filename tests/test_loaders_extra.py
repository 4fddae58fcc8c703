"""ComfyUI's advanced loaders over the demo models: UNETLoader, CLIPLoader and DualCLIPLoader read
standalone files cut out of the tiny checkpoints and give the checkpoint's own UNet and encodings;
CheckpointLoader reads a config's v-prediction marker."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
from safetensors.torch import save_file

from graph.context import InterruptFlag, NodeContext, NullSink, activate, deactivate
from models.checkpoint import read_state_dict
from nodes.loaders import CheckpointLoaderSimple
from nodes.loaders_extra import CheckpointLoader, CLIPLoader, DualCLIPLoader, UNETLoader
from nodes.text import encode
from server.app import App
from server.config import AppConfig


def _cut(state: dict, prefix: str, to: str = "") -> dict:
    return {to + key[len(prefix):]: value.contiguous() for key, value in state.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_models_dir):
    root = tmp_path_factory.mktemp("loaders_extra")
    models = root / "models"
    shutil.copytree(demo_models_dir, models)
    sdxl = read_state_dict(models / "checkpoints/tiny-sdxl.safetensors")
    sd15 = read_state_dict(models / "checkpoints/tiny-sd15.safetensors")
    (models / "diffusion_models").mkdir(exist_ok=True)
    (models / "text_encoders").mkdir(exist_ok=True)
    (models / "configs").mkdir(exist_ok=True)
    # ComfyUI's standalone layouts: a bare LDM UNet, CLIP-L in Hugging Face keys, CLIP-G in OpenCLIP keys
    save_file(_cut(sdxl, "model.diffusion_model."), models / "diffusion_models/tiny-sdxl-unet.safetensors")
    save_file(_cut(sdxl, "conditioner.embedders.0.transformer."), models / "text_encoders/clip_l.safetensors")
    save_file(_cut(sdxl, "conditioner.embedders.1.model."), models / "text_encoders/clip_g.safetensors")
    save_file(_cut(sd15, "cond_stage_model.transformer."), models / "text_encoders/sd15_clip_l.safetensors")
    (models / "configs/v2-inference-v.yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    (models / "configs/v1-inference.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    config = AppConfig(models_dir=models, output_dir=root / "out", input_dir=root / "in", temp_dir=root / "tmp",
                       custom_nodes_dir=None, cpu=True)
    return App(config)


@pytest.fixture
def node_context(app):
    token = activate(NodeContext("p", "n", "test", app.services, NullSink(), InterruptFlag(),
                                 logging.getLogger("test")))
    yield
    deactivate(token)


def test_unet_loader_gives_the_checkpoints_unet(node_context):
    (model,) = UNETLoader().load_unet("tiny-sdxl-unet.safetensors", "default")
    reference, _, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sdxl.safetensors")
    assert model.family == "sdxl" and model.info.unet == reference.info.unet
    ours, theirs = model.network.module.state_dict(), reference.network.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_dual_and_single_clip_loaders_encode_as_the_checkpoints(node_context):
    _, sdxl_clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sdxl.safetensors")
    for first, second in (("clip_l.safetensors", "clip_g.safetensors"), ("clip_g.safetensors", "clip_l.safetensors")):
        (dual,) = DualCLIPLoader().load_clip(first, second, "sdxl")
        assert dual.family == "sdxl"
        cond, pooled = encode(dual, "a (red:1.2) lighthouse")
        expected_cond, expected_pooled = encode(sdxl_clip, "a (red:1.2) lighthouse")
        torch.testing.assert_close(cond, expected_cond)
        torch.testing.assert_close(pooled, expected_pooled)
    _, sd15_clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sd15.safetensors")
    (single,) = CLIPLoader().load_clip("sd15_clip_l.safetensors", "stable_diffusion")
    assert single.family == "sd15"
    torch.testing.assert_close(encode(single, "a lighthouse")[0], encode(sd15_clip, "a lighthouse")[0])
    (refiner,) = CLIPLoader().load_clip("clip_g.safetensors", "stable_diffusion")
    assert refiner.family == "sdxl_refiner" and refiner.encoder.clip_g is not None
    with pytest.raises(ValueError, match="two clip_l"):
        DualCLIPLoader().load_clip("clip_l.safetensors", "sd15_clip_l.safetensors", "sdxl")


def test_checkpoint_loader_reads_the_configs_prediction(node_context):
    model, clip, vae = CheckpointLoader().load_checkpoint("v2-inference-v.yaml", "tiny-sd15.safetensors")
    assert model.model_sampling().prediction == "v" and clip is not None and vae is not None
    (plain, _, _) = CheckpointLoader().load_checkpoint("v1-inference.yaml", "tiny-sd15.safetensors")
    assert plain.model_sampling().prediction == "eps"
