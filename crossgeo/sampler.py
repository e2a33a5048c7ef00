"""PatchSampler: window index x raster reads x mask decoder -> numpy patches.

Everything that can be checked is checked in ``__init__`` (files, bands, dtypes, colour
map, windows, overlap), so a bad configuration fails in the main process with a message
naming the file and option, not inside a DataLoader worker.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.warp import calculate_default_transform, transform_bounds

from crossgeo import windows as winsrc
from crossgeo.errors import ConfigError, OptionError, RasterError, ReadError
from crossgeo.grid import Grid, outside_pixels, pixel_offset
from crossgeo.io import RasterReader, ReadPlan, alpha_band, is_remote, mask_interior, missing_parts, open_raster
from crossgeo.masks import MaskDecoder, make_decoder

log = logging.getLogger("crossgeo")

IMAGE_DTYPES = ("uint8", "uint16", "float32", "native")
ON_READ_ERROR = ("raise", "skip")
LOW_COVERAGE = 0.5
"""A mask covering less than this fraction of the image gets a warning."""


@attrs.frozen(eq=False)
class Patch:
    """One training sample as numpy arrays on the reference grid.

    ``image`` is (C, H, W) in the sampler's ``image_dtype`` (unscaled); ``mask`` is
    (H, W) int64 class indices; ``row_off`` / ``col_off`` locate the window's top-left
    pixel on the reference grid; ``index`` is the window's position in the sampler;
    ``mask_valid`` (H, W) bool is True where the mask has data (False where it does not
    cover the window or marks nodata: those pixels hold the fill value).
    """

    image: np.ndarray
    mask: np.ndarray
    row_off: int
    col_off: int
    index: int
    mask_valid: np.ndarray | None = None


def _check_path(value: Any, option: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(f"{option} must be a path (str or os.PathLike), got {type(value).__name__}: {value!r}.")
    path = os.fspath(value)
    if not is_remote(path) and not Path(path).exists():
        raise ConfigError(f"{option} {path!r} does not exist. Check the path (relative paths start at {os.getcwd()}).")
    return path


def _check_int(value: Any, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{option} must be an integer, got {type(value).__name__}: {value!r}.")
    if value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}.")
    return int(value)


def _check_optional_str(value: Any, option: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise OptionError(f"{option} must be a string or null, got {type(value).__name__}: {value!r}.")
    return value


def parse_resampling(value: Any, option: str = "image_resampling") -> Resampling:
    """A rasterio ``Resampling`` from its name (case-insensitive) or the enum itself."""
    if isinstance(value, Resampling):
        return value
    names = [m for m in Resampling.__members__ if not m.startswith("_")]
    if isinstance(value, str) and value.lower() in Resampling.__members__:
        return Resampling[value.lower()]
    raise ConfigError(f"{option} {value!r} is not a rasterio resampling method; choose one of {', '.join(names)}.")


def resolve_image_dtype(requested: Any, source_dtypes: Sequence[str], image_path: str) -> np.dtype[Any]:
    """The output dtype, refusing casts that can lose values (e.g. uint16 -> uint8)."""
    if requested not in IMAGE_DTYPES:
        raise ConfigError(f"image_dtype {requested!r} is not one of {', '.join(map(repr, IMAGE_DTYPES))}.")
    source = np.result_type(*[np.dtype(d) for d in source_dtypes])
    if requested == "native":
        return source
    target = np.dtype(requested)
    if target.kind in "ui" and not np.can_cast(source, target, "safe"):
        better = "uint16" if np.can_cast(source, np.uint16, "safe") else "float32"
        raise ConfigError(
            f"image_dtype {requested!r} would lose values of {image_path} (its data is {source}); "
            f"use image_dtype: {better!r} or 'native'."
        )
    return target


def _bands(selected: Any, count: int, image_path: str) -> tuple[int, ...]:
    if selected is None:
        return tuple(range(1, count + 1))
    if isinstance(selected, (str, bytes)) or not isinstance(selected, Sequence) or not selected:
        raise OptionError(f"selected_bands must be a non-empty list of 1-based band numbers or null, got {selected!r}.")
    for band in selected:
        if isinstance(band, bool) or not isinstance(band, (int, np.integer)):
            raise OptionError(f"selected_bands entries must be integers (1-based), got {band!r} in {list(selected)}.")
        if not 1 <= band <= count:
            raise ConfigError(
                f"selected_bands {list(selected)} asks for band {band} but {image_path} has {count} band(s); "
                f"bands are numbered 1..{count}."
            )
    return tuple(int(b) for b in selected)


def _check_parts(dataset: Any, path: str, option: str) -> None:
    missing = missing_parts(dataset)
    if missing:
        raise RasterError(
            f"{option} {path!r} refers to file(s) that do not exist: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Fix the paths in the VRT (SourceFilename) or rebuild it "
            "with gdalbuildvrt."
        )


def _image_fill(nodata: float | None, dtype: np.dtype[Any]) -> float:
    """The value for image pixels outside the raster: its nodata if ``dtype`` holds it, else 0."""
    if nodata is None:
        return 0.0
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if math.isnan(nodata) or not info.min <= nodata <= info.max:
            return 0.0
    return float(nodata)


def _target_grid(source: Any, target_crs: Any, target_resolution: Any, image_path: str) -> Grid:
    """The image's footprint on ``target_crs`` at ``target_resolution`` (either may be None)."""
    if source.crs is None:
        raise RasterError(f"{image_path} has no CRS, so it cannot be warped to target_crs/target_resolution.")
    try:
        dst_crs = CRS.from_user_input(target_crs) if target_crs is not None else source.crs
    except CRSError as error:
        raise ConfigError(
            f"target_crs {target_crs!r} is not a CRS rasterio understands ({error}); e.g. 'EPSG:3857'."
        ) from error
    resolution: tuple[float, float] | None = None
    if target_resolution is not None:
        values = (
            target_resolution if isinstance(target_resolution, Sequence) else (target_resolution, target_resolution)
        )
        if len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise ConfigError(
                "target_resolution must be a positive number or [x, y] pair in target CRS units, "
                f"got {target_resolution!r}."
            )
        resolution = (float(values[0]), float(values[1]))
    transform, width, height = calculate_default_transform(
        source.crs, dst_crs, source.width, source.height, *source.bounds, resolution=resolution
    )
    return Grid(int(height), int(width), transform, dst_crs)


def _mask_coverage(mask: Any, grid: Grid, image_path: str, mask_path: str) -> float:
    """Fraction of the reference grid's bounding box that the mask's bounds cover."""
    if mask.crs is None or grid.crs is None:
        if mask.crs != grid.crs:
            raise RasterError(
                f"{mask_path if mask.crs is None else image_path} has no CRS, so the mask cannot be aligned "
                "with the image; give both rasters a CRS."
            )
        mask_bounds = mask.bounds
    else:
        with np.errstate(all="ignore"):
            mask_bounds = transform_bounds(mask.crs, grid.crs, *mask.bounds, densify_pts=21)
    # A bound that does not project (NaN) is taken as open on that side: never a false "no overlap".
    left, bottom, right, top = (np.nan_to_num(v, nan=-np.inf if i < 2 else np.inf) for i, v in enumerate(mask_bounds))
    g_left, g_bottom, g_right, g_top = grid.bounds
    width = min(right, g_right) - max(left, g_left)
    height = min(top, g_top) - max(bottom, g_bottom)
    if width <= 0 or height <= 0:
        raise RasterError(
            f"The mask {mask_path} does not overlap the image {image_path}: in the image CRS the image "
            f"bounds are {tuple(round(v, 6) for v in grid.bounds)} and the mask bounds are "
            f"{tuple(round(float(v), 6) for v in mask_bounds)} (left, bottom, right, top). "
            "Check that both files carry the right CRS."
        )
    return float(width * height / ((g_right - g_left) * (g_top - g_bottom)))


def report_skipped(epoch: int, skipped: int) -> None:
    """Log an epoch's total of samples served from a replacement window (``on_read_error="skip"``).

    The adapters call it when an epoch ends; each unreadable window was already logged when met.
    """
    if skipped:
        log.warning(
            "crossgeo: epoch %d: %d sample(s) came from a replacement window because their window could not "
            "be read (on_read_error='skip'); the log above names each file, window and GDAL error.",
            epoch,
            skipped,
        )


class PatchSampler:
    """Fixed-size image/mask patches from an image (the reference grid), a mask and windows.

    Args:
        image_path: Image raster (GeoTIFF, MBTiles, VRT, ...); its pixel grid is the
            reference grid, unless ``target_crs``/``target_resolution`` ask for another.
        mask_path: Mask raster in any CRS/resolution; brought onto the reference grid
            nearest-neighbour (no warp at all when the grids coincide).
        crops_path: Windows: CSV/Parquet of pixel offsets, or a vector file whose
            features' bounding-box centres become centred windows.
        patch_size: Window height and width in pixels.
        color_map: ``[[R, G, B, class], ...]`` for RGB(A) colour-coded masks.
        n_classes: Classes of a single-band mask; 2 binarises non-zero to 1.
        selected_bands: 1-based image bands to read (None: all; ``[1, 2, 3]`` drops an
            MBTiles alpha band).
        image_dtype: "uint8" | "uint16" | "float32" | "native"; lossy casts are refused.
        image_resampling: rasterio resampling name used when the image is warped.
        crops_layer: Layer of a multi-layer vector file.
        col_off_key: Table column holding the column offset.
        row_off_key: Table column holding the row offset.
        window_index_cache: ``.csv``/``.parquet`` file keeping the planned windows;
            rebuilt when the source or settings change.
        target_crs: Warp the image onto this CRS (the reference grid becomes the
            image's footprint there).
        target_resolution: Pixel size (number or ``(x, y)``) of that warped grid.
        mask_fill_value: Class given to pixels the mask does not cover or marks as
            nodata (default 0; e.g. 255 for an ignore index).
        on_read_error: "raise" (default): a failed read raises `ReadError` naming
            the file, window and GDAL message. "skip": the next readable window is
            returned instead; each unreadable window is logged once and kept in
            `unreadable`, each replaced sample is counted in `skipped`.
    """

    def __init__(
        self,
        image_path: str | os.PathLike[str],
        mask_path: str | os.PathLike[str],
        crops_path: str | os.PathLike[str],
        patch_size: int,
        *,
        color_map: Sequence[Sequence[int]] | None = None,
        n_classes: int = 2,
        selected_bands: Sequence[int] | None = None,
        image_dtype: str = "uint8",
        image_resampling: str = "bilinear",
        crops_layer: str | None = None,
        col_off_key: str = "col_off",
        row_off_key: str = "row_off",
        window_index_cache: str | os.PathLike[str] | None = None,
        target_crs: Any = None,
        target_resolution: float | Sequence[float] | None = None,
        mask_fill_value: int = 0,
        on_read_error: str = "raise",
    ) -> None:
        self.image_path = _check_path(image_path, "image_path")
        self.mask_path = _check_path(mask_path, "mask_path")
        self.crops_path = _check_path(crops_path, "crops_path")
        self.patch_size = _check_int(patch_size, "patch_size", 1)
        self.n_classes = _check_int(n_classes, "n_classes", 1)
        self.mask_fill_value = _check_int(mask_fill_value, "mask_fill_value", 0)
        if on_read_error not in ON_READ_ERROR:
            raise ConfigError(f"on_read_error {on_read_error!r} is not one of {', '.join(map(repr, ON_READ_ERROR))}.")
        self.on_read_error = on_read_error
        #: Samples this process served from a replacement window (``on_read_error="skip"``).
        self.skipped = 0
        #: Positions of the windows this process found unreadable (never read again here).
        self.unreadable: set[int] = set()
        self.crops_layer = _check_optional_str(crops_layer, "crops_layer")
        for key, option in ((col_off_key, "col_off_key"), (row_off_key, "row_off_key")):
            if not isinstance(key, str) or not key:
                raise OptionError(f"{option} must be a non-empty column name, got {key!r}.")
        self.col_off_key, self.row_off_key = col_off_key, row_off_key
        self.image_resampling = parse_resampling(image_resampling)
        cache = winsrc.check_cache_path(window_index_cache) if window_index_cache is not None else None
        self.window_index_cache = cache

        with open_raster(self.image_path, "image_path") as image:
            _check_parts(image, self.image_path, "image_path")
            self.selected_bands = _bands(selected_bands, image.count, self.image_path)
            dtype = resolve_image_dtype(
                image_dtype, [image.dtypes[b - 1] for b in self.selected_bands], self.image_path
            )
            self.image_dtype = dtype
            warp = target_crs is not None or target_resolution is not None
            self.grid = _target_grid(image, target_crs, target_resolution, self.image_path) if warp else Grid.of(image)
            image_fill = _image_fill(image.nodata, dtype)

        with open_raster(self.mask_path, "mask_path") as mask:
            _check_parts(mask, self.mask_path, "mask_path")
            alpha = alpha_band(mask)
            data_bands = tuple(b for b in range(1, mask.count + 1) if b != alpha)
            self.decoder: MaskDecoder = make_decoder(
                color_map, self.n_classes, len(data_bands), self.mask_path, fill_value=self.mask_fill_value
            )
            if color_map is not None:
                data_bands = data_bands[:3]
            self.color_map = color_map
            offset = pixel_offset(self.grid, Grid.of(mask))
            # Only a warped mask without its own alpha band can skip the alpha band per window.
            interior = mask_interior(mask, self.grid) if offset is None and alpha is None else None
            coverage = _mask_coverage(mask, self.grid, self.image_path, self.mask_path)
            mask_nodata = mask.nodata
        self.mask_coverage = min(coverage, 1.0)
        if coverage < LOW_COVERAGE:
            warnings.warn(
                f"The mask {self.mask_path} covers only {coverage:.1%} of the image {self.image_path}; "
                f"uncovered pixels get class {self.mask_fill_value} (mask_fill_value).",
                stacklevel=2,
            )

        self._plan = ReadPlan(
            image_path=self.image_path,
            mask_path=self.mask_path,
            grid=self.grid,
            patch_size=self.patch_size,
            image_bands=self.selected_bands,
            image_dtype=dtype.str,
            image_fill=image_fill,
            image_warp=warp,
            image_resampling=self.image_resampling,
            mask_data_bands=data_bands,
            mask_alpha=alpha,
            mask_nodata=mask_nodata,
            mask_offset=offset,
            mask_interior=interior,
        )
        source: dict[str, Any] = {
            "grid": self.grid,
            "patch_size": self.patch_size,
            "crops_layer": self.crops_layer,
            "row_off_key": self.row_off_key,
            "col_off_key": self.col_off_key,
        }
        self.index, from_cache = winsrc.cached_window_index(
            cache,
            lambda: winsrc.source_fingerprint(self.crops_path, **source),
            lambda: winsrc.build_window_index(self.crops_path, **source),
        )
        log.info(
            "crossgeo: windows from %s%s: %s",
            self.crops_path,
            f" (cached in {cache})" if from_cache else "",
            self.index.report.describe(),
        )
        for offsets in (self.index.row_off, self.index.col_off):
            offsets.setflags(write=False)  # shared by every worker: nobody edits the plan in place
        if len(self.index) == 0:
            raise winsrc.WindowError(
                f"{self.crops_path}: no valid windows ({self.index.report.describe()}). "
                "Check that the windows/features overlap the image."
            )
        self._readers: dict[tuple[int, int], RasterReader] = {}

    # ------------------------------------------------------------------ sequence

    def __len__(self) -> int:
        return len(self.index)

    @property
    def row_off(self) -> np.ndarray:
        """Row offsets of all windows (int64, read-only)."""
        return self.index.row_off

    @property
    def col_off(self) -> np.ndarray:
        """Column offsets of all windows (int64, read-only)."""
        return self.index.col_off

    @property
    def aligned(self) -> bool:
        """True when the mask is read with plain windows (its grid coincides with the image's)."""
        return self._plan.mask_offset is not None

    def __getitem__(self, index: int) -> Patch:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"PatchSampler indices must be integers, not {type(index).__name__}.")
        n = len(self)
        position = int(index) + n if index < 0 else int(index)
        if not 0 <= position < n:
            raise IndexError(f"window index {index} out of range for {n} windows.")
        if self.on_read_error == "raise":
            return self._read_window(position)
        for attempt in range(n):
            candidate = (position + attempt) % n
            if candidate in self.unreadable:
                continue
            try:
                patch = self._read_window(candidate)
            except ReadError as error:
                self.unreadable.add(candidate)
                log.warning(
                    "crossgeo: window %d is unreadable and is replaced by the next readable one from now on "
                    "(on_read_error='skip'): %s",
                    candidate,
                    error,
                )
                continue
            if candidate != position:
                self.skipped += 1
            return patch
        raise ReadError(f"Every one of the {n} windows failed to read (on_read_error='skip'); see the log for why.")

    def _read_window(self, position: int) -> Patch:
        row_off = int(self.index.row_off[position])
        col_off = int(self.index.col_off[position])
        return self.read(row_off, col_off, index=position)

    def read(self, row_off: int, col_off: int, *, index: int = -1) -> Patch:
        """The patch of any window on the reference grid (it may reach past the edges)."""
        with self._dropping_reader_on_failure():
            image = self._reader().read_image(row_off, col_off)
        mask, valid = self.read_mask(row_off, col_off)
        return Patch(image=image, mask=mask, row_off=row_off, col_off=col_off, index=index, mask_valid=valid)

    def read_mask(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
        """Only the mask of a window: (classes (H, W) int64, valid (H, W) bool), no image read.

        Pixels outside the reference grid get the fill value even where the mask has data
        there: there is no image under them to learn from.
        """
        with self._dropping_reader_on_failure():
            bands, invalid = self._reader().read_mask(row_off, col_off)
        grid = self.grid
        outside = outside_pixels(row_off, col_off, self.patch_size, grid.height, grid.width)
        if outside is not None:
            invalid = outside if invalid is None else invalid | outside
        classes = self.decoder(bands, invalid)
        valid = np.ones(classes.shape, dtype=bool) if invalid is None else ~invalid
        return classes, valid

    # ------------------------------------------------------------------ handles

    def _reader(self) -> RasterReader:
        """This process's and thread's reader, opened on first use and then reused."""
        key = (os.getpid(), threading.get_ident())
        reader = self._readers.get(key)
        if reader is None:
            self.release_inherited_handles()
            reader = RasterReader(self._plan)
            self._readers[key] = reader
        return reader

    @contextmanager
    def _dropping_reader_on_failure(self) -> Iterator[None]:
        """After a failed read, reopen this thread's handles on the next read.

        GDAL caches a block that failed to decode (e.g. a corrupt MBTiles tile) as blank
        data; with the handles kept, the next window on that block would read the blank
        silently instead of failing again.
        """
        try:
            yield
        except ReadError:
            reader = self._readers.pop((os.getpid(), threading.get_ident()), None)
            if reader is not None:
                reader.close()
            raise

    def release_inherited_handles(self) -> None:
        """Forget the handles a forked process inherited from its parent; they are never used here.

        Called on the first read in a new process; DataLoader workers call it at start-up.
        """
        pid = os.getpid()
        if any(owner != pid for owner, _ in self._readers):
            self._readers = {k: v for k, v in self._readers.items() if k[0] == pid}

    def close(self) -> None:
        """Close the handles this process opened (they reopen on the next read)."""
        pid = os.getpid()
        for key in [k for k in self._readers if k[0] == pid]:
            self._readers.pop(key).close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"PatchSampler(image_path={self.image_path!r}, mask_path={self.mask_path!r}, "
            f"crops_path={self.crops_path!r}, patch_size={self.patch_size}, windows={len(self)})"
        )

    def read_mask_region(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The mask of any ``height x width`` rectangle: (classes int64, valid bool), as `read_mask` gives.

        Each pixel gets exactly the class and validity `read_mask` gives it in any window
        holding it (fill value outside the grid and where the mask has no data), so
        overlapping windows can share one read (`crossgeo.planning.class_fractions`).
        """
        with self._dropping_reader_on_failure():
            bands, invalid = self._reader().read_mask(row_off, col_off, height, width)
        grid = self.grid
        outside = outside_pixels(row_off, col_off, height, grid.height, grid.width, width_size=width)
        if outside is not None:
            invalid = outside if invalid is None else invalid | outside
        classes = self.decoder(bands, invalid)
        valid = np.ones(classes.shape, dtype=bool) if invalid is None else ~invalid
        return classes, valid
