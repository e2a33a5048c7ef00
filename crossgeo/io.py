"""The only module that opens rasters.

* GDAL is configured once per process *and thread* with `GDAL_OPTIONS` through a
  ``rasterio.Env`` that stays entered for the life of that thread (an exited Env would
  restore GDAL's defaults; rasterio sets options thread-locally outside the main thread).
  `ensure_gdal_env` is cheap and is called before every read, so a thread that adopted
  another thread's handles (see `crossgeo.threads`) still reads under these options.
* A `ReadPlan` holds one `SourcePlan` per source (each image source, the mask): what to
  read and how it reaches the reference grid, decided once at construction. `RasterReader`
  owns the handles of one thread at a time, a `SourceReader` per source, opened once and
  reused for every window; `warped_vrt` is the one place a ``WarpedVRT`` is built.
* GDAL failures that rasterio only logs are trapped where rasterio hands them to its
  loggers, before Python logging sees them (`_GdalFailureTrap`), so no logging
  configuration can silence them; the trap is installed when crossgeo first opens a
  raster, not at import, and leaves every logger as the application configured it.
* A source reaches the reference grid by a plain windowed read when the grids coincide (the
  aligned fast path) - or, for an image source with nearest resampling whose pixels are whole
  blocks of reference pixels, a plain read of its own pixels, each repeated (``"scaled"``); a
  mask whose warp separates into rows and columns (same CRS on another grid, EPSG:4326 on Web
  Mercator) by a plain window of it and a row and column lookup with the exact warp's pixels
  (`lookup_axes`, the ``"lookup"`` view; looked-up windows are kept in `MaskBlockCache`'s free
  room, so a window read again is a copy); a mask or nearest image source whose warp does not
  separate (a UTM image, a source in EPSG:4326) by a plain read and a per-pixel gather of the
  exact warp's pixels, found with exact transforms on a lattice only (`crossgeo.grid.nearest_table`,
  the ``"table"`` view, its windows kept as the lookup view's); else through one of three views (`mask_view_for`):
  one ``WarpedVRT`` over the whole reference grid per reader when its warped blocks fit
  GDAL's block cache (they are then reused across windows and epochs); the same view read
  in `MASK_BLOCK` blocks kept by crossgeo (`MaskBlockCache`, a mask only) when they fit
  crossgeo's own byte bound instead; or a small ``WarpedVRT`` per read whose target is the
  window itself, built on the cached mask handle (when neither cache can keep the warped
  grid; all three beat reopening per sample).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import functools
import heapq
import logging
import math
import os
import queue
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import rasterio
import rasterio.env
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from crossgeo.errors import ConfigError, ReadError, WriteError
from crossgeo.files import AtomicOutput
from crossgeo.grid import (
    TABLE_STEP,
    BlockLayout,
    Grid,
    TableLattice,
    nearest_index,
    nearest_table,
    outside_pixels,
    overlap,
    work_array,
)
from crossgeo.options import GDAL_DEFAULTS
from crossgeo.readahead import READ_THREAD_PREFIX
from crossgeo.threads import PerThread

GDAL_OPTIONS: dict[str, Any] = {option.name: option.default for option in GDAL_DEFAULTS}
"""GDAL configuration every reader thread runs under (declared in `crossgeo.options.GDAL_DEFAULTS`).

An environment variable of the same name overrides an entry (e.g. ``GDAL_HTTP_MAX_RETRY=10``);
so does editing this dictionary before the first read of a process. Other GDAL options (cache
size, ``GDAL_HTTP_TIMEOUT``, AWS_* credentials and endpoints) come from the environment as usual."""


class _FailureRecorder:
    """Stands in for one of rasterio's module loggers: notes GDAL failures, then logs exactly as before.

    rasterio reports each error GDAL signals by calling its module logger (CE_Failure as
    ``log.info("GDAL signalled an error: err_no=%r, msg=%r", err_no, msg)``). The recorder
    takes that call first - before any level, ``logging.disable``, ``disabled`` flag or
    filter is consulted - and then hands every call on to the real logger unchanged.
    """

    __slots__ = ("logger", "trap")

    def __init__(self, logger: logging.Logger, trap: _GdalFailureTrap) -> None:
        self.logger = logger
        self.trap = trap

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if len(args) == 2 and isinstance(msg, str) and msg.startswith("GDAL signalled an error"):
            caught = self.trap.failures.get(threading.get_ident())
            if caught is not None:
                caught.append(str(args[1]))
        self.logger.info(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


class _GdalFailureTrap:
    """Collects the GDAL failures that rasterio does not raise, per reading thread.

    Some drivers report a failure yet hand back blank pixels (GDAL's MBTiles driver with
    a corrupt PNG tile: "libpng: Read Error", "Cannot parse tile data", and the read
    "succeeds"); rasterio raises only when GDAL's return code says so, and otherwise only
    logs the CE_Failure. Whether a read failed must not depend on how the application
    configures Python logging (``logging.disable``, ``dictConfig`` with
    ``disable_existing_loggers``, a raised level), so the trap does not listen to logging:
    it puts a `_FailureRecorder` in front of the loggers rasterio's GDAL error handlers call
    (``rasterio._err.log``, used while rasterio reads, and ``rasterio._env.log``). Log
    records, levels and handlers stay as the application set them.

    Installed when crossgeo first opens a raster, not at import.
    """

    MODULES = ("rasterio._err", "rasterio._env")
    """rasterio's modules whose GDAL error handlers report through a module-level ``log``."""

    def __init__(self) -> None:
        self.failures: dict[int, list[str]] = {}
        self.installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        """Put the recorder in front of rasterio's error loggers (once per process)."""
        if self.installed:
            return
        with self._lock:
            if self.installed:
                return
            import importlib

            for name in self.MODULES:
                module = importlib.import_module(name)
                logger = getattr(module, "log", None)
                if isinstance(logger, _FailureRecorder):
                    continue
                if not isinstance(logger, logging.Logger):
                    warnings.warn(
                        f"crossgeo cannot watch GDAL failures reported through {name} (this rasterio "
                        f"{rasterio.__version__} has no module logger there): a damaged tile that GDAL "
                        "decodes as blank pixels may then read without an error.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    continue
                module.log = _FailureRecorder(logger, self)  # type: ignore[attr-defined]
            self.installed = True

    @contextmanager
    def watch(self) -> Iterator[list[str]]:
        """Collect the failures GDAL signals in this thread inside the block."""
        self.install()
        caught: list[str] = []
        self.failures[threading.get_ident()] = caught
        try:
            yield caught
        finally:
            self.failures.pop(threading.get_ident(), None)


_failure_trap = _GdalFailureTrap()
"""Installed by `open_raster` (and `watch`) on first use."""


def gdal_options() -> dict[str, Any]:
    """`GDAL_OPTIONS`, with the value of an environment variable of the same name where the user set one.

    The user's value is set explicitly (not left for GDAL to find in the environment): a thread's
    options would otherwise fall back to the values the main thread's Env set process-wide.
    """
    return {key: os.environ.get(key, value) for key, value in GDAL_OPTIONS.items()}


def _enter_gdal_env() -> rasterio.Env:
    env = rasterio.Env(**gdal_options())
    env.__enter__()
    return env


_gdal_envs: PerThread[rasterio.Env] = PerThread(_enter_gdal_env, adopt=False)
"""The entered Env of each live thread; never handed to another thread (GDAL's options are per thread)."""


def ensure_gdal_env() -> None:
    """Enter crossgeo's ``rasterio.Env`` once in this thread (and process), and keep it entered.

    Cheap after the first call in a thread (a thread-local check), so it is called before
    every read. A new thread always enters its own Env, even when it reuses a dead thread's
    ident or adopts that thread's handles.
    """
    _gdal_envs.get()


STALLED_READ_REQUESTS = 4
"""Requests one windowed read makes to a server that stopped answering, before GDAL gives up.

GDAL 3.10 reading a COG: a multi-range prefetch, then up to three ever smaller reads of the
first missing block (then the read fails). `remote_wait_bound` multiplies one request's
bound by it; ``tests/core/test_remote.py`` checks the product against the clock."""


def effective_gdal_config() -> dict[str, Any]:
    """This thread's values of `GDAL_OPTIONS`' names and ``GDAL_HTTP_TIMEOUT``, as GDAL reads them.

    That is crossgeo's entry, or the user's environment variable of the same name (which wins),
    or nothing (GDAL's own default).
    """
    ensure_gdal_env()
    return {name: rasterio.env.get_gdal_config(name) for name in (*GDAL_OPTIONS, "GDAL_HTTP_TIMEOUT")}


def _number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def request_wait_bound(config: dict[str, Any]) -> float:
    """Worst-case seconds one HTTP request waits on a server that accepted it and sends nothing.

    ``GDAL_HTTP_LOW_SPEED_TIME`` ends such a request once (GDAL does not retry a transfer that
    is too slow); ``GDAL_HTTP_TIMEOUT`` ends each attempt, but GDAL retries a timed-out request
    ``GDAL_HTTP_MAX_RETRY`` times, sleeping ``GDAL_HTTP_RETRY_DELAY`` seconds multiplied by up to
    2.5 after each attempt. ``inf`` when neither is set (curl's default: wait for ever).
    """
    limits = []
    stall = _number(config.get("GDAL_HTTP_LOW_SPEED_TIME"))
    if stall > 0:
        limits.append(stall)
    timeout = _number(config.get("GDAL_HTTP_TIMEOUT"))
    if timeout > 0:
        retries = max(0, int(_number(config.get("GDAL_HTTP_MAX_RETRY"))))
        delay = _number(config.get("GDAL_HTTP_RETRY_DELAY"), 30.0)  # GDAL's default delay: 30 s
        limits.append((retries + 1) * timeout + sum(delay * 2.5**k for k in range(retries)))
    return min(limits) if limits else math.inf


def remote_wait_bound(config: dict[str, Any] | None = None) -> float:
    """Worst-case seconds a windowed read waits on a remote server that stopped answering.

    With crossgeo's defaults (`GDAL_OPTIONS`) 40 s: after it the read raises `ReadError`
    (a DataLoader worker never hangs for ever). ``config``: GDAL option values; default this
    thread's (`effective_gdal_config`).
    """
    return STALLED_READ_REQUESTS * request_wait_bound(effective_gdal_config() if config is None else config)


def forget_remote_bytes(paths: Sequence[str]) -> None:
    """Drop what GDAL's ``/vsicurl/`` family caches for each remote file: its size, header and byte ranges.

    GDAL keeps the bytes it downloaded for the life of the process, shared by every handle;
    bytes damaged in transit would fail every later read of their block. A handle opened under
    ``CPL_VSIL_CURL_NON_CACHED`` purges the cache of its file when it closes (GDAL's documented
    way to re-read a file that changed); a file that cannot be opened any more is skipped.
    """
    ensure_gdal_env()
    for path in paths:
        if not is_remote(path):
            continue
        with contextlib.suppress(RasterioError), rasterio.Env(CPL_VSIL_CURL_NON_CACHED=path):
            rasterio.open(path).close()


REMOTE_PARTS_FORGOTTEN = 32
"""At most this many remote files of a dataset (a VRT's sources) are purged before a read is retried."""


def has_mask_sidecar(path: str) -> bool:
    """True when a local raster has a GDAL ``.msk`` sidecar (its per-dataset mask band)."""
    return not is_remote(path) and any(os.path.exists(path + suffix) for suffix in (".msk", ".MSK"))


def open_raster(path: str, option: str) -> Any:
    """Open ``path`` for reading, turning GDAL's failure into a `ReadError` naming the option.

    Never GDAL-shared: GDAL hands a shared handle to every opener on the same OS thread, but
    crossgeo's readers move between threads (`crossgeo.threads.PerThread`: tf.data runs each
    call on a fresh Python thread state, which adopts an idle reader), so a reader opened later
    on that OS thread would read through the handle of one in use on another thread - a data
    race that surfaced as decoding errors in a parallel tf.data map.

    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR (`GDAL_OPTIONS`) hides sibling files, so GDAL
    would ignore a ``.msk`` sidecar and read masked pixels as valid: a local raster with a
    sidecar is opened with single-file probing (``TRUE``) instead, which finds it. A remote
    raster's sidecar stays unseen (listing is what EMPTY_DIR avoids); use an internal mask there.

    A local file is opened without GDAL's ``VSI_CACHE`` (`local_options`), unless the user's
    environment sets it.
    """
    _failure_trap.install()
    ensure_gdal_env()
    try:
        options = local_options(path)
        if not options:
            return rasterio.open(path)
        with rasterio.Env(**options):
            return rasterio.open(path)
    except RasterioError as error:
        if os.path.isdir(path):  # GDAL says only "not recognized as being in a supported file format"
            inside = sorted(p.name for p in Path(path).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)[:3]
            hint = f" (it holds {', '.join(inside)})" if inside else ""
            raise ReadError(
                f"{option} {path!r} is a folder, not a raster file; give the path of one raster file in it{hint}."
            ) from error
        raise ReadError(
            f"{option} {path!r} cannot be opened as a raster: {error}. Check the path and that the "
            "file is a complete GeoTIFF/MBTiles/VRT (or another format GDAL reads)."
        ) from error


def local_options(path: str) -> dict[str, Any]:
    """GDAL options `open_raster` opens ``path`` under, besides the thread's (`GDAL_OPTIONS`).

    ``VSI_CACHE`` off for a local file (unless the user's environment sets it): GDAL's cache keeps up to
    ``VSI_CACHE_SIZE`` (25 MB) of a file's bytes per open handle, so in every process and reading thread, where
    the operating system's page cache already holds them once for all processes (measured: 24-28 MB more per
    DataLoader worker on the benchmark's 8192^2 DEFLATE scene, no faster). A ``.msk`` sidecar needs single-file
    probing (see `open_raster`).
    """
    options: dict[str, Any] = {}
    if not is_remote(path):
        if "VSI_CACHE" not in os.environ:
            options["VSI_CACHE"] = False
        if has_mask_sidecar(path):
            options["GDAL_DISABLE_READDIR_ON_OPEN"] = "TRUE"
    return options


RASTER_SUFFIXES = (".tif", ".tiff", ".mbtiles", ".vrt", ".jp2", ".png", ".img")
"""File endings named when a folder is given where a raster file is expected."""


def is_remote(path: str) -> bool:
    """True for URLs and GDAL virtual file system paths (not checked for existence locally)."""
    return "://" in path or path.startswith("/vsi")


def missing_parts(dataset: Any) -> list[str]:
    """Local files a dataset refers to that do not exist (e.g. a VRT's moved sources)."""
    folder = os.path.dirname(dataset.name)
    local = [f for f in dataset.files if not is_remote(f)]
    return [f for f in local if not os.path.exists(f) and not os.path.exists(os.path.join(folder, f))]


def alpha_band(dataset: Any) -> int | None:
    """The 1-based index of the dataset's alpha band, if it has one."""
    for i, interp in enumerate(dataset.colorinterp, start=1):
        if interp == ColorInterp.alpha:
            return i
    return None


def has_mask_band(dataset: Any) -> bool:
    """True when GDAL marks the dataset's missing pixels with a per-dataset mask band.

    That is an internal mask (``write_mask``, GDAL_TIFF_INTERNAL_MASK, COG writers) or a
    ``.msk`` sidecar; an alpha band also reports the per-dataset flag and is handled as alpha.
    """
    flags = dataset.mask_flag_enums[0] if dataset.count else []
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags


def nodata_pixels(data: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """(H, W) bool, True where every band of ``data`` (bands, H, W) equals ``nodata`` (NaN too)."""
    if nodata is None:
        return None
    if math.isnan(nodata):
        if data.dtype.kind != "f":
            return None
        result = np.isnan(data[0])
        for band in data[1:]:
            result &= np.isnan(band)
        return result
    value: Any = nodata
    if data.dtype.kind in "ui":
        info = np.iinfo(data.dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            return None  # no integer pixel can equal it
        value = data.dtype.type(int(nodata))  # compared in the data's dtype, not promoted to float64
    # Band by band: ``np.all(data == nodata, axis=0)`` is several times slower on (1, 256, 256).
    result = data[0] == value
    for band in data[1:]:
        result &= band == value
    return result


EXACT_TOLERANCE = 1e-9
"""A warp tolerance that makes GDAL transform every pixel centre exactly (rasterio refuses 0)."""
DEFAULT_TOLERANCE = 0.125
"""GDAL's (and rasterio's) default warp approximation error, in source pixels."""
NEAREST_TOLERANCE = 3e-4
"""The warp approximation of a nearest-neighbour image source warped per window (one the ``"table"`` view
does not take: an alpha or mask band, nodata on several bands; the table view is exact, 100 %, ~1 ms).

Measured on the Sentinel-2-like benchmark (`benchmarks.s2_bench`: 256-pixel windows of a 10 m UTM
grid, a ~13 m EPSG:4326 source; share of pixels holding the source pixel under their centre, ms per
window): 0.125 (GDAL's default) and down to 0.01: 99.45 %, ~2 ms; 0.001: 99.97 %, 3.8 ms; 3e-4:
99.992 %, 4.4 ms; exact transforms (`EXACT_TOLERANCE`): 100 %, 22 ms."""


VIEWS = ("aligned", "scaled", "lookup", "table", "grid", "blocks", "window")
"""How a source reaches the reference grid (`SourcePlan.view`)."""

LOOKUP_VIEW = True
"""Whether a mask whose warp separates into rows and columns is read through `lookup_axes` (tests turn it off)."""
TABLE_VIEW = True
"""Whether a nearest-neighbour source whose warp does not separate is read through `nearest_table` (the
``"table"`` view, `table_fits`; tests turn it off)."""


MASK_BLOCK = 512
"""Side in reference pixels of the warped mask blocks `MaskBlockCache` keeps (the ``"blocks"`` view).

Measured on the benchmark's EPSG:4326 mask (8192^2 scene): a 512^2 exact warp costs about as much
as two 256^2 per-window warps, for four windows' worth of pixels; 1024^2 blocks gain no more."""
MASK_CACHE_BYTES = 128 * 2**20
"""Default bound of `MaskBlockCache` (bytes per process); ``CROSSGEO_MASK_CACHE_BYTES`` overrides it, 0 turns it off."""


def mask_cache_bytes() -> int:
    """The byte bound of this process's warped mask blocks (``CROSSGEO_MASK_CACHE_BYTES``, else `MASK_CACHE_BYTES`)."""
    value = os.environ.get("CROSSGEO_MASK_CACHE_BYTES")
    if value is None:
        return MASK_CACHE_BYTES
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(
            f"CROSSGEO_MASK_CACHE_BYTES={value!r} is not a byte count; set a whole number >= 0 "
            "(e.g. 134217728 for 128 MiB; 0 turns the warped mask block cache off)."
        )
    return number


WORKER_BLOCK_CACHE = 48 * 2**20
"""GDAL's block cache (bytes) in a DataLoader worker at most (`cap_block_cache`; GDAL's default, 5 % of the
machine's memory, would be paid once per worker). Neighbouring windows share blocks, so a worker still gains
from a cache: 1,000 random 256^2 windows of the 8192^2 scene (EPSG:4326 mask) cost a worker 6.1 CPU ms per
patch with 16 MiB, 5.5 with 48 and 5.0 with 64. A worker then holds 446 MB (16 MiB: 413, 64 MiB: 463),
TorchGeo's 675-780 MB in the same runs: ~0.6x."""


def cap_block_cache(max_bytes: int, plan: ReadPlan | None) -> bool:
    """Lower this process's GDAL block cache (``GDAL_CACHEMAX``) to ``max_bytes`` (a smaller one stays);
    not for a ``plan`` with a ``"grid"`` view, whose warped whole-grid view lives in that cache, nor
    without a plan. Returns whether the cache was lowered."""
    if plan is None or any(source.view == "grid" for source in (*plan.image, plan.mask) if source is not None):
        return False
    return lower_block_cache(max_bytes)


def lower_block_cache(max_bytes: int) -> bool:
    """Lower this process's GDAL block cache to ``max_bytes`` unless it is already that small; whether it was."""
    if int(rasterio.env.get_gdal_config("GDAL_CACHEMAX") or 0) <= max_bytes:
        return False
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", max_bytes)
    return True


class MaskBlockCache:
    """Warped mask blocks kept between reads: a per-process LRU of numpy arrays bounded in bytes.

    The ``"blocks"`` view cuts the reference grid (and the plane around it) into `MASK_BLOCK`
    squares, reads each on first use from the whole-grid view (nearest neighbour with
    `EXACT_TOLERANCE`: every pixel gets the value the ``"grid"`` view gives it, whichever window
    or block it is read through) and assembles each window from its blocks. Unlike the
    whole-grid view alone it does not rely on GDAL's block cache (``GDAL_CACHEMAX``), which the
    image's blocks share: a 64 MiB GDAL cache cannot keep an 8192^2 warped mask and its alpha
    band, this cache (`mask_cache_bytes`, 128 MiB by default) can. Blocks hold the data bands and
    a validity array only where some pixel is invalid.

    Shared by every thread of a process (one lock; a block two threads miss together is warped
    twice, identically). A forked child keeps the blocks it inherited (plain arrays, valid in
    both processes) and gets a fresh lock.
    """

    keep_windows = True
    """Whether the ``"lookup"`` view keeps the windows it gathers (`SourceReader._read_lookup`): only worth it
    where the same process reads a window again. A DataLoader worker does not (a window comes once per epoch,
    to any worker; non-persistent workers end with the epoch), so `crossgeo.torch.worker_init_fn` turns it off:
    kept, they grew each worker by 64 KiB per 256^2 window read, up to the cache's bound (128 MiB)."""

    window_share = 0.25
    """The share of `max_bytes` kept windows may take (32 MiB of the default 128: 512 windows of 256^2, a warm
    epoch's worth): a window read again saves a ~0.1 ms gather, while filling the whole bound cost a process that
    reads 2,000 windows ~100 MB more at its peak."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._start()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_new_lock_after_fork, weakref.ref(self)))

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._blocks: collections.OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray | None]] = (
            collections.OrderedDict()
        )
        self.bytes = 0
        self._windows: set[tuple[int, ...]] = set()  # keys put with evict=False (windows), and their bytes
        self.window_bytes = 0
        self.warped = 0
        """How many blocks were warped in this process (misses)."""

    @property
    def max_bytes(self) -> int:
        """The bound in bytes (None at construction: `mask_cache_bytes`, read on first use)."""
        if self._max_bytes is None:
            self._max_bytes = mask_cache_bytes()
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._max_bytes = value

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def holds(self, key: tuple[int, ...]) -> bool:
        """Whether a block is kept under ``key`` (a look only: no recency change, no lock)."""
        return key in self._blocks

    def get(self, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None] | None:
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
            return block

    def put(self, key: tuple[int, ...], block: tuple[np.ndarray, np.ndarray | None], *, evict: bool = True) -> None:
        """Keep ``block`` under ``key``, evicting the least recently used blocks to stay within the bound;
        ``evict=False`` keeps it only in room left free and within `window_share` (the lookup view's
        windows: they never push out the whole mask they are read from)."""
        size = _block_bytes(block)
        if size > self.max_bytes:
            return
        with self._lock:
            if not evict and (
                self.bytes + size > self.max_bytes or self.window_bytes + size > self.window_share * self.max_bytes
            ):
                return
            self._forget(key)
            self._blocks[key] = block
            self.bytes += size
            if not evict:
                self._windows.add(key)
                self.window_bytes += size
            self.warped += 1
            while self.bytes > self.max_bytes:
                self._forget(next(iter(self._blocks)))

    def _forget(self, key: tuple[int, ...]) -> None:
        """Drop ``key``'s block, if kept, from the counts (under the lock)."""
        old = self._blocks.pop(key, None)
        if old is not None:
            self.bytes -= _block_bytes(old)
            if key in self._windows:
                self._windows.discard(key)
                self.window_bytes -= _block_bytes(old)

    def room(self, size: int) -> bool:
        """Whether a window of ``size`` bytes would be kept: it fits without evicting anything and within
        `window_share` (a hint: `put` checks again under the lock)."""
        return self.bytes + size <= self.max_bytes and self.window_bytes + size <= self.window_share * self.max_bytes

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._windows.clear()
            self.bytes = self.window_bytes = 0

    def __len__(self) -> int:
        return len(self._blocks)


def _new_lock_after_fork(alive: weakref.ref[MaskBlockCache]) -> None:
    """A forked child's cache gets a fresh lock (another thread may have held it at the fork).

    Held through a weak reference: the fork hook must not keep a dropped cache's blocks alive."""
    cache = alive()
    if cache is not None:
        cache._after_fork()


def _block_bytes(block: tuple[np.ndarray, np.ndarray | None]) -> int:
    data, invalid = block
    return data.nbytes + (invalid.nbytes if invalid is not None else 0)


mask_blocks = MaskBlockCache()
"""This process's warped mask blocks (`MaskBlockCache`; its bound is read when a sampler is first planned)."""

_block_sources: dict[tuple[Any, ...], int] = {}
"""A small number per distinct warped source (file, bands, grid, ...): the first part of a block's key."""
_block_sources_lock = threading.Lock()


def _block_source_id(key: tuple[Any, ...]) -> int:
    with _block_sources_lock:
        return _block_sources.setdefault(key, len(_block_sources))


def warped_vrt(
    dataset: Any,
    grid: Grid,
    resampling: Resampling = Resampling.nearest,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    add_alpha: bool = False,
    src_nodata: float | None = None,
) -> WarpedVRT:
    """``dataset`` seen on ``grid`` through a ``WarpedVRT``: the one place crossgeo builds one.

    Args:
        dataset: An open rasterio dataset (left open; close the VRT before it).
        grid: The target grid: the reference grid, one window of it, or a coarsened copy.
        resampling: How source pixels become target pixels.
        tolerance: GDAL's warp approximation error in source pixels (`EXACT_TOLERANCE`:
            every pixel centre is transformed exactly).
        add_alpha: Add an alpha band that is 0 where the source has no data (outside it,
            nodata, its per-dataset mask band 0); it is the VRT's last band.
        src_nodata: The source's nodata when it is not the file's own (given in the configuration).
    """
    extra = {"src_nodata": src_nodata} if src_nodata is not None else {}
    return WarpedVRT(
        dataset,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        tolerance=tolerance,
        add_alpha=add_alpha,
        **extra,
    )


@attrs.frozen
class SourcePlan:
    """How one raster (an image source or the mask) is read onto the reference grid (picklable).

    The view is chosen once, at planning: ``"aligned"`` - the source's grid coincides with the
    reference grid up to whole pixels (`shift`), every read a plain window; ``"scaled"`` - each
    source pixel is a `factor` block of reference pixels, edges on edges (a 20 m band on a 10 m
    grid), and resampling is nearest: every read a plain window of the source, each pixel
    repeated `factor` times (exactly the nearest-neighbour warp, without a warp); ``"lookup"`` - a nearest
    warp that separates into rows and columns, a plain read and two index lookups (`lookup_axes`);
    ``"table"`` - any other nearest warp of a source without alpha or mask band, a plain read and a
    gather of the pixels an exact per-pixel warp picks (`crossgeo.grid.nearest_table`); ``"grid"`` - one
    ``WarpedVRT`` of the source over the whole reference grid per reader, every read a slice of
    it (GDAL's block cache keeps warped blocks between reads, `mask_view_for`); ``"window"`` - a
    small ``WarpedVRT`` per read whose target is the window itself.
    """

    path: str
    option: str
    """The option that named the file (``image_path``, ``mask_path``), for error messages."""
    what: str
    """What the source is in read errors (``image``, ``mask``, ``image source 'B11'``)."""
    bands: tuple[int, ...]
    """1-based data bands read (never the alpha band)."""
    dtype: str
    """The dtype the data are returned in (an image's output dtype, a mask's own dtype)."""
    view: str = "aligned"
    lookup_whole: bool = False
    """Lookup and table views: the source is read once into `MaskBlockCache` and every window gathered from it."""
    whole_window: tuple[int, int, int, int] | None = None
    """With `lookup_whole`: ``(row_off, col_off, height, width)`` of the part of the source kept, the part the
    reference grid reaches (`reached_part`); None: all of it."""
    shift: tuple[int, int] = (0, 0)
    """Aligned view: ``(rows, cols)`` of reference pixel (0, 0) on the source's grid; scaled view: in
    reference pixels counted from the source's origin (`crossgeo.grid.scaled_offset`)."""
    factor: tuple[int, int] = (1, 1)
    """Scaled view: reference pixels per source pixel, ``(rows, cols)``."""
    fill: float = 0.0
    """Value of pixels outside the source in an aligned read."""
    alpha: int | None = None
    """The source's own alpha band (1-based), if any."""
    nodata: float | None = None
    mask_band: bool = False
    """True when the source marks missing pixels with a GDAL per-dataset mask band."""
    resampling: Resampling = Resampling.nearest
    tolerance: float = DEFAULT_TOLERANCE
    """GDAL's warp approximation error in source pixels (`EXACT_TOLERANCE` for per-pixel exactness)."""
    warp_alpha: bool = True
    """A warped view adds an alpha band marking where the source has no data (when it has no alpha band)."""
    warp_nodata: bool = False
    """The warper is told `nodata` (a nodata given in the configuration, not the file's own)."""
    nodata_in_alpha: bool = False
    """In a warped view, the alpha band read already marks nodata, so values are not compared with it."""
    interior: tuple[tuple[float, float], ...] | None = attrs.field(default=None, repr=False)
    """The source's footprint shrunk by a margin, in reference-grid pixels: a warped window inside
    it needs no alpha band (`mask_interior`)."""
    name: str = ""
    """The source's name (an image source's key, or its file stem)."""
    scale: float | None = None
    offset: float | None = None
    """``value * scale + offset`` (float32) when either is given."""

    @property
    def scaled(self) -> bool:
        return self.scale is not None or self.offset is not None


@attrs.frozen
class ReadPlan:
    """Everything a reader needs, decided and validated at construction (picklable).

    Made by `crossgeo.inspection.read_plan` from the inspection records: one `SourcePlan`
    per image source, stacked in order into the image's channels, and one for the mask.
    Without a mask the reader reads images only (tiled prediction).
    """

    grid: Grid
    patch_size: int
    image: tuple[SourcePlan, ...]
    image_dtype: str
    """Output dtype of the stacked image."""
    mask: SourcePlan | None = None

    @property
    def image_path(self) -> str:
        """The reference image source's path (the first source's, for messages)."""
        return self.image[0].path

    @property
    def mask_path(self) -> str | None:
        return self.mask.path if self.mask is not None else None


GRID_VIEW_CACHE_SHARE = 0.5
"""`mask_view_for` warps the mask over the whole reference grid when that warped grid takes at most
this share of GDAL's block cache (the rest stays for the image's blocks)."""


def mask_view_for(
    grid: Grid,
    bands: int,
    dtype: Any,
    cache_bytes: int | None = None,
    *,
    views: int = 1,
    block_cache_bytes: int | None = 0,
) -> str:
    """``"grid"`` when the mask warped over the whole reference grid fits GDAL's block cache, else
    ``"blocks"`` when it fits crossgeo's warped block cache (`MaskBlockCache`), else ``"window"``.

    ``block_cache_bytes``: that cache's bound (None: this process's, `mask_cache_bytes`; 0: no
    ``"blocks"`` view). It holds the data bands and a validity byte per pixel (``bands - 1`` data
    bands: ``bands`` counts the alpha band), so an 8192^2 uint8 mask needs 128 MiB at most (blocks
    without invalid pixels keep no validity array). With 1,000 random 256^2 windows on that
    scene (GDAL_CACHEMAX 64 MiB), blocks read the EPSG:4326 mask faster than a warp per window
    (docs/performance.md); blocks evicted before their reuse would cost more than windows, so
    the view is only chosen when every scene's warped grid fits.

    Measured on an 8192^2 scene with an EPSG:4326 mask (docs/performance.md): with a 512 MiB cache,
    one whole-grid view reads 5x faster than a ``WarpedVRT`` per window once its warped blocks
    are cached, and as fast cold; with a cache too small to keep them (8 MiB) it re-warps whole
    512 x 128 blocks for every window and is ~25 % slower, so the per-window warp stays there.
    Both views are nearest neighbour; the grid view transforms every pixel centre exactly
    (`EXACT_TOLERANCE`), so it agrees with a per-pixel lookup at least as well as the window view.
    A mask without alpha or mask band never gets here (`mask_lookup`, `table_fits`: the ``"lookup"``
    and ``"table"`` views read its exact warp without a warp, ~1 ms a 256^2 window against ~49 ms
    for the exact warp of the blocks view).

    Args:
        grid: The reference grid.
        bands: Bands the view holds (the mask's data bands plus its alpha band).
        dtype: The mask's data type.
        cache_bytes: GDAL's block cache size; default: this process's ``GDAL_CACHEMAX``.
        views: How many such views share the cache: a `crossgeo.SceneSampler` passes its scene
            count, since an epoch visits every scene. A catalogue whose warped scenes do not fit
            together gets the per-window warp: whole-grid blocks evicted before their reuse cost
            ~10x more than a window's warp each time (1,000 scenes of 1024^2 with a 10 m
            EPSG:4326 mask mosaic: 14 vs 126 patches/s against opening per sample).
    """
    if cache_bytes is None:
        cache_bytes = int(rasterio.env.get_gdal_config("GDAL_CACHEMAX") or 0)
    warped = views * grid.height * grid.width * bands * np.dtype(dtype).itemsize
    if warped <= GRID_VIEW_CACHE_SHARE * cache_bytes:
        return "grid"
    if block_cache_bytes is None:
        block_cache_bytes = mask_blocks.max_bytes
    kept = views * grid.height * grid.width * ((bands - 1) * np.dtype(dtype).itemsize + 1)
    return "blocks" if block_cache_bytes and kept <= block_cache_bytes else "window"


def lookup_axes(source: Any, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """The source row of every reference row and the source column of every reference column (-1: outside),
    when a nearest-neighbour warp of ``source`` onto ``grid`` separates into rows and columns; else None.

    That is the case of a north-up source whose CRS maps the grid's x to its own x and y to y independently:
    the same CRS at another resolution or origin, longitude/latitude onto (Web) Mercator and back. A mask in
    EPSG:4326 on an EPSG:3857 image is then read as a plain window of the source and two index lookups - no
    warp, no cache - with the pixels of GDAL's exact warp (`EXACT_TOLERANCE`, the ``"grid"`` view): GDAL reads
    for a reference pixel centre with source coordinates ``(x, y)`` the pixel ``(int(y + 1e-10), int(x + 1e-10))``
    (`crossgeo.grid.nearest_index`), none when ``x < 0``, ``y < 0`` or past the source's size; so does this.

    The separation is checked, not assumed: the source x of every reference column is computed on the
    grid's first, middle and last rows and must be bit-identical on all three (and likewise the source y of
    every row on three columns). None also for a rotated grid, a source across the antimeridian and a failed
    transform. Coordinates are those of the exact transform, so a pixel centre exactly on a source pixel edge
    (grids related by whole ratios) goes to the pixel after it, as GDAL's rule says; GDAL's own coordinates
    carry rounding noise (~1e-10 pixels for a geographic source) that could, in principle, split such a tie
    the other way: on the benchmark scene (630 of its 8192 columns are such ties) and the tests' scenes
    every pixel agrees.

    Args:
        source: An open rasterio dataset or a `RasterInfo` (``crs``, ``transform``, ``width``, ``height``).
        grid: The reference grid.
    """
    t, g = source.transform, grid.transform
    if (
        t.b != 0
        or t.d != 0
        or g.b != 0
        or g.d != 0
        or t.a == 0
        or t.e == 0
        or (source.crs is None) != (grid.crs is None)
    ):
        return None
    # Pixel centres in the grid's CRS, as GDAL computes them (x0 + (col + 0.5) * dx; the rotation terms are 0).
    xs = g.c + (np.arange(grid.width) + 0.5) * g.a
    ys = g.f + (np.arange(grid.height) + 0.5) * g.e
    if source.crs is not None and source.crs != grid.crs:
        if source.crs.is_geographic and (
            min(source.bounds[0], source.bounds[2]) < -180 or max(source.bounds[0], source.bounds[2]) > 180
        ):
            return None  # GDAL may wrap longitudes across the antimeridian
        picks = sorted({0, grid.height // 2, grid.height - 1}), sorted({0, grid.width // 2, grid.width - 1})
        with np.errstate(all="ignore"):
            along_x = [
                np.asarray(warp_transform(grid.crs, source.crs, xs, np.full(xs.shape, ys[i]))[0]) for i in picks[0]
            ]
            along_y = [
                np.asarray(warp_transform(grid.crs, source.crs, np.full(ys.shape, xs[j]), ys)[1]) for j in picks[1]
            ]
        if any(not np.array_equal(along_x[0], other) for other in along_x[1:]) or any(
            not np.array_equal(along_y[0], other) for other in along_y[1:]
        ):
            return None
        xs, ys = along_x[0], along_y[0]
    inverse = ~t
    axes = []
    for coords, scale, offset, size in (
        (ys, inverse.e, inverse.f, source.height),
        (xs, inverse.a, inverse.c, source.width),
    ):
        with np.errstate(all="ignore"):
            at = offset + coords * scale  # GDAL's inverse geotransform (the other term is 0)
        if not np.all(np.isfinite(at)):
            return None
        axes.append(nearest_index(at, size))
    return axes[0], axes[1]


def mask_lookup(raster: Any, grid: Grid, data_bands: int) -> bool:
    """Whether a warped mask is read through `lookup_axes` (the ``"lookup"`` view), before `mask_view_for`'s views.

    A mask without an alpha or mask band (the warper's handling of those is not reproduced) whose nodata, if
    any, marks a single band, and whose warp separates into rows and columns (`lookup_axes`).
    """
    if not LOOKUP_VIEW or raster.alpha is not None or raster.mask_band:
        return False
    if raster.nodata is not None and (data_bands != 1 or raster.count != 1):
        return False
    return lookup_axes(raster, grid) is not None


def table_fits(raster: Any, grid: Grid, data_bands: int, nodata: float | None) -> bool:
    """Whether a nearest-neighbour warp of ``raster`` onto ``grid`` is read through `nearest_table` (``"table"``).

    The conditions of `mask_lookup` but the separation (which picks the ``"lookup"`` view first): no alpha
    or mask band, a ``nodata`` (the one the source is read with) marking a single band - and, as there, not
    a geographic source reaching past the antimeridian (GDAL may wrap its longitudes) nor one CRS missing.
    """
    if not TABLE_VIEW or raster.alpha is not None or raster.mask_band:
        return False
    if nodata is not None and (data_bands != 1 or raster.count != 1):
        return False
    if (raster.crs is None) != (grid.crs is None):
        return False
    left, _, right, _ = raster.bounds
    return not (
        raster.crs is not None and raster.crs.is_geographic and (min(left, right) < -180 or max(left, right) > 180)
    )


def source_pixels(source: Any, grid: Grid) -> Any:
    """Map coordinates on ``grid``'s CRS -> ``source``'s pixel coordinates ``(col, row)``, each transformed
    exactly (``rasterio.warp.transform``, then the source's inverse geotransform): `nearest_table`'s
    ``source_pixels``. A point that does not transform comes back non-finite."""
    inverse = ~source.transform
    if source.crs is None or source.crs == grid.crs:
        return lambda xs, ys: inverse @ (xs, ys)
    src_crs, dst_crs = grid.crs, source.crs

    def move(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            x, y = warp_transform(src_crs, dst_crs, xs, ys)
            return inverse @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    return move


TABLE_LATTICE_POINTS = 1 << 21
"""The largest lattice `table_lattice` moves for a whole grid, in points (nodes, edge midpoints, cell centres): a
16384^2 grid's at `crossgeo.grid.TABLE_STEP` 32 is 1.05 M (~1 s once). An 8192^2 grid's 263 k points take ~0.2 s,
where its 2,000 windows one at a time would move 578 k; a larger grid's windows each move their own."""
TABLE_LATTICE_BYTES = 32 << 20
"""Bytes of whole-grid lattices a process keeps, every grid's together (an 8192^2 grid's: 1.5 MiB)."""

_lattices: collections.OrderedDict[tuple[Any, ...], TableLattice | None] = collections.OrderedDict()
_lattices_lock = threading.Lock()


def _lattice_lock_after_fork() -> None:
    global _lattices_lock
    _lattices_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_lattice_lock_after_fork)


def table_lattice(source: Any, grid: Grid, *, build: bool = True) -> TableLattice | None:
    """The exact moves of ``grid``'s whole lattice onto the open raster ``source`` (`crossgeo.grid.TableLattice`
    at `crossgeo.grid.TABLE_STEP`): `nearest_table` then slices a window's instead of moving it.

    Kept for the process: moved when a sampler is planned (``build``), so the DataLoader workers forked after
    that inherit it and threads share it; a reader only looks it up (``build=False``: a spawned worker, a
    catalogue's scene, move each window's own). None where there is none: not built, more points than
    `TABLE_LATTICE_POINTS`, or refused by the transform (a point off the source CRS's domain)."""
    key: tuple[Any, ...] = (tuple(grid.transform), grid.height, grid.width, _crs_key(grid.crs))
    key += (tuple(source.transform), _crs_key(source.crs), TABLE_STEP)
    with _lattices_lock:
        if key in _lattices or not build:
            return _lattices.get(key)
    cells = TableLattice.grid_cells(grid.height, grid.width, TABLE_STEP)
    lattice = None
    if (2 * cells[0] + 1) * (2 * cells[1] + 1) <= TABLE_LATTICE_POINTS:
        with contextlib.suppress(CPLE_BaseError, RasterioError):
            lattice = TableLattice.build(grid.transform, source_pixels(source, grid), (0, 0), cells, TABLE_STEP)
    with _lattices_lock:
        _lattices[key] = lattice
        while sum(kept.nbytes for kept in _lattices.values() if kept is not None) > TABLE_LATTICE_BYTES:
            _lattices.popitem(last=False)
    return lattice


def _crs_key(crs: Any) -> str | None:
    """A CRS as a dictionary key (its WKT)."""
    return None if crs is None else crs.to_wkt()


def kept_part(
    raster: Any, grid: Grid, data_bands: int, *, views: int = 1
) -> tuple[bool, tuple[int, int, int, int] | None]:
    """`SourcePlan.lookup_whole` and `SourcePlan.whole_window` of a ``"lookup"`` or ``"table"`` source: whether
    `mask_blocks` keeps the part of ``raster`` that ``grid`` reaches (`reached_part`), and that part (None: all
    of the raster, or nothing kept).

    Kept when ``views`` such parts (a catalogue's scenes) fit its byte bound together: a window is then two
    gathers from memory, with no read call; else each window reads the part of the mask it needs (worker-like
    reads of the benchmark scene's mask: 10-30 % more CPU per patch; of `benchmarks.reach_probe`'s mask 3x its
    size, 5 %).
    """
    part = reached_part(raster, grid)
    height, width = (raster.height, raster.width) if part is None else part[2:]
    size = height * width * data_bands * np.dtype(raster.dtypes[0]).itemsize
    keep = views * size <= mask_blocks.max_bytes
    return keep, part if keep else None


REACH_EDGE_POINTS = 256
"""Points per edge of the reference grid's outline that `reached_part` moves onto the source."""
REACH_MARGIN = 2
"""Source pixels `reached_part` adds on every side of the outline's bounding box."""
REACH_ALL_SHARE = 0.9
"""`reached_part` keeps the whole source when the part the grid reaches is at least this share of it."""


def reached_part(raster: Any, grid: Grid) -> tuple[int, int, int, int] | None:
    """``(row_off, col_off, height, width)``: the part of ``raster`` (in its pixels) the pixels of ``grid`` can
    pick - the bounding box of the grid's outline moved onto the source (`REACH_EDGE_POINTS` per edge),
    `REACH_MARGIN` pixels wider on every side and clipped to the raster. None (the whole raster) when that
    part is most of it (`REACH_ALL_SHARE`), misses it or cannot be told (the outline does not transform).

    A small image over a large mask (a national land-cover raster in EPSG:4326 beside one UTM scene) then
    keeps the mask's pixels under the image, not the whole file: less memory, a shorter first read, and a
    mask too large to keep whole often fits. A reprojection is continuous and one to one, so the grid's
    inside lands within its outline's image; reads check it all the same (`SourceReader._source_part`).
    """
    edge = np.linspace(0.0, 1.0, REACH_EDGE_POINTS + 1)
    height, width = float(grid.height), float(grid.width)
    cols = np.concatenate([edge * width, np.full_like(edge, width), (1 - edge) * width, np.zeros_like(edge)])
    rows = np.concatenate([np.zeros_like(edge), edge * height, np.full_like(edge, height), (1 - edge) * height])
    centres: Any = grid.transform
    try:
        x, y = (np.asarray(v, dtype=np.float64) for v in source_pixels(raster, grid)(*(centres @ (cols, rows))))
    except (CPLE_BaseError, RasterioError):
        return None
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    c0, c1 = max(0, math.floor(x.min()) - REACH_MARGIN), min(raster.width, math.ceil(x.max()) + REACH_MARGIN)
    r0, r1 = max(0, math.floor(y.min()) - REACH_MARGIN), min(raster.height, math.ceil(y.max()) + REACH_MARGIN)
    if r1 <= r0 or c1 <= c0 or (r1 - r0) * (c1 - c0) >= REACH_ALL_SHARE * raster.height * raster.width:
        return None
    return r0, c0, r1 - r0, c1 - c0


OUTSIDE_GRID = -2
"""`_lookup_window`'s index of a window position outside the reference grid (-1: outside the source)."""


def _simple_axis(axis: np.ndarray) -> bool:
    """Whether a `lookup_axes` array's source indices run one way without a gap (-1 only at its ends)."""
    at = np.flatnonzero(axis >= 0)
    if at.size < 2:
        return True
    steps = np.diff(axis[at])
    return bool(at[-1] - at[0] + 1 == at.size and ((steps >= 0).all() or (steps <= 0).all()))


def _lookup_window(axis: np.ndarray, off: int, size: int) -> np.ndarray:
    """``axis[off : off + size]`` of a `lookup_axes` array, `OUTSIDE_GRID` where the window leaves the grid."""
    if off >= 0 and off + size <= axis.size:
        return axis[off : off + size]
    out = np.full(size, OUTSIDE_GRID, dtype=axis.dtype)
    start, stop = overlap(off, size, axis.size)
    if start < stop:
        out[start - off : stop - off] = axis[start:stop]
    return out


def _read_filled(
    dataset: Any,
    indexes: list[int],
    row_off: int,
    col_off: int,
    size: int,
    fill: float,
    dtype: Any,
    *,
    width: int | None = None,
    masks: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``size`` window (``size`` rows by ``width`` columns) that may reach past the raster, filling the outside.

    Returns the data and a bool (H, W) array that is True outside the raster (None when
    the window lies wholly inside). ``masks=True`` reads GDAL's mask bands (0 = no data)
    of ``indexes`` instead of their values.
    """
    read = dataset.read_masks if masks else dataset.read
    width = size if width is None else width
    outside = outside_pixels(row_off, col_off, size, dataset.height, dataset.width, width_size=width)
    if outside is None:
        data = read(indexes, window=Window(col_off, row_off, width, size))
        return data.astype(dtype, copy=False), None
    out = np.full((len(indexes), size, width), fill, dtype=dtype)
    r0, r1 = overlap(row_off, size, dataset.height)
    c0, c1 = overlap(col_off, width, dataset.width)
    if r0 < r1 and c0 < c1:
        part = read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = part
    return out, outside


PLANNED_BLOCK_BYTES = 32 << 20
"""Decoded blocks a `PlannedBlocks` keeps (a 256^2 RGB tile: 192 KiB, so 170 of them). With a plan, GDAL's own
block cache of the process is lowered to `PLANNED_GDAL_CACHE`: the two together are 8 MiB less than a DataLoader
worker's GDAL cache without one (`WORKER_BLOCK_CACHE`). Tiles decoded per 256^2 window of the benchmark scene
(1,000 windows of a worker, 256^2 tiles): 24 MiB 2.35, 32 MiB 2.12, 40 MiB 1.94; GDAL's 48 MiB cache 3.0."""
PLANNED_GDAL_CACHE = 8 << 20
PLANNED_DRIVERS = ("GTiff", "MBTiles")
"""Drivers whose blocks are what they decode, so a window assembled from blocks is the window read (a VRT's
block of resampled sources may round its source window otherwise)."""


class PlannedBlocks:
    """One source's decoded blocks (GeoTIFF tiles), kept for the windows its sampler was told it will read.

    A DataLoader worker knows the windows of its pass (`crossgeo.torch.ring.RingSampler` sends each worker its
    next 1,024 batches' indices with its first batch, and again after them), and so does the 0-worker loader's
    read-ahead pool (`crossgeo.readahead.ReadAhead`'s ``plan=``): when a block must make room, the one evicted is
    the one needed again furthest in the future, or never (Belady's rule), where GDAL's block cache can only drop
    the least recently used. On the benchmark scene's 2,000 random 256^2 windows (256^2 tiles, 2 workers) that
    decodes 2.1 tiles per window where GDAL's 48 MiB cache decodes 3.0 (`PLANNED_BLOCK_BYTES`).

    Shared by every thread of a process reading for one sampler (`KeptBlocks`; one lock, held only to look up,
    keep and evict): each thread decodes a missing block with its own handle, so the threads of a read-ahead
    pool share one store where each thread's handle kept its own blocks in GDAL's cache - on the benchmark
    scene's first 1,000 windows, two threads: 1.55 tiles decoded per window (64 MiB), where two handles in
    GDAL's 64 MiB cache decode ~3.4 (simulated). A window is matched to its place in the plan whatever the
    thread and order it is read in; a window not in the plan keeps its blocks behind the planned ones (the least
    recently used of those go first), and a new plan replaces the old. The pixels never depend on it: each
    window is assembled from whole blocks read from the file, exactly what a window read returns. A block two
    threads miss at once is decoded twice, identically.
    """

    def __init__(self, dataset: Any, indexes: list[int], dtype: np.dtype[Any], layout: BlockLayout) -> None:
        self.dataset, self.indexes, self.dtype, self.layout = dataset, indexes, dtype, layout
        self.height, self.width = dataset.height, dataset.width
        self._block_bytes = len(indexes) * layout.height * layout.width * np.dtype(dataset.dtypes[0]).itemsize
        self.capacity = max(4, PLANNED_BLOCK_BYTES // self._block_bytes)
        self._lock = threading.Lock()
        self.blocks: dict[tuple[int, int], np.ndarray] = {}
        self._next: dict[tuple[int, int], tuple[float, int]] = {}
        self._heap: list[tuple[float, int, tuple[int, int]]] = []
        self._places: dict[tuple[int, int], collections.deque[int]] = {}  # window -> its places in the plan
        self._uses: dict[tuple[int, int], list[int]] = {}  # block -> the places of the windows that need it
        self._pushed = 0
        self.decoded = 0
        """Blocks read from the file (a count for tests and benchmarks)."""

    def _blocks_of(self, row_off: int, col_off: int, height: int, width: int) -> list[tuple[int, int]]:
        bh, bw = self.layout.height, self.layout.width
        return [
            (r, c)
            for r in range(row_off // bh, (row_off + height - 1) // bh + 1)
            for c in range(col_off // bw, (col_off + width - 1) // bw + 1)
        ]

    def plan(self, windows: list[tuple[int, int]], size: int, readers: int = 1) -> None:
        """The ``size`` x ``size`` windows ``(row_off, col_off)`` to be read next, in this order (any thread may
        read any of them), by ``readers`` threads at once: the store keeps `PLANNED_BLOCK_BYTES` per reader."""
        places: dict[tuple[int, int], collections.deque[int]] = {}
        uses: dict[tuple[int, int], list[int]] = {}
        for place, window in enumerate(windows):
            places.setdefault(window, collections.deque()).append(place)
            for block in self._blocks_of(*window, size, size):
                uses.setdefault(block, []).append(place)
        with self._lock:
            self.capacity = max(4, max(readers, 1) * PLANNED_BLOCK_BYTES // self._block_bytes)
            self._places, self._uses = places, uses
            for block in self.blocks:  # the kept ones: their first use in the new plan
                self._keep(block, uses[block][0] if block in uses else math.inf)

    def read(self, row_off: int, col_off: int, height: int, width: int, dataset: Any = None) -> np.ndarray | None:
        """The window's ``indexes`` as ``dtype``, as ``dataset.read`` returns them; None past the raster's edges.

        ``dataset``: this thread's handle of the source (default: the one the store was made with)."""
        if row_off < 0 or col_off < 0 or row_off + height > self.height or col_off + width > self.width:
            return None
        dataset = self.dataset if dataset is None else dataset
        with self._lock:
            places = self._places.get((row_off, col_off))
            place = places.popleft() if places else None  # None: not in the plan
        out = np.empty((len(self.indexes), height, width), dtype=self.dtype)
        bh, bw = self.layout.height, self.layout.width
        for block in self._blocks_of(row_off, col_off, height, width):
            with self._lock:
                data = self.blocks.get(block)
                if data is not None:
                    self._keep(block, self._next_use(block, place))
            if data is None:
                data, failed = self._decode(dataset, block)
                if not failed:
                    with self._lock:
                        self._make_room()
                        self.blocks[block] = data
                        self._keep(block, self._next_use(block, place))
            r, c = block[0] * bh, block[1] * bw
            top, left = max(row_off, r), max(col_off, c)
            bottom, right = min(row_off + height, r + bh), min(col_off + width, c + bw)
            out[:, top - row_off : bottom - row_off, left - col_off : right - col_off] = data[
                :, top - r : bottom - r, left - c : right - c
            ]
        return out

    def _decode(self, dataset: Any, block: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """Read a block from the file (with this thread's handle, outside the lock), and whether GDAL signalled a
        failure meanwhile: a damaged tile reads as blank pixels, which must never be kept for another read (the
        read's `reading` raises the failure when it ends)."""
        bh, bw = self.layout.height, self.layout.width
        r, c = block[0] * bh, block[1] * bw
        caught = _failure_trap.failures.get(threading.get_ident())
        before = len(caught) if caught is not None else 0
        data = dataset.read(self.indexes, window=Window(c, r, min(bw, self.width - c), min(bh, self.height - r)))
        with self._lock:
            self.decoded += 1
        return data, caught is not None and len(caught) > before

    def _next_use(self, block: tuple[int, int], place: int | None) -> float:
        """The plan's next place needing ``block`` after ``place`` (inf: none, or a read not in the plan)."""
        uses = self._uses.get(block)
        if place is None or uses is None:
            return math.inf
        at = bisect.bisect_right(uses, place)
        return uses[at] if at < len(uses) else math.inf

    def _make_room(self) -> None:
        """Evict until a block fits: out goes the kept block needed furthest ahead (the lock is held)."""
        while len(self.blocks) >= self.capacity:
            key, pushed, victim = heapq.heappop(self._heap)
            if self._next.get(victim) == (-key, pushed):  # (else an entry superseded since)
                del self.blocks[victim], self._next[victim]

    def _keep(self, block: tuple[int, int], next_use: float) -> None:
        """Note when ``block`` is needed next (``inf``: not in the plan; the least recently used of those go first)."""
        self._pushed += 1
        self._next[block] = (next_use, self._pushed)
        heapq.heappush(self._heap, (-next_use, self._pushed, block))
        if len(self._heap) > 8 * self.capacity + 64:  # drop the entries superseded since
            self._heap = [(-use, pushed, kept) for kept, (use, pushed) in self._next.items()]
            heapq.heapify(self._heap)


class KeptBlocks:
    """The `PlannedBlocks` of one sampler's image sources in this process, shared by its readers in every thread.

    A forked child starts with none (its plan comes with its first batch); so does an unpickled copy."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stores: dict[int, PlannedBlocks] = {}

    def get(self, source: int) -> PlannedBlocks | None:
        """Image source ``source``'s store, if it was planned in this process."""
        if self._pid != os.getpid():
            self._start()
        return self._stores.get(source)

    def made(self, source: int, make: Any) -> PlannedBlocks:
        """Image source ``source``'s store, made by ``make()`` if there is none yet."""
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            store = self._stores.get(source)
            if store is None:
                store = self._stores[source] = make()
            return store

    def clear(self) -> None:
        """Drop every store (and the blocks it keeps)."""
        self._start()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._start()


class SourceReader:
    """One source's handles in one thread and its windowed read on the reference grid (see `SourcePlan`)."""

    def __init__(
        self, plan: SourcePlan, grid: Grid, patch_size: int, kept: tuple[KeptBlocks, int] | None = None
    ) -> None:
        self.plan, self.grid, self.size = plan, grid, patch_size
        # Where this source's planned blocks are kept (shared by the sampler's readers), and its number there.
        self.kept, self.kept_at = kept if kept is not None else (KeptBlocks(), 0)
        self.dataset = open_raster(plan.path, plan.option)
        # As a dtype object once: a dtype name or ``dataset.dtypes`` costs microseconds on every read.
        self.dtype = np.dtype(plan.dtype)
        self.alpha, self.mask_band, self.added_alpha = plan.alpha, plan.mask_band, False
        self.view = self.dataset
        if plan.view in ("grid", "blocks"):
            # The warper honours the source's mask band and nodata; an added alpha band carries them.
            self.added_alpha = plan.warp_alpha and plan.alpha is None
            self.view = warped_vrt(
                self.dataset,
                grid,
                plan.resampling,
                tolerance=plan.tolerance,
                add_alpha=self.added_alpha,
                src_nodata=plan.nodata if plan.warp_nodata else None,
            )
            if self.added_alpha:
                self.alpha, self.mask_band = self.view.count, False
        # The bands read per window: the data bands, then the alpha band when it is not one of them.
        self.indexes = list(plan.bands)
        if self.alpha is not None and self.alpha not in self.indexes:
            self.indexes.append(self.alpha)
        self.alpha_at = self.indexes.index(self.alpha) if self.alpha is not None else None
        self.check_nodata = not (self.added_alpha and plan.nodata_in_alpha)
        self.interior = _MaskInterior(plan.interior, patch_size) if plan.interior is not None else None
        self.outside_value = 0  # what the warper leaves where it writes nothing (rasterio's WarpedVRT with alpha)
        self.block = MASK_BLOCK
        self.block_source = self._block_key() if plan.view in ("blocks", "lookup", "table") else -1
        if plan.view == "table":
            self.to_source = source_pixels(self.dataset, grid)
            self.lattice = table_lattice(self.dataset, grid, build=False)
        if plan.view == "lookup":
            axes = lookup_axes(self.dataset, grid)
            if axes is None:
                raise ReadError(
                    f"The {plan.what} {plan.path} no longer meets the reference grid as it did when the sampler was "
                    "built (was the file replaced?); build the sampler again."
                )
            self.rows, self.cols = axes
            self.simple_axes = _simple_axis(self.rows) and _simple_axis(self.cols)

    def close(self) -> None:
        if self.view is not self.dataset:
            self.view.close()
        self.dataset.close()

    @property
    def planned(self) -> PlannedBlocks | None:
        """This source's kept blocks, once a plan was given in this process (`plan_windows`)."""
        return self.kept.get(self.kept_at)

    def plan_windows(self, windows: list[tuple[int, int]], readers: int = 1, lower_gdal_cache: bool = False) -> None:
        """The windows ``(row_off, col_off)`` to be read next, in order, by ``readers`` threads (a DataLoader
        worker's pass, a read-ahead pool's): a tiled local GeoTIFF or MBTiles source on the reference grid keeps
        decoded blocks for them (`PlannedBlocks`, shared by the sampler's threads), and ``lower_gdal_cache``
        lowers GDAL's block cache to `PLANNED_GDAL_CACHE` (the kept blocks stand in for it); others ignore it."""
        plan, dataset = self.plan, self.dataset
        if plan.view != "aligned" or plan.shift != (0, 0) or is_remote(plan.path) or not windows:
            return
        if dataset.driver not in PLANNED_DRIVERS:
            return
        layout = BlockLayout.of(dataset)
        if layout is None or layout.width >= dataset.width or layout.height >= dataset.height:
            return  # strips, or one block: nothing to choose between
        store = self.kept.made(self.kept_at, lambda: PlannedBlocks(dataset, self.indexes, self.dtype, layout))
        if lower_gdal_cache:
            lower_block_cache(PLANNED_GDAL_CACHE)
        store.plan(windows, self.size, readers)

    def read(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The source's data bands on a window of the reference grid (H, W default: the patch size), and where invalid.

        Invalid (True) pixels are those the source does not cover, its nodata, alpha 0 and
        mask band 0; None when there are none and the source marks none.
        """
        height = self.size if height is None else height
        width = self.size if width is None else width
        with reading(self.plan.what, self.plan.path, row_off, col_off, self.size):
            if self.plan.view == "window":
                return self._read_warped(row_off, col_off, height, width)
            if self.plan.view == "blocks":
                return self._read_blocks(row_off, col_off, height, width)
            if self.plan.view == "scaled":
                return self._read_scaled(row_off, col_off, height, width)
            if self.plan.view in ("lookup", "table"):
                return self._read_lookup(row_off, col_off, height, width)
            return self._read(row_off, col_off, height, width)

    def computes(self, row_off: int, col_off: int) -> bool:
        """Whether reading the patch-sized window here computes a warp (a ``"table"`` view's window not kept
        in `mask_blocks`, or a ``"window"`` view's `WarpedVRT`): long enough, like an image's decode, to be
        worth a thread of its own (`RasterReader.read_patch`). A plain, looked-up or kept window (a fraction
        of a millisecond) is not: handing it to another thread cost more than it saved (aligned masks read
        at 290 instead of 355 patches/s, warm windows at half their speed)."""
        view = self.plan.view
        if view == "table":
            return not mask_blocks.holds((self.block_source, row_off, col_off, self.size, self.size))
        return view == "window"

    def _block_key(self) -> int:
        """This source's number in `mask_blocks` (same file, bands, grid and warp: same blocks)."""
        plan, grid = self.plan, self.grid
        key: tuple[Any, ...] = (plan.view, self.block, plan.path, plan.bands, plan.dtype, plan.alpha, plan.nodata)
        key += (plan.warp_nodata, plan.warp_alpha)
        key += (plan.nodata_in_alpha, plan.resampling, plan.tolerance, tuple(grid.transform), str(grid.crs))
        key += (plan.whole_window,)
        if not is_remote(plan.path):  # a file rewritten in place gets new blocks
            with contextlib.suppress(OSError):
                stat = os.stat(plan.path)
                key += (stat.st_mtime_ns, stat.st_size)
        return _block_source_id(key)

    def _read_blocks(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The window assembled from warped `MASK_BLOCK` blocks (`MaskBlockCache`), reading the missing ones.

        A missing block is read from the whole-grid view (`_read`): GDAL warps that view block by
        block of its own (`EXACT_TOLERANCE`), whatever region is asked for, so every pixel gets
        exactly the value the ``"grid"`` view gives it - only the cache that keeps the warped
        pixels differs (crossgeo's, not GDAL's block cache).
        """
        cache, b, source = mask_blocks, self.block, self.block_source
        r0, r1 = row_off // b, (row_off + height - 1) // b
        c0, c1 = col_off // b, (col_off + width - 1) // b
        parts = {}
        for br in range(r0, r1 + 1):
            for bc in range(c0, c1 + 1):
                key = (source, br, bc)
                block = cache.get(key)
                if block is None:
                    data, invalid = self._read(br * b, bc * b, b, b)
                    if data.base is not None:  # a view of the read with its alpha band: keep only the data bands
                        data = data.copy()
                    block = (data, invalid if invalid is not None and invalid.any() else None)
                    cache.put(key, block)
                parts[br, bc] = block
        if len(parts) == 1:
            (data, invalid), r, c = parts[r0, c0], row_off - r0 * b, col_off - c0 * b
            return data[:, r : r + height, c : c + width].copy(), (
                None if invalid is None else invalid[r : r + height, c : c + width].copy()
            )
        first = parts[r0, c0][0]
        out = np.empty((first.shape[0], height, width), dtype=first.dtype)
        bad: np.ndarray | None = None
        for (br, bc), (data, invalid) in parts.items():
            top, left = max(row_off, br * b), max(col_off, bc * b)
            bottom, right = min(row_off + height, (br + 1) * b), min(col_off + width, (bc + 1) * b)
            src = np.s_[top - br * b : bottom - br * b, left - bc * b : right - bc * b]
            dst = np.s_[top - row_off : bottom - row_off, left - col_off : right - col_off]
            out[(slice(None), *dst)] = data[(slice(None), *src)]
            if invalid is not None:
                if bad is None:
                    bad = np.zeros((height, width), dtype=bool)
                bad[dst] = invalid[src]
        return out, bad

    def _read_scaled(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The source pixels under the window read plainly, each repeated `SourcePlan.factor` times (``"scaled"``)."""
        (dr, dc), (k, m) = self.plan.shift, self.plan.factor
        top, left = row_off + dr, col_off + dc  # the window in reference pixels from the source's origin
        r0, c0 = top // k, left // m
        r1, c1 = (top + height - 1) // k + 1, (left + width - 1) // m + 1
        data, invalid = self._read(r0, c0, r1 - r0, c1 - c0, shifted=False)
        # The source row (column) of each window row (column): two takes beat np.repeat and a crop.
        rows = (np.arange(height) + (top - r0 * k)) // k
        cols = (np.arange(width) + (left - c0 * m)) // m
        data = data.take(rows, axis=1).take(cols, axis=2)
        if invalid is not None:
            invalid = invalid.take(rows, axis=0).take(cols, axis=1)
        return data, invalid

    def _read(
        self, row_off: int, col_off: int, height: int, width: int, *, shifted: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A plain window of the view (``shifted``: a window of the reference grid, moved by `SourcePlan.shift`)."""
        plan, view = self.plan, self.view
        dr, dc = plan.shift if shifted else (0, 0)
        # A window well inside the footprint of a whole-grid view has no uncovered pixel, so it needs
        # no alpha band; only a source without nodata may skip it (the view's data there is 0).
        if (
            self.added_alpha
            and plan.nodata is None
            and self.interior is not None
            and self.interior.covers(row_off, col_off, height, width)
        ):
            return _read_filled(view, list(plan.bands), row_off, col_off, height, plan.fill, self.dtype, width=width)
        planned = self.planned
        kept = planned.read(row_off + dr, col_off + dc, height, width, self.dataset) if planned is not None else None
        if kept is not None:
            data, invalid = kept, None
        else:
            data, invalid = _read_filled(
                view, self.indexes, row_off + dr, col_off + dc, height, plan.fill, self.dtype, width=width
            )
        alpha_at = self.alpha_at
        if alpha_at is not None:
            invalid = _union(invalid, data[alpha_at] == 0)
            if alpha_at == len(plan.bands):  # read along only for its validity
                data = data[:-1]
        if self.mask_band:
            band, _ = _read_filled(
                view, self.indexes[:1], row_off + dr, col_off + dc, height, 0, np.uint8, width=width, masks=True
            )
            invalid = _union(invalid, band[0] == 0)
        if self.check_nodata:
            no_data = nodata_pixels(data, plan.nodata)
            if no_data is not None:
                invalid = _union(invalid, no_data)
        return data, invalid

    def _whole_source(self) -> np.ndarray | None:
        """The source's data bands kept in `mask_blocks` (read on first use): all of them, or the part
        `SourcePlan.whole_window` names; None when the plan keeps none."""
        if not self.plan.lookup_whole:
            return None
        key = (self.block_source, -1, -1)
        kept = mask_blocks.get(key)
        if kept is None:
            part = self.plan.whole_window
            window = None if part is None else Window(part[1], part[0], part[3], part[2])
            kept = (self.dataset.read(list(self.plan.bands), window=window), None)
            mask_blocks.put(key, kept)
        return kept[0]

    def _source_part(self, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, int, int]:
        """Source rows ``top..bottom`` and columns ``left..right`` (inclusive) as ``(array, row, col)``: an
        array holding them whose first pixel is source pixel ``(row, col)`` - the part kept in memory when it
        holds them (`_whole_source`), else a plain read of just them."""
        kept = self._whole_source()
        if kept is not None:
            row, col = self.plan.whole_window[:2] if self.plan.whole_window is not None else (0, 0)
            if top >= row and left >= col and bottom < row + kept.shape[1] and right < col + kept.shape[2]:
                return kept, row, col
        window = Window(left, top, right - left + 1, bottom - top + 1)
        return self.dataset.read(list(self.plan.bands), window=window), top, left

    def _read_lookup(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`_look_up`'s window (`_table`'s in the ``"table"`` view), kept in `mask_blocks` while it has room
        (`MaskBlockCache.window_share`), so a repeated window is a copy.

        A window's two gathers cost ~0.1 ms (256^2, a pixel each), a copy of the kept window a few
        microseconds: warm epochs over the same windows read at the speed of GDAL's cache of warped
        blocks. Windows never evict anything (`MaskBlockCache.put` ``evict=False``): the whole mask
        they are gathered from stays kept, and other views' blocks push them out as usual. None are kept
        where `MaskBlockCache.keep_windows` is off (DataLoader workers).
        """
        key = (self.block_source, row_off, col_off, height, width)
        kept = mask_blocks.get(key)
        if kept is not None:
            data, invalid = kept
            return data.copy(), None if invalid is None else invalid.copy()
        read = self._table if self.plan.view == "table" else self._look_up
        data, invalid = read(row_off, col_off, height, width)
        if mask_blocks.keep_windows and mask_blocks.room(data.nbytes + (0 if invalid is None else invalid.nbytes)):
            mask_blocks.put(key, (data.copy(), None if invalid is None else invalid.copy()), evict=False)
        return data, invalid

    def _look_up(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The window as the source's rows and columns picked by `lookup_axes` from one plain read (or from
        the whole source kept in memory, `SourcePlan.lookup_whole`): no warp.

        Pixels outside the reference grid hold the fill value, those outside the source the warper's
        (nodata, else 0); both are invalid, as in the ``"grid"`` view, and so are nodata pixels.
        """
        plan = self.plan
        rows, cols = _lookup_window(self.rows, row_off, height), _lookup_window(self.cols, col_off, width)
        if self.simple_axes and min(rows[0], rows[-1], cols[0], cols[-1]) >= 0:
            # Nearly every window: wholly on the source, whose rows and columns run one way without gaps.
            r0, r1 = sorted((int(rows[0]), int(rows[-1])))
            c0, c1 = sorted((int(cols[0]), int(cols[-1])))
            source, top, left = self._source_part(r0, c0, r1, c1)
            data = source[:, rows - top][:, :, cols - left].astype(self.dtype, copy=False)
            no_data = nodata_pixels(data, plan.nodata)
            if no_data is not None and no_data.any():
                data[:, no_data] = self.outside_value
            return data, no_data
        inside_rows, inside_cols = rows >= 0, cols >= 0
        bands = len(plan.bands)
        if not (inside_rows.any() and inside_cols.any()):
            data = np.full((bands, height, width), self.outside_value, dtype=self.dtype)
        else:
            # Not always monotonic: a grid across the antimeridian meets the source's two edges.
            used_rows, used_cols = rows[inside_rows], cols[inside_cols]
            source, r0, c0 = self._source_part(
                int(used_rows.min()), int(used_cols.min()), int(used_rows.max()), int(used_cols.max())
            )
            local_rows = np.where(inside_rows, rows - r0, 0)
            local_cols = np.where(inside_cols, cols - c0, 0)
            # Rows, then columns: two 1-D gathers are ~8x faster than one broadcast (rows x cols) gather.
            data = source[:, local_rows][:, :, local_cols].astype(self.dtype, copy=False)
        no_data = nodata_pixels(data, plan.nodata)
        if no_data is not None and no_data.any():
            data[:, no_data] = self.outside_value  # the warper skips nodata pixels too
        if inside_rows.all() and inside_cols.all():
            return data, no_data
        for axis, where in ((1, rows), (2, cols)):
            index: list[Any] = [slice(None)] * 3
            index[axis] = where == -1
            data[tuple(index)] = self.outside_value
            index[axis] = where == OUTSIDE_GRID
            data[tuple(index)] = plan.fill
        invalid = ~(inside_rows[:, None] & inside_cols)
        return data, invalid if no_data is None else invalid | no_data

    def _table(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The window as the source pixels `nearest_table` picks, gathered from one plain read of the part of
        the source they span (or from the whole source kept in memory, `SourcePlan.lookup_whole`): no warp.

        Pixels outside the reference grid or the source hold the fill value (a mask's: 0, as the warper
        leaves them) and are invalid, as in the ``"grid"`` view; so are nodata pixels, set to the fill too.
        """
        plan, grid, bands = self.plan, self.grid, len(self.plan.bands)
        r0, r1 = overlap(row_off, height, grid.height)
        c0, c1 = overlap(col_off, width, grid.width)
        if r0 >= r1 or c0 >= c1:
            return np.full((bands, height, width), plan.fill, dtype=self.dtype), np.ones((height, width), dtype=bool)
        caught = _failure_trap.failures.get(threading.get_ident())
        before = len(caught) if caught is not None else 0
        try:
            rows, cols = nearest_table(
                grid.transform,
                r0,
                c0,
                r1 - r0,
                c1 - c0,
                self.to_source,
                self.dataset.shape,
                out=self._table_work(r1 - r0, c1 - c0),
                lattice=self.lattice,
            )
        except (CPLE_BaseError, RasterioError):
            # A point off the CRS's domain (rasterio refuses the whole batch, and GDAL reports it): GDAL's exact
            # warp of this window (`SourcePlan.tolerance` is `EXACT_TOLERANCE`) leaves such pixels without data.
            if caught is not None:
                del caught[before:]  # the refused transform is not a failed read
            return self._read_warped(row_off, col_off, height, width)
        outside = None if rows.min() >= 0 else rows < 0  # None: nearly every window, wholly on the source
        source = self._whole_source() if plan.whole_window is None else None
        if source is not None:  # the whole source: it holds every picked pixel
            top = left = 0
        elif outside is None or not outside.all():
            # The part of the source the picked pixels span (kept, or a plain read), its pixels gathered.
            # (Reductions over the picked pixels in place: copies of them would be whole-window arrays.)
            where: Any = True if outside is None else ~outside
            top, left = (int(v.min(initial=np.iinfo(v.dtype).max, where=where)) for v in (rows, cols))
            bottom, right = (int(v.max(initial=-1, where=where)) for v in (rows, cols))
            source, top, left = self._source_part(top, left, bottom, right)
        else:
            top = left = 0
            source = np.zeros((bands, 1, 1), dtype=self.dtype)
        # The flat index into the part read, (rows - top) * its width + cols - left, in a work array too (intp:
        # `take` would convert int32 indices into a fresh array).
        at = np.multiply(rows, source.shape[2], out=work_array("table-at", rows.shape, np.intp), dtype=np.intp)
        at += cols
        if top or left:
            at -= top * source.shape[2] + left
        if outside is not None:
            at[outside] = 0
        part = source.reshape(bands, -1).take(at, axis=1).astype(self.dtype, copy=False)
        bad = nodata_pixels(part, plan.nodata)
        bad = outside if bad is None else (bad if outside is None else bad | outside)
        if bad is not None:
            part[:, bad] = plan.fill
        if (r0, c0, r1, c1) == (row_off, col_off, row_off + height, col_off + width):
            return part, bad
        data = np.full((bands, height, width), plan.fill, dtype=self.dtype)
        invalid = np.ones((height, width), dtype=bool)
        inner = np.s_[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off]
        data[(slice(None), *inner)] = part
        invalid[inner] = False if bad is None else bad
        return data, invalid

    def _table_work(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """`nearest_table`'s ``out``: this thread's work arrays (`crossgeo.grid.work_array`: no page faults),
        int32 (cheaper passes) unless a side of the source reaches 2^31 pixels."""
        kind = np.int32 if max(self.dataset.height, self.dataset.width) < 2**31 else np.intp
        return work_array("table-rows", (height, width), kind), work_array("table-cols", (height, width), kind)

    def _read_warped(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A ``WarpedVRT`` per read whose target is the window, on the cached handle."""
        plan, grid = self.plan, self.grid
        # A window well inside the footprint needs no alpha band (in a per-window warp, it doubles
        # the cost); nodata is then its value. (No interior is planned when a mask band marks pixels.)
        inside = self.interior is not None and self.interior.covers(row_off, col_off, height, width)
        add_alpha = plan.warp_alpha and plan.alpha is None and not inside
        window = Grid(height, width, grid.window_transform(row_off, col_off), grid.crs)
        nodata = plan.nodata if plan.warp_nodata else None
        with warped_vrt(
            self.dataset, window, plan.resampling, tolerance=plan.tolerance, add_alpha=add_alpha, src_nodata=nodata
        ) as vrt:
            if inside or (plan.alpha is None and not add_alpha):
                data = vrt.read(list(plan.bands)).astype(self.dtype, copy=False)
                return data, nodata_pixels(data, plan.nodata)
            alpha = plan.alpha if plan.alpha is not None else vrt.count
            data = vrt.read([*plan.bands, alpha])
        invalid = data[-1] == 0
        data = data[:-1].astype(self.dtype, copy=False)
        if not plan.nodata_in_alpha:
            no_data = nodata_pixels(data, plan.nodata)
            if no_data is not None:
                invalid |= no_data
        return data, invalid


SOURCE_THREADS = min(4, os.cpu_count() or 1)
"""Threads that read the image sources of one patch at once (`SourcePool`); ``CROSSGEO_SOURCE_THREADS``
overrides it, 0 or 1 reads them one after the other in the caller's thread."""


class SourcePool:
    """A process-wide pool that reads the sources of a patch concurrently (mask, band files, sensors).

    GDAL releases the GIL while it decodes and warps (and numpy while it computes a "table" view's
    index), so the sources of one patch (an image and its mask, the 12 band files of a Sentinel-2
    scene) are read on several cores at once instead of one after the other: the caller
    and pool threads each take the next source not yet read, each with the caller's own handles
    (one thread per handle at a time; the caller waits for all before it returns or raises). The
    patch is the one a sequential read gives. Used only for local sources (a remote source's retry
    reopens every handle) and not where a process already reads in parallel: `enabled` is turned
    off in DataLoader workers (`crossgeo.torch.worker_init_fn`), and the read-ahead pool's threads
    (`crossgeo.readahead`) read their sources one after the other. A forked child starts a new pool.
    """

    enabled = True

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_new_source_pool_after_fork, weakref.ref(self)))

    @staticmethod
    def threads() -> int:
        value = os.environ.get("CROSSGEO_SOURCE_THREADS")
        try:
            return SOURCE_THREADS if value is None else max(0, int(value))
        except ValueError:
            raise ConfigError(
                f"CROSSGEO_SOURCE_THREADS must be a whole number >= 0 (0 or 1: read a patch's sources one after "
                f"the other), got {value!r}."
            ) from None

    def executor(self) -> ThreadPoolExecutor | None:
        """The pool, or None where sources are read in the caller's thread."""
        if not self.enabled or threading.current_thread().name.startswith(NO_SOURCE_THREADS_PREFIXES):
            return None
        threads = self.threads()
        if threads < 2:
            return None
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=threads - 1, thread_name_prefix=SOURCE_THREAD_PREFIX, initializer=ensure_gdal_env
                    )
        return self._pool


SOURCE_THREAD_PREFIX = "crossgeo-source"
NO_SOURCE_THREADS_PREFIXES = (SOURCE_THREAD_PREFIX, READ_THREAD_PREFIX)
"""Threads that read their sources one after the other: the pool's own and the read-ahead pool's."""


def _new_source_pool_after_fork(alive: weakref.ref[SourcePool]) -> None:
    pool = alive()
    if pool is not None:
        pool._pool, pool._lock = None, threading.Lock()


source_pool = SourcePool()
"""This process's `SourcePool`."""


class RasterReader:
    """The open handles of one process/thread: a `SourceReader` per image source and one for the mask."""

    def __init__(self, plan: ReadPlan, kept: KeptBlocks | None = None) -> None:
        self.plan = plan
        self.kept = KeptBlocks() if kept is None else kept
        """The image sources' planned blocks, shared with the other readers of the sampler (`plan_windows`)."""
        self._open()

    def _open(self) -> None:
        plan = self.plan
        self.images = [
            SourceReader(source, plan.grid, plan.patch_size, (self.kept, at)) for at, source in enumerate(plan.image)
        ]
        self.mask = SourceReader(plan.mask, plan.grid, plan.patch_size) if plan.mask is not None else None
        self.image_dtype = np.dtype(plan.image_dtype)
        self.channels = sum(len(source.bands) for source in plan.image)
        # One unscaled source: its read is the image (no stacking copy).
        self.single = len(plan.image) == 1 and not plan.image[0].scaled
        # Local sources are read concurrently (`SourcePool`): a remote one's retry reopens every handle.
        self.local_images = not any(is_remote(source.path) for source in plan.image)
        self.local_mask = plan.mask is not None and not is_remote(plan.mask.path)

    @property
    def mask_interior(self) -> _MaskInterior | None:
        """The mask's interior test (None: every warped mask read carries the alpha band)."""
        return self.mask.interior if self.mask is not None else None

    @mask_interior.setter
    def mask_interior(self, value: _MaskInterior | None) -> None:
        if self.mask is not None:
            self.mask.interior = value

    def plan_windows(self, windows: list[tuple[int, int]], readers: int = 1, lower_gdal_cache: bool = False) -> None:
        """The patches ``(row_off, col_off)`` to be read next, in order, by ``readers`` threads: each image source
        may keep decoded blocks for them (`SourceReader.plan_windows`)."""
        for source in self.images:
            source.plan_windows(windows, readers, lower_gdal_cache)

    def close(self) -> None:
        for source in [*self.images, self.mask]:
            if source is not None:
                source.close()

    def _retry_remote(self, error: ReadError, source: SourceReader, started: float) -> None:
        """After a failed read of a remote raster: forget its downloaded bytes and reopen, for one more try.

        A read that failed quickly got its bytes and could not decode them (damaged in transit,
        or a file replaced on the server): GDAL would serve the same bytes from its cache for the
        rest of the process, so they are dropped and the read is tried once more. A read that
        failed after a request's whole wait bound (`request_wait_bound`) met a stalled server: it
        is not retried (a read stays within `remote_wait_bound`) and its error says so. Raises
        ``error`` (or that stall error) when the read is not to be retried.
        """
        path = source.plan.path
        if not is_remote(path):
            raise error
        bound = request_wait_bound(effective_gdal_config())
        if time.monotonic() - started >= bound:
            raise ReadError(
                f"{error} The server sent nothing for {bound:g} s (GDAL_HTTP_LOW_SPEED_TIME / GDAL_HTTP_TIMEOUT): "
                "check that it is up and reachable; on a slow link raise GDAL_HTTP_LOW_SPEED_TIME (an environment "
                "variable), or set on_read_error: skip to train on without such windows."
            ) from error
        parts = [f for f in source.dataset.files if is_remote(f)] or [path]
        self.close()
        forget_remote_bytes(parts[:REMOTE_PARTS_FORGOTTEN])
        self._open()

    def _read_source(
        self, at: int | None, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Image source ``at`` (None: the mask) on a window, retried once with fresh bytes when remote."""
        source = self.mask if at is None else self.images[at]
        if source is None:
            raise ValueError("this reader was planned without a mask (ReadPlan.mask is None)")
        started = time.monotonic()
        try:
            return source.read(row_off, col_off, height, width)
        except ReadError as error:
            self._retry_remote(error, source, started)
        source = self.mask if at is None else self.images[at]
        assert source is not None
        return source.read(row_off, col_off, height, width)

    def read_image(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The image window (C, H, W) in the planned dtype, and where the image has no data.

        The sources' bands are stacked in the plan's order. Outside pixels hold the image fill.
        The second array (H, W) is True outside the raster, where an alpha band is 0 (read along
        even when not selected), where every selected band of a source is nodata and where a
        per-dataset mask band is 0; None when no pixel is invalid and no source marks any (no
        extra read then). A failed read of a remote source is retried once with fresh bytes.
        """
        keys = list(range(len(self.images)))
        return self._stack(self._read_sources(row_off, col_off, keys, self.local_images))

    def read_patch(
        self, row_off: int, col_off: int
    ) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]:
        """`read_image` and `read_mask` of one window: the arrays of the two calls one after the other.

        A mask whose read computes a warp (`SourceReader.computes`: the "table" view of an EPSG:4326
        mask costs about what the image's decode does) is one more source read concurrently with the
        image's (`SourcePool`): on two cores it runs beside the image's decode instead of after it.
        """
        mask = self.mask
        if mask is None or not (self.local_mask and mask.computes(row_off, col_off)):
            return self.read_image(row_off, col_off), self.read_mask(row_off, col_off)
        keys: list[int | None] = [*range(len(self.images)), None]
        results = self._read_sources(row_off, col_off, keys, self.local_images)
        return self._stack(results[:-1]), results[-1]

    def _stack(self, reads: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
        """The image sources' reads (in the plan's order) as one (C, H, W) window and its invalid pixels."""
        if self.single:
            return reads[0]
        size = self.plan.patch_size
        out = np.empty((self.channels, size, size), dtype=self.image_dtype)
        invalid: np.ndarray | None = None
        channel = 0
        for source, (data, bad) in zip(self.plan.image, reads):
            n = len(source.bands)
            if source.scaled:
                values = data.astype(np.float32)
                if source.scale is not None:
                    values *= np.float32(source.scale)
                if source.offset is not None:
                    values += np.float32(source.offset)
                out[channel : channel + n] = values
            else:
                out[channel : channel + n] = data
            channel += n
            if bad is not None:
                invalid = _union(invalid, bad)
        return out, invalid

    def _read_sources(
        self, row_off: int, col_off: int, keys: list[Any], local: bool
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Sources ``keys`` (`_read_source`'s ``at``) on a window: concurrently when `source_pool` reads them.

        The caller and the pool's threads take the next source not yet taken until none is left
        (the mask first: often the longest read), so sources of different cost (a 10 m band reads
        4x the pixels of a 20 m one) spread evenly. ``local``: no source is remote (a remote one's
        retry reopens every handle: read one after the other). The first failed source's error in
        ``keys`` order is raised (as a read one after the other would), after every read ended.
        """
        pool = source_pool.executor() if local and len(keys) > 1 else None
        if pool is None:
            return [self._read_source(at, row_off, col_off) for at in keys]
        results: list[Any] = [None] * len(keys)
        errors: dict[int, BaseException] = {}
        taken = iter(sorted(range(len(keys)), key=lambda position: keys[position] is not None))
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    position = next(taken, None)
                if position is None:
                    return
                try:
                    results[position] = self._read_source(keys[position], row_off, col_off)
                except BaseException as error:  # re-raised by the caller, in sequential order
                    errors[position] = error

        helpers = [pool.submit(drain) for _ in range(min(source_pool.threads(), len(keys)) - 1)]
        try:
            drain()
        finally:
            wait(helpers)  # no read outlives the call: the handles are this thread's
        if errors:
            raise errors[min(errors)]
        return results

    def read_mask(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask's data bands on the image window, and where they are invalid.

        Invalid pixels are those the mask does not cover, mask nodata and alpha == 0.
        ``height`` and ``width`` (default: the patch size) read any rectangle instead.
        A failed read of a remote mask is retried once with fresh bytes.
        """
        return self._read_source(None, row_off, col_off, height, width)


def mask_interior(
    mask: Any, grid: Grid, *, margin: int = 2, points_per_edge: int = 64
) -> tuple[tuple[float, float], ...] | None:
    """The mask's footprint shrunk by ``margin`` mask pixels, as a polygon in reference-grid pixels.

    A window inside it has no pixel the mask leaves uncovered, so its warp needs no alpha
    band (which doubles the warp's cost: 1.07 vs 0.53 ms per 256-pixel window here).
    The edges are densified, so curvature from the reprojection is followed. None for
    rotated or south-up masks and when the outline
    does not project cleanly (NaN, or wrapped across the antimeridian).
    """
    t = mask.transform
    if t.b != 0 or t.d != 0 or mask.crs is None or grid.crs is None:
        return None
    left, bottom, right, top = mask.bounds
    dx, dy = margin * abs(t.a), margin * abs(t.e)
    left, bottom, right, top = left + dx, bottom + dy, right - dx, top - dy
    if left >= right or bottom >= top:
        return None
    steps = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
    xs = np.concatenate(
        [
            left + (right - left) * steps,
            np.full_like(steps, right),
            right - (right - left) * steps,
            np.full_like(steps, left),
        ]
    )
    ys = np.concatenate(
        [
            np.full_like(steps, top),
            top - (top - bottom) * steps,
            np.full_like(steps, bottom),
            bottom + (top - bottom) * steps,
        ]
    )
    with np.errstate(all="ignore"):
        gx, gy = warp_transform(mask.crs, grid.crs, xs, ys)
        cols, rows = ~grid.transform @ (np.asarray(gx), np.asarray(gy))
    if not (np.all(np.isfinite(cols)) and np.all(np.isfinite(rows))):
        return None
    # An outline that wraps (a mask across the antimeridian seen in geographic coordinates)
    # jumps by a world's width and folds onto itself: no interior then, every window gets alpha.
    steps_px = np.hypot(np.diff(cols, append=cols[:1]), np.diff(rows, append=rows[:1]))
    if steps_px.max() > 8 * np.median(steps_px) or not _polygon(np.column_stack([cols, rows])).is_valid:
        return None
    return tuple(zip(cols.tolist(), rows.tolist()))


def _polygon(outline: Any) -> Any:
    """A shapely polygon from (N, 2) vertices (built in one vectorised call)."""
    import shapely

    return shapely.polygons(np.asarray(outline, dtype=np.float64))


@attrs.frozen
class RasterInfo:
    """What a raster file declares in its header (no pixels read): the first thing every inspection step records.

    Has the attributes `crossgeo.Grid.of` reads (``height``, ``width``, ``transform``, ``crs``).
    """

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: Any
    transform: Any
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]
    nodata: float | None
    alpha: int | None
    """The 1-based index of the alpha band, if any."""
    mask_band: bool
    """True when missing data is marked by a GDAL per-dataset mask band (internal or ``.msk``)."""
    blocks: BlockLayout | None = None
    """The file's internal blocks (tiles or strips; ``decode_amplification`` counts them), None if undeclared."""

    @classmethod
    def of(cls, dataset: Any, path: str | None = None) -> RasterInfo:
        """The header of an open rasterio dataset (``path``: the name to report, default the dataset's)."""
        return cls(
            path=path if path is not None else dataset.name,
            driver=dataset.driver,
            width=dataset.width,
            height=dataset.height,
            count=dataset.count,
            dtypes=tuple(dataset.dtypes),
            crs=dataset.crs,
            transform=dataset.transform,
            res=(float(dataset.res[0]), float(dataset.res[1])),
            bounds=tuple(dataset.bounds),
            nodata=dataset.nodata,
            alpha=alpha_band(dataset),
            mask_band=has_mask_band(dataset),
            blocks=BlockLayout.of(dataset),
        )

    def describe(self) -> str:
        """One line: driver, size, bands and dtypes, CRS and pixel size."""
        crs = self.crs.to_string() if self.crs else "no CRS"
        res = ", ".join(f"{v:.6g}" for v in self.res)
        dtypes = "/".join(sorted(set(self.dtypes)))
        return f"{self.driver} {self.width} x {self.height}, {self.count} band(s) {dtypes}, {crs}, pixel {res}"


def read_mask_overview(
    mask: Any,
    grid: Grid,
    bands: Sequence[int],
    max_side: int = 512,
    *,
    nodata: float | None = None,
    option: str = "mask_path",
) -> tuple[np.ndarray, np.ndarray]:
    """The mask's ``bands`` warped nearest-neighbour onto a coarsened copy of ``grid``.

    A quick look at a whole mask as the sampler would see it (``crossgeo validate`` checks
    its coverage and colours with it, and each image source's nodata share) without reading
    every window: the reference grid is scaled down so its longer side has at most
    ``max_side`` pixels.

    Args:
        mask: A raster path (opened here and closed again) or an open rasterio dataset.
        grid: The reference grid (the image's).
        bands: 1-based bands to read (not its alpha band).
        max_side: Longest side of the overview in pixels.
        nodata: Its nodata when given in the configuration (None: the file's own).
        option: The option naming the file, for errors.

    Returns:
        ``(data (len(bands), h, w), valid (h, w))``; ``valid`` is False where the raster
        has no data (outside it, nodata, alpha 0 or its mask band 0).
    """
    if isinstance(mask, (str, os.PathLike)):
        with open_raster(os.fspath(mask), option) as dataset:
            return read_mask_overview(dataset, grid, bands, max_side, nodata=nodata, option=option)
    ensure_gdal_env()
    coarse = grid.coarsened(max_side)
    alpha = alpha_band(mask)
    given = nodata if nodata is not None and nodata != mask.nodata else None  # the warper is told a given nodata
    with warped_vrt(mask, coarse, add_alpha=alpha is None, src_nodata=given) as vrt:
        data = vrt.read([*bands, alpha if alpha is not None else vrt.count])
    valid = data[-1] != 0
    data = data[:-1]
    no_data = nodata_pixels(data, mask.nodata if nodata is None else nodata)
    return data, (valid if no_data is None else valid & ~no_data)


def read_overview(image: Any, bands: Sequence[int], max_side: int = 1024, *, grid: Grid | None = None) -> np.ndarray:
    """The image's ``bands`` on a coarsened copy of the reference grid: a thumbnail to draw on.

    The reference grid (``grid``, by default the image's own) is scaled down so its longer
    side has at most ``max_side`` pixels; thumbnail pixel (i, j) covers reference pixels
    ``[i * height / h, (i + 1) * height / h)`` x ``[j * width / w, (j + 1) * width / w)``.
    When the image is on that grid GDAL reads its overviews where it has them (nearest);
    otherwise (a ``target_crs``/``target_resolution`` grid) it is warped nearest-neighbour.

    Args:
        image: An image raster path (opened here and closed again).
        bands: 1-based bands to read.
        max_side: Longest side of the thumbnail in pixels.
        grid: The reference grid (default: the image's).

    Returns:
        ``(len(bands), h, w)`` in the image's dtype.
    """
    with open_raster(os.fspath(image), "image") as dataset:
        own = Grid.of(dataset)
        grid = own if grid is None else grid
        coarse = grid.coarsened(max_side)
        if grid == own:
            shape = (len(bands), coarse.height, coarse.width)
            return dataset.read(list(bands), out_shape=shape, resampling=Resampling.nearest)
        with warped_vrt(dataset, coarse) as vrt:
            return vrt.read(list(bands))


class _MaskInterior:
    """Whether a window lies inside `mask_interior`'s polygon (per reader thread).

    Most windows fall inside one axis-aligned box found within the polygon at start-up, a test
    of four integer comparisons; only the others cost a shapely test (microseconds per window).
    """

    def __init__(self, outline: tuple[tuple[float, float], ...], size: int) -> None:
        import shapely

        self.shapely = shapely
        self.polygon = _polygon(outline)
        shapely.prepare(self.polygon)
        self.size = size
        self.box = _inscribed_box(self.polygon)

    def covers(self, row_off: int, col_off: int, height: int | None = None, width: int | None = None) -> bool:
        height = self.size if height is None else height
        width = self.size if width is None else width
        top, left, bottom, right = self.box
        if top <= row_off and left <= col_off and row_off + height <= bottom and col_off + width <= right:
            return True
        window = self.shapely.box(col_off, row_off, col_off + width, row_off + height)
        return bool(self.polygon.contains(window))


def _inscribed_box(polygon: Any, steps: int = 20) -> tuple[int, int, int, int]:
    """A large axis-aligned box inside ``polygon``: ``(top, left, bottom, right)`` whole pixels (empty if none).

    The polygon's bounding box scaled towards an interior point; the scale is found by
    bisection (the boxes are nested, so containment only changes once along it).
    """
    import shapely

    point = polygon.representative_point()
    px, py = point.x, point.y
    minx, miny, maxx, maxy = polygon.bounds

    def box(scale: float) -> tuple[int, int, int, int]:
        return (
            math.ceil(py - scale * (py - miny)),
            math.ceil(px - scale * (px - minx)),
            math.floor(py + scale * (maxy - py)),
            math.floor(px + scale * (maxx - px)),
        )

    def inside(scale: float) -> bool:
        top, left, bottom, right = box(scale)
        return top < bottom and left < right and bool(polygon.contains(shapely.box(left, top, right, bottom)))

    if inside(1.0):
        return box(1.0)
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if inside(middle) else (low, middle)
    return box(low) if inside(low) else (0, 0, 0, 0)


def gdal_message(error: object) -> str:
    """The message of ``error`` and of the exceptions it was raised from (GDAL's own words).

    rasterio often raises "Read failed. See previous exception for details." with the
    GDAL error chained behind it; a crossgeo error shows the whole chain.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: object = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in parts:
            parts.append(text)
        current = getattr(current, "__cause__", None) or getattr(current, "__context__", None)
    return " <- ".join(reversed(parts)) if len(parts) > 1 else (parts[0] if parts else repr(error))


def _union(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else (a | b)


class reading:
    """Turn a failed read - raised, or only logged by GDAL - into a `ReadError` naming the window.

    A small class rather than a generator context manager: it wraps two reads per patch,
    and a ``@contextmanager`` costs several microseconds each time.
    """

    __slots__ = ("caught", "col_off", "ident", "path", "row_off", "size", "what")

    def __init__(self, what: str, path: str, row_off: int, col_off: int, size: int) -> None:
        self.what, self.path, self.row_off, self.col_off, self.size = what, path, row_off, col_off, size

    def __enter__(self) -> None:
        trap = _failure_trap
        if not trap.installed:
            trap.install()
        self.caught: list[str] = []
        self.ident = threading.get_ident()
        trap.failures[self.ident] = self.caught

    def __exit__(self, kind: Any, error: Any, _traceback: Any) -> None:
        _failure_trap.failures.pop(self.ident, None)
        if kind is not None:
            if isinstance(error, RasterioError):
                raise self.failed(error) from error
            return
        if self.caught:
            raise self.failed("; ".join(self.caught))

    def failed(self, error: object) -> ReadError:
        return ReadError(
            f"Reading the {self.what} {self.path} failed for the window row_off={self.row_off}, "
            f"col_off={self.col_off} (patch_size {self.size}): {gdal_message(error)}"
        )


# ---------------------------------------------------------------------- image-only reads (prediction)


# ---------------------------------------------------------------------- writing (prediction output)

OUTPUT_BLOCK = 256
"""Tile size of written GeoTIFFs (and COG blocks)."""
OUTPUT_ZLEVEL = 1
"""DEFLATE level of written GeoTIFFs: level 1 compresses class maps about 2x faster than GDAL's
default 6 (0.12 vs 0.23 s for a 4096^2 uint8 map here)."""
COMPRESSIONS = ("deflate", "zstd")
"""``compress`` values of `StripWriter` (and ``predict_raster``); the first is the default."""


def output_compression(compress: str = "deflate") -> dict[str, Any]:
    """Creation options of the GeoTIFFs `StripWriter` writes: DEFLATE level 1, or ZSTD level 1 on request.

    DEFLATE is the default because every TIFF reader decodes it (GDAL of any age, libtiff,
    Pillow, tifffile, GIS desktops). ZSTD level 1 writes an 8192^2 class map in a tenth (all
    one class) to a half (smooth regions) of DEFLATE 1's time, and smaller, but needs a
    reader built with zstd (GDAL >= 2.3 with zstd, as in rasterio's wheels and conda). Neither
    lets GDAL detect a damaged tile reliably (libtiff stops inflating before the checksum);
    keep outputs on healthy storage. A GDAL without ZSTD makes ``"zstd"`` a `ConfigError`.
    """
    if compress not in COMPRESSIONS:
        raise ConfigError(f"compress {compress!r} is not one of {', '.join(map(repr, COMPRESSIONS))}.")
    if compress == "deflate":
        return {"compress": "deflate", "zlevel": OUTPUT_ZLEVEL}
    if not _has_zstd():
        raise ConfigError("compress 'zstd': this GDAL cannot write ZSTD GeoTIFFs; use compress='deflate'.")
    return dict(_OUTPUT_COMPRESSION)


_OUTPUT_COMPRESSION = {"compress": "zstd", "zstd_level": 1}


@functools.cache
def _has_zstd() -> bool:
    """Whether this GDAL writes ZSTD GeoTIFFs (an unknown ``COMPRESS`` is only a warning, so try it)."""
    path = f"/vsimem/crossgeo-zstd-{uuid.uuid4().hex}.tif"
    try:
        with warnings.catch_warnings(), rasterio.Env(CPL_LOG="OFF"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(
                path, "w", driver="GTiff", width=1, height=1, count=1, dtype="uint8", **_OUTPUT_COMPRESSION
            ) as dst:
                dst.write(np.zeros((1, 1, 1), np.uint8))
            with rasterio.open(path) as src:
                return src.compression is not None and src.compression.value == "ZSTD"
    except (RasterioError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            rasterio.shutil.delete(path)


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool, option: str = "out_path") -> str:
    """The absolute output path, refused when it exists (unless ``overwrite``) or its folder is missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{option} must be a path (str or os.PathLike), got {type(path).__name__}: {path!r}.")
    full = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise ConfigError(f"{option} {full!r} is a folder; give a file name such as prediction.tif.")
    if os.path.exists(full) and not overwrite:
        flag = "--overwrite" if option.startswith("--") else "overwrite=True"  # the CLI names its options "--out"
        raise ConfigError(f"{option} {full!r} already exists; pass {flag} to replace it.")
    if not os.path.isdir(folder):
        raise ConfigError(f"{option} {full!r}: the folder {folder!r} does not exist (or is a file); create it first.")
    if not os.access(folder, os.W_OK):
        raise ConfigError(
            f"{option} {full!r}: the folder {folder!r} is not writable; choose a folder you can write to."
        )
    return full


class StripWriter:
    """A GeoTIFF on a grid, written window by window under a temporary name.

    The file is created beside ``path`` under a temporary name of `crossgeo.files`'s pattern
    (``.NAME.partial-PID-RANDOM.tif``; tiled 256 x 256, `output_compression`, BigTIFF when
    needed) and only `finish` gives it its final name, so a crash half-way never leaves a
    file that looks complete and an existing ``path`` keeps its content until then; `abort`
    (or leaving a ``with`` block by an exception) deletes it. ``finish(cog=True)`` rewrites
    it with GDAL's COG driver (overviews included) before the rename. A failed write (a full
    disk says so) is a `crossgeo.errors.WriteError` naming the file and ``option``.

    ``behind`` > 0 writes on a thread of its own, up to that many writes queued behind the caller:
    GDAL compresses and writes the tiles without the GIL while the caller computes the next strip.
    `write` then takes ownership of ``data`` (the caller must not change it afterwards); a failed
    write is raised by the next `write` or by `finish`, and nothing after it is written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        *,
        count: int,
        dtype: Any,
        nodata: float | None,
        overwrite: bool = False,
        option: str = "out_path",
        compress: str = "deflate",
        behind: int = 0,
    ) -> None:
        self.path = check_output_path(path, overwrite=overwrite, option=option)
        self.compress = compress
        creation = output_compression(compress)
        self.output = AtomicOutput(self.path, option=option)
        self.grid = grid
        # A failure with less than two tiles of free space left is a full disk (GDAL gives no errno).
        self.tile_bytes = 2 * OUTPUT_BLOCK * OUTPUT_BLOCK * count * np.dtype(dtype).itemsize
        self.dataset: Any = None
        self._queue: queue.Queue[tuple[np.ndarray, int, int] | None] | None = None
        self._failure: BaseException | None = None
        ensure_gdal_env()
        try:
            self.partial = str(self.output.temporary())
            with self._checked():
                self.dataset = rasterio.open(
                    self.partial,
                    "w",
                    driver="GTiff",
                    width=grid.width,
                    height=grid.height,
                    count=count,
                    dtype=dtype,
                    crs=grid.crs,
                    transform=grid.transform,
                    nodata=nodata,
                    tiled=True,
                    blockxsize=OUTPUT_BLOCK,
                    blockysize=OUTPUT_BLOCK,
                    bigtiff="IF_SAFER",
                    **creation,
                )
        except WriteError as error:
            self.abort()
            if error.errno == errno.ENOSPC:
                raise
            raise ConfigError(
                f"{option} {self.path!r} cannot be written ({gdal_message(error.__cause__ or error)}); "
                "choose a folder you can write to."
            ) from error
        if behind > 0:
            self._queue = queue.Queue(maxsize=behind)
            self._thread = threading.Thread(target=self._drain, name="crossgeo-strip-writer", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        """The writer thread: write what is queued, in order, until None; after a failure only drain."""
        ensure_gdal_env()
        queued = self._queue
        assert queued is not None
        while (item := queued.get()) is not None:
            if self._failure is None:
                try:
                    self._write(*item)
                except BaseException as error:  # raised in the caller's thread by write/finish
                    self._failure = error

    def _stop(self) -> None:
        """Wait until every queued write is done and end the writer thread; raise its failure, if any."""
        if self._queue is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    @contextmanager
    def _checked(self) -> Iterator[None]:
        """Raise a `WriteError` for a failed GDAL write, also one GDAL only logs (a full disk while
        flushing tiles at close: rasterio logs "No space left on device" and closes "successfully")."""
        with _failure_trap.watch() as caught:  # both rasterio._err and rasterio._env (close-time flushes)
            try:
                yield
            except (RasterioError, OSError) as error:
                raise self.output.failed(error, self.tile_bytes) from error
        if caught:
            raise self.output.failed(RasterioIOError("; ".join(caught)), self.tile_bytes)

    def write(self, data: np.ndarray, row_off: int, col_off: int = 0) -> None:
        """Write (bands, rows, cols) ``data`` with its top-left pixel at ``(row_off, col_off)`` (queued: ``behind``)."""
        if self._queue is None:
            self._write(data, row_off, col_off)
            return
        if self._failure is not None:
            self._stop()
        self._queue.put((data, row_off, col_off))

    def _write(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        _, rows, cols = data.shape
        with self._checked():
            self.dataset.write(data, window=Window(col_off, row_off, cols, rows))

    def finish(self, *, cog: bool = False, overview_resampling: str = "nearest") -> str:
        """Close, optionally convert to a Cloud-Optimized GeoTIFF, and move to the final name."""
        try:
            self._stop()
            with self._checked():
                self.dataset.close()
            if cog:
                converted = str(self.output.temporary(cog=True))
                with self._checked():
                    rasterio.shutil.copy(
                        self.partial,
                        converted,
                        driver="COG",
                        compress=self.compress.upper(),
                        blocksize=OUTPUT_BLOCK,
                        overview_resampling=overview_resampling,
                        bigtiff="IF_SAFER",
                    )
                self.partial = converted
        except BaseException:
            self.output.abort()
            raise
        return str(self.output.commit(Path(self.partial)))

    def abort(self) -> None:
        """Close and delete the partial file."""
        with contextlib.suppress(Exception):  # the failure that led here is being raised already
            self._stop()
        if self.dataset is not None and not self.dataset.closed:
            with contextlib.suppress(RasterioError, OSError):  # closing flushes: a full disk fails again
                self.dataset.close()
        self.output.abort()

    def __enter__(self) -> StripWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()
