"""Giving freed patch buffers back to the operating system.

A patch's arrays (a float32 image of 0.8 MB, an int64 mask of 0.5 MB at 256 x 256) are
above glibc's initial mmap threshold, but glibc raises that threshold after the first such
free, so later buffers come from the heap and stay resident after they are freed: a
process batching patches grows by hundreds of MB it no longer uses, and workers forked
from it inherit them. `trim_heap` returns that memory (``malloc_trim(0)``); the torch
loader calls it at the end of every epoch. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

__all__ = ["trim_heap"]

_libc: Any = None


def trim_heap() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``); True when something was released."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return bool(_libc and _libc.malloc_trim(0))
