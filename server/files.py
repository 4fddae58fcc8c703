"""Safe access to the input/output/temp folders for /view and /upload/image."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

FOLDER_TYPES = ("output", "input", "temp")
_ANNOTATION = re.compile(r"^(.*) \[(output|input|temp)\]$")


class BadFileRequest(ValueError):
    """400: a malformed name."""


class ForbiddenPath(PermissionError):
    """403: a path that leaves its folder."""


def split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """`name.png [input]` names its folder type, as ComfyUI's UI writes it."""
    match = _ANNOTATION.match(filename)
    return (match.group(1), match.group(2)) if match else (filename, default_type)


def check_name(filename: str) -> str:
    if not filename or filename.startswith(("/", "\\")) or ".." in filename or "\x00" in filename \
            or re.match(r"^[A-Za-z]:", filename):
        raise BadFileRequest(f"invalid filename {filename!r}")
    return filename


def resolve_in(base: Path, subfolder: str, filename: str) -> Path:
    """base/subfolder/filename, refusing anything that resolves outside base."""
    check_name(filename)
    if "\x00" in subfolder:
        raise BadFileRequest("invalid subfolder")
    base = base.resolve()
    directory = (base / subfolder).resolve() if subfolder else base
    if directory != base and base not in directory.parents:
        raise ForbiddenPath(f"subfolder {subfolder!r} leaves the {base.name} folder")
    path = (directory / filename).resolve()
    if path.parent != directory:
        raise ForbiddenPath(f"filename {filename!r} leaves its folder")
    return path


def unique_upload_path(directory: Path, filename: str, content: bytes, overwrite: bool) -> Path:
    """ComfyUI's upload naming: reuse an identical file, else `name (1).ext`, `name (2).ext`, ..."""
    path = directory / filename
    if overwrite or not path.exists():
        return path
    digest = hashlib.sha256(content).digest()
    stem, suffix = path.stem, path.suffix
    counter = 1
    while path.exists():
        if hashlib.sha256(path.read_bytes()).digest() == digest:
            return path
        path = directory / f"{stem} ({counter}){suffix}"
        counter += 1
    return path
