"""Websocket clients and the ordered delivery of executor events to them.

Events come from the worker thread; they are put on one asyncio queue with
`call_soon_threadsafe` and sent by one publisher task, so every client sees them in the order
the worker produced them (the ComfyUI contract: `executing {node: null}` comes after the history
entry is written, and after everything else of the prompt).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
FORMAT_JPEG, FORMAT_PNG = 1, 2


def encode_image(image: Any, full_size: bool, preview_size: int) -> tuple[int, bytes]:
    """(format, bytes) of a PIL image: full-size PNG, or a JPEG preview no larger than preview_size."""
    if isinstance(image, (bytes, bytearray)):
        return FORMAT_PNG, bytes(image)
    buffer = io.BytesIO()
    if full_size:
        image.save(buffer, format="PNG", compress_level=1)
        return FORMAT_PNG, buffer.getvalue()
    preview = image.convert("RGB")
    if max(preview.size) > preview_size:
        preview.thumbnail((preview_size, preview_size))
    preview.save(buffer, format="JPEG", quality=95)
    return FORMAT_JPEG, buffer.getvalue()


class EventHub:
    def __init__(self, preview_size: int = 512) -> None:
        self.preview_size = preview_size
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.features: dict[str, dict] = {}
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._publish())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for ws in list(self.sockets.values()):
            await ws.close()

    # --- called from any thread ---------------------------------------------------------------
    def publish(self, event: str, data: dict, sid: str | None = None, broadcast: bool = False) -> None:
        """Queue a JSON event for `sid` (or everyone when broadcast or sid is None)."""
        self._put(("json", {"type": event, "data": data}, None if broadcast else sid))

    def has_listener(self, sid: str | None) -> bool:
        return bool(self.sockets) if sid is None else sid in self.sockets

    def publish_image(self, image: Any, *, sid: str | None, prompt_id: str, node_id: str, full_size: bool) -> None:
        """Queue an image frame; `image` may be a callable, called only when a client listens."""
        if not self.has_listener(sid):
            return
        try:
            if callable(image):
                image = image()
                if image is None:
                    return
            fmt, payload = encode_image(image, full_size, self.preview_size)
        except Exception:  # a node handed something that is not an image: log, never break the run
            log.exception("could not encode a preview image of node %s", node_id)
            return
        meta = {"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id, "parent_node_id": None,
                "real_node_id": node_id, "image_type": "image/png" if fmt == FORMAT_PNG else "image/jpeg"}
        self._put(("image", (fmt, payload, meta), sid))

    def publish_bytes(self, payload: bytes, sid: str | None = None) -> None:
        """Queue a raw binary frame (ComfyUI packs' binary events, e.g. progress text)."""
        if self.has_listener(sid):
            self._put(("bytes", payload, sid))

    def _put(self, message) -> None:
        if self._loop is None or self._queue is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
        except RuntimeError:  # loop closed during shutdown
            pass

    def flush_marker(self) -> asyncio.Future:
        """A future resolved once every event queued before it was sent (tests and shutdown)."""
        assert self._loop is not None
        future = self._loop.create_future()
        self._put(("marker", future, None))
        return future

    # --- event-loop side ----------------------------------------------------------------------
    async def _publish(self) -> None:
        assert self._queue is not None
        while True:
            kind, payload, sid = await self._queue.get()
            if kind == "marker":
                if not payload.done():
                    payload.set_result(True)
                continue
            targets = [sid] if sid is not None else list(self.sockets)
            for target in targets:
                ws = self.sockets.get(target)
                if ws is None or ws.closed:
                    continue
                try:
                    if kind == "json":
                        await ws.send_str(json.dumps(payload))
                    elif kind == "bytes":
                        await ws.send_bytes(payload)
                    else:
                        await ws.send_bytes(self._image_frame(payload, target))
                except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    log.debug("websocket %s dropped a message: %s", target, exc)

    def _image_frame(self, payload, sid: str) -> bytes:
        fmt, data, meta = payload
        if self.features.get(sid, {}).get("supports_preview_metadata"):
            blob = json.dumps(meta).encode()
            return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(blob)) + blob + data
        return struct.pack(">II", PREVIEW_IMAGE, fmt) + data
