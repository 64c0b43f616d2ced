"""Raising malloc's trim threshold is harmless where it applies and a no-op elsewhere."""

from __future__ import annotations

import platform
import sys

from cef_audit.heap import keep_freed_heap


def test_keep_freed_heap_applies_on_glibc() -> None:
    applied = keep_freed_heap()
    if sys.platform.startswith("linux") and "glibc" in platform.libc_ver()[0]:
        assert applied
    # Calling it again (a second app in the same process) is fine.
    keep_freed_heap()
    # The process still allocates and frees normally.
    rows = [bytes(700) for _ in range(10_000)]
    del rows
