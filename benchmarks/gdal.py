"""Process-wide GDAL settings for fair, cache-missing measurements.

GDAL reads ``GDAL_CACHEMAX`` once, on first use of its block cache, so setting the
environment variable after any raster was read has no effect. :func:`limit_block_cache`
therefore sets the variable (inherited by spawned subprocesses) *and* calls
``GDALSetCacheMax64`` on the GDAL library rasterio has loaded, and checks the result.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_lib: Any = None


def _gdal() -> Any:
    global _lib
    if _lib is None:
        import rasterio  # noqa: F401  (loads libgdal)

        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libgdal" in line and ".so" in line})
        if not paths:
            raise RuntimeError("libgdal is not mapped into this process; cannot set GDAL_CACHEMAX")
        lib = ctypes.CDLL(paths[0])
        lib.GDALGetCacheMax64.restype = ctypes.c_int64
        lib.GDALSetCacheMax64.argtypes = [ctypes.c_int64]
        lib.GDALGetCacheUsed64.restype = ctypes.c_int64
        _lib = lib
    return _lib


def limit_block_cache(megabytes: int) -> int:
    """Set GDAL's block cache to ``megabytes`` MiB in this process (and its children); return bytes."""
    os.environ["GDAL_CACHEMAX"] = str(int(megabytes))
    lib = _gdal()
    lib.GDALSetCacheMax64(int(megabytes) << 20)
    return block_cache_bytes()


def block_cache_bytes() -> int:
    return int(_gdal().GDALGetCacheMax64())


def block_cache_used_bytes() -> int:
    """Bytes GDAL's block cache holds now (in this process)."""
    return int(_gdal().GDALGetCacheUsed64())
