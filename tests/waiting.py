"""Waiting for the event a test needs instead of assuming how long things take.

Every wait has a generous deadline (a loaded 2-core CI machine runs the suite several times
slower than a desk); reaching it fails the test with what was seen.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

DEADLINE_S = 60.0
# a toy node that holds the worker until interrupted: far longer than any deadline
HOLD_STEPS, HOLD_DELAY = 1000, 0.2


async def until_message(ws, predicate: Callable[[dict], bool], timeout: float = DEADLINE_S) -> dict:
    """The first JSON websocket message for which predicate(message) holds (binary frames skipped)."""
    seen: list[str] = []

    async def read() -> dict:
        async for message in ws:
            if message.type.name != "TEXT":
                continue
            data = json.loads(message.data)
            seen.append(data.get("type"))
            if predicate(data):
                return data
        raise AssertionError(f"websocket closed; message types seen: {seen}")
    try:
        return await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no matching message in {timeout} s; message types seen: {seen}") from None


def is_event(kind: str, prompt_id: str | None = None, **fields) -> Callable[[dict], bool]:
    """A predicate for until_message: message type `kind` (of prompt_id, with these data fields)."""
    def match(message: dict) -> bool:
        data = message.get("data") or {}
        return (message.get("type") == kind and (prompt_id is None or data.get("prompt_id") == prompt_id)
                and all(data.get(key) == value for key, value in fields.items()))
    return match


async def until(condition: Callable[[], Awaitable[Any]], timeout: float = DEADLINE_S, interval: float = 0.02,
                what: str = "the condition") -> Any:
    """Polls an async condition until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)
