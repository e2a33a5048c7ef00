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

import io
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute
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
CACHE_VERSION = 2
"""Bumped when the cache layout or the window planning rules change."""
_CSV_HEADER = "# crossgeo-window-index "
SPLIT_COLUMN = "split"
"""The table column the ``split`` option selects rows by (written by `crossgeo.planning.spatial_split`)."""
WEIGHT_COLUMN = "weight"
"""The table column kept with the windows for weighted sampling (``weights="weight"`` in the adapters)."""


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

    def describe(self) -> str:
        text = (
            f"kept {self.kept}, empty skipped {self.empty_skipped}, outside dropped "
            f"{self.outside_dropped}, clamped {self.clamped}, duplicates {self.duplicates}"
        )
        return text + (f", other splits left out {self.split_left_out}" if self.split_left_out else "")


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


def _read_table(path: Path, kind: str) -> pa.Table:
    if kind == "parquet":
        # ParquetFile, not pq.read_table: that one imports pandas (~45 MB in every worker) for the
        # pandas metadata of a file pandas wrote, which an offsets table does not need.
        return pq.ParquetFile(path).read()
    return pacsv.read_csv(path)


def _offset_column(table: pa.Table, key: str, option: str, path: Path | str) -> np.ndarray:
    """One offset column as int64, refusing nulls, NaN, strings and fractions."""
    column = table.column(key)
    first_bad: int | None = None
    problem = ""
    if column.null_count:
        first_bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        problem = "is empty/NaN"
    elif pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int64, copy=False)
    elif pa.types.is_floating(column.type):
        values = column.to_numpy()
        bad = ~np.isfinite(values) | (values != np.floor(np.where(np.isfinite(values), values, 0)))
        if not bad.any():
            return values.astype(np.int64)
        first_bad = int(np.flatnonzero(bad)[0])
        problem = f"is {float(values[first_bad])!r}, not a whole number"
    else:
        texts = column.cast(pa.string())
        values_list = texts.to_pylist()
        for pos, text in enumerate(values_list):
            try:
                number = float(text)
            except (TypeError, ValueError):
                first_bad, problem = pos, f"is {text!r}, not a number"
                break
            if not np.isfinite(number) or number != int(number):
                first_bad, problem = pos, f"is {text!r}, not a whole number"
                break
        else:
            return np.array([int(float(t)) for t in values_list], dtype=np.int64)
    raise WindowError(
        f"{path}: column {key!r} ({option}) {problem} in data row {first_bad + 1 if first_bad is not None else '?'}; "
        "pixel offsets must be whole numbers. Fix or remove that row."
    )


def read_table_windows(
    path: str | os.PathLike[str], row_off_key: str, col_off_key: str, *, kind: str = "csv", split: str | None = None
) -> WindowIndex:
    """Read pixel offsets (and the `WEIGHT_COLUMN` when present) from a CSV or Parquet table.

    With ``split``, only the rows whose `SPLIT_COLUMN` equals it are kept; the others are
    counted in ``report.split_left_out``. Raises `WindowError` naming the file, the column
    and the first bad row when a column is missing or holds NaN, text or fractional values.
    """
    path = Path(path)
    table = _read_table(path, kind)
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
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


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
    if len(geometry):
        geometry = geometry.to_crs(crs)
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


def _report_to_dict(report: WindowReport) -> dict[str, int]:
    return attrs.asdict(report)


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


def write_cache(path: Path, index: WindowIndex, fingerprint: dict[str, Any]) -> None:
    """Write the index with its fingerprint atomically (temp file in the same folder + rename), mode per umask."""
    meta = json.dumps({"fingerprint": fingerprint, "report": _report_to_dict(index.report)}, sort_keys=True)
    columns = {"row_off": pa.array(index.row_off, pa.int64()), "col_off": pa.array(index.col_off, pa.int64())}
    if index.scene is not None:
        columns["scene"] = pa.array(index.scene, pa.int64())
    if index.weight is not None:
        columns[WEIGHT_COLUMN] = pa.array(index.weight, pa.float64())
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        if path.suffix.lower() == ".parquet":
            os.close(fd)
            pq.write_table(table.replace_schema_metadata({"crossgeo": meta}), tmp)
        else:
            with os.fdopen(fd, "w", newline="") as out:
                out.write(_CSV_HEADER + meta + "\n")
                text = io.BytesIO()
                pacsv.write_csv(table, text)
                out.write(text.getvalue().decode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_cache(path: Path) -> tuple[WindowIndex, dict[str, Any]] | None:
    """The cached index and its fingerprint, or None when the file is absent or unreadable."""
    if not path.exists():
        return None
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.ParquetFile(path).read()
            meta = json.loads((table.schema.metadata or {})[b"crossgeo"])
        else:
            with open(path) as handle:
                first = handle.readline()
            if not first.startswith(_CSV_HEADER):
                return None
            meta = json.loads(first[len(_CSV_HEADER) :])
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(skip_rows=1),
                convert_options=pacsv.ConvertOptions(
                    column_types={"row_off": pa.int64(), "col_off": pa.int64(), "scene": pa.int64()}
                ),
            )
        row_off = table.column("row_off").to_numpy().astype(np.int64)
        col_off = table.column("col_off").to_numpy().astype(np.int64)
        scene = table.column("scene").to_numpy().astype(np.int64) if "scene" in table.column_names else None
        weight = _weight_column(table, str(path))
        report = WindowReport(**meta["report"])
        return WindowIndex(row_off, col_off, report, scene=scene, weight=weight), meta["fingerprint"]
    except Exception as error:
        log.warning("crossgeo: window index cache %s is unreadable (%s); rebuilding it.", path, error)
        return None


def cached_window_index(
    cache_path: Path | None, fingerprint: Callable[[], dict[str, Any]], build: Callable[[], WindowIndex]
) -> tuple[WindowIndex, bool]:
    """Reuse the cache at ``cache_path`` when its fingerprint matches, else build and write it.

    Returns the index and whether it came from the cache.
    """
    if cache_path is None:
        return build(), False
    expected = json.loads(json.dumps(fingerprint()))
    cached = read_cache(cache_path)
    if cached is not None:
        index, found = cached
        if found == expected:
            return index, True
        log.info("crossgeo: window index cache %s is stale (its source or settings changed); rebuilding.", cache_path)
    index = build()
    write_cache(cache_path, index, expected)
    return index, False
