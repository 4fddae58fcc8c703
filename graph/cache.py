"""Output caches and the input signatures that key them.

A node's key is a digest of its class, its IS_CHANGED fingerprint, its constants (name-sorted)
and, for each link, the key of the linked node and the output index. Identical subgraphs under
other node ids therefore share keys, a changed constant changes the keys of exactly that node and
its descendants, and no tensor is ever hashed. Keys are computed before the run.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

_nonce = itertools.count()


@dataclass
class CachedOutput:
    values: list[list]  # one list per output slot (every value is a list internally)
    ui: dict | None


def _encode_constant(value: Any) -> str:
    """Stable text for primitive constants; anything else gets a never-equal token."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return f"<unique {next(_nonce)}>"


def fingerprint_is_unique(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def compute_keys(order: list[str], prompt: Mapping[str, dict], is_link: Callable[[Any], bool],
                 constants: Mapping[str, Mapping[str, Any]], fingerprints: Mapping[str, Any],
                 node_scoped: Callable[[str], bool]) -> dict[str, bytes]:
    """Keys for the nodes of `order`, which lists every node after the nodes it links to."""
    keys: dict[str, bytes] = {}
    for node_id in order:
        node = prompt[node_id]
        digest = hashlib.blake2b(digest_size=16)
        fingerprint = fingerprints.get(node_id)
        head = [node["class_type"],
                f"<unique {next(_nonce)}>" if fingerprint_is_unique(fingerprint) else _encode_constant(fingerprint)]
        if node_scoped(node_id):
            head.append(node_id)
        digest.update("\x1f".join(head).encode())
        node_constants = constants.get(node_id, {})
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                source = keys.get(value[0])
                part = b"L" + (source if source is not None else next(_nonce).to_bytes(8, "little")) + \
                    int(value[1]).to_bytes(4, "little")
            else:
                part = b"C" + _encode_constant(node_constants.get(name, value)).encode()
            digest.update(b"\x1e" + name.encode() + b"\x1d" + part)
        keys[node_id] = digest.digest()
    return keys


class ClassicCache:
    """Keeps what the current prompt can use: entries whose keys the new prompt lacks are dropped."""

    def __init__(self) -> None:
        self._entries: dict[bytes, CachedOutput] = {}

    def begin_prompt(self, keys: set[bytes]) -> None:
        self._entries = {k: v for k, v in self._entries.items() if k in keys}

    def get(self, key: bytes) -> CachedOutput | None:
        return self._entries.get(key)

    def put(self, key: bytes, value: CachedOutput) -> None:
        self._entries[key] = value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class LRUCache:
    """At most `max_entries` outputs across prompts; entries used by the running prompt are kept."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("LRU cache size must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedOutput] = OrderedDict()
        self._pinned: set[bytes] = set()

    def begin_prompt(self, keys: set[bytes]) -> None:
        self._pinned = keys
        self._evict()

    def get(self, key: bytes) -> CachedOutput | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: CachedOutput) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        if len(self._entries) <= self.max_entries:
            return
        for key in list(self._entries):
            if len(self._entries) <= self.max_entries:
                break
            if key not in self._pinned:
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def make_cache(policy: str):
    """`classic` or `lru:N` (the --cache flag)."""
    if policy == "classic":
        return ClassicCache()
    if policy.startswith("lru:"):
        return LRUCache(int(policy.split(":", 1)[1]))
    raise ValueError(f"unknown cache policy {policy!r}: use 'classic' or 'lru:N'")
