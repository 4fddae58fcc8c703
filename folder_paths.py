"""ComfyUI's `folder_paths`, answered from the bound App's folders (server.folders.ModelFolders).

Module attributes ComfyUI keeps as globals (models_dir, output_directory, folder_names_and_paths,
...) are computed on each access from the bound App, so they follow it (and extra model roots of
ModelFolders) instead of freezing at a pack's import. A directory a pack adds to one of our
folders becomes an extra root of ModelFolders (our nodes list it too); folders of a pack's own
(names we do not have) live in the binding.
"""
from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

import comfy_compat
from comfy_compat import bound, not_provided

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}
_DIRECTORY_TYPES = ("output", "input", "temp")


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


def _our_folders(binding) -> list[str]:
    return binding.app.folders.names()


def _extensions(binding, folder_name: str) -> set[str]:
    from server.folders import FOLDERS

    if folder_name in binding.pack_folders:
        return set(binding.pack_folders[folder_name][1] or ())
    known = FOLDERS.get(folder_name)
    return set(known[1]) if known and known[1] else set()


def get_folder_paths(folder_name: str) -> list[str]:
    """Every directory of a folder: ModelFolders' roots first, then any a pack added."""
    binding = bound("folder_paths.get_folder_paths")
    folder_name = map_legacy(folder_name)
    if folder_name in _our_folders(binding):
        return [str(p) for p in binding.app.folders.directories(folder_name)]
    if folder_name not in binding.pack_folders:
        raise KeyError(folder_name)  # ComfyUI: folder_names_and_paths[name] of an unknown folder
    return list(binding.pack_folders[folder_name][0])


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """One of our folders gains the directory as an extra root (so our own nodes list its files
    too, after our models dir; is_default puts it right after ours); a folder of the pack's own
    making lives in the binding."""
    binding = bound("folder_paths.add_model_folder_path")
    folder_name = map_legacy(folder_name)
    path = str(full_folder_path)
    if folder_name in _our_folders(binding):
        _add_root(binding, folder_name, path, is_default)
        return
    directories, extensions = binding.pack_folders.get(folder_name, ([], set(supported_pt_extensions)))
    if path in directories:
        directories.remove(path)
    directories.insert(0, path) if is_default else directories.append(path)
    binding.pack_folders[folder_name] = (directories, extensions)


def _add_root(binding, folder_name: str, path: str, first: bool = False) -> None:
    from server.folders import ModelRoot

    folders = binding.app.folders
    if Path(path) in folders.directories(folder_name):
        return
    root = ModelRoot(f"custom node pack folder {folder_name}: {path}", folders={folder_name: (Path(path),)})
    folders.roots.insert(1, root) if first else folders.roots.append(root)
    folders.invalidate(folder_name)  # cached listings only watch the directories they walked


def _walk(directory: str, extensions: set[str]) -> list[str]:
    names = []
    for current, subdirs, files in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and (not extensions or Path(name).suffix.lower() in extensions):
                names.append(Path(current, name).relative_to(directory).as_posix())
    return names


def get_filename_list(folder_name: str) -> list[str]:
    binding = bound("folder_paths.get_filename_list")
    folder_name = map_legacy(folder_name)
    if folder_name in _our_folders(binding):
        return binding.app.folders.list(folder_name)
    names: set[str] = set()
    extensions = _extensions(binding, folder_name)
    for directory in binding.pack_folders.get(folder_name, ([], None))[0]:
        if os.path.isdir(directory):
            names.update(_walk(directory, extensions))
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    binding = bound("folder_paths.get_full_path")
    folder_name = map_legacy(folder_name)
    if folder_name in _our_folders(binding):
        try:
            return str(binding.app.folders.path(folder_name, filename))
        except FileNotFoundError:
            return None
    if ".." in Path(filename).parts or os.path.isabs(filename):
        return None
    for directory in binding.pack_folders.get(folder_name, ([], None))[0]:
        candidate = os.path.join(directory, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def _directory(kind: str) -> str:
    config = bound(f"folder_paths.get_{kind}_directory").config
    return str(Path({"output": config.output_dir, "input": config.input_dir, "temp": config.temp_dir}[kind]).resolve())


def get_output_directory() -> str:
    return _directory("output")


def get_input_directory() -> str:
    return _directory("input")


def get_temp_directory() -> str:
    return _directory("temp")


def get_user_directory() -> str:
    raise not_provided("folder_paths.get_user_directory", "there are no per-user folders")


def get_directory_by_type(type_name: str) -> str | None:
    return _directory(type_name) if type_name in _DIRECTORY_TYPES else None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for kind in _DIRECTORY_TYPES:
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[:-len(suffix)], _directory(kind)
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else get_input_directory()
    return os.path.join(base_dir, name)


def exists_annotated_filepath(name: str) -> bool:
    return os.path.exists(get_annotated_filepath(name))


def filter_files_extensions(files, extensions) -> list[str]:
    extensions = {e.lower() for e in extensions}
    return sorted(f for f in files if not extensions or os.path.splitext(f)[-1].lower() in extensions)


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0):
    """ComfyUI's (full_output_folder, filename, counter, subfolder, filename_prefix)."""
    from nodes.images import expand_prefix

    if "%" in filename_prefix:
        filename_prefix = expand_prefix(filename_prefix, image_width, image_height)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(full_output_folder))) != \
            os.path.abspath(output_dir):
        raise ValueError(f"Saving image outside the output folder is not allowed: {full_output_folder}")
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    try:
        counters = [int(m.group(1)) for f in os.listdir(full_output_folder) if (m := pattern.match(f))]
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counters = []
    return full_output_folder, filename, max(counters, default=0) + 1, subfolder, filename_prefix


class _FolderTable(MutableMapping):
    """folder_names_and_paths: name -> (directories, extensions), live over the binding."""

    def __getitem__(self, name):
        binding = bound("folder_paths.folder_names_and_paths")
        name = map_legacy(name)
        if name not in _our_folders(binding) and name not in binding.pack_folders:
            raise KeyError(name)
        return get_folder_paths(name), _extensions(binding, name)

    def __setitem__(self, name, value):
        binding = bound("folder_paths.folder_names_and_paths")
        directories, extensions = value
        name = map_legacy(name)
        if name in _our_folders(binding):  # our folders keep their roots and extensions; new directories join
            for directory in directories:
                _add_root(binding, name, str(directory))
        else:
            binding.pack_folders[name] = ([str(d) for d in directories], set(extensions or ()))

    def __delitem__(self, name):
        binding = bound("folder_paths.folder_names_and_paths")
        if map_legacy(name) in _our_folders(binding):
            raise not_provided(f"del folder_paths.folder_names_and_paths[{name!r}]", "our model folders stay")
        binding.pack_folders.pop(map_legacy(name))

    def __iter__(self):
        binding = bound("folder_paths.folder_names_and_paths")
        return iter(dict.fromkeys([*_our_folders(binding), *binding.pack_folders]))

    def __len__(self):
        return len(list(iter(self)))


folder_names_and_paths = _FolderTable()


def __getattr__(name: str):
    """The directory globals of ComfyUI's folder_paths, read from the bound App on each access."""
    if name == "models_dir":
        return str(Path(bound("folder_paths.models_dir").app.folders.root).resolve())
    if name == "base_path":
        return str(comfy_compat.base_path(bound("folder_paths.base_path")))
    if name in ("output_directory", "input_directory", "temp_directory"):
        return _directory(name.split("_")[0])
    if name.startswith("__"):
        raise AttributeError(name)
    raise not_provided(f"folder_paths.{name}")
