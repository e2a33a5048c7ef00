"""Window sources -> one window index (numpy int64 arrays), and its fingerprinted cache.

Planning windows never reads pixels. Two sources:

* a table (CSV or Parquet, read vectorised with pyarrow) of pixel offsets in the columns
  ``row_off_key`` / ``col_off_key``;
* a vector file (anything pyogrio reads; ``crops_layer`` picks a layer): each feature's
  bounding-box centre, projected into image pixel space, is the centre of a
  ``patch_size`` window (bbox-snap), clamped into the raster. Empty geometries are
  skipped, features entirely outside the image are dropped; the counts are logged.

The index stays two int64 arrays so millions of windows are not millions of Python
objects in every DataLoader worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crossgeo import grid as gridmath
from crossgeo.errors import ConfigError, LayerNotFoundError, WindowError
from crossgeo.grid import Grid

log = logging.getLogger("crossgeo")

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".geoparquet": "parquet"}
VECTOR_SUFFIXES = {
    ".gpkg",
    ".shp",
    ".geojson",
    ".json",
    ".fgb",
    ".gml",
    ".kml",
    ".gpx",
    ".sqlite",
    ".zip",
    ".geojsonl",
}
CACHE_SUFFIXES = (".csv", ".parquet")
CACHE_VERSION = 3
"""Bumped when the cache layout or the window planning rules change."""
SPLIT_COLUMN = "split"
"""The table column the ``split`` option selects rows by (written by `crossgeo.planning.spatial_split`)."""
WEIGHT_COLUMN = "weight"
"""The table column kept with the windows for weighted sampling (``weights="weight"`` in the adapters)."""


def _rounded(bounds: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in bounds)


@attrs.frozen
class FeatureExtent:
    """Where a vector file's features lie: their total bounds in their own CRS and on the image's.

    Kept with the window report so an empty window set can say where the features are
    (`crossgeo.loading.require_windows`) next to where the image is.
    """

    count: int
    """Features with a geometry."""
    crs: str
    bounds: tuple[float, float, float, float] = attrs.field(converter=_rounded)
    """left, bottom, right, top in ``crs``."""
    grid_bounds: tuple[float, float, float, float] = attrs.field(converter=_rounded)
    """The same, reprojected to the image's CRS."""

    def describe(self, source: str, image_crs: str) -> str:
        """A sentence: the features' bounds and CRS (and on the image's CRS when it differs)."""
        text = f"The {self.count} feature(s) of {source} cover {self.bounds} (left, bottom, right, top) in {self.crs}"
        if self.crs != image_crs:
            text += f", {self.grid_bounds} in the image's {image_crs}"
        return text + "."


def _feature_extent(value: Any) -> FeatureExtent | None:
    """A cache's record (a dict from JSON) or a `FeatureExtent` (or None)."""
    return FeatureExtent(**value) if isinstance(value, dict) else value


@attrs.frozen
class WindowReport:
    """What planning did with the source rows/features (all counts, nothing silent)."""

    kept: int = 0
    empty_skipped: int = 0
    outside_dropped: int = 0
    clamped: int = 0
    duplicates: int = 0
    split_left_out: int = 0
    """Rows of other splits than the ``split`` option asked for (0 without ``split``)."""
    features: FeatureExtent | None = attrs.field(default=None, converter=_feature_extent)
    """Vector windows: where the features lie (None for a table)."""

    def describe(self) -> str:
        text = (
            f"kept {self.kept}, empty skipped {self.empty_skipped}, outside dropped "
            f"{self.outside_dropped}, clamped {self.clamped}, duplicates {self.duplicates}"
        )
        return text + (f", other splits left out {self.split_left_out}" if self.split_left_out else "")


REPORT_COUNTS = tuple(f.name for f in attrs.fields(WindowReport) if f.name != "features")
"""`WindowReport`'s counts (a catalogue adds them up over its scenes)."""


@attrs.frozen(eq=False)
class WindowIndex:
    """Window offsets on the reference grid, as two aligned int64 arrays (plus an optional weight)."""

    row_off: np.ndarray
    col_off: np.ndarray
    report: WindowReport = WindowReport()
    scene: np.ndarray | None = None
    """Position of each window's scene in a catalogue (`crossgeo.SceneSampler`); None for one image."""
    weight: np.ndarray | None = None
    """The table's `WEIGHT_COLUMN` (float64, one per window) when it has one, for weighted sampling."""

    def __len__(self) -> int:
        return int(self.row_off.shape[0])


def _count_duplicates(row_off: np.ndarray, col_off: np.ndarray) -> int:
    """How many windows repeat an earlier one (sort once, compare neighbours)."""
    if row_off.size < 2:
        return 0
    order = np.lexsort((col_off, row_off))
    rows, cols = row_off[order], col_off[order]
    return int(np.count_nonzero((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])))


def _source_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    if suffix in VECTOR_SUFFIXES or path.is_dir():
        return "vector"
    return "unknown"


# --------------------------------------------------------------------------- tables


def _read_table(path: Path, kind: str, keys: tuple[str, ...] = ()) -> pa.Table:
    """The table; a CSV's offset columns ``keys`` are read as text, so a bad value is quoted as written."""
    if kind == "parquet":
        # ParquetFile, not pq.read_table: that one imports pandas (~45 MB in every worker) for the
        # pandas metadata of a file pandas wrote, which an offsets table does not need.
        return pq.ParquetFile(path).read()
    types = {key: pa.string() for key in keys}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))


_NUMPY_TYPES: dict[Any, np.dtype[Any]] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float16(): np.dtype(np.float16),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}


def column_numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric Arrow column as a numpy array of its own (a copy), read from the column's buffers.

    Not pyarrow's ``to_numpy``: its conversion imports pandas when pandas is installed, ~30 MB of
    memory in the process that reads a windows table and in every DataLoader worker forked from it,
    for offsets that never need pandas. Columns of another type or with nulls take ``to_numpy``.
    """
    dtype = _NUMPY_TYPES.get(column.type)
    if dtype is None or column.null_count:
        return np.array(column.to_numpy(zero_copy_only=False))
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [
        np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize)
        for chunk in chunks
        if len(chunk)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


_INT64_LIMIT = 2**63
"""Offsets must lie in ``[-2**63, 2**63)`` (int64); beyond, numpy would wrap them silently."""


def _text_problem(text: Any) -> str:
    """Why one written offset is not a usable whole number ("" when it is)."""
    try:
        number = int(str(text).strip())
    except ValueError:
        try:
            value = float(text)
        except (TypeError, ValueError):
            return f"is {text!r}, not a number"
        if not np.isfinite(value) or value != int(value):
            return f"is {text}, not a whole number"
        number = int(value)
    if not -_INT64_LIMIT <= number < _INT64_LIMIT:
        return f"is {text}, beyond the int64 range of pixel offsets (+-2**63)"
    return ""


def _offset_column(table: pa.Table, key: str, option: str, path: Path | str) -> np.ndarray:
    """One offset column as int64, refusing nulls, NaN, strings, fractions and values beyond int64."""
    column = table.column(key)
    first_bad: int | None = None
    problem = ""
    if column.null_count:
        first_bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        problem = "is empty/NaN"
    elif pa.types.is_integer(column.type):
        values = column_numbers(column)
        if values.dtype != np.uint64 or not values.size or values.max() < _INT64_LIMIT:
            return values.astype(np.int64, copy=False)
        first_bad = int(np.flatnonzero(values >= _INT64_LIMIT)[0])
        problem = f"is {int(values[first_bad])}, beyond the int64 range of pixel offsets (+-2**63)"
    elif pa.types.is_floating(column.type):
        values = column_numbers(column)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            bad = ~finite | (values != np.floor(np.where(finite, values, 0))) | (np.abs(values) >= _INT64_LIMIT)
        if not bad.any():
            return values.astype(np.int64)
        first_bad = int(np.flatnonzero(bad)[0])
        value = float(values[first_bad])
        problem = (
            f"is {value!r}, beyond the int64 range of pixel offsets (+-2**63)"
            if np.isfinite(value) and value == int(value)
            else f"is {value!r}, not a whole number"
        )
    else:
        import pyarrow.compute  # noqa: F401 - pa.compute; imported here, not by every Ray worker (0.08 CPU s)

        texts = column.cast(pa.string())
        try:  # the common case, vectorised: every text is an int64
            return column_numbers(pa.compute.cast(texts, pa.int64()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        try:  # whole numbers written as floats ("10.0"), vectorised
            floats = column_numbers(pa.compute.cast(texts, pa.float64()))
            with np.errstate(invalid="ignore"):
                whole = np.isfinite(floats) & (floats == np.floor(floats)) & (np.abs(floats) < _INT64_LIMIT)
            if whole.all():
                return floats.astype(np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        for pos, text in enumerate(texts.to_pylist()):
            problem = _text_problem(text)
            if problem:
                first_bad = pos
                break
        else:
            return np.array([int(t) if _is_int_text(t) else int(float(t)) for t in texts.to_pylist()], dtype=np.int64)
    raise WindowError(
        f"{path}: column {key!r} ({option}) {problem} in data row {first_bad + 1 if first_bad is not None else '?'}; "
        "pixel offsets must be whole numbers. Fix or remove that row."
    )


def _is_int_text(text: str) -> bool:
    try:
        int(text.strip())
    except ValueError:
        return False
    return True


def read_table_windows(
    path: str | os.PathLike[str], row_off_key: str, col_off_key: str, *, kind: str = "csv", split: str | None = None
) -> WindowIndex:
    """Read pixel offsets (and the `WEIGHT_COLUMN` when present) from a CSV or Parquet table.

    With ``split``, only the rows whose `SPLIT_COLUMN` equals it are kept; the others are
    counted in ``report.split_left_out``. Raises `WindowError` naming the file, the column
    and the first bad row when a column is missing or holds NaN, text or fractional values.
    """
    path = Path(path)
    table = _read_table(path, kind, (row_off_key, col_off_key))
    index = _table_index(table, row_off_key, col_off_key, str(path), split)
    del table
    # Hand pyarrow's freed read buffers back to the OS: a 1M-row index otherwise keeps
    # ~25 MB of them resident in every process that built it.
    pa.default_memory_pool().release_unused()
    return index


def _select_split(table: pa.Table, split: str | None, source: str) -> tuple[pa.Table, int]:
    """The rows of ``split`` (all rows without it) and how many were left out."""
    if split is None:
        return table, 0
    if SPLIT_COLUMN not in table.column_names:
        raise WindowError(
            f"{source}: split is {split!r} but the table has no {SPLIT_COLUMN!r} column (found "
            f"{table.column_names}). Add one with crossgeo.spatial_split (or crossgeo windows --split), "
            "or remove the split option."
        )
    import pyarrow.compute  # noqa: F401 - pa.compute (see _offset_column)

    column = table.column(SPLIT_COLUMN)
    keep = pa.compute.fill_null(pa.compute.equal(column.cast(pa.string()), split), False)
    kept = table.filter(keep)
    if kept.num_rows == 0 and table.num_rows:
        found = sorted(str(v) for v in pa.compute.unique(column).to_pylist() if v is not None)
        log.warning("crossgeo: %s: no row has split %r; the splits are %s", source, split, found)
    return kept, table.num_rows - kept.num_rows


def _weight_column(table: pa.Table, source: str) -> np.ndarray | None:
    """The `WEIGHT_COLUMN` as float64 (None when the table has none); NaN/negative are refused later."""
    if WEIGHT_COLUMN not in table.column_names:
        return None
    column = table.column(WEIGHT_COLUMN)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise WindowError(
            f"{source}: column {WEIGHT_COLUMN!r} must hold numbers (sampling weights), got {column.type}."
        )
    return np.asarray(column_numbers(column), dtype=np.float64)


def _table_index(table: pa.Table, row_off_key: str, col_off_key: str, source: str, split: str | None) -> WindowIndex:
    missing = [k for k in (row_off_key, col_off_key) if k not in table.column_names]
    if missing:
        raise WindowError(
            f"{source}: missing required columns {missing} (found {table.column_names}). "
            "Name the columns with row_off_key / col_off_key."
        )
    table, left_out = _select_split(table, split, source)
    row_off = _offset_column(table, row_off_key, "row_off_key", source)
    col_off = _offset_column(table, col_off_key, "col_off_key", source)
    weight = _weight_column(table, source)
    n = int(row_off.size)
    report = WindowReport(kept=n, duplicates=_count_duplicates(row_off, col_off), split_left_out=left_out)
    if split is not None:
        log.info("crossgeo: %s: split %r: kept %d rows, left out %d of other splits", source, split, n, left_out)
    return WindowIndex(row_off, col_off, report, weight=weight)


def describe_windows(windows: Any) -> str:
    """How an in-memory window source is named in messages and reprs (``<DataFrame of 10 rows>``)."""
    return f"<{type(windows).__name__} of {len(windows)} rows>"


def is_window_table(windows: Any) -> bool:
    """True for the in-memory window sources `windows_from_table` takes (not a path)."""
    return isinstance(windows, (WindowIndex, pa.Table, np.ndarray)) or type(windows).__name__ == "DataFrame"


def windows_from_table(
    windows: Any, row_off_key: str = "row_off", col_off_key: str = "col_off", *, split: str | None = None
) -> WindowIndex:
    """A `WindowIndex` from windows held in memory.

    Takes a `WindowIndex` (returned as is), a pandas DataFrame or pyarrow Table with the
    offset columns ``row_off_key`` / ``col_off_key`` (a `WEIGHT_COLUMN` is kept; ``split``
    keeps only the rows whose `SPLIT_COLUMN` equals it), or a numpy (N, 2) array of
    ``row_off, col_off``. Offsets are checked as for a CSV file (whole numbers, no gaps).
    """
    name = describe_windows(windows)
    if isinstance(windows, WindowIndex):
        if split is not None:
            raise WindowError(
                f"crops_path {name}: split is {split!r} but a WindowIndex has no {SPLIT_COLUMN!r} column; "
                "pass the table (DataFrame, pyarrow Table or file) instead, or remove the split option."
            )
        return windows
    if isinstance(windows, np.ndarray):
        if windows.ndim != 2 or windows.shape[1] != 2:
            raise WindowError(
                f"crops_path {name}: a numpy array of windows must have shape (N, 2) holding row_off, col_off; "
                f"got shape {windows.shape}."
            )
        table = pa.table({row_off_key: windows[:, 0], col_off_key: windows[:, 1]})
    elif isinstance(windows, pa.Table):
        table = windows
    else:
        table = pa.Table.from_pandas(windows, preserve_index=False)
    return _table_index(table, row_off_key, col_off_key, f"crops_path {name}", split)


def check_inside(index: WindowIndex, patch_size: int, grid: Grid, source: str) -> None:
    """Refuse windows that share no pixel with the reference grid (partly outside is fine)."""
    bad = gridmath.outside(index.row_off, index.col_off, patch_size, grid.height, grid.width)
    if bad.any():
        rows = np.flatnonzero(bad)
        listed = ", ".join(f"row {i + 1} (row_off={index.row_off[i]}, col_off={index.col_off[i]})" for i in rows[:5])
        raise WindowError(
            f"{source}: {rows.size} window(s) lie entirely outside the image ({grid.height} rows x "
            f"{grid.width} cols, patch_size {patch_size}): {listed}"
            f"{' ...' if rows.size > 5 else ''}. Remove them or fix their offsets."
        )


# --------------------------------------------------------------------------- vectors


def read_vector_windows(path: str | os.PathLike[str], layer: str | None, grid: Grid, patch_size: int) -> WindowIndex:
    """Centre a ``patch_size`` window on each feature's bounding-box centre (bbox-snap).

    Features are reprojected to the grid's CRS first. Empty/None geometries are skipped;
    features whose bounding box lies entirely outside the grid are dropped; windows
    reaching past the edge are clamped into the raster.
    """
    import pyogrio

    path = Path(path)
    if layer is not None:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        if layer not in layers:
            raise LayerNotFoundError(f"{path}: no layer {layer!r} (crops_layer); the layers are {layers}.")
    frame = pyogrio.read_dataframe(path, layer=layer)
    if frame.crs is None:
        raise WindowError(
            f"{path} has no CRS; vector windows need one to be placed on the image. "
            "Write a .prj / set the layer's CRS (e.g. geopandas .set_crs(...).to_file(...))."
        )
    geometry = frame.geometry
    empty = (geometry.isna() | geometry.is_empty).to_numpy()
    geometry = geometry[~empty]
    crs = grid.crs.to_wkt() if hasattr(grid.crs, "to_wkt") else grid.crs
    extent = None
    if len(geometry):
        own_bounds = geometry.total_bounds
        geometry = geometry.to_crs(crs)
        extent = FeatureExtent(len(geometry), str(frame.crs.to_string()), own_bounds, geometry.total_bounds)
    bounds = geometry.bounds.to_numpy(dtype=np.float64).reshape(-1, 4)
    row_off, col_off, inside = feature_windows(bounds, grid, patch_size)
    row_off, col_off = row_off[inside], col_off[inside]
    row_clamped = gridmath.clamp_offsets(row_off, patch_size, grid.height)
    col_clamped = gridmath.clamp_offsets(col_off, patch_size, grid.width)
    clamped = int(np.count_nonzero((row_clamped != row_off) | (col_clamped != col_off)))
    report = WindowReport(
        kept=int(row_clamped.size),
        empty_skipped=int(np.count_nonzero(empty)),
        outside_dropped=int(np.count_nonzero(~inside)),
        clamped=clamped,
        duplicates=_count_duplicates(row_clamped, col_clamped),
        features=extent,
    )
    return WindowIndex(row_clamped, col_clamped, report)


def feature_windows(bounds: np.ndarray, grid: Grid, patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows centred on bounding boxes (N, 4) in the grid's CRS: (row_off, col_off, touches), unclamped.

    ``touches`` is True for boxes that reach the grid (others are dropped by the caller);
    offsets of the others are 0.
    """
    left, bottom, right, top = bounds.T
    inverse = ~grid.transform
    with np.errstate(invalid="ignore", over="ignore"):  # features far outside project to inf/NaN: dropped
        corner_cols, corner_rows = inverse @ (
            np.stack([left, right, left, right]),
            np.stack([bottom, bottom, top, top]),
        )
    min_col, max_col = corner_cols.min(axis=0), corner_cols.max(axis=0)
    min_row, max_row = corner_rows.min(axis=0), corner_rows.max(axis=0)
    finite = np.isfinite(min_col) & np.isfinite(max_col) & np.isfinite(min_row) & np.isfinite(max_row)
    touches = finite & (max_col >= 0) & (min_col <= grid.width) & (max_row >= 0) & (min_row <= grid.height)
    row_c = np.where(finite, (min_row + max_row) / 2.0, 0.0)
    col_c = np.where(finite, (min_col + max_col) / 2.0, 0.0)
    return gridmath.centred_offsets(row_c, patch_size), gridmath.centred_offsets(col_c, patch_size), touches


# --------------------------------------------------------------------------- dispatch


def build_window_index(
    crops_path: str | os.PathLike[str],
    *,
    grid: Grid,
    patch_size: int,
    crops_layer: str | None = None,
    row_off_key: str = "row_off",
    col_off_key: str = "col_off",
    split: str | None = None,
) -> WindowIndex:
    """Plan the windows of ``crops_path`` on ``grid`` (table or vector, by suffix).

    A suffix that is neither tabular nor a known vector format is tried as CSV, then
    as a vector file (the original's behaviour). ``split`` selects table rows by their
    `SPLIT_COLUMN`; it is refused for vector files.
    """
    path = Path(crops_path)
    if not path.exists():
        raise WindowError(
            f"crops_path {str(path)!r} does not exist; point crops_path at a CSV, Parquet or vector file."
        )
    kind = _source_kind(path)
    if kind == "vector" and split is not None:
        raise WindowError(
            f"crops_path {path} is a vector file, but split ({split!r}) selects rows of a table's "
            f"{SPLIT_COLUMN!r} column; write the windows as CSV/Parquet (crossgeo windows) or remove split."
        )
    if kind == "unknown":
        try:
            index = read_table_windows(path, row_off_key, col_off_key, kind="csv", split=split)
        except Exception as csv_error:
            if split is not None:
                raise
            try:
                return read_vector_windows(path, crops_layer, grid, patch_size)
            except WindowError:
                raise
            except Exception as vector_error:
                if isinstance(csv_error, WindowError):
                    raise csv_error from vector_error
                raise WindowError(
                    f"crops_path {path} is neither a readable CSV ({csv_error}) nor a vector file "
                    f"({vector_error}). Use a .csv, .parquet, .gpkg, .shp or .geojson file."
                ) from vector_error
    elif kind == "vector":
        try:
            return read_vector_windows(path, crops_layer, grid, patch_size)
        except WindowError:
            raise
        except Exception as error:
            raise WindowError(f"crops_path {path} could not be read as a vector file: {error}") from error
    else:
        try:
            index = read_table_windows(path, row_off_key, col_off_key, kind=kind, split=split)
        except WindowError:
            raise
        except Exception as error:
            raise WindowError(f"crops_path {path} could not be read as {kind.upper()}: {error}") from error
    check_inside(index, patch_size, grid, str(path))
    return index


# --------------------------------------------------------------------------- cache
#
# A cache is a plain table the original `MBTilesCropsGeoTifMaskDataset` reads too (``row_off``,
# ``col_off`` columns, nothing before the header), plus crossgeo's record of what it was built
# from: in a Parquet file's key-value metadata, next to a CSV in a sidecar (``<cache>.crossgeo.json``).
# That record is also the proof that crossgeo wrote the file: crossgeo overwrites or deletes only
# such files, never an input of the same configuration, and verifies the row count and a checksum
# before it trusts the rows (an interrupted copy cuts a CSV at a line boundary).

CACHE_FORMAT = "crossgeo-window-index"
"""The ``format`` of crossgeo's cache record (Parquet metadata key ``crossgeo`` / the CSV sidecar)."""
SIDECAR_SUFFIX = ".crossgeo.json"
"""Appended to a CSV cache's name for the file holding its record (the original ignores it)."""
CACHE_STATES = ("none", "reused", "written", "not written", "left alone")
"""What `cached_window_index` did: no cache asked for; reused; built and written; built, but the
location was not writable (a warning); built, the file at the cache path being the original's (untouched)."""
_OLD_CSV_HEADER = "# crossgeo-window-index "
"""The first line of crossgeo's earlier CSV caches (the original cannot parse them; they are rebuilt)."""
_ORIGINAL_COLUMNS = {"row_off", "col_off"}


def sidecar_path(cache_path: str | os.PathLike[str]) -> Path:
    """Where a CSV cache's record lives: ``index.csv`` -> ``index.csv.crossgeo.json``."""
    path = Path(cache_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _wal_identity(path: Path) -> list[int] | None:
    """Size and mtime of a SQLite write-ahead log next to ``path`` (``path-wal``), None without one."""
    try:
        stat = path.with_name(path.name + "-wal").stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def file_identity(path: str | os.PathLike[str]) -> list[Any]:
    """A local file's identity for a cache fingerprint: resolved path, size, mtime, and its ``-wal``.

    A GeoPackage edited in WAL mode (as QGIS does) keeps its size and mtime until a checkpoint;
    the edits are in ``<file>-wal``, so its size and mtime are part of the identity.
    """
    path = Path(path)
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns, _wal_identity(path)]


def source_fingerprint(
    crops_path: str | os.PathLike[str],
    *,
    grid: Grid,
    patch_size: int,
    crops_layer: str | None,
    row_off_key: str,
    col_off_key: str,
    split: str | None = None,
) -> dict[str, Any]:
    """What an index was built from; a cached index is reused only when all of it matches."""
    path = Path(crops_path)
    stat = path.stat()
    return {
        "version": CACHE_VERSION,
        "source": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "wal": _wal_identity(path),
        "layer": crops_layer,
        "row_off_key": row_off_key,
        "col_off_key": col_off_key,
        "patch_size": patch_size,
        "split": split,
        "grid": grid.fingerprint(),
    }


def check_cache_path(cache_path: str | os.PathLike[str]) -> Path:
    path = Path(cache_path)
    if path.suffix.lower() not in CACHE_SUFFIXES:
        raise ConfigError(
            f"window_index_cache {str(path)!r} must end in .csv or .parquet (got {path.suffix or 'no suffix'!r})."
        )
    return path


def _suggest(path: Path) -> Path:
    return path.with_name(f"{path.stem}.crossgeo-index{path.suffix}")


def _local_paths(value: Any) -> list[Path]:
    """The local file paths in an input option (a path, a list or mapping of sources); URLs are skipped."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return [] if not text or "://" in text or text.startswith("/vsi") else [Path(text)]
    if isinstance(value, dict):
        return [p for item in value.values() for p in _local_paths(item)]
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in _local_paths(item)]
    return []


def _same_file(a: Path, b: Path) -> bool:
    """Same resolved path, or the same file by identity (a hard link, a bind mount)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, RuntimeError):
        return False


def check_cache_not_input(cache_path: str | os.PathLike[str], inputs: Mapping[str, Any]) -> None:
    """Refuse a cache path (or its CSV sidecar) that is one of the inputs (option name -> path(s)).

    Compares resolved paths and file identity, so a symlink or a hard link to an input is caught.
    """
    cache = Path(cache_path)
    targets = [cache, sidecar_path(cache)] if cache.suffix.lower() == ".csv" else [cache]
    for option, value in inputs.items():
        for source in _local_paths(value):
            if any(_same_file(target, source) for target in targets):
                raise ConfigError(
                    f"window_index_cache {cache} is the {option} {source}: crossgeo writes over and deletes its "
                    "cache, so the cache must never be an input of the same configuration. Point "
                    f"window_index_cache at a new file (e.g. {_suggest(cache)}), or remove it."
                )


@attrs.frozen(eq=False)
class CacheFile:
    """What lies at a ``window_index_cache`` path, and whose it is.

    ``owner``: ``"none"`` (no file), ``"crossgeo"`` (crossgeo's record is there: it may be reused,
    overwritten or deleted), ``"original"`` (a plain ``row_off``,``col_off`` table without a record,
    as the original writes: read, never written) or ``"other"`` (anything else: never touched).
    """

    path: Path
    owner: str
    index: WindowIndex | None = None
    """The rows, when readable (and, for crossgeo's, matching the recorded row count and checksum)."""
    fingerprint: dict[str, Any] | None = None
    problem: str = ""
    """Why crossgeo's cache cannot be reused, or why the file is not crossgeo's."""


def content_digest(index: WindowIndex) -> str:
    """A checksum of the index's arrays (little-endian int64 / float64), recorded with the cache."""
    digest = hashlib.blake2b(digest_size=16)
    for values, dtype in ((index.row_off, "<i8"), (index.col_off, "<i8"), (index.scene, "<i8"), (index.weight, "<f8")):
        digest.update(b"-" if values is None else np.ascontiguousarray(values, dtype=dtype).tobytes())
    return digest.hexdigest()


def _index_of(table: pa.Table, source: str) -> WindowIndex:
    def ints(name: str) -> np.ndarray:
        return np.asarray(column_numbers(table.column(name)), dtype=np.int64)

    scene = ints("scene") if "scene" in table.column_names else None
    return WindowIndex(ints("row_off"), ints("col_off"), scene=scene, weight=_weight_column(table, source))


def _checked(path: Path, read: Callable[[], pa.Table], meta: dict[str, Any]) -> CacheFile:
    """crossgeo's cache, its rows verified against the recorded count and checksum."""
    if meta.get("format") != CACHE_FORMAT or "digest" not in meta:
        return CacheFile(path, "crossgeo", problem="it was written by an earlier crossgeo version")
    try:
        index = _index_of(read(), str(path))
        index = attrs.evolve(index, report=WindowReport(**meta["report"]))
    except Exception as error:
        return CacheFile(path, "crossgeo", problem=f"it is unreadable ({error})")
    if len(index) != meta.get("rows") or content_digest(index) != meta["digest"]:
        return CacheFile(
            path,
            "crossgeo",
            problem=f"it holds {len(index)} window(s) where crossgeo wrote {meta.get('rows')}, or their checksum "
            "differs (cut by an interrupted copy, or edited)",
        )
    return CacheFile(path, "crossgeo", index=index, fingerprint=meta["fingerprint"])


def _plain(path: Path, names: list[str], read: Callable[[], pa.Table], why: str) -> CacheFile:
    """A file without crossgeo's record: the original's cache when it has exactly its columns."""
    if set(names) != _ORIGINAL_COLUMNS or len(names) != 2:
        return CacheFile(path, "other", problem=f"{why}; its columns are {names}")
    try:
        index: WindowIndex | None = _index_of(read(), str(path))
    except Exception:
        index = None
    return CacheFile(path, "original", index=index, problem=why)


def inspect_cache(cache_path: str | os.PathLike[str]) -> CacheFile:
    """Classify the file at a cache path (see `CacheFile`); reads it, never writes."""
    path = Path(cache_path)
    if not path.exists():
        sidecar = sidecar_path(path)
        if path.suffix.lower() == ".csv" and sidecar.exists() and _read_sidecar(sidecar) is None:
            return CacheFile(path, "other", problem=f"{sidecar.name} beside it exists and is not crossgeo's record")
        return CacheFile(path, "none")
    if path.suffix.lower() == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
            metadata = parquet.schema_arrow.metadata or {}
        except Exception as error:
            return CacheFile(path, "other", problem=f"it is not a Parquet file crossgeo can read ({error})")
        if b"crossgeo" not in metadata:
            return _plain(path, parquet.schema_arrow.names, parquet.read, "it has no crossgeo record in its metadata")
        try:
            meta = json.loads(metadata[b"crossgeo"])
        except ValueError as error:
            return CacheFile(path, "crossgeo", problem=f"its crossgeo record is unreadable ({error})")
        return _checked(path, parquet.read, meta)
    try:
        with open(path, "rb") as handle:
            first = handle.readline(65536).decode("utf-8", errors="replace")
    except OSError as error:
        return CacheFile(path, "other", problem=f"it cannot be read ({error})")
    if first.startswith(_OLD_CSV_HEADER):
        return CacheFile(path, "crossgeo", problem="it is in an earlier crossgeo format the original cannot read")
    meta = _read_sidecar(sidecar_path(path))

    def read() -> pa.Table:
        types = {"row_off": pa.int64(), "col_off": pa.int64(), "scene": pa.int64(), WEIGHT_COLUMN: pa.float64()}
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))

    if meta is None:
        names = [name.strip().strip('"') for name in first.strip().split(",")] if first.strip() else []
        return _plain(path, names, read, f"it has no crossgeo record ({sidecar_path(path).name})")
    return _checked(path, read, meta)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """A CSV cache's record, or None when absent or not crossgeo's."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT else None


def read_cache(path: Path) -> tuple[WindowIndex, dict[str, Any]] | None:
    """crossgeo's cached index and its fingerprint; None when absent, not crossgeo's, cut or unreadable."""
    found = inspect_cache(path)
    if found.owner != "crossgeo" or found.index is None or found.fingerprint is None:
        return None
    return found.index, found.fingerprint


def _not_ours(found: CacheFile) -> ConfigError:
    return ConfigError(
        f"window_index_cache {found.path} is not a window-index cache crossgeo wrote ({found.problem}); crossgeo "
        f"only overwrites or deletes its own caches. Point window_index_cache at a new file (e.g. "
        f"{_suggest(found.path)}), or delete {found.path} yourself if you no longer need it."
    )


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new, empty temporary file next to ``path`` (to be renamed onto it), opened for writing.

    Created with mode 0666 so that the process umask applies as for any file the user writes
    (0644 under umask 022): ``tempfile.mkstemp`` makes 0600, and the rename would keep it.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """``write(temporary path)`` next to ``path``, then rename it onto ``path``; on failure nothing changes."""
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_cache(path: Path, index: WindowIndex, fingerprint: dict[str, Any]) -> None:
    """Write the index as a plain table the original reads, with crossgeo's record; atomically, mode per umask.

    Parquet keeps the record in its key-value metadata; a CSV gets it in `sidecar_path`, written
    first, so a reader that sees the new CSV also sees its record (two processes building the same
    plan write the same record). The caller decides whether the file may be overwritten.
    """
    meta = json.dumps(
        {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "report": attrs.asdict(index.report),
            "rows": len(index),
            "digest": content_digest(index),
        },
        sort_keys=True,
    )
    columns = {"row_off": pa.array(index.row_off, pa.int64()), "col_off": pa.array(index.col_off, pa.int64())}
    if index.scene is not None:
        columns["scene"] = pa.array(index.scene, pa.int64())
    if index.weight is not None:
        columns[WEIGHT_COLUMN] = pa.array(index.weight, pa.float64())
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        _write_atomic(path, lambda tmp: pq.write_table(table.replace_schema_metadata({"crossgeo": meta}), tmp))
        return
    _write_atomic(sidecar_path(path), lambda tmp: Path(tmp).write_text(meta))
    _write_atomic(path, lambda tmp: _write_plain_csv(table, tmp))


def _write_plain_csv(table: pa.Table, path: str) -> None:
    """``row_off,col_off,...`` with an unquoted header, as pandas writes it (numbers are never quoted)."""
    with open(path, "wb") as out:
        out.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, out, write_options=pacsv.WriteOptions(include_header=False))


def remove_cache(cache_path: str | os.PathLike[str], inputs: Mapping[str, Any] | None = None) -> bool:
    """Delete crossgeo's cache at ``cache_path`` (and its sidecar); True when there was one.

    Raises `ConfigError` for an input of the configuration or a file crossgeo did not write
    (including the original's caches), which are never deleted.
    """
    path = check_cache_path(cache_path)
    check_cache_not_input(path, inputs or {})
    found = inspect_cache(path)
    if found.owner not in ("none", "crossgeo"):
        raise _not_ours(found)
    path.unlink(missing_ok=True)
    sidecar = sidecar_path(path)
    if path.suffix.lower() == ".csv" and _read_sidecar(sidecar) is not None:
        sidecar.unlink()
    return found.owner == "crossgeo"


def cached_window_index(
    cache_path: Path | None,
    fingerprint: Callable[[], dict[str, Any]],
    build: Callable[[], WindowIndex],
    inputs: Mapping[str, Any] | None = None,
) -> tuple[WindowIndex, str]:
    """Reuse the cache at ``cache_path`` when it is crossgeo's and its fingerprint matches, else build.

    ``inputs`` (option name -> path or paths) are the configuration's input files; the cache may be
    none of them (`ConfigError`). A file crossgeo did not write is refused (`ConfigError`), except
    the original's plain cache, which is left untouched (a warning). A location that cannot be
    written is a warning: the index is built and used without a cache. Returns the index and what
    happened to the cache (one of `CACHE_STATES`).
    """
    if cache_path is None:
        return build(), "none"
    check_cache_not_input(cache_path, inputs or {})
    expected = json.loads(json.dumps(fingerprint()))
    found = inspect_cache(cache_path)
    if found.owner == "other":
        raise _not_ours(found)
    if found.owner == "crossgeo":
        if found.index is not None and found.fingerprint == expected:
            return found.index, "reused"
        why = found.problem or "its source or settings changed"
        log.info("crossgeo: window index cache %s is stale (%s); rebuilding.", cache_path, why)
    index = build()
    if found.owner == "original":
        theirs = found.index
        agrees = theirs is not None and np.array_equal(theirs.row_off, index.row_off)
        agrees = agrees and theirs is not None and np.array_equal(theirs.col_off, index.col_off)
        log.warning(
            "crossgeo: window_index_cache %s was written by the original MBTilesCropsGeoTifMaskDataset (plain "
            "row_off,col_off columns, no crossgeo record), so crossgeo cannot tell what it was built from: the "
            "windows were planned from crops_path (%d window(s); the file's windows %s) and the file was left "
            "untouched. Point window_index_cache at another file for crossgeo's own cache.",
            cache_path,
            len(index),
            "agree with them" if agrees else "differ from them: the original would train on stale windows",
        )
        return index, "left alone"
    try:
        write_cache(cache_path, index, expected)
    except OSError as error:
        log.warning(
            "crossgeo: window_index_cache %s was not written (%s); the windows were planned without a cache. "
            "Point window_index_cache at a writable folder, or remove it.",
            cache_path,
            error,
        )
        return index, "not written"
    return index, "written"
