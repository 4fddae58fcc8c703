"""Output caches and the input signatures that key them.

A node's key is the signature of its class, its IS_CHANGED fingerprint, its constants (name-sorted)
and, for each link, the key of the linked node and the output index. Identical subgraphs under
other node ids therefore share keys, a changed constant changes the keys of exactly that node and
its descendants, and no tensor is ever hashed. Keys are computed before the run.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

@dataclass
class CachedOutput:
    values: list[list]  # one list per output slot (every value is a list internally)
    ui: dict | None


class CacheKey:
    """An input signature with its hash computed once.

    `parts` holds the class, fingerprint and, per input, either the constant (tagged with its
    type, since 1 == 1.0 == True in Python) or the source node's CacheKey. Source keys are the
    very objects stored in the cache (see `canonical`), so comparing two keys compares each
    part by identity first: O(inputs), never O(ancestors).
    """

    __slots__ = ("parts", "_hash")

    def __init__(self, parts: tuple) -> None:
        self.parts = parts
        self._hash = hash(parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, CacheKey) and self._hash == other._hash and self.parts == other.parts)

    def __repr__(self) -> str:
        return f"CacheKey({self.parts[0]}, {self._hash:#x})"


class _Unique:
    """A constant or fingerprint that must never match anything (NaN IS_CHANGED, unhashable values)."""

    __slots__ = ()


_PLAIN = (str, int, float, bool, type(None))


def _constant_token(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        if kind is float and math.isnan(value):
            return _Unique()
        return kind, value
    try:
        return "json", json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return _Unique()


def fingerprint_is_unique(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def compute_keys(order: list[str], class_types: Mapping[str, str], constants: Mapping[str, Mapping[str, Any]],
                 links: Mapping[str, Mapping[str, tuple[str, int]]], fingerprints: Mapping[str, Any],
                 node_scoped: Callable[[str], bool],
                 canonical: Callable[[CacheKey], CacheKey] = lambda key: key,
                 known: Mapping[str, CacheKey] | None = None) -> dict[str, CacheKey]:
    """Keys for the nodes of `order`, which lists every node after the nodes it links to.

    `constants[n]` and `links[n]` hold node n's constant inputs and its links (name -> (source,
    index)); `canonical` maps a key to the equal key object already held by the cache; `known`
    holds keys computed earlier (nodes of `order` may link to them: a node expansion's nodes do).
    Returns the keys of `order`'s nodes.
    """
    keys: dict[str, CacheKey] = dict(known) if known else {}
    empty: Mapping = {}
    for node_id in order:
        fingerprint = fingerprints.get(node_id)
        inputs = [(name, _constant_token(value)) for name, value in constants.get(node_id, empty).items()]
        for name, (source, index) in links.get(node_id, empty).items():
            inputs.append((name, keys.get(source) or _Unique(), index))
        inputs.sort()  # input names are unique, so tuples compare by name alone
        parts = (class_types[node_id], None if fingerprint is None else _constant_token(fingerprint),
                 node_id if node_scoped(node_id) else None, *inputs)
        keys[node_id] = canonical(CacheKey(parts))
    return {node_id: keys[node_id] for node_id in order} if known else keys


class ClassicCache:
    """Keeps what the current prompt can use: entries whose keys the new prompt lacks are dropped."""

    def __init__(self) -> None:
        self._entries: dict[CacheKey, tuple[CacheKey, CachedOutput]] = {}

    def canonical(self, key: CacheKey) -> CacheKey:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else key

    def begin_prompt(self, keys: set[CacheKey]) -> None:
        self._entries = {k: v for k, v in self._entries.items() if k in keys}

    def get(self, key: CacheKey) -> CachedOutput | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def put(self, key: CacheKey, value: CachedOutput) -> None:
        self._entries[key] = (key, value)

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
        self._entries: OrderedDict[CacheKey, tuple[CacheKey, CachedOutput]] = OrderedDict()
        self._pinned: set[CacheKey] = set()

    def canonical(self, key: CacheKey) -> CacheKey:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else key

    def begin_prompt(self, keys: set[CacheKey]) -> None:
        self._pinned = keys
        self._evict()

    def get(self, key: CacheKey) -> CachedOutput | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: CacheKey, value: CachedOutput) -> None:
        self._entries[key] = (key, value)
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


class NodeInstances:
    """The V1 node objects kept between prompts, by (node id, class): at most `limit`, the least
    recently used dropped first, so a client that names its nodes afresh in every prompt cannot
    grow them without end (a stateful node, such as the expansion node holding its model, stays
    while its workflow keeps running)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._objects: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        instance = self._objects.get(key)
        if instance is None:
            instance = self._objects[key] = make()
        self._objects.move_to_end(key)
        while len(self._objects) > self.limit:
            self._objects.popitem(last=False)
        return instance

    def clear(self) -> None:
        self._objects.clear()

    def __len__(self) -> int:
        return len(self._objects)


def make_cache(policy: str):
    """`classic` or `lru:N` (the --cache flag)."""
    if policy == "classic":
        return ClassicCache()
    if policy.startswith("lru:"):
        return LRUCache(int(policy.split(":", 1)[1]))
    raise ValueError(f"unknown cache policy {policy!r}: use 'classic' or 'lru:N'")
