"""Keeping the matcher's resident memory close to what its index holds (glibc only).

Role: a Publish stream parses megabytes of messages into short-lived arrays on a gRPC worker
thread, and rebuilding the index at start parses the whole store the same way. glibc keeps
the freed chunks in the thread's arena and raises its mmap threshold each time a large block
is freed, so without help the freed space stays resident. :func:`fix_mmap_threshold` (once,
at start) keeps large blocks on mmap, so freeing one returns it at once;
:func:`release_free_memory` (after a stream or a rebuild) hands the heap's free pages back.

Contract: both are no-ops where the C library has no such function (not glibc, or no C
library loadable through ctypes); neither changes what the matcher computes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
_MMAP_THRESHOLD_BYTES = 256 * 1024


def _load_libc() -> Any:
    """The C library through ctypes, or None when it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()
_MALLOC_TRIM: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)
_MALLOPT: Callable[[int, int], int] | None = getattr(_LIBC, "mallopt", None)


def fix_mmap_threshold() -> None:
    """Keep glibc serving blocks of 256 KiB and more with mmap (a fixed threshold)."""
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the operating system."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


__all__ = ["fix_mmap_threshold", "release_free_memory"]
