"""The in-memory ComfyUI history of finished prompts: at most `limit` entries (ComfyUI's cap,
`--max-history`), oldest evicted first, each kept as zlib-compressed compact JSON.

A history entry holds the whole workflow (a Fooocus job's is ~3.3 KB of JSON): as Python objects
that is ~22 KB; compressed against a preset dictionary made of our own workflows (zlib's zdict:
the entries repeat their node names and keys) it is ~0.45 KB, so a full 10,000-entry history costs
~5 MB instead of ~220 MB. /history is served from the stored JSON without building the objects
again. Thread-safe: the worker thread adds, the event loop reads.
"""
from __future__ import annotations

import json
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

COMPRESS_LEVEL = 6
ZDICT_LIMIT = 32 * 1024  # zlib's window: a longer dictionary's start could never be referenced
# what every history entry spells, closest to the end of the dictionary (where zlib finds it best)
ENTRY_WORDS = (b'{"prompt":[0,"","class_type":"inputs":{"extra_pnginfo":{"workflow":"client_id":'
               b'"outputs":{"images":[{"filename":"subfolder":"","type":"output"}]},"status":{"status_str":'
               b'"success","completed":true,"messages":[["execution_start",{"prompt_id":"timestamp":'
               b'["execution_cached",{"nodes":[]["execution_success",'
               b'"meta":{"node_id":"display_node":"parent_node":null,"real_node_id":"timing":{"node_seconds":')


def compression_dictionary(workflow_dir: Path | None = None) -> bytes:
    """A zlib preset dictionary: our workflows as compact JSON, then the words of an entry."""
    if workflow_dir is None:
        from workflows import WORKFLOW_DIR as workflow_dir
    parts = []
    for path in sorted(Path(workflow_dir).glob("*.json")):
        if path.name.endswith(".params.json"):
            continue
        try:
            parts.append(json.dumps(json.loads(path.read_text()), separators=(",", ":")).encode())
        except (OSError, ValueError):
            continue
    return (b"".join(parts) + ENTRY_WORDS)[-ZDICT_LIMIT:]


def _jsonable(value: Any) -> str:
    """A custom node's ui value JSON cannot hold is kept as its repr, never fails the prompt."""
    return repr(value)


class PromptHistory:
    def __init__(self, limit: int = 10_000, dictionary: bytes | None = None) -> None:
        if limit < 1:
            raise ValueError("the history keeps at least one prompt")
        self.limit = limit
        self._zdict = compression_dictionary() if dictionary is None else dictionary
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _encode(self, entry: dict) -> bytes:
        text = json.dumps(entry, separators=(",", ":"), default=_jsonable).encode("utf-8")
        compressor = zlib.compressobj(COMPRESS_LEVEL, zdict=self._zdict)
        return compressor.compress(text) + compressor.flush()

    def _json_text(self, blob: bytes) -> bytes:
        return zlib.decompressobj(zdict=self._zdict).decompress(blob)

    def add(self, prompt_id: str, entry: dict) -> None:
        blob = self._encode(entry)  # outside the lock: readers never wait for the encoding
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
        parts = [json.dumps(prompt_id).encode() + b":" + self._json_text(blob)
                 for prompt_id, blob in self._select(max_items, offset)]
        return b"{" + b",".join(parts) + b"}"

    def entries(self, max_items: int | None = None, offset: int = 0) -> dict[str, dict]:
        return {prompt_id: json.loads(self._json_text(blob)) for prompt_id, blob in self._select(max_items, offset)}

    def get(self, prompt_id: str) -> dict | None:
        with self._lock:
            blob = self._entries.get(prompt_id)
        return json.loads(self._json_text(blob)) if blob is not None else None

    def get_json(self, prompt_id: str) -> bytes | None:
        with self._lock:
            blob = self._entries.get(prompt_id)
        return self._json_text(blob) if blob is not None else None

    def delete(self, prompt_ids) -> None:
        with self._lock:
            for prompt_id in prompt_ids:
                self._entries.pop(prompt_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
