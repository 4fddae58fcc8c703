"""Fooocus prompt wildcards (``__name__``) and arrays (``[[a,b,c]]``), spec 7.2.

``__name__`` is replaced by one line of ``name.txt`` from a wildcards folder (any depth, matched
by file stem); a picked line may itself contain wildcards, which are resolved in later passes.
``[[a,b]]`` arrays step through their elements with the image index.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterable

BUILTIN_WILDCARDS_DIR = Path(__file__).parent / "data" / "wildcards"
# Fooocus's bound on nested resolution passes (config `wildcards_max_bfs_depth`).
MAX_WILDCARD_PASSES = 64

_WILDCARD = re.compile(r"__([\w-]+)__")
_ARRAY = re.compile(r"\[\[(.*?)\]\]")


class WildcardLibrary:
    """Wildcard word lists found in folders; the first folder holding a stem wins."""

    def __init__(self, files: dict[str, Path]):
        self._files = dict(files)
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def load(cls, dirs: Iterable[str | Path] = (), *, include_builtin: bool = True) -> "WildcardLibrary":
        folders = [Path(d) for d in dirs]
        if include_builtin:
            folders.append(BUILTIN_WILDCARDS_DIR)
        files: dict[str, Path] = {}
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*.txt")):
                files.setdefault(path.stem, path)
        return cls(files)

    def names(self) -> list[str]:
        return sorted(self._files)

    def words(self, name: str) -> list[str]:
        """Non-empty lines of the named list ([] when there is no such file)."""
        if name not in self._cache:
            path = self._files.get(name)
            if path is None:
                self._cache[name] = []
            else:
                lines = path.read_text(encoding="utf-8").splitlines()
                self._cache[name] = [line for line in lines if line != ""]
        return self._cache[name]

    def apply(self, text: str, rng: random.Random, index: int, in_order: bool = False) -> str:
        """Resolve wildcards: random lines from ``rng``, or line ``index % n`` when in order.

        Each pass replaces every placeholder found, one occurrence at a time and left to
        right, so one rng draw is consumed per occurrence in reading order. An unknown or
        empty list is replaced (everywhere) by its bare name.
        """
        for _ in range(MAX_WILDCARD_PASSES):
            names = _WILDCARD.findall(text)
            if not names:
                break
            for name in names:
                words = self.words(name)
                tag = f"__{name}__"
                if not words:
                    text = text.replace(tag, name)
                elif in_order:
                    text = text.replace(tag, words[index % len(words)], 1)
                else:
                    text = text.replace(tag, rng.choice(words), 1)
        return text


def apply_arrays(text: str, index: int) -> str:
    """Replace each ``[[a,b,...]]`` by one element chosen from the image index.

    With arrays of sizes m1..mk the index (mod m1*...*mk) is read as a mixed-radix number whose
    first digit (fastest varying) picks from the first array. Elements are not stripped.
    """
    arrays = _ARRAY.findall(text)
    if not arrays:
        return text
    options = [body.split(",") for body in arrays]
    total = 1
    for words in options:
        total *= len(words)
    rest = index % total
    for body, words in zip(arrays, options):
        choice = words[rest % len(words)]
        rest //= len(words)
        text = text.replace(f"[[{body}]]", choice, 1)
    return text
