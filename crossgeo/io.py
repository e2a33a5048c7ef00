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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from crossgeo.errors import ConfigError, ReadError
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


EXACT_TOLERANCE = 1e-9
"""A warp tolerance that makes GDAL transform every pixel centre exactly (rasterio refuses 0)."""


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
    mask_tolerance: float = 0.125
    """GDAL's warp approximation error in mask pixels (its default); `EXACT_TOLERANCE` for per-pixel exactness."""


def _read_filled(
    dataset: Any, indexes: list[int], row_off: int, col_off: int, size: int, fill: float, dtype: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a ``size`` window that may reach past the raster, filling the outside.

    Returns the data and a bool (H, W) array that is True outside the raster (None when
    the window lies wholly inside).
    """
    outside = outside_pixels(row_off, col_off, size, dataset.height, dataset.width)
    if outside is None:
        data = dataset.read(indexes, window=Window(col_off, row_off, size, size))
        return data.astype(dtype, copy=False), None
    out = np.full((len(indexes), size, size), fill, dtype=dtype)
    r0, r1 = overlap(row_off, size, dataset.height)
    c0, c1 = overlap(col_off, size, dataset.width)
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

    def _reading(self, what: str, path: str, row_off: int, col_off: int) -> Any:
        return reading(what, path, row_off, col_off, self.plan.patch_size)

    def read_image(self, row_off: int, col_off: int) -> np.ndarray:
        """The image window (C, H, W) in the planned dtype; outside pixels hold the image fill."""
        plan = self.plan
        with self._reading("image", plan.image_path, row_off, col_off):
            indexes = list(plan.image_bands)
            data, _ = _read_filled(
                self.image, indexes, row_off, col_off, plan.patch_size, plan.image_fill, plan.image_dtype
            )
        return data

    def read_mask(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask's data bands on the image window, and where they are invalid.

        Invalid pixels are those the mask does not cover, mask nodata and alpha == 0.
        """
        with self._reading("mask", self.plan.mask_path, row_off, col_off):
            return self._read_mask(row_off, col_off)

    def _read_mask(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray | None]:
        plan = self.plan
        size = plan.patch_size
        indexes = list(plan.mask_data_bands)
        if plan.mask_offset is not None:
            dr, dc = plan.mask_offset
            if plan.mask_alpha is not None:
                indexes.append(plan.mask_alpha)
            data, invalid = _read_filled(
                self.mask_source, indexes, row_off + dr, col_off + dc, size, 0, self.mask_source.dtypes[0]
            )
            if plan.mask_alpha is not None:
                invalid = _union(invalid, data[-1] == 0)
                data = data[:-1]
            if plan.mask_nodata is not None:
                invalid = _union(invalid, np.all(data == plan.mask_nodata, axis=0))
            return data, invalid
        # A window well inside the mask's footprint has no uncovered pixel, so its warp
        # needs no alpha band (which doubles the warp's cost); nodata is then its value.
        inside = self.mask_interior is not None and self.mask_interior.covers(row_off, col_off)
        with WarpedVRT(
            self.mask_source,
            crs=plan.grid.crs,
            transform=plan.grid.window_transform(row_off, col_off),
            width=size,
            height=size,
            resampling=Resampling.nearest,
            tolerance=plan.mask_tolerance,
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

    def covers(self, row_off: int, col_off: int) -> bool:
        import shapely

        window = shapely.box(col_off, row_off, col_off + self.size, row_off + self.size)
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


@contextmanager
def reading(what: str, path: str, row_off: int, col_off: int, size: int) -> Iterator[None]:
    """Turn a failed read - raised, or only logged by GDAL - into a `ReadError` naming the window."""

    def failed(error: object) -> ReadError:
        return ReadError(
            f"Reading the {what} {path} failed for the window row_off={row_off}, col_off={col_off} "
            f"(patch_size {size}): {gdal_message(error)}"
        )

    try:
        with _failure_trap.watch() as failures:
            yield
    except RasterioError as error:
        raise failed(error) from error
    if failures:
        raise failed("; ".join(failures))


# ---------------------------------------------------------------------- image-only reads (prediction)


@attrs.frozen
class ImageValidity:
    """How an image marks pixels without data, decided once per dataset.

    In GDAL's order of precedence: an alpha band (0 = no data), a per-dataset mask band
    (internal mask or ``.msk`` sidecar, 0 = no data), else the bands' nodata values (a
    pixel is invalid when every read band holds its nodata). ``kind`` is "alpha", "mask",
    "nodata" or "none".
    """

    kind: str
    alpha: int | None = None
    nodata: tuple[float, ...] = ()

    @classmethod
    def of(cls, dataset: Any, bands: tuple[int, ...]) -> ImageValidity:
        alpha = alpha_band(dataset)
        if alpha is not None:
            return cls("alpha", alpha=alpha)
        if MaskFlags.per_dataset in dataset.mask_flag_enums[bands[0] - 1]:
            return cls("mask")
        values = [dataset.nodatavals[b - 1] for b in bands]
        if values and all(v is not None for v in values):
            return cls("nodata", nodata=tuple(float(v) for v in values))
        return cls("none")


class ImageReader:
    """Windows of one image without a mask: the selected bands and where the image has data.

    The image grid is the reference grid (no warp). Opened in the thread that creates it
    (prediction reads in a background thread); windows may reach past the edges (filled
    with ``fill`` and marked invalid).
    """

    def __init__(self, path: str, bands: tuple[int, ...], dtype: Any, fill: float, size: int) -> None:
        self.path, self.bands, self.dtype, self.fill, self.size = path, bands, np.dtype(dtype), fill, size
        self.dataset = open_raster(path, "image_path")
        self.validity = ImageValidity.of(self.dataset, bands)

    def close(self) -> None:
        self.dataset.close()

    def read(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (C, size, size) in the reader's dtype, valid (size, size) bool)."""
        validity, size, alpha = self.validity, self.size, self.validity.alpha
        indexes = list(self.bands)
        extra = alpha is not None and alpha not in indexes
        if alpha is not None and extra:
            indexes.append(alpha)
        with reading("image", self.path, row_off, col_off, size):
            data, outside = _read_filled(self.dataset, indexes, row_off, col_off, size, self.fill, self.dtype)
            if validity.kind == "mask":
                valid = _read_mask_band(self.dataset, self.bands[0], row_off, col_off, size)
            elif alpha is not None:
                valid = data[indexes.index(alpha)] != 0
            elif validity.kind == "nodata":
                valid = ~np.all([_equal(data[i], v) for i, v in enumerate(validity.nodata)], axis=0)
            else:
                valid = np.ones((size, size), dtype=bool)
        if extra:
            data = data[:-1]
        if outside is not None:
            valid &= ~outside
        return data, valid


def _equal(band: np.ndarray, value: float) -> np.ndarray:
    return np.isnan(band) if np.isnan(value) else band == value


def _read_mask_band(dataset: Any, band: int, row_off: int, col_off: int, size: int) -> np.ndarray:
    """GDAL's mask of ``band`` on a window (True = data); False outside the raster."""
    valid = np.zeros((size, size), dtype=bool)
    r0, r1 = overlap(row_off, size, dataset.height)
    c0, c1 = overlap(col_off, size, dataset.width)
    if r0 < r1 and c0 < c1:
        part = dataset.read_masks(band, window=Window(c0, r0, c1 - c0, r1 - r0))
        valid[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = part != 0
    return valid


# ---------------------------------------------------------------------- writing (prediction output)

OUTPUT_BLOCK = 256
"""Tile size of written GeoTIFFs (and COG blocks)."""
OUTPUT_ZLEVEL = 1
"""DEFLATE level of written GeoTIFFs: level 1 compresses class maps about 2x faster than GDAL's
default 6 (0.12 vs 0.23 s for a 4096^2 uint8 map here) for a few percent more bytes."""


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool, option: str = "out_path") -> str:
    """The absolute output path, refused when it exists (unless ``overwrite``) or its folder is missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{option} must be a path (str or os.PathLike), got {type(path).__name__}: {path!r}.")
    full = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise ConfigError(f"{option} {full!r} is a folder; give a file name such as prediction.tif.")
    if os.path.exists(full) and not overwrite:
        raise ConfigError(f"{option} {full!r} already exists; pass overwrite=True to replace it.")
    if not os.path.isdir(folder):
        raise ConfigError(f"{option} {full!r}: the folder {folder!r} does not exist (or is a file); create it first.")
    if not os.access(folder, os.W_OK):
        raise ConfigError(
            f"{option} {full!r}: the folder {folder!r} is not writable; choose a folder you can write to."
        )
    return full


class StripWriter:
    """A GeoTIFF on a grid, written window by window under a temporary name.

    The file is created beside ``path`` as ``.NAME.partial-PID-XXXX.tif`` (tiled
    256 x 256, DEFLATE, BigTIFF when needed) and only `finish` gives it its final name, so
    a crash half-way never leaves a file that looks complete; `abort` (or leaving a
    ``with`` block by an exception) deletes it. ``finish(cog=True)`` rewrites it with
    GDAL's COG driver (overviews included) before the rename.
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
    ) -> None:
        self.path = check_output_path(path, overwrite=overwrite, option=option)
        folder, name = os.path.split(self.path)
        self.partial = os.path.join(folder, f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}.tif")
        self.grid = grid
        ensure_gdal_env()
        try:
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
                compress="deflate",
                zlevel=OUTPUT_ZLEVEL,
                bigtiff="IF_SAFER",
            )
        except (RasterioError, OSError) as error:
            self._remove(self.partial)
            raise ConfigError(
                f"{option} {self.path!r} cannot be written ({gdal_message(error)}); choose a folder you can write to."
            ) from error

    def write(self, data: np.ndarray, row_off: int, col_off: int = 0) -> None:
        """Write (bands, rows, cols) ``data`` with its top-left pixel at ``(row_off, col_off)``."""
        _, rows, cols = data.shape
        self.dataset.write(data, window=Window(col_off, row_off, cols, rows))

    def finish(self, *, cog: bool = False, overview_resampling: str = "nearest") -> str:
        """Close, optionally convert to a Cloud-Optimized GeoTIFF, and move to the final name."""
        self.dataset.close()
        try:
            if cog:
                converted = self.partial[: -len(".tif")] + ".cog.tif"
                try:
                    rasterio.shutil.copy(
                        self.partial,
                        converted,
                        driver="COG",
                        compress="DEFLATE",
                        blocksize=OUTPUT_BLOCK,
                        overview_resampling=overview_resampling,
                        bigtiff="IF_SAFER",
                    )
                except BaseException:
                    self._remove(converted)
                    raise
                self._remove(self.partial)
                self.partial = converted
            os.replace(self.partial, self.path)
        except BaseException:
            self._remove(self.partial)
            raise
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        if not self.dataset.closed:
            self.dataset.close()
        self._remove(self.partial)

    @staticmethod
    def _remove(path: str) -> None:
        for candidate in (path, path + ".aux.xml"):
            if os.path.exists(candidate):
                os.remove(candidate)

    def __enter__(self) -> StripWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()
