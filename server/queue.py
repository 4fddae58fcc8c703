"""The one job queue both APIs share, and the ComfyUI-style history of finished prompts
(server/history.py keeps it bounded and compact).

A min-heap on (number, sequence); `front` submissions get negative numbers. Thread-safe: the
event loop adds and inspects, the worker thread takes and finishes.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .history import PromptHistory


class JobObserver(Protocol):
    """Hooks a job owner (the Fooocus API) attaches to a queue item. Called on the worker thread."""

    def on_start(self) -> None: ...

    def on_event(self, event: str, data: dict) -> None: ...

    def on_finish(self, outcome: Any) -> None: ...


@dataclass
class RunSpec:
    """One validated workflow execution."""

    prompt: dict
    outputs: list[str]
    constants: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    order: list | None = None  # validation's dependency order, so the executor need not walk again

    @classmethod
    def of(cls, prompt: dict, validation) -> "RunSpec":
        return cls(prompt, validation.outputs, validation.constants, validation.links, validation.order)


@dataclass
class QueueItem:
    """A job: one workflow run (ComfyUI), or several run one after another (a Fooocus job makes
    one run per image, so a stop keeps the images finished before it)."""

    number: float
    prompt_id: str
    runs: list[RunSpec]
    extra_data: dict
    observer: JobObserver | None = None

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    @property
    def prompt(self) -> dict:
        return self.runs[0].prompt

    @property
    def outputs(self) -> list[str]:
        return self.runs[0].outputs

    def as_list(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class QueueFull(Exception):
    pass


class PromptQueue:
    def __init__(self, history_limit: int = 10_000, on_change: Callable[[], None] | None = None) -> None:
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._sequence = itertools.count()
        self._counter = itertools.count()
        self._running: dict[str, QueueItem] = {}
        self._history = PromptHistory(history_limit)
        self._condition = threading.Condition()
        self._closed = False
        self.on_change = on_change

    # --- submission ---------------------------------------------------------------------------
    def next_number(self) -> int:
        return next(self._counter)

    def put(self, item: QueueItem, limit: int | None = None) -> None:
        """Add an item; with `limit`, refuse when waiting + running would exceed it."""
        # ComfyUI stamps each prompt's submission time (ms) here; its job list sorts and shows by it
        item.extra_data.setdefault("create_time", int(time.time() * 1000))
        with self._condition:
            if limit is not None and len(self._heap) + len(self._running) >= limit:
                raise QueueFull(f"the queue holds {limit} jobs already")
            heapq.heappush(self._heap, (item.number, next(self._sequence), item))
            self._condition.notify()
        self._changed()

    def get(self, timeout: float | None = None) -> QueueItem | None:
        with self._condition:
            while not self._heap and not self._closed:
                if not self._condition.wait(timeout):
                    return None
            if self._closed:
                return None
            _, _, item = heapq.heappop(self._heap)
            self._running[item.prompt_id] = item
        self._changed()
        return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def task_done(self, item: QueueItem, history_entry: dict | None) -> None:
        if history_entry is not None:  # before the item leaves `running`: a finished prompt is never unknown
            self._history.add(item.prompt_id, history_entry)
        with self._condition:
            self._running.pop(item.prompt_id, None)
        self._changed()

    # --- inspection and removal ---------------------------------------------------------------
    def running(self) -> list[QueueItem]:
        with self._condition:
            return list(self._running.values())

    def pending(self) -> list[QueueItem]:
        with self._condition:
            return [item for _, _, item in sorted(self._heap, key=lambda e: (e[0], e[1]))]

    def remaining(self) -> int:
        with self._condition:
            return len(self._heap) + len(self._running)

    def is_running(self, prompt_id: str) -> bool:
        with self._condition:
            return prompt_id in self._running

    def delete(self, prompt_ids) -> list[QueueItem]:
        """Remove waiting items by id; returns the removed items."""
        wanted = set(prompt_ids)
        with self._condition:
            removed = [item for _, _, item in self._heap if item.prompt_id in wanted]
            if removed:
                self._heap = [entry for entry in self._heap if entry[2].prompt_id not in wanted]
                heapq.heapify(self._heap)
        if removed:
            self._changed()
        return removed

    def clear(self) -> list[QueueItem]:
        with self._condition:
            removed = [item for _, _, item in self._heap]
            self._heap = []
        self._changed()
        return removed

    # --- history ------------------------------------------------------------------------------
    def history(self, max_items: int | None = None, offset: int = 0) -> dict[str, dict]:
        return self._history.entries(max_items, offset)

    def history_json(self, max_items: int | None = None, offset: int = 0) -> bytes:
        return self._history.json(max_items, offset)

    def history_item(self, prompt_id: str) -> dict | None:
        return self._history.get(prompt_id)

    def history_item_json(self, prompt_id: str) -> bytes | None:
        return self._history.get_json(prompt_id)

    def delete_history(self, prompt_ids) -> None:
        self._history.delete(prompt_ids)

    def clear_history(self) -> None:
        self._history.clear()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
