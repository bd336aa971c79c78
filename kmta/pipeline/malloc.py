"""glibc's mmap threshold, fixed for the long-running processes (``kmta worker``, ``kmta
sender``).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with a
mapping of its own, returned to the kernel when freed. The threshold is dynamic: freeing such
a mapping raises it to that size, up to 32 MiB. Once a process has freed a few MiB-sized fetch
buffers, large arrays that grow by ``realloc`` (the dedup window's, ``kmta.pipeline.seenids``)
live in the brk heap instead, and each growth that cannot extend in place copies them and
leaves the old copy as free heap that glibc keeps: 15-18 B an id of the peak in a
micro-benchmark of ``SeenIds`` alone (docs/benchmark.md, "glibc's mmap threshold"). The same rise
lifts the heap's trim threshold to twice the mmap threshold, so freed heap at its top is kept
too. Setting the threshold with ``mallopt`` turns the dynamic rise off, so allocations of
1 MiB or more stay mappings and are handed back when freed, and the heap is trimmed as at
start. In the 1 M soak the worker grew 25.6 B an id with it, ~36 without (the arrays were
mappings in both runs; the heap is where they differed: docs/benchmark.md, "The 1 M phase").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 1 << 20
"""Bytes from which an allocation is a mapping of its own (glibc's dynamic rise turned off)."""
_M_MMAP_THRESHOLD = -3  # malloc.h


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave glibc's dynamic threshold); True if
    it was set. Not glibc (musl, macOS): False, nothing changed."""
    if nbytes <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, nbytes))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused", nbytes)
    return ok
