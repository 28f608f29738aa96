"""Process-level tuning shared by every stage process: the C allocator.

PyTorch on the CPU allocates its activations with the C library's ``malloc``. glibc serves blocks above its mmap
threshold (128 KiB, growing to at most 32 MiB) with a fresh ``mmap`` and hands them back to the kernel on
``free``, so every forward pass of a segmentation model at 512² or more faults in its large activations again,
page by page (zero-filled by the kernel). On a 2-core machine that fault work was 40 % of an inference run's
time, and it grows with the batch: batched sliding-window inference was barely faster than window by window.

:func:`tune_allocator` asks glibc (``mallopt``) to serve those blocks from the heap and to keep freed memory for
reuse instead of trimming it, the effect of ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the
environment, applied from inside the process. The cost: memory freed by the process stays in its RSS for reuse
(peak memory does not grow). ``runtime.keep_freed_memory: false`` turns it off; on a non-glibc C library it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied: str | None = None


def tune_allocator(enabled: bool = True) -> str:
    """Apply the allocator settings once per process; returns a one-line description of what holds."""
    global _applied
    if not enabled:
        return _applied or "allocator: glibc defaults (runtime.keep_freed_memory: false)"
    if _applied is not None:
        return _applied
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        _applied = ("allocator: MALLOC_MMAP_THRESHOLD_ set in the environment; left as it is"
                    if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "allocator: platform default")
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = "allocator: platform default (no glibc mallopt)"
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # glibc versions differ in the largest mmap threshold they accept: try 1 GiB, then its documented 32 MiB cap
    threshold = next((t for t in (1 << 30, 32 << 20) if mallopt(_M_MMAP_THRESHOLD, t) == 1), None)
    trim = mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    if threshold is None:
        _applied = "allocator: glibc defaults (mallopt refused the settings)"
    else:
        _applied = (f"allocator: glibc heap for blocks up to {threshold >> 20} MiB"
                    + (", freed memory kept for reuse (trim threshold 1 GiB)" if trim else ""))
    return _applied
