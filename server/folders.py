"""Model folders in the Fooocus/ComfyUI layout, listed recursively per request."""
from __future__ import annotations

import os
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


class UnknownFolder(KeyError):
    pass


class ModelFolders:
    """Lists and resolves files of the model folders under one root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        return list(FOLDERS)

    def directories(self, folder: str) -> list[Path]:
        if folder not in FOLDERS:
            raise UnknownFolder(folder)
        return [self.root / sub for sub in FOLDERS[folder][0]]

    def ensure(self) -> None:
        for folder in FOLDERS:
            self.directories(folder)[0].mkdir(parents=True, exist_ok=True)

    def list(self, folder: str) -> list[str]:
        """Sorted file names relative to the folder, '/'-separated, following symlinks, skipping dot dirs."""
        extensions = FOLDERS.get(folder, ((), None))[1] if folder in FOLDERS else None
        names: set[str] = set()
        for directory in self.directories(folder):
            if not directory.is_dir():
                continue
            for current, subdirs, files in os.walk(directory, followlinks=True):
                subdirs[:] = [d for d in subdirs if not d.startswith(".")]
                for name in files:
                    if name.startswith("."):
                        continue
                    if extensions is not None and Path(name).suffix.lower() not in extensions:
                        continue
                    names.add(Path(current, name).relative_to(directory).as_posix())
        return sorted(names)

    def path(self, folder: str, name: str) -> Path:
        """The file `name` of `folder`; refuses names that leave the folder."""
        if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise FileNotFoundError(f"{folder}: invalid file name {name!r}")
        for directory in self.directories(folder):
            candidate = (directory / name)
            if candidate.is_file() and _inside(candidate, directory):
                return candidate
        raise FileNotFoundError(f"{folder}/{name} not found under {self.root}")


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return os.path.islink(path) or False  # symlinked model files are allowed on purpose
