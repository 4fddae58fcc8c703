"""What a running node may see: its ids, the App's services, progress, cancel, a logger.

The executor sets the context around each node call in a context variable (not a module global:
each thread and task sees its own), so V1-style node classes, which are called with their inputs
only, can still reach it with `current()`.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .errors import Interrupted

_current: contextvars.ContextVar["NodeContext | None"] = contextvars.ContextVar("node_context", default=None)


class EventSink(Protocol):
    """Receives the executor's events. `event` is a ComfyUI websocket message type."""

    def send(self, event: str, data: dict) -> None: ...

    def send_image(self, image: Any, *, prompt_id: str, node_id: str, full_size: bool) -> None: ...

    # Optional: `wants(event) -> bool` says whether an event nobody listens to may be skipped
    # (the executor asks before building `progress_state` snapshots).


class NullSink:
    def send(self, event: str, data: dict) -> None:
        pass

    def send_image(self, image: Any, *, prompt_id: str, node_id: str, full_size: bool) -> None:
        pass


class InterruptFlag:
    """A request to stop the running prompt, optionally only if it is a given prompt id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._target: str | None = None

    def request(self, prompt_id: str | None = None) -> None:
        with self._lock:
            self._requested = True
            self._target = prompt_id

    def clear(self) -> None:
        with self._lock:
            self._requested = False
            self._target = None

    def is_set_for(self, prompt_id: str) -> bool:
        with self._lock:
            return self._requested and (self._target is None or self._target == prompt_id)


@dataclass
class NodeContext:
    prompt_id: str
    node_id: str
    class_type: str
    services: Any
    sink: EventSink
    interrupt: InterruptFlag
    log: logging.Logger
    extra_data: dict = field(default_factory=dict)
    on_progress: Callable[[str, float, float], None] | None = None

    def check_interrupt(self) -> None:
        if self.interrupt.is_set_for(self.prompt_id):
            raise Interrupted()

    def progress(self, value: float, total: float, preview: Any = None) -> None:
        """Report progress of this node (value of total); raises Interrupted when asked to stop.

        `preview` is an image, or a callable that makes one: it is only called if someone
        (a websocket client, a job asking for step previews) will look at it."""
        self.check_interrupt()
        self.sink.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id})
        if self.on_progress is not None:
            self.on_progress(self.node_id, value, total)
        if preview is not None:
            self.sink.send_image(preview, prompt_id=self.prompt_id, node_id=self.node_id, full_size=False)

    def send_binary_image(self, image: Any) -> None:
        """Send a full-size image frame to the submitter's websocket (SaveImageWebsocket)."""
        self.sink.send_image(image, prompt_id=self.prompt_id, node_id=self.node_id, full_size=True)


def current() -> NodeContext:
    context = _current.get()
    if context is None:
        raise RuntimeError("no node is running: graph.context.current() is only valid inside a node call")
    return context


def activate(context: NodeContext | None) -> contextvars.Token:
    return _current.set(context)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)
