"""Freed blocks of a megabyte or more go back to the system at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from audit import allocator

SCRIPT = """
import sys
from audit.allocator import release_freed_memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) // 1024

if sys.argv[1] == "release":
    assert release_freed_memory()
block = 2 << 20
warm = bytearray(block)  # freed: glibc's own threshold rises to 2 MB, blocks go to the heap
del warm
blocks = [bytearray(block) for _ in range(100)]  # 200 MB, touched
kept = blocks[-1]  # the newest block stays: a heap cannot shrink below it
high = rss()
del blocks
print(high - rss())
"""


def _freed_mb(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(run.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_megabyte_blocks_leave_the_resident_set() -> None:
    assert _freed_mb("release") > 150  # of 198 MB freed
    assert _freed_mb("default") < 50  # glibc's default keeps them in the heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_it_sets_the_thresholds_once_per_process() -> None:
    assert allocator.release_freed_memory() is True
    assert allocator._done == [True]  # a second call reads the first one's answer
    assert allocator.release_freed_memory() is True
