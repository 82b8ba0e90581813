"""Large freed blocks go back to the system at once (glibc), so peak memory is what is
live, not what the heap kept.

glibc serves an allocation of up to 32 MB from its heap once a block that size has been
freed (its mmap threshold rises to it), and a heap gives memory back only from its top.
A training step allocates and frees gigabytes in blocks of a few megabytes (one
layer's activations, one weight's gradient), so the holes they leave stay resident:
on a 135M model the erase held 3.1 GB between epochs where 1.9 GB was live, and its
peak rose by as much. With the threshold fixed at `MMAP_THRESHOLD` every block of at
least that size is mapped on its own and unmapped when freed. The cost is a page
fault per page of each new block (bench/memory.py measures it).

Only on Linux with glibc; elsewhere (or if the call fails) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 1 << 20  # blocks of at least 1 MiB are mapped on their own
_done: list[bool] = []


def release_freed_memory() -> bool:
    """Fix glibc's thresholds (once per process); whether they were set."""
    if _done:
        return _done[0]
    _done.append(_set_thresholds())
    return _done[0]


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mapped = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        trimmed = libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return False
    return bool(mapped and trimmed)
