"""Windows as data: generate, measure, balance, split and weight windows on the image grid.

Every function returns a ``pandas.DataFrame`` with int64 ``row_off`` / ``col_off`` (a
window's top-left pixel on the reference grid, see `crossgeo.grid`) plus its own
columns, so a table can be written to CSV/Parquet and read back as ``crops_path``.

* `grid_windows` / `random_windows`: offsets from the image grid (optionally inside an AOI).
* `class_fractions`: per-window share of valid pixels and of each class, read through the
  sampler's own mask reads (shared between overlapping windows) and summed with integral
  images, so it equals counting ``sampler[i].mask`` where ``mask_valid``, exactly.
* `balanced_windows`: choose windows so every class is present in about as many as the
  others; `spatial_split`: leak-free splits by blocks; `window_weights`: sampling weights.

Pixels are read only through `crossgeo.sampler.PatchSampler.read_mask_region`; a raster's
grid only through `crossgeo.io`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import pandas as pd

from crossgeo.errors import ConfigError, OptionError, OptionTypeError
from crossgeo.grid import BlockLayout, Grid, align_step, aligned_offsets, axis_offsets
from crossgeo.options import check_int, check_number, check_seed

if TYPE_CHECKING:
    from crossgeo.sampler import PatchSampler

__all__ = [
    "DEFAULT_SPLITS",
    "WindowPlan",
    "balanced_windows",
    "class_fractions",
    "grid_windows",
    "plan_windows",
    "random_windows",
    "spatial_split",
    "window_weights",
]

log = logging.getLogger("crossgeo")

DEFAULT_SPLITS: Mapping[str, float] = MappingProxyType({"train": 0.8, "val": 0.1, "test": 0.1})
"""The default shares of `spatial_split`."""
REGION_TILE = 2048
"""Windows of an aligned mask are grouped into tiles of this many pixels (plus the patch) per read."""
MIN_CELL_ROWS = 8
"""`class_fractions` counts per band of rows when the windows' rows lie on a lattice at least this fine."""
STRIP_PIXELS = 1 << 22
"""Largest strip (pixels) read at once for a warped mask."""
ALIGNS = (None, "blocks")
"""Values of ``align`` in `grid_windows` / `random_windows`: free offsets, or offsets on the image's blocks."""
AOI_MAX_FRUITLESS_DRAWS = 1_000_000
"""`random_windows` gives up when this many draws in a row found no window inside the AOI."""
_CLASS_COLUMN = re.compile(r"^class_(\d+)$")


# --------------------------------------------------------------------------- argument checks


# The shared option checks of crossgeo.options, so the same mistake raises the same error class as in
# PatchSampler and the adapters (a wrong type OptionTypeError, a value out of range ConfigError).


def _int_option(value: Any, name: str, minimum: int = 1) -> int:
    return check_int(value, name, minimum)


_seed = check_seed
_number = check_number


def _image_grid(image: Any) -> Grid:
    """The reference grid of ``image``: a `Grid` as given, or a raster path's grid (read through crossgeo.io)."""
    if isinstance(image, Grid):
        return image
    if not isinstance(image, (str, os.PathLike)):
        raise OptionTypeError(f"image must be a raster path or a crossgeo.Grid, got {type(image).__name__}: {image!r}.")
    from crossgeo.io import is_remote, open_raster

    path = os.fspath(image)
    if not is_remote(path) and not os.path.exists(path):
        raise ConfigError(f"image {path!r} does not exist. Check the path (relative paths start at {os.getcwd()}).")
    with open_raster(path, "image") as dataset:
        return Grid.of(dataset)


def _window_table(frame: Any, name: str) -> pd.DataFrame:
    """``frame`` checked to be a DataFrame with integral, NaN-free ``row_off`` / ``col_off``."""
    if not isinstance(frame, pd.DataFrame):
        raise OptionTypeError(
            f"{name} must be a pandas.DataFrame with row_off and col_off, got {type(frame).__name__}."
        )
    missing = [c for c in ("row_off", "col_off") if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{name} is missing required columns {missing}; it needs row_off and col_off "
            "(e.g. from grid_windows or class_fractions)."
        )
    for column in ("row_off", "col_off"):
        values = frame[column].to_numpy()
        if values.dtype.kind == "f":
            if np.isnan(values).any():
                raise ConfigError(f"{name}[{column!r}] holds NaN; drop or fill those rows first.")
            if not np.array_equal(values, np.floor(values)):
                raise ConfigError(f"{name}[{column!r}] holds non-integer offsets; offsets are whole pixels.")
        elif values.dtype.kind not in "iu":
            raise ConfigError(f"{name}[{column!r}] must hold integer pixel offsets, got dtype {values.dtype}.")
    return frame


def _class_columns(frame: pd.DataFrame, name: str) -> list[str]:
    columns = sorted((c for c in frame.columns if isinstance(c, str) and _CLASS_COLUMN.match(c)), key=_class_id)
    if not columns:
        raise ConfigError(
            f"{name} has no class columns (class_0, class_1, ...); pass the table class_fractions(sampler) "
            "returns (or one read back from its CSV/Parquet)."
        )
    return columns


def _class_id(column: str) -> int:
    match = _CLASS_COLUMN.match(column)
    assert match is not None
    return int(match.group(1))


def _shares(frame: pd.DataFrame, columns: list[str], name: str) -> np.ndarray:
    values = frame[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        column = columns[int(np.argwhere(bad)[0][1])]
        raise ConfigError(f"{name}[{column!r}] holds NaN or infinite values; drop or recompute those rows.")
    if (values < 0).any():
        column = columns[int(np.argwhere(values < 0)[0][1])]
        raise ConfigError(f"{name}[{column!r}] holds negative shares; class shares are within [0, 1].")
    return values


def _offsets(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame["row_off"].to_numpy().astype(np.int64), frame["col_off"].to_numpy().astype(np.int64)


def _frame(row_off: np.ndarray, col_off: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"row_off": np.asarray(row_off, dtype=np.int64), "col_off": np.asarray(col_off, np.int64)})


# --------------------------------------------------------------------------- AOI


def _aoi_in_pixels(aoi: Any, grid: Grid) -> Any:
    """The AOI as a prepared shapely geometry in the grid's pixel coordinates (col, row)."""
    import shapely

    if isinstance(aoi, (str, os.PathLike)):
        path = os.fspath(aoi)
        if not os.path.exists(path):
            raise ConfigError(f"aoi {path!r} does not exist; pass a vector file (GeoPackage, GeoJSON, Shapefile ...).")
        import pyogrio

        frame = pyogrio.read_dataframe(path)
        if frame.crs is None:
            raise ConfigError(
                f"aoi {path!r} has no CRS, so it cannot be placed on the image; set the layer's CRS "
                "(e.g. geopandas .set_crs(...).to_file(...))."
            )
        if grid.crs is None:
            raise ConfigError(f"aoi {path!r} is a vector file but the image has no CRS; pass a shapely geometry.")
        crs = grid.crs.to_wkt() if hasattr(grid.crs, "to_wkt") else grid.crs
        geometry = frame.geometry.to_crs(crs).union_all()
        where = f"aoi {path!r}"
    elif isinstance(aoi, shapely.Geometry):
        geometry, where = aoi, "aoi (shapely geometry in the image CRS)"
    else:
        raise OptionTypeError(
            f"aoi must be a vector file path or a shapely geometry in the image CRS, got {type(aoi).__name__}."
        )
    if geometry is None or geometry.is_empty:
        raise ConfigError(f"{where} is empty; pass a polygon covering part of the image.")
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    inverse = ~grid.transform
    pixels = shapely.transform(geometry, lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1])))
    if not pixels.intersects(shapely.box(0, 0, grid.width, grid.height)):
        raise ConfigError(
            f"{where} does not overlap the image (image bounds {tuple(round(v, 6) for v in grid.bounds)} in its "
            "CRS); check the AOI's CRS and extent."
        )
    shapely.prepare(pixels)
    return pixels


def _inside(aoi_pixels: Any, row_off: np.ndarray, col_off: np.ndarray, patch_size: int) -> np.ndarray:
    import shapely

    boxes = shapely.box(col_off, row_off, col_off + patch_size, row_off + patch_size)
    return np.asarray(shapely.contains(aoi_pixels, boxes), dtype=bool)


# --------------------------------------------------------------------------- generation


def _image_blocks(image: Any, where: str) -> tuple[Grid, BlockLayout]:
    """The grid and internal block layout of a raster path (read through crossgeo.io), for ``align="blocks"``."""
    if isinstance(image, Grid):
        raise ConfigError(
            f'{where}: align="blocks" needs the image path (its internal tiles are read from the file); a '
            "crossgeo.Grid has no blocks. A warped image (target_crs / target_resolution) has no source blocks "
            "on its grid either: leave align unset there."
        )
    _image_grid(image)  # checks the path
    from crossgeo.io import RasterInfo, open_raster

    with open_raster(os.fspath(image), "image") as dataset:
        grid, layout = Grid.of(dataset), RasterInfo.of(dataset).blocks
    if layout is None:  # GDAL always declares blocks; a driver that does not gets one pixel (no constraint)
        layout = BlockLayout(1, 1)
    return grid, layout


def _align_steps(image: Any, patch_size: int, align: Any, where: str) -> tuple[Grid, int, int]:
    """The grid and the (row, col) offset steps for ``align``: (1, 1) unaligned, else `crossgeo.grid.align_step`."""
    if align not in ALIGNS:
        raise OptionError(f"{where}: align must be None or 'blocks', got {align!r}.")
    if align is None:
        return _image_grid(image), 1, 1
    grid, layout = _image_blocks(image, where)
    row_step = align_step(patch_size, layout.height, grid.height)
    col_step = align_step(patch_size, layout.width, grid.width)
    if row_step is None or col_step is None:
        block = layout.height if row_step is None else layout.width
        sizes = " or ".join(str(v) for v in _aligned_sizes(patch_size, block))
        raise ConfigError(
            f'{where}: align="blocks" but patch_size {patch_size} is smaller than the image\'s {layout.height} x '
            f"{layout.width} blocks ({os.fspath(image)}) and does not divide them, so windows on the tiling would "
            f"leave gaps between them. Use patch_size {sizes} (a divisor of the block, or the block), retile the "
            "image to smaller blocks (gdal_translate -co TILED=YES -co BLOCKXSIZE=... -co BLOCKYSIZE=...), or "
            "leave align unset."
        )
    return grid, row_step, col_step


def _aligned_sizes(patch_size: int, block: int) -> list[int]:
    """The divisors of ``block`` nearest ``patch_size`` below and above it (``patch_size < block``)."""
    divisors = [d for d in range(1, block + 1) if block % d == 0]
    return [max(d for d in divisors if d < patch_size), min(d for d in divisors if d > patch_size)]


def grid_windows(
    image: Any, patch_size: int, *, stride: int | None = None, aoi: Any = None, align: str | None = None
) -> pd.DataFrame:
    """Windows on a regular grid covering every pixel of ``image``, none reaching past its edge.

    Offsets are ``0, stride, 2 * stride, ...`` along each axis (``stride`` defaults to
    ``patch_size``) plus one last row/column flush with the bottom/right edge; an image
    smaller than ``patch_size`` gives one window at (0, 0). With ``stride <= patch_size`` every
    pixel lies in at least one window (a longer stride leaves gaps on purpose). Row-major order.

    With ``align="blocks"`` every offset is a multiple of the image file's block size (tile
    or strip height), so each window decodes the fewest blocks a window of its size can
    (`crossgeo.grid.align_step`): a ``patch_size`` smaller than the block must divide it
    (offsets are then multiples of ``patch_size``), else `ConfigError`. ``stride`` is
    rounded down to a multiple of that step (at least one step; a patch that is not a
    multiple of the block thus overlaps its neighbours), and there is no flush last
    row/column: the edge remainder narrower than a step is in no window. Its size is logged
    and kept in ``result.attrs["edge_uncovered"]`` as (rows, cols). Along an axis one block
    spans (a strip's width) offsets are as without ``align``.

    Args:
        image: A raster path (its grid is read) or a `crossgeo.Grid`.
        patch_size: Window height and width in pixels.
        stride: Step between windows in pixels (< patch_size overlaps them).
        aoi: A vector file (any CRS; reprojected) or a shapely geometry in the image CRS:
            only windows lying entirely inside it are kept; the count dropped is logged and
            kept in ``result.attrs["aoi_dropped"]``.
        align: None, or ``"blocks"`` (needs a raster path): offsets on the file's internal blocks.
    """
    patch_size = _int_option(patch_size, "patch_size")
    stride = patch_size if stride is None else _int_option(stride, "stride")
    grid, row_step, col_step = _align_steps(image, patch_size, align, "grid_windows")
    rows = (
        axis_offsets(grid.height, patch_size, stride)
        if row_step == 1
        else aligned_offsets(grid.height, patch_size, stride, row_step)
    )
    cols = (
        axis_offsets(grid.width, patch_size, stride)
        if col_step == 1
        else aligned_offsets(grid.width, patch_size, stride, col_step)
    )
    row_off, col_off = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    edge = (max(grid.height - int(rows[-1]) - patch_size, 0), max(grid.width - int(cols[-1]) - patch_size, 0))
    if align is not None and any(edge):
        log.info(
            "crossgeo: grid_windows: align='blocks' leaves the last %d row(s) and %d column(s) in no window "
            "(the edge remainder narrower than a block step)",
            *edge,
        )
    if aoi is None:
        result = _frame(row_off, col_off)
    else:
        inside = _inside(_aoi_in_pixels(aoi, grid), row_off, col_off, patch_size)
        dropped = int(np.count_nonzero(~inside))
        log.info(
            "crossgeo: grid_windows: %d of %d windows are not entirely inside the AOI and were dropped",
            dropped,
            row_off.size,
        )
        if not inside.any():
            raise ConfigError(
                f"aoi admits no {patch_size}-pixel grid window (all {row_off.size} lie partly outside it); "
                "use a larger AOI, a smaller patch_size or a smaller stride."
            )
        result = _frame(row_off[inside], col_off[inside])
        result.attrs["aoi_dropped"] = dropped
    if align is not None:
        result.attrs["edge_uncovered"] = edge
    return result


def random_windows(
    image: Any, patch_size: int, n: int, *, seed: int, aoi: Any = None, align: str | None = None
) -> pd.DataFrame:
    """``n`` windows with offsets drawn uniformly (with replacement) from the valid range.

    Offsets are uniform integers in ``[0, height - patch_size]`` x ``[0, width - patch_size]``
    (0 on an axis shorter than the patch), so no window reaches past the image;
    reproducible for a ``seed``. With ``aoi`` (as in `grid_windows`) windows are drawn
    until exactly ``n`` lie entirely inside it, which keeps them uniform over the
    admissible offsets; the number of draws rejected is logged and kept in
    ``result.attrs["aoi_dropped"]``. An AOI admitting no window is an error.

    With ``align="blocks"`` (as in `grid_windows`) offsets are uniform over the multiples of
    the block step in the same range: still ``n`` windows, all inside, each decoding the
    fewest blocks; the same seed draws other offsets than without ``align``.
    """
    patch_size = _int_option(patch_size, "patch_size")
    n = _int_option(n, "n")
    rng = np.random.default_rng(_seed(seed))
    grid, row_step, col_step = _align_steps(image, patch_size, align, "random_windows")
    row_hi, col_hi = max(grid.height - patch_size, 0), max(grid.width - patch_size, 0)
    if aoi is None:
        return _frame(
            rng.integers(0, row_hi // row_step + 1, n) * row_step, rng.integers(0, col_hi // col_step + 1, n) * col_step
        )
    pixels = _aoi_in_pixels(aoi, grid)
    # Only offsets whose window can lie inside the AOI's bounding box are drawn (same law, fewer misses).
    min_col, min_row, max_col, max_row = pixels.bounds
    row_lo, col_lo = max(0, math.floor(min_row)), max(0, math.floor(min_col))
    row_hi, col_hi = min(row_hi, math.ceil(max_row) - patch_size), min(col_hi, math.ceil(max_col) - patch_size)
    # In units of the step: k in [ceil(lo / step), floor(hi / step)] gives offset k * step.
    row_lo, col_lo = -(-row_lo // row_step), -(-col_lo // col_step)
    row_hi, col_hi = row_hi // row_step, col_hi // col_step
    if row_lo > row_hi or col_lo > col_hi:
        raise ConfigError(
            f"aoi admits no {patch_size}-pixel window inside the image (it is narrower than the patch"
            + (" or holds no block-aligned window" if align is not None else "")
            + "); use a larger AOI or a smaller patch_size."
        )
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    have = drawn = fruitless = 0
    while have < n:
        batch = max(2 * (n - have), 1024)
        r = rng.integers(row_lo, row_hi + 1, batch) * row_step
        c = rng.integers(col_lo, col_hi + 1, batch) * col_step
        inside = _inside(pixels, r, c, patch_size)
        keep = np.flatnonzero(inside)[: n - have]
        # Draws after the n-th hit are not part of the result and not counted as dropped.
        used = int(keep[-1]) + 1 if have + keep.size == n and keep.size else batch
        drawn += used
        rows.append(r[keep])
        cols.append(c[keep])
        have += keep.size
        fruitless = 0 if keep.size else fruitless + batch
        if fruitless >= AOI_MAX_FRUITLESS_DRAWS and have == 0:
            raise ConfigError(
                f"aoi admits no {patch_size}-pixel window: none of {fruitless:,} random windows lay entirely "
                "inside it; use a larger AOI or a smaller patch_size."
            )
    dropped = drawn - n
    log.info(
        "crossgeo: random_windows: %d of %d drawn windows were not entirely inside the AOI and were redrawn",
        dropped,
        drawn,
    )
    result = _frame(np.concatenate(rows), np.concatenate(cols))
    result.attrs["aoi_dropped"] = dropped
    return result


# --------------------------------------------------------------------------- class fractions


def _regions(
    row_off: np.ndarray, col_off: np.ndarray, patch_size: int, aligned: bool
) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """``(row, col, height, width, members)``: rectangles to read, each holding whole windows.

    Every window belongs to exactly one region. An aligned mask is a plain windowed read,
    so any rectangle gives each pixel the value of every window's read: windows are
    grouped into `REGION_TILE` tiles. A warped mask is read through GDAL's approximate
    transformer, which interpolates along each output scanline between exactly projected
    points that depend on the scanline's extent; a pixel read in a wider rectangle can
    then fall on the other side of a mask pixel edge than in its window's own warp. So a
    warped region is a strip exactly one window wide (the columns of every window with
    that ``col_off``), which reproduces each window's scanlines.
    """
    if row_off.size == 0:
        return
    if aligned:
        tile = max(REGION_TILE, patch_size)
        key_r = (row_off - row_off.min()) // tile
        key_c = (col_off - col_off.min()) // tile
        keys = key_r * (int(key_c.max()) + 1) + key_c
    else:
        keys = col_off
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for group in np.split(order, bounds):
        if aligned:
            r0, c0 = int(row_off[group].min()), int(col_off[group].min())
            height = int(row_off[group].max()) - r0 + patch_size
            width = int(col_off[group].max()) - c0 + patch_size
            yield r0, c0, height, width, group
            continue
        # One strip per run of rows: split where the strip would grow past STRIP_PIXELS or skip unused rows.
        group = group[np.argsort(row_off[group], kind="stable")]
        rows = row_off[group]
        max_rows = max(STRIP_PIXELS // patch_size, patch_size)
        start = 0
        for i in range(1, group.size + 1):
            if i < group.size and rows[i] - rows[start] + patch_size <= max_rows and rows[i] - rows[i - 1] < patch_size:
                continue
            members = group[start:i]
            r0 = int(rows[start])
            yield r0, int(col_off[members[0]]), int(rows[i - 1]) - r0 + patch_size, patch_size, members
            start = i


def _window_sums(packed: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Sum of ``packed`` (uint64, wrapping) over each ``size`` window at (rows, cols).

    A summed-area table built only where it is used: running sums along each row, the
    ``size``-wide sums at the windows' distinct column offsets, then running sums of
    those down the rows (numpy's cumsum is fast only along contiguous rows, hence the
    transpose).
    """
    zero = np.uint64(0)
    across = packed.cumsum(axis=1, dtype=np.uint64)
    starts, which = np.unique(cols, return_inverse=True)
    left = across[:, np.maximum(starts - 1, 0)]
    left[:, starts == 0] = zero
    strips = np.ascontiguousarray((across[:, starts + size - 1] - left).T)
    down = strips.cumsum(axis=1, dtype=np.uint64)
    top = np.where(rows > 0, down[which, np.maximum(rows - 1, 0)], zero)
    return down[which, rows + size - 1] - top


def _declared_classes(sampler: PatchSampler) -> int:
    declared = int(sampler.n_classes)
    color_map = getattr(sampler, "color_map", None)
    if color_map:
        declared = max(declared, 1 + max(int(entry[3]) for entry in color_map))
    return declared


def _row_cell(rows: np.ndarray, size: int) -> int:
    """The tallest band height (<= 255) dividing ``size`` and every row offset: 0 when under `MIN_CELL_ROWS`."""
    step = int(np.gcd.reduce(np.append(rows, size)))
    for height in range(min(step, 255), MIN_CELL_ROWS - 1, -1):
        if step % height == 0:
            return height
    return 0


def _lattice_counts(
    codes: np.ndarray, high: int, rows: np.ndarray, cols: np.ndarray, size: int, band: int, *, all_valid: bool
) -> dict[int, np.ndarray]:
    """Per-class pixel counts of each window (rows/cols relative to ``codes``) for classes 0..high.

    ``all_valid``: every pixel of ``codes`` has mask data (else such pixels hold a value above ``high``).

    The windows' rows lie on a lattice of ``band``-row bands (``band`` divides ``size`` and
    every row offset), so each class is counted once per band and column with uint8 sums
    of a boolean (no wide full-size temporary); the per-band counts are summed over
    each window's bands and columns through small prefix-sum tables.
    """
    height, width = codes.shape
    bands = height // band
    cuts, where = np.unique(np.concatenate([cols, cols + size]), return_inverse=True)
    j0, j1 = where[: cols.size], where[cols.size :]
    i0, i1 = rows // band, (rows + size) // band
    equal = np.empty(codes.shape, dtype=bool)
    stacked = equal.view(np.uint8).reshape(bands, band, width)
    across = np.zeros((bands, width + 1), dtype=np.int64)
    table = np.zeros((bands + 1, cuts.size), dtype=np.int64)
    counts: dict[int, np.ndarray] = {}
    # Without pixels lacking mask data, the last class is what the others leave of each window.
    last = high if all_valid else high + 1
    for k in range(last):
        np.equal(codes, k, out=equal)
        per_band = stacked.sum(axis=1, dtype=np.uint8)  # band <= 255 rows: no overflow
        np.cumsum(per_band, axis=1, dtype=np.int64, out=across[:, 1:])
        np.cumsum(across[:, cuts], axis=0, out=table[1:])
        counts[k] = table[i1, j1] - table[i0, j1] - table[i1, j0] + table[i0, j0]
    if all_valid:
        counts[high] = size * size - sum(counts.values(), np.zeros(rows.size, dtype=np.int64))
    return counts


def _packed_counts(
    classes: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, where: str
) -> dict[int, np.ndarray]:
    """Per-class pixel counts of each window from bit-packed summed-area tables (any window layout).

    The classes are packed into uint64 fields wide enough for a window's count
    (``size**2 + 1`` values), several per table; the tables wrap modulo 2**64, which the
    four-corner difference undoes exactly.
    """
    present = classes[valid]
    if present.size == 0:
        return {}
    low, high = int(present.min()), int(present.max())
    if low < 0:
        raise ConfigError(
            f"The mask {where} holds negative class {low}; class_fractions counts classes 0, 1, ...: remap the "
            "mask or use color_map."
        )
    bits = (size * size).bit_length()
    per_pass = max(1, 64 // bits)
    field = np.uint64((1 << bits) - 1)
    codes = np.where(valid, classes, high + 1)
    counts: dict[int, np.ndarray] = {}
    for first in range(0, high + 1, per_pass):
        lookup = np.zeros(high + 2, dtype=np.uint64)
        last = min(first + per_pass, high + 1)
        lookup[first:last] = np.left_shift(np.uint64(1), (np.arange(last - first) * bits).astype(np.uint64))
        sums = _window_sums(lookup[codes], rows, cols, size)
        for k in range(first, last):
            counts[k] = ((sums >> np.uint64((k - first) * bits)) & field).astype(np.int64)
    return counts


def class_fractions(sampler: PatchSampler, *, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Per window of ``sampler``: the share of valid mask pixels and of each class.

    One row per window, in the sampler's order: ``row_off``, ``col_off``, ``valid`` (pixels
    with mask data / patch_size²) and ``class_0 ... class_{K-1}`` (valid pixels of that
    class / patch_size²; they sum to ``valid``). K is the sampler's number of classes (or
    the colour map's largest class + 1), more if the mask holds larger classes. The values
    equal counting ``sampler[i].mask`` where ``sampler[i].mask_valid``, exactly.

    Overlapping windows share reads: the mask is read over rectangles holding many windows
    (`PatchSampler.read_mask_region`, the same pixels `read_mask` gives). When the windows
    of a rectangle lie on a row lattice (every row offset and the patch size multiples of
    a band of at least `MIN_CELL_ROWS` rows, as grid windows with a stride dividing the patch
    are), the classes are read as uint8/uint16 and counted once per band and column
    (`_lattice_counts`); otherwise through bit-packed summed-area tables (`_packed_counts`).
    ``progress`` is called with the number of windows counted after each read (a progress bar).
    """
    size = sampler.patch_size
    row_off = np.asarray(sampler.row_off, dtype=np.int64)
    col_off = np.asarray(sampler.col_off, dtype=np.int64)
    n_windows = row_off.size
    counts: dict[int, np.ndarray] = {}
    n_classes = _declared_classes(sampler)
    # The largest value a decoded class can take (declared classes, the fill value): a narrow
    # dtype holding it and one more (the marker of pixels without mask data) reads exactly.
    top = max(n_classes - 1, int(sampler.mask_fill_value))
    small = np.uint8 if top < 255 else np.uint16 if top < 65535 else None
    for r0, c0, height, width, members in _regions(row_off, col_off, size, sampler.aligned):
        rows, cols = row_off[members] - r0, col_off[members] - c0
        band = _row_cell(rows, size) if small is not None else 0
        if band:
            classes, valid = sampler.read_mask_region(r0, c0, height, width, dtype=small)
            high = int(classes.max())
            all_valid = bool(valid.all())
            if not all_valid:
                classes[~valid] = np.iinfo(classes.dtype).max  # counted by no class
            found = _lattice_counts(classes, high, rows, cols, size, band, all_valid=all_valid)
        else:
            classes, valid = sampler.read_mask_region(r0, c0, height, width)
            found = _packed_counts(classes, valid, rows, cols, size, f"{sampler.mask_path} near row {r0}, col {c0}")
        for k, count in found.items():
            if count.any():
                counts.setdefault(k, np.zeros(n_windows, dtype=np.int64))[members] = count
                n_classes = max(n_classes, k + 1)
        if progress is not None:
            progress(int(members.size))
    area = float(size * size)
    columns: dict[str, np.ndarray] = {"row_off": row_off.copy(), "col_off": col_off.copy()}
    total = np.zeros(n_windows, dtype=np.int64)
    shares: dict[str, np.ndarray] = {}
    for k in range(n_classes):
        count = counts.get(k, np.zeros(n_windows, dtype=np.int64))
        total += count
        shares[f"class_{k}"] = count / area
    columns["valid"] = total / area
    columns.update(shares)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- balance, split, weights


def _selected_classes(columns: list[str], classes: Sequence[int | str] | None) -> list[str]:
    if classes is None:
        return columns
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        error = ConfigError if isinstance(classes, Sequence) and not classes else OptionTypeError
        raise error(f"classes must be a non-empty list of class numbers or class_<k> names, got {classes!r}.")
    chosen: list[str] = []
    for item in classes:
        name = f"class_{int(item)}" if isinstance(item, (int, np.integer)) and not isinstance(item, bool) else item
        if name not in columns:
            raise ConfigError(f"classes lists {item!r}, which is not a column of fractions (have {columns}).")
        chosen.append(str(name))
    return chosen


def _presence_shares(presence: np.ndarray, columns: list[str]) -> dict[str, float]:
    share = presence.mean(axis=0) if presence.shape[0] else np.zeros(len(columns))
    return {c: float(s) for c, s in zip(columns, share)}


def balanced_windows(
    fractions: pd.DataFrame,
    n: int,
    *,
    seed: int,
    min_fraction: float = 0.0,
    classes: Sequence[int | str] | None = None,
    oversample: bool = True,
    split: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Choose ``n`` rows so each class is present in about as many chosen windows as the others.

    A class is present in a window when its share exceeds ``min_fraction``. Each of the K
    classes present in the table (or listed in ``classes``) gets an equal number of draws
    (``n / K``, the first ``n % K`` rarest one more), served rarest first: a draw picks at
    random among the not yet chosen windows holding the class, and, once none remain, among
    all windows holding it (with replacement). A class in 2 % of the candidates is thus
    present in about 1/K of the chosen windows (plus those it shares with windows drawn
    for other classes); classes present almost everywhere stay in most. Reproducible for
    a ``seed``; the result keeps every column, in the table's order (repeats adjacent).
    Class presence before and after is logged and kept in ``result.attrs["presence"]``.

    With ``oversample=False`` (a validation or test split: its windows measure the model, so
    none may count twice) no window is repeated: a class whose windows are used up gets no
    more, the rest of ``n`` comes from the other windows at random, and with fewer than ``n``
    candidates all of them are chosen (logged). ``split`` and ``class_names`` (class ->
    name) only label the log messages.
    """
    # Just over 80 lines: the checks of its eight options, then one draw; splitting the draw would pass its state.
    frame = _window_table(fractions, "fractions")
    columns = _selected_classes(_class_columns(frame, "fractions"), classes)
    n = _int_option(n, "n")
    rng = np.random.default_rng(_seed(seed))
    min_fraction = _number(min_fraction, "min_fraction", 0.0, 1.0, high_open=True)
    presence = _shares(frame, columns, "fractions") > min_fraction
    candidates = presence.sum(axis=0)
    present = [k for k in np.argsort(candidates, kind="stable") if candidates[k] > 0]
    absent = [columns[k] for k in range(len(columns)) if candidates[k] == 0]
    if not present:
        raise ConfigError(
            f"No window of fractions holds any of {columns} above min_fraction={min_fraction:g}; "
            "lower min_fraction or check the mask."
        )
    where = f"balanced_windows (split {split!r})" if split is not None else "balanced_windows"
    if absent:
        names = class_names or {}
        labels = [f"{c} ({names[int(c[6:])]})" if c[6:].isdigit() and int(c[6:]) in names else c for c in absent]
        log.warning(
            "crossgeo: %s: %s %s present in no candidate window; %s cannot be balanced",
            where,
            ", ".join(labels),
            "is" if len(absent) == 1 else "are",
            "it" if len(absent) == 1 else "they",
        )
    taken = np.zeros(len(frame), dtype=bool)
    picks: list[np.ndarray] = []

    def draw(k: int, m: int) -> None:
        holders = presence[:, k]
        pool = np.flatnonzero(holders & ~taken)
        if pool.size >= m:
            pick = rng.choice(pool, m, replace=False)
        elif oversample:
            pick = np.concatenate([pool, rng.choice(np.flatnonzero(holders), m - pool.size, replace=True)])
        else:
            pick = pool
        taken[pick] = True
        picks.append(pick)

    # Equal draws per class, rarest first (so common classes do not use up the rare windows first).
    quotas = np.full(len(present), n // len(present))
    quotas[: n % len(present)] += 1
    for k, quota in zip(present, quotas):
        if quota:
            draw(int(k), int(quota))
    if not oversample and int(taken.sum()) < n:  # the classes' windows ran out: the rest from any other window
        rest = np.flatnonzero(~taken)
        picks.append(rng.choice(rest, min(n - int(taken.sum()), rest.size), replace=False))
    rows = np.sort(np.concatenate(picks))
    if len(rows) < n:
        log.warning(
            "crossgeo: %s: %d window(s) instead of %d: the split has only %d candidate(s) and a held-out split "
            "is never oversampled (no window counts twice)",
            where,
            len(rows),
            n,
            len(frame),
        )
    result = frame.iloc[rows].reset_index(drop=True)
    before = _presence_shares(presence, columns)
    after = _presence_shares(presence[rows], columns)
    log.info(
        "crossgeo: %s: %d of %d windows; class presence before -> after: %s",
        where,
        len(rows),
        len(frame),
        ", ".join(f"{c} {before[c]:.1%} -> {after[c]:.1%}" for c in columns),
    )
    result.attrs["presence"] = {"before": before, "after": after}
    return result


def _split_shares(fractions: Any) -> tuple[list[str], np.ndarray]:
    if not isinstance(fractions, Mapping) or not fractions:
        error = ConfigError if isinstance(fractions, Mapping) else OptionTypeError
        raise error(f"fractions must be a mapping of split name to share, e.g. {dict(DEFAULT_SPLITS)}.")
    names: list[str] = []
    shares: list[float] = []
    for name, share in fractions.items():
        if not isinstance(name, str) or not name:
            error = ConfigError if name == "" else OptionTypeError
            raise error(f"fractions keys must be split names (non-empty strings), got {name!r}.")
        names.append(name)
        shares.append(_number(share, f"fractions[{name!r}]", 0.0, 1.0))
    total = sum(shares)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"fractions {dict(fractions)} sum to {total:g}; the shares must sum to 1.")
    return names, np.asarray(shares)


def spatial_split(
    windows: pd.DataFrame,
    fractions: Mapping[str, float] = DEFAULT_SPLITS,
    *,
    patch_size: int,
    block: int,
    seed: int,
) -> pd.DataFrame:
    """Add a ``split`` column, assigning square blocks of ``block`` pixels to splits at random.

    Block (i, j) holds pixels ``[i * block, (i + 1) * block) x [j * block, (j + 1) * block)``.
    The blocks of the windows' extent are put in a random order (seeded) and dealt out along
    it in proportion to the windows whose top-left pixel they hold, so window counts
    follow ``fractions``. A window is kept when every block it touches has one split, so
    no two windows of different splits share a pixel; those straddling blocks of
    different splits are dropped, counted in ``result.attrs["straddling_dropped"]`` and
    logged. Kept rows keep their order and columns.
    """
    frame = _window_table(windows, "windows")
    names, shares = _split_shares(fractions)
    patch_size = _int_option(patch_size, "patch_size")
    block = _int_option(block, "block")
    if block < patch_size:
        raise ConfigError(
            f"block ({block}) is smaller than patch_size ({patch_size}); a block must hold a whole window: "
            f"use block >= {patch_size} (several patches wide keeps fewer windows straddling)."
        )
    rng = np.random.default_rng(_seed(seed))
    row_off, col_off = _offsets(frame)
    if row_off.size == 0:
        raise ConfigError("windows is empty; there is nothing to split.")
    i0, i1 = row_off // block, (row_off + patch_size - 1) // block
    j0, j1 = col_off // block, (col_off + patch_size - 1) // block
    base_i, base_j = int(i0.min()), int(j0.min())
    span = int(j1.max()) - base_j + 1
    corners = [(i - base_i) * span + (j - base_j) for i, j in ((i0, j0), (i0, j1), (i1, j0), (i1, j1))]
    n_blocks = (int(i1.max()) - base_i + 1) * span
    if n_blocks > 4 * row_off.size + (1 << 20):  # sparse windows over a huge block grid: number the touched blocks
        keys, inverse = np.unique(np.concatenate(corners), return_inverse=True)
        corners, n_blocks = list(inverse.reshape(4, -1)), keys.size
    home = np.bincount(corners[0], minlength=n_blocks)
    order = rng.permutation(n_blocks)
    ends = np.cumsum(home[order])
    middles = ends - home[order] / 2.0
    bounds = np.cumsum(shares)[:-1] * row_off.size
    labels = np.empty(n_blocks, dtype=np.int64)
    labels[order] = np.searchsorted(bounds, middles, side="right")
    window_labels = labels[corners[0]]
    keep = np.ones(row_off.size, dtype=bool)
    for corner in corners[1:]:
        keep &= labels[corner] == window_labels
    dropped = int(np.count_nonzero(~keep))
    result = frame.loc[keep].copy()
    result["split"] = np.asarray(names, dtype=object)[window_labels[keep]]
    counts = result["split"].value_counts()
    log.info(
        "crossgeo: spatial_split: %d windows straddling blocks of different splits were dropped; kept %s",
        dropped,
        ", ".join(f"{name} {int(counts.get(name, 0))}" for name in names),
    )
    empty = [name for name, share in zip(names, shares) if share > 0 and name not in counts]
    if empty:
        log.warning(
            "crossgeo: spatial_split: no window fell in %s; use a smaller block or more windows", ", ".join(empty)
        )
    result.attrs["straddling_dropped"] = dropped
    return result


def window_weights(fractions: pd.DataFrame, *, power: float = 1.0) -> pd.DataFrame:
    """Add a ``weight`` column that up-weights windows holding rare classes (inverse class frequency).

    With ``s[i, k]`` the ``class_k`` share of window i and ``f[k] = sum_i s[i, k] / sum_i sum_k s[i, k]``
    the share of all valid pixels of the table that are of class k::

        w[i] = sum_{k: f[k] > 0} s[i, k] * f[k] ** -power,   then scaled so that mean(w) = 1.

    ``power=0`` weights windows by their valid share only; ``power=1`` makes every class
    carry the same expected number of pixels per draw; values between soften it.
    Windows without valid pixels get weight 0.
    """
    frame = _window_table(fractions, "fractions")
    columns = _class_columns(frame, "fractions")
    power = _number(power, "power", 0.0, math.inf, high_open=True)
    shares = _shares(frame, columns, "fractions")
    totals = shares.sum(axis=0)
    if totals.sum() <= 0:
        raise ConfigError("fractions has no valid pixel in any window; there is nothing to weight.")
    frequency = totals / totals.sum()
    factor = np.zeros_like(frequency)
    seen = frequency > 0
    factor[seen] = frequency[seen] ** -power
    weights = shares @ factor
    result = frame.copy()
    result["weight"] = weights / weights.mean()
    return result


# --------------------------------------------------------------------------- the whole plan


def _presence(frame: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Share of the rows in which each class is present (share > 0)."""
    values = frame[columns].to_numpy(dtype=np.float64) > 0
    return _presence_shares(values, columns)


def _quotas(total: int, names: list[str], shares: np.ndarray) -> dict[str, int]:
    """``total`` split in proportion to ``shares`` (largest remainders), summing to ``total``."""
    exact = shares / shares.sum() * total
    quotas = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - quotas), kind="stable")[: total - int(quotas.sum())]:
        quotas[i] += 1
    return {name: int(q) for name, q in zip(names, quotas)}


@attrs.frozen(eq=False)
class WindowPlan:
    """What `plan_windows` chose, and what each of its steps kept and dropped."""

    windows: pd.DataFrame
    """``row_off``, ``col_off``, ``valid``, ``class_0 ...`` (plus ``split`` and ``weight``); no ``attrs``."""
    counts: Mapping[str, int]
    """``candidates``, ``aoi_dropped``, ``low_valid_dropped`` (``straddling_dropped`` with splits), ``windows``."""
    presence: Mapping[str, Mapping[str, Any]]
    """Per split (``"all"`` without splits): ``candidates`` and ``chosen`` (window counts) and
    ``before`` / ``after`` (each class's presence share among them, before and after balancing)."""

    def __len__(self) -> int:
        return len(self.windows)


def plan_windows(
    config: Mapping[str, Any],
    *,
    stride: int | None = None,
    random: int | None = None,
    balanced: int | None = None,
    splits: Mapping[str, float] | None = None,
    block: int | None = None,
    min_valid: float = 0.0,
    aoi: Any = None,
    seed: int = 0,
    weights: bool = False,
    progress: Callable[[int], None] | None = None,
    align: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> WindowPlan:
    """From a sampler configuration to a windows table: generate, measure, filter, split, balance, weight.

    The steps ``crossgeo windows`` runs, in order:

    1. candidates: `grid_windows` at ``stride`` (default: the patch size), or ``random``
       `random_windows`, on the image of ``config`` (inside ``aoi`` when given; with
       ``align="blocks"`` on the image file's blocks, see `grid_windows`);
    2. `class_fractions` of the candidates, through a `PatchSampler` built from ``config``
       (its ``crops_path``, ``window_index_cache`` and ``split`` are replaced by the candidates);
    3. windows whose ``valid`` share is below ``min_valid`` are dropped (counted);
    4. with ``splits`` (e.g. ``{"train": 0.8, "val": 0.1, "test": 0.1}``): `spatial_split` by
       ``block``-pixel blocks (required then), so no two splits share a pixel;
    5. with ``balanced``: `balanced_windows` chooses that many windows in total, shared among
       the splits in proportion to their shares and balanced within each split; only the
       training split (``train``, else the first) may repeat windows, the held-out splits
       never do (a split with fewer candidates than its share keeps them all, once);
    6. with ``weights``: a ``weight`` column (`window_weights`, power 1).

    Returns:
        A `WindowPlan`: the table (``row_off``, ``col_off``, ``valid``, ``class_0 ...``, plus
        ``split`` and ``weight``), what each step kept and dropped (``counts``) and, per
        split, the windows before and after balancing and each class's presence share among
        them (``presence``).
    """
    seed = _seed(seed)
    if not isinstance(config, Mapping):
        raise OptionTypeError(f"config must be a mapping of PatchSampler options, got {type(config).__name__}.")
    options = {k: v for k, v in config.items() if k not in ("crops_path", "window_index_cache", "split")}
    min_valid = _number(min_valid, "min_valid", 0.0, 1.0)
    if random is not None and stride is not None:
        raise OptionError("give either stride (grid windows) or random (a number of random windows), not both.")
    if splits is not None and block is None:
        raise ConfigError("splits need block: the side in pixels of the square blocks assigned to splits.")
    names, shares = _split_shares(splits) if splits is not None else (["all"], np.ones(1))
    if balanced is not None:
        balanced = _int_option(balanced, "balanced")
    candidates = _candidates(options, stride=stride, random=random, aoi=aoi, seed=seed, align=align)
    counts = {"candidates": len(candidates), "aoi_dropped": int(candidates.attrs.get("aoi_dropped", 0))}
    fractions = _measured(options, candidates, min_valid, counts, progress)
    if splits is not None:
        assert block is not None  # checked above
        patch_size = int(options["patch_size"])  # checked by _candidates
        fractions = spatial_split(fractions, dict(zip(names, shares)), patch_size=patch_size, block=block, seed=seed)
        counts["straddling_dropped"] = int(fractions.attrs.get("straddling_dropped", 0))
        groups = {name: fractions[fractions["split"] == name] for name in names}
    else:
        groups = {"all": fractions}
    result, presence = _balanced_groups(
        groups, _class_columns(fractions, "fractions"), balanced, names, shares, seed, class_names
    )
    if weights:
        result = window_weights(result)
    result.attrs.clear()
    counts["windows"] = len(result)
    return WindowPlan(result, counts, presence)


def _candidates(
    options: Mapping[str, Any], *, stride: int | None, random: int | None, aoi: Any, seed: int, align: str | None
) -> pd.DataFrame:
    """Step 1 of `plan_windows`: grid or random windows on the configuration's image (or target grid)."""
    from crossgeo.sampler import PatchSampler

    patch_size = _int_option(options.get("patch_size"), "patch_size")
    image = options.get("image_path", options.get("image_mbtiles_path"))
    if image is None:
        raise ConfigError("config names no image (image_path or image_mbtiles_path).")
    where: Any = image
    if options.get("target_crs") is not None or options.get("target_resolution") is not None:
        where = PatchSampler(**options, crops_path=np.zeros((0, 2), dtype=np.int64)).grid
    if random is not None:
        return random_windows(where, patch_size, random, seed=seed, aoi=aoi, align=align)
    return grid_windows(where, patch_size, stride=stride, aoi=aoi, align=align)


def _measured(
    options: Mapping[str, Any],
    candidates: pd.DataFrame,
    min_valid: float,
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
) -> pd.DataFrame:
    """Steps 2 and 3 of `plan_windows`: the candidates' class fractions, without those below ``min_valid``."""
    from crossgeo.sampler import PatchSampler

    sampler = PatchSampler(**options, crops_path=candidates)
    fractions = class_fractions(sampler, progress=progress)
    keep = fractions["valid"].to_numpy() >= min_valid
    counts["low_valid_dropped"] = int(np.count_nonzero(~keep))
    fractions = fractions.loc[keep].reset_index(drop=True)
    if fractions.empty:
        raise ConfigError(
            f"No candidate window has at least {min_valid:.0%} of its pixels with mask data (min_valid); "
            "lower min_valid or check that the mask covers the image."
        )
    return fractions


def _balanced_groups(
    groups: Mapping[str, pd.DataFrame],
    columns: list[str],
    balanced: int | None,
    names: list[str],
    shares: np.ndarray,
    seed: int,
    class_names: Mapping[int, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Step 5 of `plan_windows`: each split's balanced choice (all its windows without ``balanced``) and
    the class presence before and after, per split. Only the training split (``train``, else the first)
    is oversampled."""
    quotas = _quotas(balanced, names, shares) if balanced is not None else {}
    training = "train" if "train" in groups else next(iter(groups))
    presence: dict[str, dict[str, Any]] = {}
    chosen: list[pd.DataFrame] = []
    for name, group in groups.items():
        entry: dict[str, Any] = {"candidates": len(group), "before": _presence(group, columns)}
        if balanced is not None and quotas[name] > 0 and len(group):
            split = None if name == "all" and len(groups) == 1 else name
            oversample = name == training
            group = balanced_windows(
                group, quotas[name], seed=seed, oversample=oversample, split=split, class_names=class_names
            )
        elif balanced is not None and quotas[name] > 0:
            log.warning("crossgeo: plan_windows: split %s has no candidate window; it stays empty", name)
        entry.update(chosen=len(group), after=_presence(group, columns))
        presence[name] = entry
        chosen.append(group)
    result = pd.concat(chosen, ignore_index=True) if len(chosen) > 1 else chosen[0].reset_index(drop=True)
    result.attrs.clear()
    return result, presence
