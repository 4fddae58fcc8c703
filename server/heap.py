"""Giving freed heap memory back to the operating system between jobs.

glibc's malloc keeps freed memory in per-thread arenas; a long-running server whose jobs allocate
and free many mid-sized blocks (request parsing, JSON, image buffers) sees its RSS creep up in
steps although nothing is kept. `malloc_trim(0)` returns the free pages at the top of every arena
and the unused pages inside them; it costs about a millisecond, so the worker calls it with its
periodic garbage collection. Elsewhere (musl, macOS, Windows) there is nothing to call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable


def heap_trimmer() -> Callable[[], None] | None:
    """A function that trims the C heap, or None where the C library has no malloc_trim."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def trim_heap() -> None:
        trim(0)

    return trim_heap
