"""Window sources (CSV, Parquet, vector files) and the fingerprinted window-index cache."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from shapely.geometry import Point, Polygon, box

from crossgeo import PatchSampler, WindowError
from crossgeo import testing as T
from crossgeo import windows as W
from crossgeo.testing import CoordinateScene

SIZE = 64


def test_csv_and_parquet_give_the_same_index(scene: CoordinateScene) -> None:
    rows, cols = [0, 5, 448, 100], [3, 0, 448, 250]
    mask = scene.lonlat_mask()
    csv = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
    parquet = PatchSampler(scene.image, mask, scene.windows(rows, cols, "w.parquet"), SIZE, n_classes=4)
    for sampler in (csv, parquet):
        assert sampler.row_off.dtype == np.int64 and sampler.row_off.tolist() == rows
        assert sampler.col_off.tolist() == cols


def test_custom_column_names_and_extra_columns(scene: CoordinateScene) -> None:
    path = scene.path("w.csv")
    path.write_text("y,x,label\n10,20,a\n30,40,b\n")
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, row_off_key="y", col_off_key="x", n_classes=4)
    assert sampler.row_off.tolist() == [10, 30] and sampler.col_off.tolist() == [20, 40]
    assert sampler[1].row_off == 30


def test_float_columns_with_whole_numbers_are_accepted(scene: CoordinateScene) -> None:
    path = scene.path("w.csv")
    path.write_text("row_off,col_off\n10.0,20.0\n")
    assert PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, n_classes=4).col_off.tolist() == [20]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("row,col_off\n1,2\n", r"missing required columns \['row_off'\]"),
        ("row_off,col_off\n1,2\n3,\n", r"column 'col_off' \(col_off_key\) is empty/NaN in data row 2"),
        ("row_off,col_off\n1,2\nNaN,4\n", r"column 'row_off' \(row_off_key\) is empty/NaN in data row 2"),
        ("row_off,col_off\n1,2.5\n", r"column 'col_off' \(col_off_key\) is 2.5, not a whole number in data row 1"),
        ("row_off,col_off\n1,2\nabc,4\n", r"column 'row_off' \(row_off_key\) is 'abc', not a number in data row 2"),
    ],
)
def test_bad_tables_name_file_column_and_row(scene: CoordinateScene, content: str, message: str) -> None:
    path = scene.path("bad.csv")
    path.write_text(content)
    with pytest.raises(WindowError, match=rf"bad.csv: {message}"):
        PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE)


def test_parquet_with_nulls_is_refused(scene: CoordinateScene) -> None:
    path = scene.path("bad.parquet")
    pq.write_table(pa.table({"row_off": [1, None], "col_off": [1, 2]}), path)
    with pytest.raises(ValueError, match=r"bad.parquet: column 'row_off' .* empty/NaN in data row 2"):
        PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE)


def test_windows_entirely_outside_are_refused_naming_rows(scene: CoordinateScene) -> None:
    rows = [0, -SIZE, 10, scene.size, 5, 600, 700, 800, 900]
    cols = [0, 0, scene.size, 0, 5, 0, 0, 0, 0]
    with pytest.raises(
        WindowError,
        match=r"7 window\(s\) lie entirely outside the image .*row 2 \(row_off=-64, col_off=0\), row 3 .* \.\.\.",
    ):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE)


def test_duplicate_windows_are_kept_and_counted(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([1, 1, 2], [1, 1, 2]), SIZE, n_classes=4)
    assert len(sampler) == 3 and sampler.index.report.duplicates == 1
    assert "duplicates 1" in caplog.text


def test_empty_table_has_no_valid_windows(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    path = scene.path("empty.csv")
    path.write_text("row_off,col_off\n")
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        sampler = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE)
    assert len(sampler) == 0
    assert "empty.csv: no valid windows" in caplog.text


# ---------------------------------------------------------------- vectors


def pixel_centre_to_lonlat(scene: CoordinateScene, row: float, col: float) -> tuple[float, float]:
    x, y = scene.transform @ (col, row)
    lon, lat = rasterio.warp.transform(scene.crs, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson"])
def test_vector_points_become_centred_windows(scene: CoordinateScene, suffix: str) -> None:
    centres = [(100.0, 200.0), (300.5, 300.5), (256.0, 128.0)]
    lonlat = [pixel_centre_to_lonlat(scene, r, c) for r, c in centres]
    path = T.write_points(
        scene.path(f"points{suffix}"), [p[0] for p in lonlat], [p[1] for p in lonlat], crs="EPSG:4326"
    )
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, n_classes=4)
    assert sampler.row_off.tolist() == [68, 269, 224]
    assert sampler.col_off.tolist() == [168, 269, 96]
    patch = sampler[0]
    rows, cols = T.decode_coordinates(patch.image)
    assert rows[SIZE // 2, SIZE // 2] == 100 and cols[SIZE // 2, SIZE // 2] == 200


def test_polygon_bbox_centre_and_layers(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    """bbox-snap on polygons; outside features dropped, edge features clamped, empty skipped."""

    def square(r0: float, c0: float, r1: float, c1: float) -> Polygon:
        (x0, y0), (x1, y1) = scene.transform @ (c0, r0), scene.transform @ (c1, r1)
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    geoms = [
        square(100, 100, 140, 180),  # centre (120, 140) -> (88, 108)
        square(-30, 500, 10, 530),  # centre (-10, 515): clamped to (0, 448)
        square(900, 900, 950, 950),  # entirely outside: dropped
        Polygon(),  # empty: skipped
        None,  # missing geometry: skipped
    ]
    frame = gpd.GeoDataFrame({"id": range(5)}, geometry=geoms, crs=scene.crs)
    path = scene.path("regions.gpkg")
    frame.to_file(path, layer="training_windows")
    frame.iloc[:1].to_file(path, layer="other")
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        sampler = PatchSampler(
            scene.image, scene.lonlat_mask(), path, SIZE, crops_layer="training_windows", n_classes=4
        )
    assert sampler.row_off.tolist() == [88, 0] and sampler.col_off.tolist() == [108, scene.size - SIZE]
    report = sampler.index.report
    assert (report.kept, report.empty_skipped, report.outside_dropped, report.clamped) == (2, 2, 1, 1)
    assert "kept 2, empty skipped 2, outside dropped 1, clamped 1" in caplog.text
    other = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, crops_layer="other", n_classes=4)
    assert len(other) == 1
    with pytest.raises(
        WindowError, match=r"no layer 'nope' \(crops_layer\); the layers are \['training_windows', 'other'\]"
    ):
        PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, crops_layer="nope")


def test_vector_crs_without_epsg_code(scene: CoordinateScene) -> None:
    proj = "+proj=lcc +lat_1=44 +lat_2=47 +lat_0=45 +lon_0=11 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
    lon, lat = pixel_centre_to_lonlat(scene, 200.0, 300.0)
    x, y = rasterio.warp.transform("EPSG:4326", proj, [lon], [lat])
    frame = gpd.GeoDataFrame({"id": [0]}, geometry=[Point(x[0], y[0])], crs=proj)
    assert frame.crs.to_epsg() is None
    path = scene.path("lcc.gpkg")
    frame.to_file(path)
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, n_classes=4)
    assert (sampler.row_off[0], sampler.col_off[0]) == (168, 268)


def test_vector_without_crs_is_refused(scene: CoordinateScene) -> None:
    shp = scene.path("nocrs.shp")
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        gpd.GeoDataFrame({"id": [0]}, geometry=[Point(0, 0)]).to_file(shp)
    with pytest.raises(WindowError, match=r"nocrs.shp has no CRS"):
        PatchSampler(scene.image, scene.lonlat_mask(), shp, SIZE)


def test_empty_vector_layer_has_no_valid_windows(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    path = scene.path("empty.gpkg")
    gpd.GeoDataFrame({"id": []}, geometry=[], crs="EPSG:4326").to_file(path)
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        sampler = PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE)
    assert len(sampler) == 0
    assert re.search(r"no valid windows \(kept 0", caplog.text)


def test_unknown_suffix_is_tried_as_csv_then_vector(scene: CoordinateScene) -> None:
    table = scene.path("windows.txt")
    table.write_text("row_off,col_off\n4,5\n")
    assert PatchSampler(scene.image, scene.lonlat_mask(), table, SIZE, n_classes=4).row_off.tolist() == [4]
    lon, lat = pixel_centre_to_lonlat(scene, 100, 100)
    vector = T.write_points(scene.path("pts.geojson"), [lon], [lat], crs="EPSG:4326")
    renamed = scene.path("pts.data")
    os.rename(vector, renamed)
    assert PatchSampler(scene.image, scene.lonlat_mask(), renamed, SIZE, n_classes=4).row_off.tolist() == [68]


def test_missing_crops_file(scene: CoordinateScene) -> None:
    with pytest.raises(ValueError, match=r"crops_path '.*nope.csv' does not exist"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.path("nope.csv"), SIZE)


# ---------------------------------------------------------------- cache


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cache_is_written_reused_and_rebuilt_when_stale(
    scene: CoordinateScene, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    mask = scene.lonlat_mask()
    windows = scene.windows([1, 2], [3, 4])
    cache = scene.path(f"cache/index{suffix}")
    first = PatchSampler(scene.image, mask, windows, SIZE, window_index_cache=cache, n_classes=4)
    assert cache.exists() and first.row_off.tolist() == [1, 2]
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        again = PatchSampler(scene.image, mask, windows, SIZE, window_index_cache=cache, n_classes=4)
    assert "(cached in" in caplog.text and again.col_off.tolist() == [3, 4]
    assert again.index.report == first.index.report
    # The source changes (size and mtime): rebuilt.
    scene.windows([7, 8, 9], [1, 1, 1])
    changed = PatchSampler(scene.image, mask, windows, SIZE, window_index_cache=cache, n_classes=4)
    assert changed.row_off.tolist() == [7, 8, 9]
    # The patch size changes: rebuilt (the cache records it).
    fp = W.read_cache(cache)
    assert fp is not None and fp[1]["patch_size"] == SIZE
    PatchSampler(scene.image, mask, windows, 32, window_index_cache=cache, n_classes=4)
    fp = W.read_cache(cache)
    assert fp is not None and fp[1]["patch_size"] == 32 and fp[1]["source"] == str(windows.resolve())


def test_cache_records_grid_and_layer(scene: CoordinateScene) -> None:
    lon, lat = pixel_centre_to_lonlat(scene, 100, 100)
    path = T.write_points(scene.path("p.gpkg"), [lon], [lat], crs="EPSG:4326", layer="a")
    cache = scene.path("i.parquet")
    PatchSampler(scene.image, scene.lonlat_mask(), path, SIZE, crops_layer="a", window_index_cache=cache, n_classes=4)
    cached = W.read_cache(cache)
    assert cached is not None
    index, fingerprint = cached
    assert fingerprint["layer"] == "a" and fingerprint["grid"]["width"] == scene.size
    assert index.row_off.tolist() == [68]


def test_a_cached_index_is_the_one_used(scene: CoordinateScene) -> None:
    """Prove reuse: a cache whose fingerprint matches is used even if its rows differ."""
    windows = scene.windows([1], [1])
    cache = scene.path("i.csv")
    PatchSampler(scene.image, scene.lonlat_mask(), windows, SIZE, window_index_cache=cache, n_classes=4)
    _, fingerprint = W.read_cache(cache)  # type: ignore[misc]
    W.write_cache(cache, W.WindowIndex(np.array([9]), np.array([10])), fingerprint)
    assert PatchSampler(
        scene.image, scene.lonlat_mask(), windows, SIZE, window_index_cache=cache, n_classes=4
    ).row_off.tolist() == [9]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_index_round_trips(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"e{suffix}"
    empty = W.WindowIndex(np.zeros(0, np.int64), np.zeros(0, np.int64), W.WindowReport(outside_dropped=3))
    W.write_cache(path, empty, {"a": 1})
    cached = W.read_cache(path)
    assert cached is not None
    index, fingerprint = cached
    assert len(index) == 0 and index.row_off.dtype == np.int64 and fingerprint == {"a": 1}
    assert index.report.outside_dropped == 3


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "i.parquet"
    index = W.WindowIndex(np.arange(5), np.arange(5))
    W.write_cache(path, index, {"v": 1})

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(RuntimeError):
        W.write_cache(path, W.WindowIndex(np.arange(2), np.arange(2)), {"v": 2})
    cached = W.read_cache(path)
    assert cached is not None and cached[1] == {"v": 1} and len(cached[0]) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["i.parquet"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_cache_file_mode_follows_the_umask(tmp_path: Path, suffix: str, umask: int) -> None:
    """Like any file the user writes (not mkstemp's 0600), and still written atomically."""
    path = tmp_path / f"i{suffix}"
    previous = os.umask(umask)
    try:
        W.write_cache(path, W.WindowIndex(np.arange(3), np.arange(3)), {"v": 1})
        W.write_cache(path, W.WindowIndex(np.arange(4), np.arange(4)), {"v": 2})  # replaces the file
    finally:
        os.umask(previous)
    written = [path, W.sidecar_path(path)] if suffix == ".csv" else [path]  # a CSV's record is beside it
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    cached = W.read_cache(path)
    assert cached is not None and cached[1] == {"v": 2} and len(cached[0]) == 4


def test_damaged_cache_is_rebuilt(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    """crossgeo's own cache (its record beside it) with damaged rows is rebuilt; a file without a record is
    never touched (tests/core/test_window_cache_safety.py)."""
    cache = scene.path("i.csv")
    windows = scene.windows([2], [3])
    PatchSampler(scene.image, scene.lonlat_mask(), windows, SIZE, window_index_cache=cache, n_classes=4)
    cache.write_bytes(b"garbage")
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        sampler = PatchSampler(scene.image, scene.lonlat_mask(), windows, SIZE, window_index_cache=cache, n_classes=4)
    assert sampler.row_off.tolist() == [2] and "unreadable" in caplog.text
    assert W.read_cache(cache) is not None


def _build_with_cache(args: tuple[str, str, str, str]) -> list[int]:
    image, mask, windows, cache = args
    sampler = PatchSampler(image, mask, windows, SIZE, window_index_cache=cache, n_classes=4)
    return sampler.row_off.tolist()


def test_two_processes_building_one_cache_at_once(scene: CoordinateScene) -> None:
    """Both get the right index; a reader never sees a half-written cache file."""
    import multiprocessing

    rng = np.random.default_rng(3)
    rows = rng.integers(0, scene.size - SIZE, 200_000)
    cols = rng.integers(0, scene.size - SIZE, 200_000)
    windows = scene.windows(rows, cols, "many.parquet")
    cache = scene.path("shared-cache.csv")
    args = (str(scene.image), str(scene.lonlat_mask()), str(windows), str(cache))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pending = pool.map_async(_build_with_cache, [args, args])
        seen_complete = 0
        while not pending.ready():
            if cache.exists():
                cached = W.read_cache(cache)  # a partial file would fail to parse or have the wrong length
                assert cached is not None and len(cached[0]) == rows.size
                seen_complete += 1
        results = pending.get(timeout=120)
    assert results[0] == results[1] == rows.tolist()
    assert [p.name for p in scene.folder.iterdir() if p.name.startswith(".shared-cache")] == []
    cached = W.read_cache(cache)
    assert cached is not None and cached[0].row_off.tolist() == rows.tolist()


@pytest.mark.parametrize("kind", ["csv", "parquet", "parquet-floats", "parquet-row-groups"])
def test_reading_a_windows_table_does_not_import_pandas(scene: CoordinateScene, kind: str) -> None:
    """pyarrow's ``to_numpy`` imports pandas: ~30 MB in the process and in every DataLoader worker forked from
    it. The offsets (and weights) are read from the columns' buffers instead, with the values written."""
    import subprocess
    import sys

    rows, cols, weights = [0, 5, 448, 100, 7], [3, 0, 448, 250, 9], [1.0, 0.5, 2.0, 0.0, 3.0]
    path = scene.path(f"w-{kind}.{'csv' if kind == 'csv' else 'parquet'}")
    table = pa.table({"row_off": rows, "col_off": cols, W.WEIGHT_COLUMN: weights})
    if kind == "csv":
        path = scene.windows(rows, cols, path.name, **{W.WEIGHT_COLUMN: weights})
    elif kind == "parquet-floats":
        pq.write_table(table.set_column(0, "row_off", pa.array([float(r) for r in rows])), path)
    else:
        pq.write_table(table, path, row_group_size=2 if kind == "parquet-row-groups" else None)
    code = (
        "import sys\n"
        "from crossgeo import PatchSampler\n"
        f"s = PatchSampler({str(scene.image)!r}, {str(scene.lonlat_mask())!r}, {str(path)!r}, {SIZE}, n_classes=4)\n"
        "print(s.row_off.tolist(), s.col_off.tolist(), s.index.weight.tolist(), 'pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == f"{rows} {cols} {weights} False"


def test_column_numbers_equal_pyarrows_conversion() -> None:
    """Chunks, slices (an offset into a chunk's buffer), every numeric type; nulls take pyarrow's own path."""
    chunked = pa.chunked_array([pa.array([1, 2, 3, 4]), pa.array([], pa.int64()), pa.array([5, 6, 7])])
    for column in (chunked, chunked.slice(2, 4), chunked.slice(5), pa.array([9, 8, 7]).slice(1)):
        assert W.column_numbers(column).tolist() == column.to_pylist()
    for name in ("int8", "int16", "int32", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"):
        column = pa.chunked_array([pa.array([3, 1, 2], name), pa.array([4], name)]).slice(1)
        values = W.column_numbers(column)
        assert values.dtype == np.dtype(name) and values.tolist() == [1, 2, 4]
        values[0] = 0  # a copy of its own, not a view of Arrow's buffer
    assert np.isnan(W.column_numbers(pa.chunked_array([pa.array([1.0, None])]))[1])
    assert W.column_numbers(pa.chunked_array([], pa.int32())).dtype == np.int32
