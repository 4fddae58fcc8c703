"""Textual-inversion embeddings in prompts (`embedding:name`, as ComfyUI and Fooocus read them).

A prompt word `embedding:name` (optionally `embedding:name,` with trailing commas kept as text) is
replaced by the embedding's vectors; a name with no file is dropped with a warning. Files live in
the `embeddings/` folder: `name`, `name.safetensors`, `name.pt` or `name.bin`, in these layouts:
- A1111 `.pt`: {"string_to_param": {"*": [n, width]}, ...};
- safetensors: {"emb_params": [n, width]}, or SDXL's {"clip_l": [n, 768], "clip_g": [n, 1280]};
- diffusers `.bin`: {"<token>": [width]}.
Each CLIP takes its own key ("clip_l" / "clip_g") when the file has it, else the file's first
tensor; vectors of another width are dropped for that CLIP (ComfyUI's "shape mismatch" rule), the
window being padded at its end instead.

Tokenization puts `EmbeddingToken(name, i)` placeholders in the windows; `place_embeddings` turns
them, per CLIP, into ids past the vocabulary plus the table of their vectors, which the CLIP's
token-embedding layer appends to its own (models/clip_text.py).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

log = logging.getLogger(__name__)

PREFIX = "embedding:"
EXTENSIONS = ("", ".safetensors", ".pt", ".bin")


@dataclass(frozen=True)
class EmbeddingToken:
    """The index-th vector of the embedding `name`, in a prompt window."""

    name: str
    index: int


def read_embedding_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The file's tensors by key (A1111's nested `string_to_param` flattened to "*")."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        return {key: value for key, value in data["string_to_param"].items() if isinstance(value, torch.Tensor)}
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}
    raise ValueError(f"{path.name}: not a textual-inversion embedding")


def vectors_for(tensors: dict[str, torch.Tensor], key: str, width: int) -> torch.Tensor | None:
    """[n, width] vectors of one CLIP: its own key, else the first tensor; None if the width differs."""
    if not tensors:
        return None
    chosen = tensors[key] if key in tensors else next(iter(tensors.values()))
    chosen = chosen.reshape(-1, chosen.shape[-1]) if chosen.ndim else chosen.reshape(1, 1)
    return chosen.float() if chosen.shape[-1] == width else None


class EmbeddingLibrary:
    """The embeddings of some directories, read on first use (one library per encoding)."""

    def __init__(self, directories: Sequence[str | os.PathLike]):
        self.directories = [Path(d) for d in directories]
        self._loaded: dict[str, dict[str, torch.Tensor] | None] = {}

    def _path(self, name: str) -> Path | None:
        for directory in self.directories:
            for extension in EXTENSIONS:
                candidate = directory / (name + extension)
                try:  # names must stay inside the folder (no "../")
                    inside = candidate.resolve().is_relative_to(directory.resolve())
                except OSError:
                    inside = False
                if inside and candidate.is_file():
                    return candidate
        return None

    def tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        if name not in self._loaded:
            path = self._path(name) if name else None
            self._loaded[name] = read_embedding_file(path) if path is not None else None
        return self._loaded[name]

    def lookup(self, word: str) -> tuple[list[EmbeddingToken] | None, str]:
        """(placeholders, leftover text) for a prompt word `embedding:...`; placeholders None when
        no such embedding exists (the word is then dropped, with a warning)."""
        name = word[len(PREFIX):].strip("\n")
        tensors, leftover = self.tensors(name), ""
        if tensors is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                tensors, leftover = self.tensors(stripped), name[len(stripped):]
                name = stripped
        if tensors is None:
            log.warning("embedding:%s does not exist in %s, ignoring it", name,
                        ", ".join(str(d) for d in self.directories) or "no embeddings folder")
            return None, leftover
        count = max(vectors.reshape(-1, vectors.shape[-1]).shape[0] if vectors.ndim else 1
                    for vectors in tensors.values())
        return [EmbeddingToken(name, i) for i in range(count)], leftover


def place_embeddings(windows: list[list[tuple]], library: EmbeddingLibrary | None, key: str, width: int,
                     vocab_size: int, pad: int) -> tuple[list[list[tuple[int, float]]], torch.Tensor | None]:
    """Windows of (id, weight) for one CLIP, with each placeholder given id vocab_size + k, and the
    [K, width] table of those vectors (None without placeholders). Placeholders this CLIP has no
    vector for are dropped and the window padded at its end."""
    rows: list[torch.Tensor] = []
    ids: dict[EmbeddingToken, int] = {}
    out = []
    for window in windows:
        placed = []
        for token, weight in window:
            if not isinstance(token, EmbeddingToken):
                placed.append((token, weight))
                continue
            if token not in ids:
                vectors = vectors_for(library.tensors(token.name) or {}, key, width) if library else None
                if vectors is None or token.index >= len(vectors):
                    log.warning("embedding:%s has no %d-wide vector for %s, ignoring it", token.name, width, key)
                    continue
                ids[token] = vocab_size + len(rows)
                rows.append(vectors[token.index])
            placed.append((ids[token], weight))
        out.append(placed + [(pad, 1.0)] * (len(window) - len(placed)))
    return out, (torch.stack(rows) if rows else None)
