"""The one option list and the inspection steps PatchSampler is built from (issue: structure).

Windows given in memory, did-you-mean in Python calls, the original's key names in
messages, construction warnings, empty window sets, and validate-style collection of
every problem at once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crossgeo import PatchSampler, WindowIndex
from crossgeo import testing as T
from crossgeo.config import sampler_from_config
from crossgeo.inspection import inspect_sources
from crossgeo.testing import CoordinateScene, window_coordinates

SIZE = 32
GRID = {"crs": "EPSG:3857", "transform": T.web_mercator_transform(12, 1, 1)}
ROWS, COLS = [0, 100, 37], [5, 64, 200]


def assert_windows(sampler: PatchSampler, rows: list[int], cols: list[int]) -> None:
    assert len(sampler) == len(rows)
    for i, (r, c) in enumerate(zip(rows, cols)):
        got_rows, got_cols = T.decode_coordinates(sampler[i].image)
        want_rows, want_cols = window_coordinates(r, c, SIZE)
        np.testing.assert_array_equal(got_rows, want_rows)
        np.testing.assert_array_equal(got_cols, want_cols)


@pytest.mark.parametrize(
    "table",
    [
        pd.DataFrame({"row_off": ROWS, "col_off": COLS, "other": ["a", "b", "c"]}),
        pa.table({"row_off": ROWS, "col_off": COLS}),
        np.array(list(zip(ROWS, COLS))),
        WindowIndex(np.array(ROWS, dtype=np.int64), np.array(COLS, dtype=np.int64)),
    ],
    ids=["DataFrame", "pyarrow", "numpy", "WindowIndex"],
)
def test_windows_in_memory(scene: CoordinateScene, table: object) -> None:
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), table, SIZE, n_classes=4)
    assert_windows(sampler, ROWS, COLS)
    assert sampler.crops_path.startswith(f"<{type(table).__name__} of 3 rows>")


def test_in_memory_windows_use_the_offset_keys_and_check_values(scene: CoordinateScene) -> None:
    frame = pd.DataFrame({"y": ROWS, "x": COLS})
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), frame, SIZE, n_classes=4, row_off_key="y", col_off_key="x")
    assert_windows(sampler, ROWS, COLS)
    with pytest.raises(ValueError, match="missing required columns"):
        PatchSampler(scene.image, scene.lonlat_mask(), frame, SIZE, n_classes=4)
    with pytest.raises(ValueError, match=r"'row_off' \(row_off_key\) is 1.5, not a whole number in data row 2"):
        PatchSampler(scene.image, scene.lonlat_mask(), pd.DataFrame({"row_off": [1, 1.5], "col_off": [0, 0]}), SIZE)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        PatchSampler(scene.image, scene.lonlat_mask(), np.zeros((3, 3), dtype=int), SIZE)
    with pytest.raises(ValueError, match="entirely outside the image"):
        PatchSampler(scene.image, scene.lonlat_mask(), np.array([[10_000, 0]]), SIZE)
    with pytest.raises(ValueError, match="window_index_cache keeps windows planned from a file"):
        PatchSampler(scene.image, scene.lonlat_mask(), frame, SIZE, window_index_cache=scene.path("c.csv"))


def test_a_typo_in_python_gets_a_suggestion(scene: CoordinateScene) -> None:
    windows = scene.windows(ROWS, COLS)
    with pytest.raises(TypeError, match=r"Unknown option 'pach_size' in PatchSampler. Did you mean 'patch_size'"):
        PatchSampler(scene.image, scene.lonlat_mask(), windows, pach_size=SIZE)
    with pytest.raises(TypeError, match=r"missing the required option.s. patch_size"):
        PatchSampler(scene.image, scene.lonlat_mask(), windows)


def test_the_original_key_names_appear_in_messages(scene: CoordinateScene) -> None:
    missing = scene.path("nope.mbtiles")
    windows = scene.windows(ROWS, COLS)
    config = {"image_mbtiles_path": missing, "mask_path": scene.lonlat_mask(), "crops_path": windows, "patch_size": 8}
    with pytest.raises(ValueError, match=r"^image_mbtiles_path .*nope.mbtiles' does not exist"):
        sampler_from_config(config)
    with pytest.raises(ValueError, match=r"^image_mbtiles_path .*nope.mbtiles' does not exist"):
        PatchSampler(image_mbtiles_path=missing, mask_path=scene.lonlat_mask(), crops_path=windows, patch_size=8)
    with pytest.raises(TypeError, match=r"missing the required option.s. image_mbtiles_path"):
        sampler_from_config({"mask_path": "m.tif", "crops_path": "c.csv", "patch_size": 8})
    with pytest.raises(TypeError, match="both 'image_path' and 'image_mbtiles_path'"):
        PatchSampler(scene.image, scene.lonlat_mask(), windows, 8, image_mbtiles_path=scene.image)


def test_patch_larger_than_the_image_warns(tmp_path: Path) -> None:
    image = T.write_raster(
        tmp_path / "small.tif",
        T.coordinate_bands(20, 30),
        crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 1, 1),
    )
    mask = T.write_raster(
        tmp_path / "m.tif",
        np.ones((1, 20, 30), np.uint8),
        crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 1, 1),
    )
    with pytest.warns(UserWarning, match=r"patch_size 64 is larger than the image .*small.tif \(30 x 20 pixels\)"):
        sampler = PatchSampler(image, mask, np.array([[0, 0]]), 64, image_dtype="uint16")
    assert sampler[0].image.shape == (3, 64, 64)


def test_mostly_outside_windows_warn_with_the_share(scene: CoordinateScene) -> None:
    rows, cols = [scene.size - 8, -24], [scene.size - 8, 0]  # 1/16 and 1/4 inside: 1 - (1/16 + 1/4) / 2 = 84 %
    with pytest.warns(UserWarning, match=r"on average 84% of each window's pixels lie outside the image"):
        PatchSampler(scene.image, scene.lonlat_mask(), np.array(list(zip(rows, cols))), SIZE, n_classes=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windows inside: no warning at all
        PatchSampler(scene.image, scene.lonlat_mask(), np.array(list(zip(ROWS, COLS))), SIZE, n_classes=4)


def test_an_empty_window_set_is_a_warning_and_length_zero(
    scene: CoordinateScene, caplog: pytest.LogCaptureFixture
) -> None:
    empty = scene.path("empty.csv")
    empty.write_text("row_off,col_off\n")
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        sampler = PatchSampler(scene.image, scene.lonlat_mask(), empty, SIZE, n_classes=4)
    assert len(sampler) == 0
    assert any("no valid windows" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    with pytest.raises(IndexError):
        sampler[0]


def test_inspection_collects_every_problem(scene: CoordinateScene, tmp_path: Path) -> None:
    """validate's view: a bad mask and bad windows are both reported, with the image record kept."""
    rgb_mask = T.write_raster(
        tmp_path / "rgb.tif", np.zeros((3, 10, 10), np.uint8), crs="EPSG:3857", transform=scene.transform
    )
    config = {
        "image_path": scene.image,
        "mask_path": rgb_mask,
        "crops_path": np.array([[10_000, 10_000]]),
        "patch_size": SIZE,
    }
    inspection = inspect_sources(config, collect=True)
    assert [p.step for p in inspection.problems] == ["mask", "windows"]
    assert "needs color_map" in inspection.problems[0].message
    assert "entirely outside the image" in inspection.problems[1].message
    assert inspection.image is not None and inspection.image.grid.width == scene.size
    assert not inspection.ok
    with pytest.raises(ValueError, match="needs color_map"):
        inspect_sources(config)  # construction stops at the first problem


def test_the_sampler_keeps_its_inspection_records(scene: CoordinateScene) -> None:
    cache = scene.path("cache.parquet")
    windows = scene.windows(ROWS, COLS)
    first = PatchSampler(scene.image, scene.lonlat_mask(), windows, SIZE, n_classes=4, window_index_cache=cache)
    second = PatchSampler(scene.image, scene.lonlat_mask(), windows, SIZE, n_classes=4, window_index_cache=cache)
    assert (first.windows_info.from_cache, second.windows_info.from_cache) == (False, True)
    assert first.image_info.grid == first.grid and first.image_info.bands == (1, 2, 3)
    assert first.mask_info.raster.crs == "EPSG:4326" and not first.mask_info.aligned
    assert "warped nearest-neighbour" in first.mask_info.describe()


def test_pure_modules_do_not_import_rasterio() -> None:
    code = (
        "import sys; import crossgeo.augment, crossgeo.options; "
        "print(sorted(m for m in ('rasterio', 'torch', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
