"""ModelFolders over several roots (ours first, the first root wins), ComfyUI's
extra_model_paths.yaml format and the install shortcuts, and the listing cache (kept while no
directory changes, rescanned on a change or on invalidate)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import server.folders as folders_module
from server.config import AppConfig
from server.folders import RACY_WINDOW_NS, ModelFolders, ModelRoot
from server.model_paths import ModelPathsError, comfyui_models_root, read_extra_model_paths


def touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def age(*directories, seconds: float = 10.0) -> None:
    """Back-date directories' mtimes out of the racy window, as any folder not just written is."""
    for directory in directories:
        stamp = os.stat(directory).st_mtime_ns - int(seconds * 1e9) - RACY_WINDOW_NS
        os.utime(directory, ns=(stamp, stamp))


def test_extra_model_paths_entries_base_paths_multi_line_paths_and_aliases(tmp_path):
    touch(tmp_path / "comfy" / "models" / "checkpoints" / "a.safetensors")
    yaml_file = tmp_path / "conf" / "extra.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        "comfyui:\n"
        "    base_path: ../comfy\n"
        "    is_default: true\n"
        "    checkpoints: models/checkpoints/\n"
        "    clip: models/clip/\n"
        "    unet: models/unet\n"
        "    hypernetworks: models/hypernetworks\n"
        "    loras: |\n"
        "        models/loras\n"
        "        /abs/loras\n"
        "plain:\n"
        "    vae: vaes\n")
    comfy, plain = read_extra_model_paths(yaml_file)
    base = (tmp_path / "comfy").resolve()
    assert comfy.folders == {"checkpoints": (base / "models/checkpoints",), "text_encoders": (base / "models/clip",),
                             "diffusion_models": (base / "models/unet",),
                             "loras": (base / "models/loras", Path("/abs/loras"))}
    assert plain.folders == {"vae": (yaml_file.parent / "vaes",)}  # no base_path: relative to the file
    assert "hypernetworks" not in comfy.folders


@pytest.mark.parametrize("text, expected", [("- a\n- b\n", "expected entries"), ("x: [1, 2\n", "not valid YAML"),
                                            ("entry: 3\n", "entry 'entry' must be a mapping")])
def test_a_bad_extra_model_paths_file_is_named_with_the_reason(tmp_path, text, expected):
    yaml_file = tmp_path / "extra.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ModelPathsError) as failure:
        read_extra_model_paths(yaml_file)
    assert str(yaml_file) in str(failure.value) and expected in str(failure.value)
    with pytest.raises(ModelPathsError, match="cannot read"):
        read_extra_model_paths(tmp_path / "missing.yaml")


def test_roots_in_order_ours_first_and_the_first_root_wins(tmp_path):
    ours, comfy_install, fooocus = tmp_path / "ours", tmp_path / "ComfyUI", tmp_path / "fooocus"
    touch(ours / "loras" / "shared.safetensors", b"ours")
    touch(comfy_install / "models" / "loras" / "shared.safetensors", b"comfy")
    touch(comfy_install / "models" / "loras" / "sub" / "comfy-only.safetensors")
    touch(comfy_install / "models" / "clip" / "clip_l.safetensors")
    touch(fooocus / "loras" / "fooocus-only.safetensors")
    touch(fooocus / "loras" / "download.safetensors.part")  # a download in progress is not listed
    config = AppConfig(models_dir=ours, comfyui_models=(comfy_install,), fooocus_models=(fooocus,))
    folders = ModelFolders.from_config(config)
    assert folders.directories("loras") == [ours / "loras", fooocus / "loras", comfy_install / "models" / "loras"]
    assert folders.list("loras") == ["fooocus-only.safetensors", "shared.safetensors", "sub/comfy-only.safetensors"]
    assert folders.path("loras", "shared.safetensors").read_bytes() == b"ours"
    assert folders.path("loras", "sub/comfy-only.safetensors").parent.name == "sub"
    assert folders.list("text_encoders") == ["clip_l.safetensors"]  # ComfyUI's clip/ is text_encoders
    assert folders.list("clip") == ["clip_l.safetensors"]
    assert comfyui_models_root(comfy_install).base == comfy_install / "models"  # the install itself given
    with pytest.raises(FileNotFoundError, match="fooocus"):
        folders.path("loras", "nowhere.safetensors")
    assert folders.locate("loras/sub") == comfy_install / "models" / "loras" / "sub"
    assert folders.locate("prompt_expansion/fooocus_expansion") == ours / "prompt_expansion" / "fooocus_expansion"


def test_listings_are_cached_until_a_directory_changes(tmp_path, monkeypatch):
    ours, extra = tmp_path / "ours", tmp_path / "extra"
    touch(ours / "checkpoints" / "a.safetensors")
    touch(extra / "checkpoints" / "deep" / "b.safetensors")
    age(ours / "checkpoints", extra / "checkpoints", extra / "checkpoints" / "deep")
    folders = ModelFolders(ours, [ModelRoot("extra", base=extra)])
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(folders_module.os, "walk", lambda *a, **k: (walks.append(a[0]), real_walk(*a, **k))[1])
    assert folders.list("checkpoints") == ["a.safetensors", "deep/b.safetensors"]
    scanned = len(walks)
    assert folders.list("checkpoints") == ["a.safetensors", "deep/b.safetensors"] and len(walks) == scanned

    touch(extra / "checkpoints" / "deep" / "c.safetensors")  # a change two levels down: that mtime moves
    assert folders.list("checkpoints") == ["a.safetensors", "deep/b.safetensors", "deep/c.safetensors"]
    assert len(walks) > scanned
    # just changed: not trusted yet (a second change within the same timestamp tick would not show)
    scanned = len(walks)
    folders.list("checkpoints")
    assert len(walks) > scanned
    age(extra / "checkpoints" / "deep")
    folders.list("checkpoints")
    scanned = len(walks)
    folders.list("checkpoints")
    assert len(walks) == scanned  # settled: cached again

    (ours / "checkpoints" / "a.safetensors").unlink()
    assert folders.list("checkpoints") == ["deep/b.safetensors", "deep/c.safetensors"]
    age(ours / "checkpoints")
    folders.list("checkpoints")
    scanned = len(walks)
    folders.invalidate()  # refresh-models
    folders.list("checkpoints")
    assert len(walks) > scanned


def test_a_missing_root_directory_appearing_later_is_seen(tmp_path):
    folders = ModelFolders(tmp_path / "ours", [ModelRoot("later", base=tmp_path / "later")])
    assert folders.list("vae") == []
    touch(tmp_path / "later" / "vae" / "v.safetensors")
    assert folders.list("vae") == ["v.safetensors"]
