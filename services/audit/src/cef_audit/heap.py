"""Keeping freed heap memory for the next batch instead of handing it back to the OS at once.

A batch of appends allocates its rows (each with about 700 bytes of canonical JSON, above
CPython's small-object allocator, so from glibc's malloc) and frees them all when committed. With
glibc's default trim threshold (128 KiB) the freed top of the heap goes back to the kernel after
every batch, and the next batch takes it again page fault by page fault: measured on 1,000-event
batches, that is more than a third of the sequencer's own CPU per event. Raising the threshold keeps
up to `TRIM_THRESHOLD_BYTES` of freed memory in the process for reuse."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# Larger than what a batch of the largest accepted size allocates and frees (10,000 events, a few
# tens of MiB), so a steady stream of batches reuses the same pages.
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>


def keep_freed_heap(threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Raises glibc's malloc trim threshold for this process; False where there is no glibc (musl,
    macOS, Windows), where the allocator's own behaviour stays."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, threshold))
