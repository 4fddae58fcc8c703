"""The worker's heap trim gives freed C-heap pages back to the OS (glibc; Linux CI)."""
from pathlib import Path

import pytest

from server.heap import heap_trimmer


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_returns_freed_pages_inside_the_heap():
    trim = heap_trimmer()
    if trim is None:
        pytest.fail("no malloc_trim in this C library: the tests run on glibc Linux")
    # 2 KB blocks come from malloc's heap (not pymalloc, not mmap); keeping every 64th one pins
    # the heap's top, so only a trim (not free()) can give the pages in between back
    blocks = [bytes(2048) for _ in range(100_000)]
    kept = blocks[::64]
    del blocks
    before = rss_mb()
    trim()
    after = rss_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 1563
