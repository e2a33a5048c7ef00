"""``crossgeo preview`` / ``validate`` / ``stats`` on images of several sources (issue 24), on rasters from rasterio.

The sources encode their own pixel coordinates, so a preview tile's pixels prove which channel
each colour came from, and the per-source numbers of validate and stats are checked against
counts made directly from the arrays written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("yaml")
pytest.importorskip("PIL")
import yaml
from affine import Affine
from PIL import Image
from testkit import CliRun, Series, preview_title_shift

from crossgeo import testing as T
from crossgeo.cli import preview

UTM = "EPSG:32632"
LEFT, TOP = 500000.0, 5000000.0
SIZE = 64


def _scene(folder: Path) -> dict[str, Any]:
    """uint8 sources ``red`` (col % 256) and ``green`` (row % 256) at 10 m, ``nir`` at 20 m (its own col, row),
    a mask of class 0 only (nothing tinted) and three windows."""
    ten, twenty = Affine(10, 0, LEFT, 0, -10, TOP), Affine(20, 0, LEFT, 0, -20, TOP)
    coords = T.coordinate_bands(192, 192, "uint8")
    red = T.write_raster(folder / "red.tif", coords[:1], crs=UTM, transform=ten)
    green = T.write_raster(folder / "green.tif", coords[1:2], crs=UTM, transform=ten)
    nir = T.write_raster(folder / "nir.tif", T.coordinate_bands(96, 96, "uint8")[:2], crs=UTM, transform=twenty)
    mask = T.write_raster(folder / "mask.tif", np.zeros((1, 192, 192), np.uint8), crs=UTM, transform=ten)
    windows = T.write_windows_table(folder / "w.csv", [0, 64, 128], [0, 100, 128])
    options = {
        "image_mbtiles_path": {
            "red": str(red),
            "green": str(green),
            "nir": {"path": str(nir), "resampling": "nearest"},
        },
        "mask_path": str(mask),
        "crops_path": str(windows),
        "patch_size": SIZE,
        "image_dtype": "native",
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"train_dataset": options}, sort_keys=False))
    return {"config": config, "windows": ([0, 64, 128], [0, 100, 128])}


def _tiles(png: Path, count: int, tile: int) -> list[np.ndarray]:
    """The sheet's tiles where the layout puts them under the title the PNG carries (it may wrap)."""
    sheet = np.asarray(Image.open(png).convert("RGB"))
    shift = preview_title_shift(png)
    return [sheet[y + shift : y + shift + tile, x : x + tile] for x, y in preview.layout(count, tile, 1).tiles]


@pytest.mark.parametrize(
    "rgb, expected",
    [
        (None, ("red", "green", "nir1")),  # the first three channels
        ("nir:2,red,green", ("nir2", "red", "green")),  # SOURCE:BAND and one-channel sources by name
        ("4,1,2", ("nir2", "red", "green")),  # 1-based channel numbers
        ("nir:1", ("nir1", "nir1", "nir1")),  # one channel: grey
    ],
)
def test_preview_shows_the_named_channels(tmp_path: Path, cli: CliRun, rgb: str | None, expected: tuple) -> None:
    scene = _scene(tmp_path)
    png = tmp_path / "p.png"
    code, _, err = cli(
        "preview", scene["config"], "--out", png, "--tile", SIZE, "--stretch", "never", *(["--rgb", rgb] if rgb else [])
    )
    assert code == 0, err
    for tile, row_off, col_off in zip(_tiles(png, 3, SIZE), *scene["windows"]):
        rows, cols = T.window_coordinates(row_off, col_off, SIZE)
        truth = {"red": cols % 256, "green": rows % 256, "nir1": (cols // 2) % 256, "nir2": (rows // 2) % 256}
        for k, name in enumerate(expected):
            np.testing.assert_array_equal(tile[..., k], truth[name], err_msg=f"{rgb}: colour {k} is {name}")


@pytest.mark.parametrize(
    "rgb, why",
    [
        ("red,blue,green", "no channel is named 'blue'"),
        ("nir,red,green", "the source 'nir' adds 2 channels: name one as SOURCE:BAND"),
        ("red,green", "give three channels R,G,B"),
        ("5,1,2", "no channel is named '5'"),
    ],
)
def test_preview_names_the_channels_there_are_for_an_unknown_one(
    tmp_path: Path, cli: CliRun, rgb: str, why: str
) -> None:
    scene = _scene(tmp_path)
    code, _, err = cli("preview", scene["config"], "--out", tmp_path / "p.png", "--rgb", rgb)
    assert code == 1 and "--rgb" in err and why in err
    assert "the channels are red:1, green:1, nir:1, nir:2" in err
    assert not (tmp_path / "p.png").exists()


def test_preview_of_a_time_series_shows_each_windows_latest_date(tmp_path: Path, cli: CliRun) -> None:
    """Band 4 of every date is its day of year: the grey tile of each window is its group's latest date."""
    series = Series(tmp_path)
    config = tmp_path / "series.yaml"
    options = {"scenes": series.rows, "patch_size": 32, "image_dtype": "uint16", "group_by": "place", "time_steps": 4}
    config.write_text(yaml.safe_dump(options))
    png = tmp_path / "p.png"
    code, _, err = cli(
        "preview", config, "--out", png, "--tile", 32, "--stretch", "never", "--rgb", "image:4", "--alpha", 0
    )
    assert code == 0, err
    latest = {0: 171, 1: 121}  # day of year of 2021-06-20 (place a) and 2021-05-01 (place b)
    scenes = [0, 0, 0, 0, 1, 1]
    for tile, scene in zip(_tiles(png, 6, 32), scenes):
        assert (tile == latest[scene]).all()


# --------------------------------------------------------------------------- validate and stats per source


def _coverage_scene(folder: Path) -> Path:
    """Sources with known coverage and nodata on a 200 x 200 reference grid at 10 m.

    ``B10``: the reference. ``B20`` (20 m, nodata 0): its 70 rows cover reference rows 0-139 (70.0 %);
    its rows 0-14 are 0 (reference rows 0-29: 30 of the 140 covered, 21.43 %), the others hold 1 + its row.
    ``B60`` (60 m, covers all; nodata 7 given in the configuration, not in the file): its columns 0-16 are 7
    (reference columns 0-101: 51.00 %).
    """
    ten = Affine(10, 0, LEFT, 0, -10, TOP)
    b10 = T.write_raster(folder / "B10.tif", T.coordinate_bands(200, 200, "uint16")[:1], crs=UTM, transform=ten)
    b20_data = (1 + np.mgrid[0:70, 0:100][0]).astype(np.uint16)
    b20_data[:15] = 0
    b20 = T.write_raster(
        folder / "B20.tif", b20_data[None], crs=UTM, transform=Affine(20, 0, LEFT, 0, -20, TOP), nodata=0
    )
    b60_data = np.full((1, 34, 34), 9, np.uint16)
    b60_data[:, :, :17] = 7
    b60 = T.write_raster(folder / "B60.tif", b60_data, crs=UTM, transform=Affine(60, 0, LEFT, 0, -60, TOP))
    mask = T.write_raster(folder / "mask.tif", np.ones((1, 200, 200), np.uint8), crs=UTM, transform=ten)
    windows = T.write_windows_table(folder / "w.csv", [0, 60], [0, 100])
    options = {
        "image_path": {"B10": str(b10), "B20": str(b20), "B60": {"path": str(b60), "nodata": 7}},
        "mask_path": str(mask),
        "crops_path": str(windows),
        "patch_size": 64,
        "image_dtype": "uint16",
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(options, sort_keys=False))
    return config


def test_validate_reports_each_sources_crs_resolution_coverage_and_nodata_share(tmp_path: Path, cli: CliRun) -> None:
    config = _coverage_scene(tmp_path)
    code, out, err = cli("validate", config)
    assert code == 0, out + err
    got = {line.split()[2]: " ".join(line.split()) for line in out.splitlines() if " source " in line}
    assert got["B10"].startswith(f"ok source B10 {tmp_path}/B10.tif: EPSG:32632, 10 x 10 pixels; covers 100.0% of")
    assert "no data on 0.00% of that (sampled); has pixels in 100% of 2 window(s)" in got["B10"]
    assert got["B20"].startswith(f"ok source B20 {tmp_path}/B20.tif: EPSG:32632, 20 x 20 pixels; covers 70.0% of the")
    assert "no data on 21.43% of that" in got["B20"]
    # More than half of B60 is its configured nodata: a warning, not a failure.
    assert got["B60"].startswith(f"warn source B60 {tmp_path}/B60.tif: EPSG:32632, 60 x 60 pixels; covers 100.0%")
    assert "no data on 51.00% of that" in got["B60"]


def test_stats_reports_band_statistics_per_source(tmp_path: Path, cli: CliRun) -> None:
    config = _coverage_scene(tmp_path)
    code, out, err = cli("stats", config, "--json", tmp_path / "s.json")
    assert code == 0, err
    import json

    sources = {s["name"]: s for s in json.loads((tmp_path / "s.json").read_text())["sources"]}
    assert list(sources) == ["B10", "B20", "B60"]
    assert sources["B10"]["bands"] == [
        {"band": 1, "min": 0.0, "max": 199.0, "mean": 99.5, "std": round(np.arange(200).std(), 6)}
    ]
    # B20 where it has data: reference rows 30-139, each holding 1 + row // 2 (16..70, every value on 2 rows).
    values = 1 + np.arange(30, 140) // 2
    assert sources["B20"]["coverage"] == 0.7 and sources["B20"]["nodata_share"] == round(30 / 140, 6)
    assert sources["B20"]["bands"] == [
        {"band": 1, "min": 16.0, "max": 70.0, "mean": round(values.mean(), 6), "std": round(values.std(), 6)}
    ]
    assert sources["B60"]["nodata_share"] == 0.51 and sources["B60"]["bands"][0]["min"] == 9.0
    assert sources["B60"]["resolution"] == [60.0, 60.0] and sources["B60"]["crs"] == "EPSG:32632"
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "B20:1 min 16 max 70 mean 43 std 15.87" in lines
    assert any(
        line.startswith("B20: EPSG:32632, 20 x 20 pixels; covers 70.0% of the reference grid, no data on 21.43%")
        for line in lines
    )
