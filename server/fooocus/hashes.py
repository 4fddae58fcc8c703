"""SHA-256 hashes of model files for image metadata, computed once per file version.

Fooocus writes the first 10 hex characters of each model file's SHA-256 ("Model hash",
"Lora hashes").  Hashing a multi-gigabyte checkpoint takes seconds, so results are kept in
memory and in a JSON file that survives restarts; an entry is valid only while the file's size
and modification time are those it was hashed at, so a replaced file is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Union

log = logging.getLogger(__name__)

HASH_PREFIX_LENGTH = 10
CHUNK_SIZE = 1 << 20
_CACHE_VERSION = 1

PathLike = Union[str, os.PathLike]


def file_sha256(path: PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """The file's full SHA-256 as hex, read in chunks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class ModelHashes:
    """Cached SHA-256 prefixes of model files; safe to call from several threads.

    The cache file maps the resolved path to {"size", "mtime_ns", "sha256"}; it is rewritten
    (atomically) whenever a new hash is computed. A cache file that cannot be read or parsed is
    ignored and replaced on the next write.
    """

    def __init__(self, cache_file: PathLike | None, *, hasher: Callable[[Path], str] = file_sha256) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._hasher = hasher
        self._lock = threading.Lock()  # guards _entries, _path_locks and the cache file
        self._path_locks: dict[str, threading.Lock] = {}
        self._entries: dict[str, dict] = self._load()

    def sha256_prefix(self, path: PathLike) -> str:
        """First 10 hex characters of the file's SHA-256; raises OSError when it cannot be read."""
        return self.sha256(path)[:HASH_PREFIX_LENGTH]

    def sha256(self, path: PathLike) -> str:
        resolved = Path(path).resolve()
        key = str(resolved)
        # One lock per file: two threads asking for the same new file hash it once, while
        # different files hash in parallel.
        with self._lock:
            path_lock = self._path_locks.setdefault(key, threading.Lock())
        with path_lock:
            stat = resolved.stat()
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
                return entry["sha256"]
            digest = self._hasher(resolved)
            after = resolved.stat()
            with self._lock:
                # A file rewritten while we read it gets no entry: the digest may mix versions.
                if (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                    self._entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
                    self._save()
            return digest

    def _load(self) -> dict[str, dict]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            entries = data["entries"] if data.get("version") == _CACHE_VERSION else {}
            return {key: entry for key, entry in entries.items() if _valid_entry(entry)}
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable model hash cache %s: %s", self.cache_file, exc)
            return {}

    def _save(self) -> None:
        if self.cache_file is None:
            return
        temporary = self.cache_file.with_name(self.cache_file.name + ".tmp")
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"version": _CACHE_VERSION, "entries": self._entries}, indent=1,
                                            sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.cache_file)  # readers never see a half-written file
        except OSError as exc:
            # The in-memory cache still works; only the next start hashes again.
            log.warning("cannot write model hash cache %s: %s", self.cache_file, exc)


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("mtime_ns"), int)
            and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
