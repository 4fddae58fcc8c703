"""Model folders in the Fooocus/ComfyUI layout, over one or more roots.

Our `--models-dir` is the first root; existing installs (`--extra-model-paths`, `--fooocus-models`,
`--comfyui-models`, see server/model_paths.py) follow. A folder's files are listed from every
root, ours first; a name found in two roots resolves to the first. Listings are cached and
re-scanned only when a directory of the folder changes (its mtime) or on `invalidate()`
(refresh-models), so a folder of thousands of files is not walked on every request.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# folder -> (sub-folders searched, extensions listed; None = any file)
FOLDERS: dict[str, tuple[tuple[str, ...], frozenset | None]] = {
    "checkpoints": (("checkpoints",), MODEL_EXTENSIONS),
    "loras": (("loras",), MODEL_EXTENSIONS),
    "vae": (("vae",), MODEL_EXTENSIONS),
    "vae_approx": (("vae_approx",), MODEL_EXTENSIONS),
    "text_encoders": (("text_encoders", "clip"), None),
    "diffusion_models": (("diffusion_models", "unet"), MODEL_EXTENSIONS),
    "controlnet": (("controlnet", "t2i_adapter"), MODEL_EXTENSIONS),
    "clip_vision": (("clip_vision",), MODEL_EXTENSIONS),
    "upscale_models": (("upscale_models",), MODEL_EXTENSIONS),
    "embeddings": (("embeddings",), MODEL_EXTENSIONS),
    "inpaint": (("inpaint",), MODEL_EXTENSIONS | {".patch"}),  # Fooocus' engines: *.fooocus.patch
    "prompt_expansion": (("prompt_expansion",), None),
    "configs": (("configs",), frozenset({".yaml", ".json"})),
    "styles": (("styles",), frozenset({".json"})),
    "presets": (("presets",), frozenset({".json"})),
    "wildcards": (("wildcards",), frozenset({".txt"})),
}
# A directory changed this recently may change again within the file system's timestamp tick
# without its mtime moving (git's "racy" index entries): such a listing is rescanned next time.
RACY_WINDOW_NS = 2_000_000_000
# ComfyUI's older names for our folders (extra_model_paths.yaml keys, ComfyUI model dirs)
ALIASES = {"clip": "text_encoders", "unet": "diffusion_models", "t2i_adapter": "controlnet"}


class UnknownFolder(KeyError):
    pass


@dataclass(frozen=True)
class ModelRoot:
    """One place model files live: a directory in our layout, or explicit directories per folder
    (an extra_model_paths.yaml entry). `label` names it in logs and errors."""

    label: str
    base: Path | None = None  # layout root: folder -> base/<sub-folder> for each of FOLDERS' sub-folders
    folders: dict[str, tuple[Path, ...]] = field(default_factory=dict)  # explicit directories per folder

    def directories(self, folder: str) -> list[Path]:
        if folder in self.folders:
            return list(self.folders[folder])
        if self.base is None:
            return []
        return [self.base / sub for sub in FOLDERS[folder][0]]


@dataclass
class _Listing:
    signature: tuple  # (directory, mtime_ns or None) of every directory the scan walked
    names: list[str]
    racy: bool  # a walked directory had changed within RACY_WINDOW_NS of the scan: not trusted


class ModelFolders:
    """Lists and resolves files of the model folders over our root and any extra roots."""

    def __init__(self, root: str | Path, extra_roots: list[ModelRoot] | tuple[ModelRoot, ...] = ()) -> None:
        self.root = Path(root)  # ours: where downloads, demo models and new files go
        self.roots: list[ModelRoot] = [ModelRoot("models-dir", base=self.root), *extra_roots]
        self._listings: dict[str, _Listing] = {}
        self._lock = threading.Lock()  # the event loop and the worker thread both list

    @classmethod
    def from_config(cls, config) -> "ModelFolders":
        """Our models dir plus the existing installs the config names (server/model_paths.py)."""
        from .model_paths import extra_roots_from_config

        return cls(config.models_dir, extra_roots_from_config(config))

    def names(self) -> list[str]:
        return list(FOLDERS)

    def directories(self, folder: str) -> list[Path]:
        """Every directory of `folder`, in lookup order: our root's first, then each extra root's."""
        folder = ALIASES.get(folder, folder)
        if folder not in FOLDERS:
            raise UnknownFolder(folder)
        seen: list[Path] = []
        for root in self.roots:
            for directory in root.directories(folder):
                if directory not in seen:
                    seen.append(directory)
        return seen

    def ensure(self) -> None:
        for folder in FOLDERS:
            self.directories(folder)[0].mkdir(parents=True, exist_ok=True)

    def invalidate(self, folder: str | None = None) -> None:
        """Forget cached listings (all, or one folder's): the next list() scans again."""
        with self._lock:
            if folder is None:
                self._listings.clear()
            else:
                self._listings.pop(ALIASES.get(folder, folder), None)

    def list(self, folder: str) -> list[str]:
        """Sorted file names relative to the folder, '/'-separated, following symlinks, skipping dot dirs.

        Cached: a directory's mtime changes when an entry is added, removed or renamed in it, so
        the cached names stay valid while every walked directory keeps its mtime."""
        folder = ALIASES.get(folder, folder)
        directories = self.directories(folder)
        with self._lock:
            cached = self._listings.get(folder)
        if cached is not None and not cached.racy and _still_valid(cached.signature):
            return list(cached.names)
        started = time.time_ns()
        names, signature = _scan(directories, FOLDERS[folder][1])
        racy = any(mtime is not None and mtime > started - RACY_WINDOW_NS for _, mtime in signature)
        with self._lock:
            self._listings[folder] = _Listing(signature, names, racy)
        return list(names)

    def locate(self, relative: str) -> Path:
        """A path under a models root (e.g. `prompt_expansion/fooocus_expansion`) in the first root
        that has it; in ours when none has (where a download or the demo would put it)."""
        top, _, rest = relative.partition("/")
        folder = ALIASES.get(top, top)
        if folder not in FOLDERS:
            return self.root / relative
        directories = self.directories(folder)
        for directory in directories:
            if (directory / rest).exists():
                return directory / rest
        return directories[0] / rest

    def path(self, folder: str, name: str) -> Path:
        """The file `name` of `folder` from the first root that has it; refuses names that leave the folder."""
        if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise FileNotFoundError(f"{folder}: invalid file name {name!r}")
        directories = self.directories(folder)
        for directory in directories:
            candidate = (directory / name)
            if candidate.is_file() and _inside(candidate, directory):
                return candidate
        where = ", ".join(str(d) for d in directories)
        raise FileNotFoundError(f"{folder}/{name} not found in {where}")


def _mtime(directory: Path) -> int | None:
    try:
        return directory.stat().st_mtime_ns
    except OSError:
        return None


def _still_valid(signature: tuple) -> bool:
    return all(_mtime(directory) == mtime for directory, mtime in signature)


def _scan(directories: list[Path], extensions: frozenset | None) -> tuple[list[str], tuple]:
    names: dict[str, None] = {}  # first root wins; insertion order is irrelevant, the result is sorted
    signature: list[tuple[Path, int | None]] = []
    for directory in directories:
        signature.append((directory, _mtime(directory)))  # a missing directory counts too: it may appear
        if not directory.is_dir():
            continue
        for current, subdirs, files in os.walk(directory, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            if current != str(directory):
                signature.append((Path(current), _mtime(Path(current))))
            relative = Path(current).relative_to(directory)
            for name in files:
                if name.startswith(".") or name.endswith(".part"):  # .part: a download in progress
                    continue
                if extensions is not None and os.path.splitext(name)[1].lower() not in extensions:
                    continue
                names.setdefault((relative / name).as_posix(), None)
    return sorted(names), tuple(signature)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return os.path.islink(path) or False  # symlinked model files are allowed on purpose
