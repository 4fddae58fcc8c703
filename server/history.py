"""The in-memory ComfyUI history of finished prompts: at most `limit` entries (ComfyUI's cap,
`--max-history`), oldest evicted first, each kept as zlib-compressed compact JSON.

A history entry holds the whole workflow (a Fooocus job's is ~3 KB of JSON): as Python objects
that is ~22 KB, compressed ~1 KB, so a full 10,000-entry history costs ~10 MB instead of
~220 MB. /history is served from the stored JSON without building the objects again.
Thread-safe: the worker thread adds, the event loop reads.
"""
from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from typing import Any

COMPRESS_LEVEL = 6


def _jsonable(value: Any) -> str:
    """A custom node's ui value JSON cannot hold is kept as its repr, never fails the prompt."""
    return repr(value)


def encode_entry(entry: dict) -> bytes:
    text = json.dumps(entry, separators=(",", ":"), default=_jsonable)
    return zlib.compress(text.encode("utf-8"), COMPRESS_LEVEL)


def _json_text(blob: bytes) -> bytes:
    return zlib.decompress(blob)


class PromptHistory:
    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError("the history keeps at least one prompt")
        self.limit = limit
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, prompt_id: str, entry: dict) -> None:
        blob = encode_entry(entry)  # outside the lock: readers never wait for the encoding
        with self._lock:
            self._entries[prompt_id] = blob
            self._entries.move_to_end(prompt_id)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _select(self, max_items: int | None, offset: int) -> list[tuple[str, bytes]]:
        """ComfyUI's paging: oldest first; max_items alone means the last max_items."""
        with self._lock:
            items = list(self._entries.items())
        offset = max(offset, 0)
        if max_items is not None and offset == 0 and max_items >= 0:
            return items[-max_items:] if max_items else []
        items = items[offset:]
        return items[:max_items] if max_items is not None else items

    def json(self, max_items: int | None = None, offset: int = 0) -> bytes:
        """`{prompt_id: entry, ...}` as JSON text, straight from the stored entries."""
        parts = [json.dumps(prompt_id).encode() + b":" + _json_text(blob)
                 for prompt_id, blob in self._select(max_items, offset)]
        return b"{" + b",".join(parts) + b"}"

    def entries(self, max_items: int | None = None, offset: int = 0) -> dict[str, dict]:
        return {prompt_id: json.loads(_json_text(blob)) for prompt_id, blob in self._select(max_items, offset)}

    def get(self, prompt_id: str) -> dict | None:
        with self._lock:
            blob = self._entries.get(prompt_id)
        return json.loads(_json_text(blob)) if blob is not None else None

    def get_json(self, prompt_id: str) -> bytes | None:
        with self._lock:
            blob = self._entries.get(prompt_id)
        return _json_text(blob) if blob is not None else None

    def delete(self, prompt_ids) -> None:
        with self._lock:
            for prompt_id in prompt_ids:
                self._entries.pop(prompt_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
