"""The only module that opens rasters.

* GDAL is configured once per process *and thread* with `GDAL_OPTIONS` through a
  ``rasterio.Env`` that stays entered for the life of that thread (an exited Env would
  restore GDAL's defaults).
* `RasterReader` owns the handles of one (process, thread): the image (or a
  ``WarpedVRT`` of it onto a requested target grid) and the mask source, opened once
  and reused for every window.
* The mask reaches the image grid exactly once per window: a plain windowed read when
  the grids coincide (the aligned fast path), else a small nearest-neighbour
  ``WarpedVRT`` whose target is the window itself, built on the cached mask handle
  (measured faster here than one VRT over the whole grid or reopening per sample).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from crossgeo.errors import ReadError
from crossgeo.grid import Grid, outside_pixels, overlap

GDAL_OPTIONS: dict[str, Any] = {
    # Do not list sibling files of every raster opened (slow on network file systems).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Retries for /vsicurl/, /vsis3/ ... on transient HTTP errors.
    "GDAL_HTTP_MAX_RETRY": 5,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    "VSI_CACHE": True,
}
"""GDAL configuration every reader thread runs under. An environment variable of the same
name overrides an entry (e.g. ``GDAL_HTTP_MAX_RETRY=10``); other GDAL options (cache
size, AWS_* credentials and endpoints) come from the environment as usual."""

_thread_envs: dict[tuple[int, int], rasterio.Env] = {}


class _GdalFailureTrap(logging.Filter):
    """Collects the GDAL failures that rasterio only logs, per reading thread.

    Some drivers report a failure yet hand back blank pixels (GDAL's MBTiles driver with
    a corrupt PNG tile: "libpng: Read Error", "Cannot parse tile data", and the read
    "succeeds"). rasterio logs such CE_Failure messages at INFO on ``rasterio._err``;
    this filter records them while a read is watched so crossgeo can raise instead of
    training on blank data. It passes on only what the logger would have passed anyway.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.failures: dict[int, list[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        caught = self.failures.get(threading.get_ident())
        message = record.getMessage()
        if caught is not None and message.startswith("GDAL signalled an error"):
            caught.append(message.partition("msg=")[2] or message)
        parent = self.logger.parent
        return record.levelno >= (parent.getEffectiveLevel() if parent is not None else logging.WARNING)

    @contextmanager
    def watch(self) -> Iterator[list[str]]:
        """Collect the failures GDAL signals in this thread inside the block."""
        caught: list[str] = []
        self.failures[threading.get_ident()] = caught
        try:
            yield caught
        finally:
            self.failures.pop(threading.get_ident(), None)


def _install_failure_trap() -> _GdalFailureTrap:
    logger = logging.getLogger("rasterio._err")
    trap = _GdalFailureTrap(logger)
    logger.addFilter(trap)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return trap


_failure_trap = _install_failure_trap()


def gdal_options() -> dict[str, Any]:
    """`GDAL_OPTIONS`, less those the user set as environment variables (theirs win)."""
    return {key: value for key, value in GDAL_OPTIONS.items() if key not in os.environ}


def ensure_gdal_env() -> None:
    """Enter crossgeo's ``rasterio.Env`` once in this process and thread, and keep it open."""
    key = (os.getpid(), threading.get_ident())
    if key not in _thread_envs:
        env = rasterio.Env(**gdal_options())
        env.__enter__()
        _thread_envs[key] = env


def open_raster(path: str, option: str) -> Any:
    """Open ``path`` for reading, turning GDAL's failure into a `ReadError` naming the option."""
    ensure_gdal_env()
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise ReadError(
            f"{option} {path!r} cannot be opened as a raster: {error}. Check the path and that the "
            "file is a complete GeoTIFF/MBTiles/VRT (or another format GDAL reads)."
        ) from error


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


@attrs.frozen
class ReadPlan:
    """Everything a reader needs, decided and validated at construction (picklable)."""

    image_path: str
    mask_path: str
    grid: Grid
    patch_size: int
    image_bands: tuple[int, ...]
    image_dtype: str
    image_fill: float
    image_warp: bool
    image_resampling: Resampling
    mask_data_bands: tuple[int, ...]
    mask_alpha: int | None
    mask_nodata: float | None
    mask_offset: tuple[int, int] | None
    mask_interior: tuple[tuple[float, float], ...] | None = None


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``size`` window (``size`` rows by ``width`` columns) that may reach past the raster, filling the outside.

    Returns the data and a bool (H, W) array that is True outside the raster (None when
    the window lies wholly inside).
    """
    width = size if width is None else width
    outside = outside_pixels(row_off, col_off, size, dataset.height, dataset.width, width_size=width)
    if outside is None:
        data = dataset.read(indexes, window=Window(col_off, row_off, width, size))
        return data.astype(dtype, copy=False), None
    out = np.full((len(indexes), size, width), fill, dtype=dtype)
    r0, r1 = overlap(row_off, size, dataset.height)
    c0, c1 = overlap(col_off, width, dataset.width)
    if r0 < r1 and c0 < c1:
        part = dataset.read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0))
        out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = part
    return out, outside


class RasterReader:
    """The open handles of one process/thread and the two windowed reads of a patch."""

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self.image_source = open_raster(plan.image_path, "image_path")
        self.mask_source = open_raster(plan.mask_path, "mask_path")
        if plan.image_warp:
            grid = plan.grid
            self.image = WarpedVRT(
                self.image_source,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=plan.image_resampling,
            )
        else:
            self.image = self.image_source
        interior = plan.mask_interior
        self.mask_interior = _MaskInterior(interior, plan.patch_size) if interior is not None else None

    def close(self) -> None:
        if self.image is not self.image_source:
            self.image.close()
        self.image_source.close()
        self.mask_source.close()

    @contextmanager
    def _reading(self, what: str, path: str, row_off: int, col_off: int) -> Iterator[None]:
        """Turn a failed read - raised, or only logged by GDAL - into a `ReadError` naming it."""
        try:
            with _failure_trap.watch() as failures:
                yield
        except RasterioError as error:
            raise self._failed(what, path, row_off, col_off, error) from error
        if failures:
            raise self._failed(what, path, row_off, col_off, "; ".join(failures))

    def _failed(self, what: str, path: str, row_off: int, col_off: int, error: object) -> ReadError:
        return ReadError(
            f"Reading the {what} {path} failed for the window row_off={row_off}, col_off={col_off} "
            f"(patch_size {self.plan.patch_size}): {gdal_message(error)}"
        )

    def read_image(self, row_off: int, col_off: int) -> np.ndarray:
        """The image window (C, H, W) in the planned dtype; outside pixels hold the image fill."""
        plan = self.plan
        with self._reading("image", plan.image_path, row_off, col_off):
            indexes = list(plan.image_bands)
            data, _ = _read_filled(
                self.image, indexes, row_off, col_off, plan.patch_size, plan.image_fill, plan.image_dtype
            )
        return data

    def read_mask(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask's data bands on the image window, and where they are invalid.

        Invalid pixels are those the mask does not cover, mask nodata and alpha == 0.
        ``height`` and ``width`` (default: the patch size) read any rectangle instead.
        """
        with self._reading("mask", self.plan.mask_path, row_off, col_off):
            return self._read_mask(row_off, col_off, height, width)

    def _read_mask(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        plan = self.plan
        height = plan.patch_size if height is None else height
        width = plan.patch_size if width is None else width
        indexes = list(plan.mask_data_bands)
        if plan.mask_offset is not None:
            dr, dc = plan.mask_offset
            if plan.mask_alpha is not None:
                indexes.append(plan.mask_alpha)
            data, invalid = _read_filled(
                self.mask_source,
                indexes,
                row_off + dr,
                col_off + dc,
                height,
                0,
                self.mask_source.dtypes[0],
                width=width,
            )
            if plan.mask_alpha is not None:
                invalid = _union(invalid, data[-1] == 0)
                data = data[:-1]
            if plan.mask_nodata is not None:
                invalid = _union(invalid, np.all(data == plan.mask_nodata, axis=0))
            return data, invalid
        # A window well inside the mask's footprint has no uncovered pixel, so its warp
        # needs no alpha band (which doubles the warp's cost); nodata is then its value.
        inside = self.mask_interior is not None and self.mask_interior.covers(row_off, col_off, height, width)
        with WarpedVRT(
            self.mask_source,
            crs=plan.grid.crs,
            transform=plan.grid.window_transform(row_off, col_off),
            width=width,
            height=height,
            resampling=Resampling.nearest,
            add_alpha=plan.mask_alpha is None and not inside,
        ) as vrt:
            if inside:
                data = vrt.read(indexes)
                nodata = plan.mask_nodata
                return data, (np.all(data == nodata, axis=0) if nodata is not None else None)
            alpha = plan.mask_alpha if plan.mask_alpha is not None else vrt.count
            data = vrt.read([*indexes, alpha])
        return data[:-1], data[-1] == 0


def mask_interior(
    mask: Any, grid: Grid, *, margin: int = 2, points_per_edge: int = 64
) -> tuple[tuple[float, float], ...] | None:
    """The mask's footprint shrunk by ``margin`` mask pixels, as a polygon in reference-grid pixels.

    A window inside it has no pixel the mask leaves uncovered, so its warp needs no alpha
    band (which doubles the warp's cost: 1.07 vs 0.53 ms per 256-pixel window here).
    The edges are densified, so curvature from the reprojection is followed. None for
    rotated masks or when the outline does not project cleanly.
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
    return tuple(zip(cols.tolist(), rows.tolist()))


class _MaskInterior:
    """Whether a window lies inside `mask_interior`'s polygon (per reader thread)."""

    def __init__(self, outline: tuple[tuple[float, float], ...], size: int) -> None:
        import shapely

        self.polygon = shapely.Polygon(outline)
        shapely.prepare(self.polygon)
        self.size = size

    def covers(self, row_off: int, col_off: int, height: int | None = None, width: int | None = None) -> bool:
        import shapely

        height = self.size if height is None else height
        width = self.size if width is None else width
        window = shapely.box(col_off, row_off, col_off + width, row_off + height)
        return bool(self.polygon.contains(window))


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
