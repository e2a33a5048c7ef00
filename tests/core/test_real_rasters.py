"""Correct on the rasters users really have (issue 16), each case against a per-pixel truth.

The truth never asks crossgeo or GDAL's warper: every image pixel centre is transformed
into the mask CRS (``rasterio.warp.transform``, i.e. PROJ) and looked up in the array the
test wrote, together with the validity the test wrote. Cases: GDAL mask bands (internal
and ``.msk`` sidecar, next to nodata and alpha) on the aligned and the warped path,
south-up masks, masks across the antimeridian (EPSG:3832, EPSG:3857), lossy float casts,
out-of-range classes, and image no-data (nodata, mask band, an MBTiles missing tile).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform

import crossgeo.io
from crossgeo import ClassRangeError, ConfigError, PatchSampler
from crossgeo import testing as T
from crossgeo.grid import Grid
from crossgeo.survey import survey

FILL = 255
SIZE = 32
UTM = "EPSG:32632"
UTM_TRANSFORM = Affine(10, 0, 500000, 0, -10, 5000000)
#: Windows well inside, on the edge and partly outside a 128-pixel image.
WINDOWS = [(0, 0), (30, 30), (48, 64), (96, 96), (110, -10), (-12, 100)]


@pytest.fixture(params=T.MASK_VIEWS, autouse=True)
def mask_view(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case under each warp view: the whole-grid view, warped blocks and the per-window warp."""
    T.force_mask_view(monkeypatch, str(request.param))
    return str(request.param)


def write_mask(path: Path, data: np.ndarray, missing: np.ndarray, *, crs: Any, transform: Affine, how: str) -> Path:
    """A one-band class mask whose ``missing`` pixels are marked the GDAL way ``how``."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "dtype": data.dtype,
        "crs": crs,
        "transform": transform,
    }
    bands = data[None].copy()
    if how == "nodata":
        bands[0][missing] = 7
        profile["nodata"] = 7
    elif how == "alpha":
        bands = np.stack([data, np.where(missing, 0, 255).astype(data.dtype)])
        profile["alpha"] = "YES"  # GTiff ExtraSamples: band 2 is alpha
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=how == "internal"):
        with rasterio.open(path, "w", count=len(bands), **profile) as dst:
            dst.write(bands)
            if how in ("internal", "sidecar"):
                dst.write_mask(np.where(missing, 0, 255).astype(np.uint8))
    assert Path(f"{path}.msk").exists() == (how == "sidecar")
    return path


def truth(
    grid: Grid, mask_path: Path, data: np.ndarray, missing: np.ndarray, row_off: int, col_off: int
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, valid) of a window: each image pixel centre looked up in the written mask."""
    rows, cols = np.mgrid[row_off : row_off + SIZE, col_off : col_off + SIZE] + 0.5
    xs, ys = grid.transform @ (cols.ravel(), rows.ravel())
    with rasterio.open(mask_path) as mask:
        if mask.crs != grid.crs:
            xs, ys = warp_transform(grid.crs, mask.crs, xs, ys)
        mcol, mrow = ~mask.transform @ (np.asarray(xs), np.asarray(ys))
    mcol, mrow = np.floor(mcol).astype(np.int64), np.floor(mrow).astype(np.int64)
    inside_image = (
        (rows.ravel() >= 0) & (rows.ravel() < grid.height) & (cols.ravel() >= 0) & (cols.ravel() < grid.width)
    )
    on_mask = (mcol >= 0) & (mcol < data.shape[1]) & (mrow >= 0) & (mrow < data.shape[0]) & inside_image
    valid = on_mask.copy()
    valid[on_mask] = ~missing[mrow[on_mask], mcol[on_mask]]
    classes = np.full(valid.shape, FILL, np.int64)
    classes[valid] = data[mrow[valid], mcol[valid]]
    return classes.reshape(SIZE, SIZE), valid.reshape(SIZE, SIZE)


def image(folder: Path, size: int = 128, *, crs: Any = UTM, transform: Affine = UTM_TRANSFORM) -> tuple[Path, Grid]:
    path = T.write_raster(folder / "image.tif", T.coordinate_bands(size, size, "uint8"), crs=crs, transform=transform)
    with rasterio.open(path) as src:
        return path, Grid.of(src)


def blocks(shape: tuple[int, int], block: int, seed: int) -> np.ndarray:
    """Random missing blocks: invalid pixels deep inside the raster, not only at its edges."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // block + 1, shape[1] // block + 1)) < 0.4
    return np.kron(coarse, np.ones((block, block), bool))[: shape[0], : shape[1]]


def check_windows(sampler: PatchSampler, grid: Grid, mask: Path, data: np.ndarray, missing: np.ndarray) -> None:
    views = ("aligned", "lookup", crossgeo.io.mask_view_for(grid, 2, "uint8", block_cache_bytes=None))
    assert sampler.mask_view in views if crossgeo.io.LOOKUP_VIEW else views[::2]
    for position, (row_off, col_off) in enumerate(WINDOWS):
        patch = sampler[position]
        classes, valid = truth(grid, mask, data, missing, row_off, col_off)
        np.testing.assert_array_equal(patch.mask_valid, valid, err_msg=f"window {(row_off, col_off)}")
        np.testing.assert_array_equal(patch.mask, classes, err_msg=f"window {(row_off, col_off)}")


# --------------------------------------------------------------------------- 1. GDAL mask bands


@pytest.mark.parametrize("how", ["nodata", "alpha", "internal", "sidecar"])
@pytest.mark.parametrize("path", ["aligned", "warped"])
def test_every_gdal_way_of_marking_missing_mask_data_gives_fill(tmp_path: Path, how: str, path: str) -> None:
    img, grid = image(tmp_path)
    if path == "aligned":
        crs, transform, shape = UTM, UTM_TRANSFORM, (128, 128)
    else:  # EPSG:4326 at a resolution incommensurate with the image's 10 m
        crs, transform, shape = "EPSG:4326", Affine(0.0000731, 0, 8.995, 0, -0.0000731, 45.16), (260, 250)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4, shape).astype(np.uint8)
    missing = blocks(shape, 8, seed=2)
    mask = write_mask(tmp_path / f"mask_{how}.tif", data, missing, crs=crs, transform=transform, how=how)
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*WINDOWS))
    sampler = PatchSampler(img, mask, windows, SIZE, n_classes=4, mask_fill_value=FILL)
    assert sampler.aligned == (path == "aligned")
    check_windows(sampler, grid, mask, data, missing)


def test_the_issue_reproduction_all_masked(tmp_path: Path) -> None:
    """100 x 100 of class 3 with write_mask(zeros): 255 / invalid everywhere, on both paths."""
    transform = Affine(10, 0, 500000, 0, -10, 5000000)
    img = T.write_raster(tmp_path / "img.tif", T.coordinate_bands(100, 100, "uint8"), crs=UTM, transform=transform)
    data, missing = np.full((100, 100), 3, np.uint8), np.ones((100, 100), bool)
    mask = write_mask(tmp_path / "m.tif", data, missing, crs=UTM, transform=transform, how="internal")
    windows = T.write_windows_table(tmp_path / "w.csv", [30], [30])
    for options in ({}, {"target_crs": "EPSG:4326"}):
        patch = PatchSampler(img, mask, windows, 32, n_classes=4, mask_fill_value=FILL, **options)[0]
        assert (patch.mask == FILL).all() and not patch.mask_valid.any()


# --------------------------------------------------------------------------- 2. south-up masks


@pytest.mark.parametrize("crs", ["EPSG:4326", UTM])
def test_a_south_up_mask_is_read_exactly(tmp_path: Path, crs: str) -> None:
    img, grid = image(tmp_path)
    if crs == UTM:  # the image grid flipped, at another resolution: still a warp
        transform, shape = Affine(7.31, 0, 499911.3, 0, 7.31, 4998611.7), (200, 210)
    else:
        transform, shape = Affine(0.0000731, 0, 8.998, 0, 0.0000731, 45.139), (250, 300)
    rng = np.random.default_rng(3)
    data = rng.integers(0, 4, shape).astype(np.uint8)
    missing = np.zeros(shape, bool)
    mask = write_mask(tmp_path / "southup.tif", data, missing, crs=crs, transform=transform, how="none")
    with rasterio.open(mask) as src:
        assert src.bounds.bottom > src.bounds.top  # what rasterio reports for south-up grids
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*WINDOWS))
    sampler = PatchSampler(img, mask, windows, SIZE, n_classes=4, mask_fill_value=FILL)
    assert sampler.mask_coverage == 1.0
    check_windows(sampler, grid, mask, data, missing)


# --------------------------------------------------------------------------- 3. antimeridian

EARTH = 6378137.0
DATELINE_IMAGE = Affine(0.01, 0, 179.0, 0, -0.01, 0.5)  # EPSG:4326, lon 179..181 (200 x 150)
DATELINE_WINDOWS = [(0, 0), (50, 80), (100, 150), (118, 168), (60, 95), (0, 184)]


def mercator_x(lon: float) -> float:
    return float(np.radians(lon) * EARTH)


@pytest.mark.parametrize(
    ("name", "crs", "box", "resolution", "coverage"),
    [
        # EPSG:3832 is centred on 150 E: the mask is one piece across 180.
        ("3832", "EPSG:3832", None, 500.0, 1.0),
        # A world mask in Web Mercator: lon 180..181 is its western edge (-180..-179).
        ("3857 world", "EPSG:3857", (-T.WEB_MERCATOR_HALF, -200000, T.WEB_MERCATOR_HALF, 100000), 2000.0, 1.0),
        # Web Mercator past its edge (x > half the world): PROJ wraps lon 180.5 to -179.5, so
        # only the image's western half lies on it - half covered, never "does not overlap".
        ("3857 past the edge", "EPSG:3857", (mercator_x(178.9), -122000, mercator_x(181.1), 67000), 500.0, 0.5),
    ],
)
def test_a_mask_across_the_antimeridian_is_accepted_and_exact(
    tmp_path: Path,
    name: str,
    crs: str,
    box: tuple[float, float, float, float] | None,
    resolution: float,
    coverage: float,
    mask_view: str,
) -> None:
    img = T.write_raster(
        tmp_path / "img.tif", T.coordinate_bands(150, 200, "uint16"), crs="EPSG:4326", transform=DATELINE_IMAGE
    )
    with rasterio.open(img) as src:
        grid = Grid.of(src)
    if box is None:
        xs, ys = warp_transform("EPSG:4326", crs, [178.9, 181.1], [-1.1, 0.6])
        box = (xs[0], ys[0], xs[1], ys[1])
    left, bottom, right, top = box
    shape = (round((top - bottom) / resolution), round((right - left) / resolution))
    data = np.random.default_rng(4).integers(0, 5, shape).astype(np.uint8)
    missing = np.zeros(shape, bool)
    transform = Affine(resolution, 0, left, 0, -resolution, top)
    mask = write_mask(tmp_path / "mask.tif", data, missing, crs=crs, transform=transform, how="none")
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*DATELINE_WINDOWS))
    sampler = PatchSampler(img, mask, windows, SIZE, n_classes=5, mask_fill_value=FILL, image_dtype="native")
    assert sampler.mask_view == mask_view
    assert sampler.mask_coverage == pytest.approx(coverage, abs=0.01)
    for position, (row_off, col_off) in enumerate(DATELINE_WINDOWS):
        patch = sampler[position]
        classes, valid = truth(grid, mask, data, missing, row_off, col_off)
        np.testing.assert_array_equal(patch.mask_valid, valid, err_msg=f"{name} window {(row_off, col_off)}")
        np.testing.assert_array_equal(patch.mask, classes, err_msg=f"{name} window {(row_off, col_off)}")
        rows, cols = T.decode_coordinates(patch.image)
        assert rows[0, 0] == row_off and cols[0, 0] == col_off


# --------------------------------------------------------------------------- 4. lossy float casts


@pytest.mark.parametrize(
    ("dtype", "value"),
    [("uint32", 16777217), ("int32", -16777217), ("int64", 2**40 + 1), ("float64", 1e-50), ("float64", 1e300)],
)
def test_lossy_float32_is_refused_and_native_keeps_the_value(tmp_path: Path, dtype: str, value: float) -> None:
    data = np.full((1, 32, 32), value, dtype=dtype)
    assert data.astype(np.float32).astype(dtype)[0, 0, 0] != data[0, 0, 0]  # float32 does lose it
    img = T.write_raster(tmp_path / "img.tif", data, crs=UTM, transform=UTM_TRANSFORM)
    mask = T.write_raster(tmp_path / "m.tif", np.zeros((1, 32, 32), np.uint8), crs=UTM, transform=UTM_TRANSFORM)
    windows = T.write_windows_table(tmp_path / "w.csv", [0], [0])
    with pytest.raises(
        ConfigError,
        match=rf"image_dtype 'float32' would lose values of .*img.tif \(its data is {dtype}; float32 holds integers "
        r"exactly only up to 2\*\*24.*use image_dtype: 'native'",
    ):
        PatchSampler(img, mask, windows, 32, image_dtype="float32")
    patch = PatchSampler(img, mask, windows, 32, image_dtype="native")[0]
    assert patch.image.dtype == np.dtype(dtype) and (patch.image == data).all()


# --------------------------------------------------------------------------- 5. out-of-range classes


@pytest.fixture
def classes_300(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """An aligned uint16 mask of classes 0..299 with a few pixels of 400 and 65535."""
    img, _ = image(tmp_path)
    data = (np.arange(128 * 128).reshape(128, 128) % 300).astype(np.uint16)
    data[40:43, 40:45] = 400
    data[100, 100] = 65535
    mask = T.write_raster(tmp_path / "m300.tif", data[None], crs=UTM, transform=UTM_TRANSFORM)
    return img, mask, data


def test_out_of_range_class_is_an_error_naming_window_and_value(tmp_path: Path, classes_300: Any) -> None:
    img, mask, data = classes_300
    windows = T.write_windows_table(tmp_path / "w.csv", [0, 30, 96], [0, 30, 96])
    sampler = PatchSampler(img, mask, windows, SIZE, n_classes=300)
    np.testing.assert_array_equal(sampler[0].mask, data[:32, :32])  # in range: untouched
    with pytest.raises(
        ClassRangeError, match=r"m300.tif holds class value\(s\) 400 outside 0..299 .*row_off=30, col_off=30.*15 pixel"
    ):
        sampler[1]
    with pytest.raises(ValueError, match=r"65535 outside 0..299.*row_off=96, col_off=96"):
        sampler[2]


def test_out_of_range_fill_gives_fill_and_invalid(tmp_path: Path, classes_300: Any) -> None:
    img, mask, data = classes_300
    windows = T.write_windows_table(tmp_path / "w.csv", [30, 96], [30, 96])
    sampler = PatchSampler(img, mask, windows, SIZE, n_classes=300, out_of_range="fill", mask_fill_value=FILL)
    for position, (row_off, col_off) in enumerate([(30, 30), (96, 96)]):
        patch = sampler[position]
        raw = data[row_off : row_off + SIZE, col_off : col_off + SIZE].astype(np.int64)
        bad = raw >= 300
        np.testing.assert_array_equal(patch.mask_valid, ~bad)
        np.testing.assert_array_equal(patch.mask, np.where(bad, FILL, raw))
    report = survey(sampler)
    assert report.out_of_range == {400: 15, 65535: 1} and report.windows == 2
    assert "mask values outside 0..299: 400 (15 px), 65535 (1 px)" in report.describe()
    # Binarising is unchanged: 400 is foreground.
    binary = PatchSampler(img, mask, windows, SIZE, n_classes=2)
    np.testing.assert_array_equal(binary[0].mask, (data[30:62, 30:62] != 0).astype(np.int64))
    assert survey(binary).out_of_range == {}


# --------------------------------------------------------------------------- 6. image no-data


def mbtiles_with_missing_tile(folder: Path) -> tuple[Path, int, int]:
    """A 512-pixel coordinate image as 2 x 2 zoom-12 tiles, the north-east tile deleted."""
    tif = T.write_raster(
        folder / "image.tif",
        T.coordinate_bands(512, 512, "uint8"),
        crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 2176, 1460),
    )
    mbtiles = T.write_mbtiles(tif, folder / "holes.mbtiles")
    with sqlite3.connect(mbtiles) as db:
        deleted = db.execute(
            "DELETE FROM tiles WHERE zoom_level = 12 AND tile_column = 2177 AND tile_row = ?", (2**12 - 1 - 1460,)
        )
        assert deleted.rowcount == 1
    return mbtiles, 0, 256  # (row, col) of the missing tile's first pixel


def test_mbtiles_missing_tile_is_invalid_image_and_can_be_ignored(tmp_path: Path) -> None:
    mbtiles, tile_row, tile_col = mbtiles_with_missing_tile(tmp_path)
    mask_data = np.full((1, 512, 512), 2, np.uint8)
    mask = T.write_raster(
        tmp_path / "m.tif", mask_data, crs="EPSG:3857", transform=T.web_mercator_transform(12, 2176, 1460)
    )
    offsets = [(0, 0), (200, 200), (224, 240), (300, 300), (480, 500)]
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*offsets))
    plain = PatchSampler(mbtiles, mask, windows, 64, selected_bands=[1, 2, 3], n_classes=4, mask_fill_value=FILL)
    ignoring = PatchSampler(
        mbtiles,
        mask,
        windows,
        64,
        selected_bands=[1, 2, 3],
        n_classes=4,
        mask_fill_value=FILL,
        ignore_invalid_image=True,
    )
    total_hole = 0
    for position, (row_off, col_off) in enumerate(offsets):
        rows, cols = np.mgrid[row_off : row_off + 64, col_off : col_off + 64]
        hole = (rows >= tile_row) & (rows < tile_row + 256) & (cols >= tile_col) & (cols < tile_col + 256)
        outside = (rows >= 512) | (cols >= 512)
        expected_valid = ~hole & ~outside
        total_hole += int((~expected_valid).sum())
        a, b = plain[position], ignoring[position]
        assert a.image.shape == (3, 64, 64)
        np.testing.assert_array_equal(a.image_valid, expected_valid)
        assert (a.image[:, hole] == 0).all()  # what the hole reads as: RGBA 0, 0, 0, 0
        np.testing.assert_array_equal(a.mask, np.where(outside, FILL, 2))  # default: labels kept
        np.testing.assert_array_equal(b.mask, np.where(expected_valid, 2, FILL))
        np.testing.assert_array_equal(b.mask_valid, expected_valid)
        np.testing.assert_array_equal(b.image, a.image)
    report = survey(plain)
    assert report.invalid_image_pixels == total_hole
    assert report.invalid_image_share == pytest.approx(total_hole / (len(offsets) * 64 * 64))


def test_image_mask_band_and_nodata_give_image_valid(tmp_path: Path) -> None:
    missing = blocks((128, 128), 16, seed=5)
    data = T.coordinate_bands(128, 128, "uint16")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(
            tmp_path / "masked.tif",
            "w",
            driver="GTiff",
            height=128,
            width=128,
            count=3,
            dtype="uint16",
            crs=UTM,
            transform=UTM_TRANSFORM,
        ) as dst:
            dst.write(data)
            dst.write_mask(np.where(missing, 0, 255).astype(np.uint8))
    nodata = data.copy()
    nodata[:, missing] = 9999
    T.write_raster(tmp_path / "nodata.tif", nodata, crs=UTM, transform=UTM_TRANSFORM, nodata=9999)
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, 128, 128), np.uint8), crs=UTM, transform=UTM_TRANSFORM)
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*WINDOWS))
    for name in ("masked.tif", "nodata.tif"):
        for options in ({}, {"target_resolution": 10}):  # the aligned image and a warped copy of it
            sampler = PatchSampler(
                tmp_path / name, mask, windows, SIZE, image_dtype="uint16", ignore_invalid_image=True, **options
            )
            for position, (row_off, col_off) in enumerate(WINDOWS):
                patch = sampler[position]
                rows, cols = np.mgrid[row_off : row_off + SIZE, col_off : col_off + SIZE]
                inside = (rows >= 0) & (rows < 128) & (cols >= 0) & (cols < 128)
                expected = inside.copy()
                expected[inside] = ~missing[rows[inside], cols[inside]]
                np.testing.assert_array_equal(
                    patch.image_valid, expected, err_msg=f"{name} {options} {(row_off, col_off)}"
                )
                np.testing.assert_array_equal(patch.mask, expected.astype(np.int64))  # fill 0 where no image


def test_image_without_nodata_marks_nothing_and_reads_nothing_extra(tmp_path: Path) -> None:
    img, _ = image(tmp_path)
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, 128, 128), np.uint8), crs=UTM, transform=UTM_TRANSFORM)
    sampler = PatchSampler(img, mask, T.write_windows_table(tmp_path / "w.csv", [10], [10]), SIZE)
    (plan,) = sampler._plan.image
    assert (plan.alpha, plan.nodata, plan.mask_band) == (None, None, False)
    assert sampler[0].image_valid.all() and survey(sampler).invalid_image_pixels == 0


def test_real_image_nodata_matches_its_pixels(real_data: Path, tmp_path: Path) -> None:
    """RGB.byte.tif (nodata 0): image_valid is exactly 'some band is not 0', window by window."""
    image_path = real_data / "RGB.byte.tif"
    with rasterio.open(image_path) as src:
        raw = src.read()
        grid = Grid.of(src)
    offsets = [(0, 0), (300, 0), (350, 350), (650, 700), (700, 770)]
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*offsets))
    sampler = PatchSampler(
        image_path, real_data / "world.byte.tif", windows, 64, ignore_invalid_image=True, mask_fill_value=FILL
    )
    invalid = 0
    for position, (row_off, col_off) in enumerate(offsets):
        patch = sampler[position]
        expected = np.zeros((64, 64), bool)
        part = raw[:, row_off : row_off + 64, col_off : col_off + 64]
        expected[: part.shape[1], : part.shape[2]] = np.any(part != 0, axis=0)
        np.testing.assert_array_equal(patch.image_valid, expected)
        assert (patch.mask[~expected] == FILL).all() and not patch.mask_valid[~expected].any()
        invalid += int((~expected).sum())
    assert 0 < invalid < len(offsets) * 64 * 64 and grid.height == 718
    assert survey(sampler).invalid_image_pixels == invalid
