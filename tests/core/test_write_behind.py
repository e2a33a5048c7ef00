"""`crossgeo.io.StripWriter` writing on a thread of its own (``behind``), as `crossgeo.predict_raster` uses it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

import crossgeo.predict
from crossgeo import testing as T
from crossgeo.errors import WriteError
from crossgeo.grid import Grid
from crossgeo.io import StripWriter
from crossgeo.predict import predict_raster

CRS = "EPSG:3857"
TRANSFORM = T.web_mercator_transform(12, 2176, 1460)


def pointwise(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "crossgeo-strip-writer"]


@pytest.mark.parametrize(("output", "overlap"), [("class", 0), ("class", 16), ("scores", 16), ("probabilities", 0)])
def test_prediction_written_behind_equals_the_prediction_written_in_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, overlap: int
) -> None:
    image = T.write_raster(tmp_path / "image.tif", T.coordinate_bands(300, 420, "uint8"), crs=CRS, transform=TRANSFORM)
    files = {}
    for behind in (0, crossgeo.predict.WRITE_BEHIND, 1):
        monkeypatch.setattr(crossgeo.predict, "WRITE_BEHIND", behind)
        out = tmp_path / f"pred-{behind}.tif"
        predict_raster(image, pointwise, out, patch_size=64, overlap=overlap, output=output, batch_size=3)
        with rasterio.open(out) as src:
            files[behind] = (src.read(), src.profile)
    (want, profile), *others = files.values()
    for got, other_profile in others:
        np.testing.assert_array_equal(got, want)  # NaN equals NaN here
        np.testing.assert_equal(other_profile.pop("nodata"), profile["nodata"])  # NaN for scores
        assert other_profile == {k: v for k, v in profile.items() if k != "nodata"}
    assert writer_threads() == []


def test_a_failed_write_behind_is_raised_and_leaves_no_file(tmp_path: Path) -> None:
    grid = Grid(64, 64, TRANSFORM, CRS)
    (tmp_path / "out").mkdir()
    writer = StripWriter(tmp_path / "out" / "p.tif", grid, count=1, dtype="uint8", nodata=None, behind=2)
    writer.write(np.ones((1, 32, 64), np.uint8), 0)
    writer.write(np.ones((2, 32, 64), np.uint8), 32)  # two bands into a one-band file: fails on the thread
    with pytest.raises((WriteError, ValueError)):
        for _ in range(10):  # raised by a later write, or at the latest by finish
            writer.write(np.ones((1, 32, 64), np.uint8), 0)
        writer.finish()
    writer.abort()
    assert list((tmp_path / "out").iterdir()) == []
    assert writer_threads() == []


def test_written_behind_by_many_writers_in_turn(tmp_path: Path) -> None:
    """Writer threads come and go with their files: each file holds exactly its own strips."""
    grid = Grid(96, 80, TRANSFORM, CRS)
    for n in range(6):
        data = (np.arange(96 * 80).reshape(1, 96, 80) * (n + 1) % 251).astype(np.uint8)
        writer = StripWriter(tmp_path / f"p{n}.tif", grid, count=1, dtype="uint8", nodata=None, behind=1 + n % 3)
        for row in range(0, 96, 32):
            writer.write(data[:, row : row + 32].copy(), row)
        path = writer.finish()
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(), data)
    assert writer_threads() == []


def test_a_crash_half_way_with_writes_queued_leaves_no_file(tmp_path: Path) -> None:
    image = T.write_raster(tmp_path / "image.tif", T.coordinate_bands(600, 600, "uint8"), crs=CRS, transform=TRANSFORM)
    (tmp_path / "out").mkdir()
    calls: list[Any] = []

    def crash_later(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) > 30:  # after several strips were queued for writing
            raise RuntimeError("GPU fell off the bus")
        return pointwise(x)

    with pytest.raises(RuntimeError, match="GPU fell off"):
        predict_raster(image, crash_later, tmp_path / "out" / "pred.tif", patch_size=64, batch_size=1)
    assert list((tmp_path / "out").iterdir()) == []
    assert writer_threads() == []
