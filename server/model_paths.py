"""Existing model installs as extra roots of server.folders.ModelFolders.

- `--extra-model-paths FILE`: ComfyUI's `extra_model_paths.yaml`. Each top-level entry has an
  optional `base_path` (relative to the file's directory, `~` and `$VARS` expanded) and folder keys
  whose value is one path or several lines of paths, each relative to base_path:

      comfyui:
          base_path: /opt/ComfyUI/
          checkpoints: models/checkpoints/
          loras: |
              models/loras
              models/more_loras

  ComfyUI's folder names are read with its aliases (`clip` -> text_encoders, `unet` ->
  diffusion_models, `t2i_adapter` -> controlnet); keys we have no folder for are logged and
  skipped; `is_default` is read but our models dir stays first (downloads go there).
- `--fooocus-models DIR`: a Fooocus `models/` folder (our layout: checkpoints/, loras/, ...).
- `--comfyui-models DIR`: a ComfyUI `models/` folder, or the ComfyUI install holding it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .folders import ALIASES, FOLDERS, ModelRoot

log = logging.getLogger(__name__)

RESERVED_KEYS = ("base_path", "is_default", "download_model_base")


class ModelPathsError(ValueError):
    """An extra_model_paths file that cannot be read; the message names the file and the entry."""


def _expand(text: str) -> str:
    return os.path.expandvars(os.path.expanduser(text.strip()))


def read_extra_model_paths(path: str | Path) -> list[ModelRoot]:
    """The roots of one extra_model_paths.yaml, in file order."""
    import yaml  # pyyaml: ComfyUI's own format for this file

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelPathsError(f"--extra-model-paths {path}: cannot read the file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelPathsError(f"--extra-model-paths {path}: not valid YAML: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ModelPathsError(f"--extra-model-paths {path}: expected entries (name: {{base_path, folders}}), "
                              f"got {type(data).__name__}")
    roots = []
    for entry, body in data.items():
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ModelPathsError(f"--extra-model-paths {path}: entry {entry!r} must be a mapping of folder "
                                  f"names to paths")
        base_text = body.get("base_path")
        base = None
        if base_text:
            base = Path(_expand(str(base_text)))
            if not base.is_absolute():
                base = (path.parent / base).resolve()
        folders: dict[str, tuple[Path, ...]] = {}
        for key, value in body.items():
            if key in RESERVED_KEYS or value is None:
                continue
            folder = ALIASES.get(str(key), str(key))
            if folder not in FOLDERS:
                log.info("%s: entry %s: folder %r is not one we use; skipped", path, entry, key)
                continue
            directories = list(folders.get(folder, ()))
            for line in str(value).splitlines():
                if not line.strip():
                    continue
                directory = Path(_expand(line))
                if not directory.is_absolute():
                    directory = (base / directory) if base is not None else (path.parent / directory)
                directories.append(directory)
            folders[folder] = tuple(directories)
        roots.append(ModelRoot(f"{path.name}:{entry}", folders=folders))
    return roots


def comfyui_models_root(directory: str | Path) -> ModelRoot:
    """A ComfyUI models folder; given the ComfyUI install itself, its `models/` inside."""
    directory = Path(_expand(str(directory)))
    if not (directory / "checkpoints").is_dir() and (directory / "models").is_dir():
        directory = directory / "models"
    return ModelRoot(f"comfyui:{directory}", base=directory)


def fooocus_models_root(directory: str | Path) -> ModelRoot:
    """A Fooocus models folder; given the Fooocus install itself, its `models/` inside."""
    directory = Path(_expand(str(directory)))
    if not (directory / "checkpoints").is_dir() and (directory / "models").is_dir():
        directory = directory / "models"
    return ModelRoot(f"fooocus:{directory}", base=directory)


def extra_roots_from_config(config) -> list[ModelRoot]:
    """The config's extra roots in the order the flags name them: YAML entries, Fooocus, ComfyUI."""
    roots: list[ModelRoot] = []
    for path in getattr(config, "extra_model_paths", ()) or ():
        roots.extend(read_extra_model_paths(path))
    roots.extend(fooocus_models_root(d) for d in getattr(config, "fooocus_models", ()) or ())
    roots.extend(comfyui_models_root(d) for d in getattr(config, "comfyui_models", ()) or ())
    for root in roots:
        log.info("model root %s", root.label)
    return roots
