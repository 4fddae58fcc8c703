"""Checkpoint reading (formats, safety, corruption, zero-copy) and architecture detection."""
from __future__ import annotations

import os
import pickle
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import CheckpointError, read_state_dict, split_checkpoint
from models.detection import detect_checkpoint, detect_unet_config
from models.loading import load_checkpoint
from models.unet import UNetConfig, UNetModel
from models.tiny import (
    tiny_checkpoint_state_dict,
    tiny_sd15_spec,
    tiny_sdxl_refiner_spec,
    tiny_sdxl_spec,
    write_demo_models,
    write_tiny_checkpoint,
)

SPECS = {"sd15": tiny_sd15_spec, "sdxl": tiny_sdxl_spec, "sdxl_refiner": tiny_sdxl_refiner_spec}


@pytest.fixture(scope="module")
def sdxl_state():
    return tiny_checkpoint_state_dict(tiny_sdxl_spec(), seed=1)


def _save(state, path):
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


@pytest.mark.parametrize("family", list(SPECS))
def test_detects_each_family_with_its_tiny_config(family, tmp_path):
    spec = SPECS[family]()
    loaded = load_checkpoint(write_tiny_checkpoint(tmp_path / "model.safetensors", spec, seed=2))
    info = loaded.info
    assert info.family == family and info.unet == spec.unet
    assert info.latent_scale_factor == {"sd15": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}[family]
    assert info.text_encoders == {"sd15": ("clip_l",), "sdxl": ("clip_l", "clip_g"),
                                  "sdxl_refiner": ("clip_g",)}[family]
    assert info.prediction == "eps" and not info.is_inpaint
    assert loaded.vae.config == spec.vae
    prefixes = {"sd15": ("cond_stage_model.transformer.",),
                "sdxl": ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
                "sdxl_refiner": ("conditioner.embedders.0.model.",)}[family]
    assert loaded.text_encoder_state and all(key.startswith(prefixes) for key in loaded.text_encoder_state)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_inpaint_variant_has_nine_input_channels(family):
    spec = SPECS[family](in_channels=9)
    info = detect_checkpoint(split_checkpoint(tiny_checkpoint_state_dict(spec, seed=3)), "inpaint.safetensors")
    assert info.family == family and info.is_inpaint and info.unet.in_channels == 9 and info.latent_channels == 4


@pytest.mark.parametrize("marker,expected", [
    ("v", dict(prediction="v", zero_terminal_snr=False)),
    ("v_ztsnr", dict(prediction="v", zero_terminal_snr=True)),
    ("edm", dict(prediction="edm", latents_mean=(0.1,) * 4, sigma_max=80.0)),
    ("v_edm", dict(prediction="v_edm", sigma_max=120.0)),
])
def test_prediction_markers(marker, expected):
    spec = tiny_sdxl_spec(prediction=marker)
    info = detect_checkpoint(split_checkpoint(tiny_checkpoint_state_dict(spec, seed=4)), "x.safetensors")
    for field, value in expected.items():
        got = getattr(info, field)
        assert got == pytest.approx(value), field


@pytest.mark.parametrize("family", ["sdxl", "sdxl_refiner"])
def test_bare_unet_file_is_detected_from_widths(family, tmp_path):
    spec = SPECS[family]()
    state = tiny_checkpoint_state_dict(spec, seed=5)
    prefix = "model.diffusion_model."
    bare = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    loaded = load_checkpoint(_save(bare, tmp_path / "unet.safetensors"))
    assert loaded.info.family == family and loaded.info.unet == spec.unet and loaded.vae is None


def _file_mappings(path):
    """(start, end, permissions) of every mapping of `path` in this process."""
    mappings = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == os.path.realpath(path):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            mappings.append((start, end, fields[1]))
    return mappings


def _in_mapping(tensor, mappings):
    return any(start <= tensor.data_ptr() < end for start, end, _ in mappings)


def test_safetensors_tensors_share_the_file_mapping(tmp_path, sdxl_state):
    path = str(_save(sdxl_state, tmp_path / "mapped.safetensors"))
    state = read_state_dict(path)
    mappings = _file_mappings(path)
    assert mappings, "the file is not memory-mapped"
    assert all(perms.startswith("rw") and perms.endswith("p") for _, _, perms in mappings)  # private COW
    assert all(_in_mapping(tensor, mappings) for tensor in state.values() if tensor.numel())
    # building the networks adopts those tensors instead of copying them
    loaded = load_checkpoint(path)
    mappings = _file_mappings(path)
    assert all(_in_mapping(p, mappings) for p in loaded.unet.parameters())
    assert all(_in_mapping(p, mappings) for p in loaded.vae.parameters())


def test_pickle_checkpoints_load_safely(tmp_path, sdxl_state):
    wrapped = {"state_dict": dict(sdxl_state), "global_step": 10}
    torch.save(wrapped, tmp_path / "zip.ckpt")
    torch.save(wrapped, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    for name in ("zip.ckpt", "legacy.ckpt"):
        state = read_state_dict(tmp_path / name)
        assert state.keys() == sdxl_state.keys()
        torch.testing.assert_close(state["model.diffusion_model.out.2.weight"],
                                   sdxl_state["model.diffusion_model.out.2.weight"])


def test_lightning_callback_in_ckpt_is_tolerated(tmp_path, monkeypatch):
    # Real SD1.x .ckpt files pickle a PyTorch Lightning ModelCheckpoint next to the weights.
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_path = "x"

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    torch.save({"state_dict": {"a": torch.ones(2)}, "callbacks": {"cb": ModelCheckpoint()}}, tmp_path / "pl.ckpt")
    monkeypatch.delitem(sys.modules, module.__name__)  # loading must not need the class
    assert read_state_dict(tmp_path / "pl.ckpt")["a"].tolist() == [1.0, 1.0]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickle_needing_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.ones(1)}, "payload": _Exploit()}, handle)
    torch.save({"w": torch.ones(1), "obj": _Exploit()}, tmp_path / "evil_zip.pt")
    for name in ("evil.ckpt", "evil_zip.pt"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ".*refused"):
            read_state_dict(tmp_path / name)


def test_truncated_and_corrupt_files_raise_naming_the_file(tmp_path, sdxl_state):
    good = _save(sdxl_state, tmp_path / "good.safetensors").read_bytes()
    cases = {
        "cut.safetensors": good[: len(good) // 2],
        "header_only.safetensors": good[:100],
        "tiny.safetensors": b"abc",
        "garbage.safetensors": (16).to_bytes(8, "little") + b"{not json at all",
    }
    torch.save(dict(sdxl_state), tmp_path / "full.ckpt")
    cases["cut.ckpt"] = (tmp_path / "full.ckpt").read_bytes()[:5000]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            read_state_dict(tmp_path / name)
    with pytest.raises(CheckpointError, match="unsupported model file type"):
        (tmp_path / "model.onnx").write_bytes(b"x")
        read_state_dict(tmp_path / "model.onnx")
    with pytest.raises(CheckpointError, match="no such model file"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_wrong_keys_and_unknown_architectures_raise(tmp_path, sdxl_state):
    cases = {
        "lora_like.safetensors": ({"lora_unet_down_blocks_0.lora_up.weight": torch.ones(4, 2)}, "no SD/SDXL UNet"),
        "flux.safetensors": ({"double_blocks.0.img_attn.qkv.weight": torch.ones(3, 3)}, "Flux"),
        "missing_key.safetensors": ({k: v for k, v in sdxl_state.items()
                                     if not k.endswith("middle_block.0.emb_layers.1.weight")}, "do not match"),
    }
    sd2_like = {k: v for k, v in sdxl_state.items() if "label_emb" not in k}
    cases["sd2_like.safetensors"] = (sd2_like, "SD2")
    for name, (state, message) in cases.items():
        with pytest.raises(CheckpointError, match=f"{name.replace('.', '[.]')}.*{message}"):
            load_checkpoint(_save(state, tmp_path / name))


def test_demo_models_are_written_and_detected(tmp_path):
    written = write_demo_models(tmp_path)
    assert set(written) >= {"checkpoints/tiny-sd15.safetensors", "checkpoints/tiny-sdxl.safetensors",
                            "checkpoints/tiny-sdxl-refiner.safetensors"}
    families = [load_checkpoint(written[name]).info.family for name in sorted(written) if name.startswith("checkpoints/")]
    assert families == ["sd15", "sdxl_refiner", "sdxl"]


@pytest.mark.parametrize("family,config", [("sd15", UNetConfig.sd15()), ("sdxl", UNetConfig.sdxl()),
                                           ("sdxl_refiner", UNetConfig.sdxl_refiner()),
                                           ("sdxl", UNetConfig.sdxl(in_channels=9))])
def test_full_size_configs_are_detected_back(family, config):
    # Meta tensors: real SD1.5 / SDXL / refiner key names and shapes at no memory cost.
    with torch.device("meta"):
        state = UNetModel(config).state_dict()
    if config.in_channels == 4:  # published parameter counts of the three UNets
        expected = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "sdxl_refiner": 2_259_526_660}[family]
        assert sum(t.numel() for t in state.values()) == expected
    assert detect_unet_config(state, "real.safetensors") == (family, config)
