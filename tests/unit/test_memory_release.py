"""Freed memory goes back to the system (``eventpipe.garbage_collection.release_freed_memory``).

In a child process, so nothing else of the test session's heap is in the figures: 100 MB of
objects too big for Python's own small-object arenas (so glibc's malloc holds them), freed
behind one kept object (so the heap cannot shrink from its top on its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import os
from eventpipe.garbage_collection import release_freed_memory

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

objects = [bytes(1000) + b"%d" % i for i in range(100_000)]
kept = bytes(1000) + b"kept"
del objects
before = rss_mb()
released = release_freed_memory()
print(released, before, rss_mb())
"""


def test_freed_memory_is_handed_back_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    released, before, after = out[0] == "True", float(out[1]), float(out[2])
    if not released:
        pytest.skip("this C library has no malloc_trim (not glibc)")
    assert before - after > 50, f"RSS {before:.0f} MiB before, {after:.0f} MiB after"
