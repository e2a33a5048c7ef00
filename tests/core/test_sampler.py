"""PatchSampler: where patches come from, how masks are aligned, fills, dtypes, process model."""

from __future__ import annotations

import logging
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

import crossgeo.io
from crossgeo import ConfigError, OptionError, OptionTypeError, PatchSampler, RasterError
from crossgeo import testing as T
from crossgeo.testing import PALETTE, CoordinateScene, window_coordinates

SIZE = 64


def reproject_onto_image(mask_path: Path, image_path: Path, band: int = 1) -> np.ndarray:
    """Whole-raster nearest-neighbour reprojection of a mask band onto the image grid."""
    with rasterio.open(image_path) as image, rasterio.open(mask_path) as mask:
        out = np.zeros((image.height, image.width), dtype=mask.dtypes[band - 1])
        reproject(
            rasterio.band(mask, band),
            out,
            dst_transform=image.transform,
            dst_crs=image.crs,
            resampling=Resampling.nearest,
        )
    return out


def random_windows(n: int, lo: int, hi: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi, n), rng.integers(lo, hi, n)


def test_image_patches_come_from_their_window(scene: CoordinateScene) -> None:
    rows, cols = random_windows(30, 0, scene.size - SIZE)
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE, n_classes=4)
    assert len(sampler) == 30
    for i in range(len(sampler)):
        patch = sampler[i]
        assert patch.image.shape == (3, SIZE, SIZE) and patch.image.dtype == np.uint8
        assert patch.mask.shape == (SIZE, SIZE) and patch.mask.dtype == np.int64
        assert (patch.row_off, patch.col_off, patch.index) == (rows[i], cols[i], i)
        got_rows, got_cols = T.decode_coordinates(patch.image)
        want_rows, want_cols = window_coordinates(rows[i], cols[i], SIZE)
        np.testing.assert_array_equal(got_rows, want_rows)
        np.testing.assert_array_equal(got_cols, want_cols)


def test_warped_mask_agrees_with_whole_raster_reproject(scene: CoordinateScene) -> None:
    mask = scene.lonlat_mask()
    reference = reproject_onto_image(mask, scene.image)
    rows, cols = random_windows(40, -SIZE // 2, scene.size - SIZE // 2, seed=1)
    sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
    assert not sampler.aligned
    agree = total = 0
    for patch in (sampler[i] for i in range(len(sampler))):
        r, c = window_coordinates(patch.row_off, patch.col_off, SIZE)
        inside = (r >= 0) & (r < scene.size) & (c >= 0) & (c < scene.size)
        truth = reference[np.clip(r, 0, scene.size - 1), np.clip(c, 0, scene.size - 1)]
        agree += int(np.count_nonzero(patch.mask[inside] == truth[inside]))
        total += int(np.count_nonzero(inside))
    assert agree / total >= 0.995, agree / total


def test_mask_view_follows_the_gdal_block_cache(scene: CoordinateScene) -> None:
    """The whole-grid view is chosen when the warped grid takes at most half of GDAL's block cache."""
    grid = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE).grid
    warped = scene.size * scene.size * 2  # one uint8 band and its alpha band
    assert crossgeo.io.mask_view_for(grid, 2, "uint8", cache_bytes=2 * warped) == "grid"
    assert crossgeo.io.mask_view_for(grid, 2, "uint8", cache_bytes=2 * warped - 1) == "window"
    assert crossgeo.io.mask_view_for(grid, 2, "uint16", cache_bytes=2 * warped) == "window"


@pytest.mark.parametrize("view", T.MASK_VIEWS)
def test_warped_views_read_windows_and_regions_alike(
    scene: CoordinateScene, view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole-grid view: a region read is exactly the windows read inside it, and both views match the oracle."""
    T.force_mask_view(monkeypatch, view)
    mask = scene.lonlat_mask()
    rows, cols = random_windows(25, -SIZE // 2, scene.size - SIZE // 2, seed=5)
    sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
    assert sampler.mask_view == view
    reference = reproject_onto_image(mask, scene.image)
    pad = SIZE // 2
    region, region_valid = sampler.read_mask_region(-pad, -pad, scene.size + 2 * pad, scene.size + 2 * pad)
    agree = total = 0
    for row_off, col_off in zip(rows.tolist(), cols.tolist()):
        classes, valid = sampler.read_mask(row_off, col_off)
        r, c = row_off + pad, col_off + pad
        same = classes == region[r : r + SIZE, c : c + SIZE]
        if view in ("lookup", "grid", "blocks"):  # exact per-pixel warps: every region reads a pixel alike
            assert same.all() and (valid == region_valid[r : r + SIZE, c : c + SIZE]).all()
        else:
            agree += int(np.count_nonzero(same))
            total += same.size
        rr, cc = window_coordinates(row_off, col_off, SIZE)
        inside = (rr >= 0) & (rr < scene.size) & (cc >= 0) & (cc < scene.size)
        truth = reference[np.clip(rr, 0, scene.size - 1), np.clip(cc, 0, scene.size - 1)]
        assert np.count_nonzero(classes[inside] == truth[inside]) >= 0.995 * np.count_nonzero(inside)
        assert not valid[~inside].any()
    if view == "window":  # separate warps may split ties differently, rarely
        assert agree >= 0.999 * total


def test_warped_mask_matches_the_geography(scene: CoordinateScene) -> None:
    """Classes are a known function of lon/lat: check against that, not against GDAL."""
    sampler = PatchSampler(
        scene.image, scene.lonlat_mask(resolution=0.0001), scene.windows([0, 200], [0, 300]), SIZE, n_classes=4
    )
    agree = total = 0
    for patch in (sampler[0], sampler[1]):
        r, c = window_coordinates(patch.row_off, patch.col_off, SIZE)
        xs, ys = scene.transform @ (c + 0.5, r + 0.5)
        lon, lat = rasterio.warp.transform("EPSG:3857", "EPSG:4326", xs.ravel(), ys.ravel())
        truth = T.lonlat_classes(np.array(lon), np.array(lat), 0.01, 4).reshape(SIZE, SIZE)
        agree += int(np.count_nonzero(truth == patch.mask))
        total += truth.size
    assert agree / total >= 0.97, agree / total


def test_aligned_mask_is_read_without_warp_and_equals_the_mask(scene: CoordinateScene) -> None:
    classes = (np.arange(scene.size * scene.size).reshape(1, scene.size, scene.size) % 7).astype(np.uint8)
    mask = scene.aligned_mask(classes)
    rows, cols = random_windows(20, 0, scene.size - SIZE)
    sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=7)
    assert sampler.aligned
    for i in range(len(sampler)):
        np.testing.assert_array_equal(sampler[i].mask, classes[0, rows[i] : rows[i] + SIZE, cols[i] : cols[i] + SIZE])


def test_aligned_mask_with_offset_origin_and_fast_path_equals_warp(scene: CoordinateScene) -> None:
    """A mask on the same pixel grid but a larger extent: plain reads at an integer offset."""
    pad = 10
    n = scene.size + 2 * pad
    classes = (np.add.outer(np.arange(n), 3 * np.arange(n)) % 5).astype(np.uint8)[None]
    mask = scene.aligned_mask(classes, pad=pad)
    windows = scene.windows([0, 100, scene.size - SIZE], [0, 37, scene.size - SIZE])
    sampler = PatchSampler(scene.image, mask, windows, SIZE, n_classes=5)
    assert sampler.aligned
    reference = reproject_onto_image(mask, scene.image)
    for i in range(len(sampler)):
        p = sampler[i]
        np.testing.assert_array_equal(
            p.mask, classes[0, p.row_off + pad : p.row_off + pad + SIZE, p.col_off + pad : p.col_off + pad + SIZE]
        )
        np.testing.assert_array_equal(p.mask, reference[p.row_off : p.row_off + SIZE, p.col_off : p.col_off + SIZE])


def test_partly_outside_window_is_full_size_and_filled(scene: CoordinateScene) -> None:
    mask = scene.aligned_mask(np.full((1, scene.size, scene.size), 3, np.uint8))
    windows = scene.windows([-10, scene.size - 20], [-5, scene.size - 30])
    sampler = PatchSampler(scene.image, mask, windows, SIZE, n_classes=4)
    for i, (r0, c0) in enumerate([(-10, -5), (scene.size - 20, scene.size - 30)]):
        patch = sampler[i]
        assert patch.image.shape == (3, SIZE, SIZE) and patch.mask.shape == (SIZE, SIZE)
        r, c = window_coordinates(r0, c0, SIZE)
        inside = (r >= 0) & (r < scene.size) & (c >= 0) & (c < scene.size)
        got_r, got_c = T.decode_coordinates(patch.image)
        np.testing.assert_array_equal(got_r[inside], r[inside])
        np.testing.assert_array_equal(got_c[inside], c[inside])
        assert (patch.image[:, ~inside] == 0).all()
        assert (patch.mask[inside] == 3).all() and (patch.mask[~inside] == 0).all()


def test_outside_pixels_take_the_image_nodata(tmp_path: Path) -> None:
    data = np.full((2, 40, 40), 7, np.uint16)
    image = T.write_raster(tmp_path / "i.tif", data, crs="EPSG:3857", transform=Affine(1, 0, 0, 0, -1, 40), nodata=9999)
    mask = T.write_raster(
        tmp_path / "m.tif", np.ones((1, 40, 40), np.uint8), crs="EPSG:3857", transform=Affine(1, 0, 0, 0, -1, 40)
    )
    windows = T.write_windows_table(tmp_path / "w.csv", [30], [-5])
    patch = PatchSampler(image, mask, windows, 16, image_dtype="uint16")[0]
    assert (patch.image[:, :10, 5:] == 7).all()
    assert (patch.image[:, :, :5] == 9999).all() and (patch.image[:, 10:, :] == 9999).all()


@pytest.mark.parametrize("warped", [False, True])
def test_mask_nodata_and_uncovered_area_never_become_foreground(tmp_path: Path, warped: bool) -> None:
    """The original turned nodata 255 into class 1 under n_classes 2; crossgeo fills them."""
    transform = Affine(10, 0, 1000, 0, -10, 2000)
    image = T.write_raster(tmp_path / "i.tif", np.ones((3, 64, 64), np.uint8), crs="EPSG:32632", transform=transform)
    data = np.zeros((1, 24, 64), np.uint8)
    data[0, :, 32:] = 255  # nodata
    data[0, :16, :16] = 1
    mask_transform = Affine(10, 0, 1000, 0, -10, 2000)
    crs = "EPSG:32632"
    if warped:
        mask_transform, crs = Affine(5, 0, 1000, 0, -5, 2000), "EPSG:32632"
        data = data.repeat(2, axis=1).repeat(2, axis=2)
    mask = T.write_raster(tmp_path / "m.tif", data, crs=crs, transform=mask_transform, nodata=255)
    windows = T.write_windows_table(tmp_path / "w.csv", [0], [0])
    with pytest.warns(UserWarning, match="covers only"):
        sampler = PatchSampler(image, mask, windows, 64, n_classes=2)
    assert sampler.aligned is not warped
    result = sampler[0].mask
    assert (result[:16, :16] == 1).all()
    assert result.sum() == 16 * 16  # nodata (right half) and uncovered (bottom half) stay 0
    with pytest.warns(UserWarning):
        ignore = PatchSampler(image, mask, windows, 64, n_classes=2, mask_fill_value=255)[0].mask
    assert (ignore[:24, 32:] == 255).all() and (ignore[24:, :] == 255).all() and (ignore[:16, :16] == 1).all()


@pytest.mark.parametrize("mask_kind", ["aligned", *T.MASK_VIEWS])
def test_narrow_mask_dtype_reads_the_same_classes(
    scene: CoordinateScene, mask_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get(i, mask_dtype=...)`` (the compact loaders' read) equals ``sampler[i]`` in the narrow type, fill too."""
    T.force_mask_view(monkeypatch, mask_kind)
    rows, cols = random_windows(12, -SIZE // 2, scene.size - SIZE // 2, seed=4)
    classes = (np.arange(scene.size)[None, :, None] // 7 + np.arange(scene.size)[None, None, :] // 5) % 4
    mask = scene.aligned_mask(classes.astype(np.uint8)) if mask_kind == "aligned" else scene.lonlat_mask()
    sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4, mask_fill_value=9)
    assert sampler.mask_view == mask_kind
    seen: set[int] = set()
    for i in range(len(sampler)):
        wide, narrow = sampler[i], sampler.get(i, mask_dtype=np.uint8)
        assert wide.mask.dtype == np.int64 and narrow.mask.dtype == np.uint8
        np.testing.assert_array_equal(narrow.mask, wide.mask)
        np.testing.assert_array_equal(narrow.mask_valid, wide.mask_valid)
        np.testing.assert_array_equal(narrow.image, wide.image)
        seen.update(np.unique(narrow.mask).tolist())
    assert seen == {0, 1, 2, 3, 9}  # every class, and the fill of windows reaching past the image


def test_class_indices_are_int64_without_wrap(scene: CoordinateScene) -> None:
    classes = np.full((1, scene.size, scene.size), 300, np.uint16)
    classes[0, ::2] = 2
    sampler = PatchSampler(scene.image, scene.aligned_mask(classes), scene.windows([0], [0]), SIZE, n_classes=301)
    mask = sampler[0].mask
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {2, 300}
    binary = PatchSampler(scene.image, scene.aligned_mask(classes, "b.tif"), scene.windows([0], [0]), SIZE)[0].mask
    assert set(np.unique(binary)) == {1}


def test_colour_coded_mask_in_another_crs(scene: CoordinateScene) -> None:
    mask = scene.lonlat_mask("rgb.tif", palette=PALETTE)
    index_mask = scene.lonlat_mask("idx.tif")
    color_map = [[*rgb, cls] for cls, rgb in enumerate(PALETTE) if cls]
    rows, cols = random_windows(10, 0, scene.size - SIZE, seed=3)
    windows = scene.windows(rows, cols)
    rgb = PatchSampler(scene.image, mask, windows, SIZE, color_map=color_map)
    idx = PatchSampler(scene.image, index_mask, windows, SIZE, n_classes=4)
    for i in range(len(rgb)):
        np.testing.assert_array_equal(rgb[i].mask, idx[i].mask)
    assert set(np.unique(np.concatenate([rgb[i].mask.ravel() for i in range(len(rgb))]))) == {0, 1, 2, 3}


def test_unknown_colours_become_background(scene: CoordinateScene) -> None:
    mask = scene.lonlat_mask("rgb.tif", palette=PALETTE)
    sampler = PatchSampler(scene.image, mask, scene.windows([0], [0]), SIZE, color_map=[[255, 0, 0, 5]])
    idx = PatchSampler(scene.image, scene.lonlat_mask("idx.tif"), scene.windows([0], [0], "w2.csv"), SIZE, n_classes=4)
    expected = np.where(idx[0].mask == 1, 5, 0)
    np.testing.assert_array_equal(sampler[0].mask, expected)


def test_mbtiles_image_reads_rgba_and_selected_bands_drop_alpha(scene: CoordinateScene) -> None:
    mbtiles = T.write_mbtiles(scene.image, scene.path("image.mbtiles"))
    windows = scene.windows([5, 300], [17, 200])
    mask = scene.lonlat_mask()
    rgba = PatchSampler(mbtiles, mask, windows, SIZE, n_classes=4)
    rgb = PatchSampler(mbtiles, mask, windows, SIZE, n_classes=4, selected_bands=[1, 2, 3])
    tif = PatchSampler(scene.image, mask, windows, SIZE, n_classes=4)
    for i in range(2):
        assert rgba[i].image.shape == (4, SIZE, SIZE) and (rgba[i].image[3] == 255).all()
        np.testing.assert_array_equal(rgb[i].image, tif[i].image)
        np.testing.assert_array_equal(rgb[i].mask, tif[i].mask)


def test_mbtiles_rgba_mask_uses_its_alpha(scene: CoordinateScene) -> None:
    """An RGBA MBTiles mask: colour map on RGB, alpha marks uncovered pixels."""
    rgb = T.coordinate_bands(scene.size, scene.size, "uint8")
    colours = np.zeros_like(rgb)
    colours[0, :, : scene.size // 2] = 255  # left half red -> class 1
    tif = T.write_raster(scene.path("mask_rgb.tif"), colours, crs=scene.crs, transform=scene.transform)
    mbtiles = T.write_mbtiles(tif, scene.path("mask.mbtiles"))
    with rasterio.open(mbtiles) as src:
        assert src.count == 4
    windows = scene.windows([0, 100], [scene.size // 2 - 32, 0])
    sampler = PatchSampler(scene.image, mbtiles, windows, SIZE, color_map=[[255, 0, 0, 1]])
    assert sampler.aligned
    np.testing.assert_array_equal(sampler[0].mask[:, :32], 1)
    np.testing.assert_array_equal(sampler[0].mask[:, 32:], 0)
    assert (sampler[1].mask == 1).all()


def test_vrt_mosaic_mask(scene: CoordinateScene) -> None:
    """A VRT mosaicking two GeoTIFF halves (as gdalbuildvrt writes) is just another mask path."""
    full = scene.lonlat_mask("full.tif")
    with rasterio.open(full) as src:
        data, transform, crs = src.read(), src.transform, src.crs
    half = data.shape[2] // 2
    left = T.write_raster(scene.path("left.tif"), data[:, :, :half], crs=crs, transform=transform)
    right = T.write_raster(
        scene.path("right.tif"), data[:, :, half:], crs=crs, transform=transform @ Affine.translation(half, 0)
    )
    vrt = T.write_vrt_mosaic(scene.path("mosaic.vrt"), [left, right])
    windows = scene.windows(*random_windows(10, 0, scene.size - SIZE, seed=5))
    from_vrt = PatchSampler(scene.image, vrt, windows, SIZE, n_classes=4)
    from_tif = PatchSampler(scene.image, full, windows, SIZE, n_classes=4)
    for i in range(len(from_vrt)):
        np.testing.assert_array_equal(from_vrt[i].mask, from_tif[i].mask)


def test_striped_and_tiled_images_give_the_same_patches(scene: CoordinateScene) -> None:
    striped = T.write_raster(
        scene.path("striped.tif"),
        T.coordinate_bands(scene.size, scene.size),
        crs=scene.crs,
        transform=scene.transform,
        tiled=False,
    )
    mask = scene.lonlat_mask()
    windows = scene.windows([3, 250], [9, 100])
    a = PatchSampler(striped, mask, windows, SIZE, image_dtype="uint16", n_classes=4)
    for i in range(2):
        r, c = T.decode_coordinates(a[i].image)
        np.testing.assert_array_equal(r, window_coordinates(a[i].row_off, a[i].col_off, SIZE)[0])
        np.testing.assert_array_equal(c, window_coordinates(a[i].row_off, a[i].col_off, SIZE)[1])


@pytest.mark.parametrize(
    ("source", "requested", "expected"),
    [
        ("uint8", "uint8", "uint8"),
        ("uint8", "uint16", "uint16"),
        ("uint8", "float32", "float32"),
        ("uint16", "uint16", "uint16"),
        ("uint16", "float32", "float32"),
        ("uint16", "native", "uint16"),
        ("float32", "float32", "float32"),
        ("int16", "native", "int16"),
    ],
)
def test_image_dtype_accepted(tmp_path: Path, source: str, requested: str, expected: str) -> None:
    data = T.coordinate_bands(32, 32, "uint16").astype(source)
    transform = Affine(1, 0, 0, 0, -1, 32)
    image = T.write_raster(tmp_path / "i.tif", data, crs="EPSG:3857", transform=transform)
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, 32, 32), np.uint8), crs="EPSG:3857", transform=transform)
    patch = PatchSampler(image, mask, T.write_windows_table(tmp_path / "w.csv", [4], [6]), 16, image_dtype=requested)[0]
    assert patch.image.dtype == np.dtype(expected)
    np.testing.assert_array_equal(patch.image, data[:, 4:20, 6:22].astype(expected))


@pytest.mark.parametrize(
    ("source", "requested", "suggestion"),
    [
        ("uint16", "uint8", "'uint16'"),
        ("float32", "uint8", "'float32'"),
        ("float32", "uint16", "'float32'"),
        ("int16", "uint8", "'float32'"),
        ("int16", "uint16", "'float32'"),
    ],
)
def test_lossy_image_dtype_is_refused(tmp_path: Path, source: str, requested: str, suggestion: str) -> None:
    transform = Affine(1, 0, 0, 0, -1, 32)
    image = T.write_raster(tmp_path / "i.tif", np.full((1, 32, 32), 300, source), crs="EPSG:3857", transform=transform)
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, 32, 32), np.uint8), crs="EPSG:3857", transform=transform)
    with pytest.raises(ConfigError, match=f"image_dtype {requested!r}.*{suggestion}"):
        PatchSampler(image, mask, T.write_windows_table(tmp_path / "w.csv", [0], [0]), 16, image_dtype=requested)


def test_unknown_image_dtype(scene: CoordinateScene) -> None:
    with pytest.raises(ConfigError, match="image_dtype 'int8' is not one of"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, image_dtype="int8")


def test_selected_bands(scene: CoordinateScene) -> None:
    sampler = PatchSampler(
        scene.image, scene.lonlat_mask(), scene.windows([7], [9]), SIZE, selected_bands=[2, 1], n_classes=4
    )
    image = sampler[0].image
    assert image.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(image[0], window_coordinates(7, 9, SIZE)[0] % 256)
    with pytest.raises(ConfigError, match=r"selected_bands \[1, 4\] asks for band 4 but .*image.tif has 3 band"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, selected_bands=[1, 4])
    with pytest.raises(ConfigError, match="asks for band 0"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, selected_bands=[0])
    with pytest.raises(OptionError, match="selected_bands entries must be integers"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, selected_bands=["1"])


def test_sequence_indexing(scene: CoordinateScene) -> None:
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0, 10, 20], [1, 11, 21]), SIZE, n_classes=4)
    assert sampler[-1].row_off == 20 and sampler[-3].row_off == 0 and sampler[-1].index == 2
    assert sampler[np.int64(1)].col_off == 11
    with pytest.raises(IndexError):
        sampler[3]
    with pytest.raises(IndexError):
        sampler[-4]
    with pytest.raises(TypeError):
        sampler["0"]  # type: ignore[index]


def test_pickle_holds_no_handle_and_reopens(scene: CoordinateScene) -> None:
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0, 64], [0, 64]), SIZE, n_classes=4)
    first = sampler[1]
    assert len(sampler._readers) == 1
    clone = pickle.loads(pickle.dumps(sampler))
    assert len(clone._readers) == 0
    again = clone[1]
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)


def test_handles_are_reused_per_thread(scene: CoordinateScene) -> None:
    rows, cols = random_windows(24, 0, scene.size - SIZE, seed=7)
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE, n_classes=4)
    serial = [sampler[i] for i in range(len(sampler))]
    assert len(sampler._readers) == 1
    reader = next(iter(sampler._readers.values()))
    sampler[0]
    assert next(iter(sampler._readers.values())) is reader
    results: dict[int, list[np.ndarray]] = {}
    together = threading.Barrier(4)  # all alive at once, so no thread id is reused

    def work(k: int) -> None:
        results[k] = [sampler[i].mask for i in range(k, len(sampler), 4)]
        together.wait()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sampler._readers) == 5
    for k, masks in results.items():
        for j, i in enumerate(range(k, len(sampler), 4)):
            np.testing.assert_array_equal(masks[j], serial[i].mask)


@pytest.mark.parametrize("method", ["bilinear", "nearest", "cubic"])
def test_target_resolution_warps_the_image_like_reproject(scene: CoordinateScene, method: str) -> None:
    """With target_crs/target_resolution the image goes through a WarpedVRT with image_resampling."""
    target_crs, res = "EPSG:32632", 60.0
    mask = scene.lonlat_mask()
    rows, cols = random_windows(6, 0, 200, seed=11)
    sampler = PatchSampler(
        scene.image,
        mask,
        scene.windows(rows, cols),
        32,
        target_crs=target_crs,
        target_resolution=res,
        image_resampling=method,
        image_dtype="uint8",
        n_classes=4,
    )
    grid = sampler.grid
    assert grid.crs == rasterio.crs.CRS.from_user_input(target_crs) and grid.transform.a == res
    with rasterio.open(scene.image) as src:
        expected = np.zeros((3, grid.height, grid.width), np.uint8)
        reproject(
            rasterio.band(src, [1, 2, 3]),
            expected,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=Resampling[method],
        )
        masks = np.zeros((grid.height, grid.width), np.uint8)
    with rasterio.open(mask) as msrc:
        reproject(
            rasterio.band(msrc, 1), masks, dst_transform=grid.transform, dst_crs=grid.crs, resampling=Resampling.nearest
        )
    agree = total = 0
    for i in range(len(sampler)):
        p = sampler[i]
        want = expected[:, p.row_off : p.row_off + 32, p.col_off : p.col_off + 32]
        close = np.abs(p.image.astype(int) - want.astype(int)) <= 1
        agree += int(close.sum())
        total += close.size
        assert (p.mask == masks[p.row_off : p.row_off + 32, p.col_off : p.col_off + 32]).mean() >= 0.995
    assert agree / total >= 0.995, agree / total


def test_image_resampling_is_validated(scene: CoordinateScene) -> None:
    with pytest.raises(
        ConfigError, match=r"image_resampling 'bilinar' is not a rasterio resampling method; choose one of .*bilinear"
    ):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, image_resampling="bilinar")


@pytest.mark.parametrize("bad", [0, -3, [1, 2, 3], "x"])
def test_target_resolution_is_validated(scene: CoordinateScene, bad: object) -> None:
    with pytest.raises(ConfigError, match="target_resolution"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, target_resolution=bad)  # type: ignore[arg-type]


def test_bad_target_crs(scene: CoordinateScene) -> None:
    with pytest.raises(ConfigError, match="target_crs 'EPSG:999999'"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, target_crs="EPSG:999999")


def test_mask_band_and_colour_map_errors_at_construction(scene: CoordinateScene) -> None:
    rgb = scene.lonlat_mask("rgb.tif", palette=PALETTE)
    one = scene.lonlat_mask("one.tif")
    two = T.write_raster(
        scene.path("two.tif"),
        np.zeros((2, 8, 8), np.uint8),
        crs=scene.crs,
        transform=scene.transform @ Affine.scale(64),
    )
    windows = scene.windows([0], [0])
    with pytest.raises(RasterError, match=r"rgb.tif has 3 bands but no color_map was given"):
        PatchSampler(scene.image, rgb, windows, SIZE)
    with pytest.raises(ValueError, match=r"color_map is set but the mask .*one.tif has 1 band"):
        PatchSampler(scene.image, one, windows, SIZE, color_map=[[1, 2, 3, 1]])
    with pytest.raises(ValueError, match=r"color_map is set but the mask .*two.tif has 2 band"):
        PatchSampler(scene.image, two, windows, SIZE, color_map=[[1, 2, 3, 1]])
    with pytest.raises(ValueError, match=r"two.tif has 2 bands but no color_map"):
        PatchSampler(scene.image, two, windows, SIZE)


def test_non_overlapping_mask_is_refused_with_both_bounds(scene: CoordinateScene) -> None:
    far = T.write_lonlat_mask(scene.path("far.tif"), (-80, 10, -79, 11), 0.01, cell=0.1, n_classes=2)
    with pytest.raises(
        RasterError, match=r"far.tif does not overlap the image .*image.tif: .*image bounds are \(.*mask bounds are"
    ):
        PatchSampler(scene.image, far, scene.windows([0], [0]), SIZE)


def test_low_coverage_warns_with_percentage(scene: CoordinateScene) -> None:
    left, bottom, right, top = scene.lonlat_bounds
    part = T.write_lonlat_mask(
        scene.path("part.tif"), (left, bottom, left + (right - left) / 4, top), 0.0003, cell=0.01, n_classes=2
    )
    with pytest.warns(UserWarning, match=r"part.tif covers only 2\d\.\d% of the image"):
        sampler = PatchSampler(scene.image, part, scene.windows([0, 0], [0, 400]), SIZE)
    assert (sampler[1].mask == 0).all()


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("patch_size", 0, ConfigError, "patch_size must be >= 1"),
        ("patch_size", -4, ConfigError, "patch_size must be >= 1"),
        ("patch_size", 2.5, OptionTypeError, "patch_size must be an integer"),
        ("patch_size", True, OptionTypeError, "patch_size must be an integer"),
        ("n_classes", 0, ConfigError, "n_classes must be >= 1"),
        ("n_classes", "2", OptionTypeError, "n_classes must be an integer"),
        ("crops_layer", 3, OptionTypeError, "crops_layer must be a string"),
        ("col_off_key", "", ConfigError, "col_off_key must be a non-empty column name"),
        ("window_index_cache", "index.json", ConfigError, "window_index_cache .* must end in .csv or .parquet"),
        ("mask_fill_value", -1, ConfigError, "mask_fill_value must be >= 0"),
    ],
)
def test_option_values_are_validated(
    scene: CoordinateScene, option: str, value: object, error: type, message: str
) -> None:
    kwargs: dict[str, object] = {"patch_size": SIZE, option: value}
    with pytest.raises(error, match=message):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), **kwargs)  # type: ignore[arg-type]


def test_missing_and_unreadable_files(scene: CoordinateScene, tmp_path: Path) -> None:
    mask, windows = scene.lonlat_mask(), scene.windows([0], [0])
    with pytest.raises(ConfigError, match=r"image_path '.*nope.tif' does not exist"):
        PatchSampler(tmp_path / "nope.tif", mask, windows, SIZE)
    with pytest.raises(ConfigError, match=r"mask_path '.*nope.tif' does not exist"):
        PatchSampler(scene.image, tmp_path / "nope.tif", windows, SIZE)
    text = tmp_path / "text.tif"
    text.write_text("not a raster")
    with pytest.raises(OSError, match=r"image_path '.*text.tif' cannot be opened as a raster"):
        PatchSampler(text, mask, windows, SIZE)
    with pytest.raises(OptionError, match="image_path must be a path"):
        PatchSampler(3, mask, windows, SIZE)  # type: ignore[arg-type]


def test_unknown_keyword_is_a_type_error(scene: CoordinateScene) -> None:
    with pytest.raises(TypeError):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, n_clases=2)  # type: ignore[call-arg]


def test_read_errors_name_file_and_window(scene: CoordinateScene) -> None:
    last = scene.size - SIZE
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0, last], [0, last]), SIZE, n_classes=4)
    data = scene.image.read_bytes()
    scene.image.write_bytes(data[: len(data) // 3])  # truncate the later tiles away
    with pytest.raises(OSError, match=rf"image .*image.tif failed for the window row_off={last}, col_off={last}"):
        for i in range(len(sampler)):
            sampler[i]


def test_image_without_warp_keeps_reference_grid(scene: CoordinateScene) -> None:
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, n_classes=4)
    with rasterio.open(scene.image) as src:
        assert sampler.grid.transform == src.transform and (sampler.grid.height, sampler.grid.width) == src.shape
    with rasterio.open(scene.lonlat_mask()) as src, WarpedVRT(src, crs=scene.crs) as vrt:
        assert vrt.crs == sampler.grid.crs


def test_gdal_options_hold_in_every_reader_thread(scene: CoordinateScene) -> None:
    """crossgeo's rasterio.Env stays entered in each thread that reads (not restored to defaults)."""
    from rasterio.env import get_gdal_config

    from crossgeo.io import GDAL_OPTIONS

    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, n_classes=4)
    seen: list[object] = []

    def work() -> None:
        sampler[0]
        sampler[0]
        seen.append(get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN"))
        seen.append(get_gdal_config("GDAL_HTTP_MAX_RETRY"))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [GDAL_OPTIONS["GDAL_DISABLE_READDIR_ON_OPEN"], GDAL_OPTIONS["GDAL_HTTP_MAX_RETRY"]]


def test_corrupt_mbtiles_tile_raises_naming_file_window_and_gdal(scene: CoordinateScene) -> None:
    mbtiles = T.write_mbtiles(scene.image, scene.path("image.mbtiles"))
    T.corrupt_mbtiles_tile(mbtiles, 12)
    corners = [0, 256]
    windows = scene.windows([r for r in corners for _ in corners], [c for _ in corners for c in corners])
    sampler = PatchSampler(mbtiles, scene.lonlat_mask(), windows, 256, n_classes=4, selected_bands=[1, 2, 3])
    failures = []
    for i in range(len(sampler)):
        try:
            sampler[i]
        except OSError as error:
            failures.append((i, str(error)))
    assert len(failures) == 1
    i, message = failures[0]
    r, c = sampler.row_off[i], sampler.col_off[i]
    assert f"image {mbtiles} failed for the window row_off={r}, col_off={c}" in message
    assert "PNG" in message or "png" in message  # GDAL's own words are kept


def test_on_read_error_skip_substitutes_the_next_window_and_counts(
    scene: CoordinateScene, caplog: pytest.LogCaptureFixture
) -> None:
    mbtiles = T.write_mbtiles(scene.image, scene.path("image.mbtiles"))
    T.corrupt_mbtiles_tile(mbtiles, 12)
    corners = [0, 256]
    windows = scene.windows([r for r in corners for _ in corners], [c for _ in corners for c in corners])
    kwargs = {"n_classes": 4, "selected_bands": [1, 2, 3]}
    strict = PatchSampler(mbtiles, scene.lonlat_mask(), windows, 256, **kwargs)  # type: ignore[arg-type]
    bad = []
    for i in range(4):
        try:
            strict[i]
        except OSError:
            bad.append(i)
    skipping = PatchSampler(mbtiles, scene.lonlat_mask(), windows, 256, on_read_error="skip", **kwargs)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        patches = [skipping[i] for i in range(4)]
    assert skipping.skipped == 1 and "is unreadable and is replaced" in caplog.text
    assert skipping.unreadable == {bad[0]}
    replacement = (bad[0] + 1) % 4
    assert patches[bad[0]].index == replacement
    np.testing.assert_array_equal(patches[bad[0]].image, strict[replacement].image)
    for i in set(range(4)) - {bad[0]}:
        assert patches[i].index == i
    with pytest.raises(ConfigError, match="on_read_error 'ignore' is not one of 'raise', 'skip'"):
        PatchSampler(mbtiles, scene.lonlat_mask(), windows, 256, on_read_error="ignore")


@pytest.mark.parametrize("view", T.MASK_VIEWS)
def test_interior_windows_warp_without_alpha_and_match_the_alpha_path(
    scene: CoordinateScene, view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows well inside the mask skip the alpha band (where they can); nodata still becomes the fill value."""
    T.force_mask_view(monkeypatch, view)
    left, bottom, right, top = scene.lonlat_bounds
    bounds = (left - 0.02, bottom - 0.02, right + 0.02, top + 0.02)
    path = T.write_lonlat_mask(scene.path("nd.tif"), bounds, 0.0002, cell=0.01, n_classes=4, nodata=3)
    rows, cols = random_windows(25, -SIZE // 2, scene.size - SIZE // 2, seed=9)
    sampler = PatchSampler(scene.image, path, scene.windows(rows, cols), SIZE, n_classes=4, mask_fill_value=9)
    assert sampler.mask_view == view
    fast = [sampler[i] for i in range(len(sampler))]
    reader = next(iter(sampler._readers.values()))
    assert reader.mask_interior is not None
    assert all(reader.mask_interior.covers(int(r), int(c)) for r, c in zip(rows, cols))
    reader.mask_interior = None  # force the alpha-band warp
    for i, patch in enumerate(fast):
        slow = sampler[i]
        np.testing.assert_array_equal(patch.mask, slow.mask)
        np.testing.assert_array_equal(patch.mask_valid, slow.mask_valid)
    masks = np.concatenate([p.mask.ravel() for p in fast])
    assert 3 not in masks and 9 in masks  # class 3 is the mask's nodata: filled, never a class


def test_interior_box_test_agrees_with_the_polygon(scene: CoordinateScene) -> None:
    """The inscribed-box shortcut of the interior test never says "inside" where the polygon does not."""
    import shapely

    left, bottom, right, top = scene.lonlat_bounds
    # A mask covering only part of the image, so windows fall inside, across and outside its edge.
    bounds = (left - 0.02, bottom + (top - bottom) / 3, (left + right) / 2, top + 0.02)
    path = T.write_lonlat_mask(scene.path("part.tif"), bounds, 0.0002, cell=0.01, n_classes=4)
    rows, cols = random_windows(400, -SIZE // 2, scene.size - SIZE // 2, seed=11)
    with pytest.warns(UserWarning):
        sampler = PatchSampler(scene.image, path, scene.windows(rows, cols), SIZE, n_classes=4)
    sampler[0]
    interior = next(iter(sampler._readers.values())).mask_interior
    top_, left_, bottom_, right_ = interior.box
    assert bottom_ - top_ > SIZE and right_ - left_ > SIZE  # a box that windows fit in
    verdicts = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        exact = bool(interior.polygon.contains(shapely.box(c, r, c + SIZE, r + SIZE)))
        assert interior.covers(r, c) == exact, (r, c)
        verdicts.append(exact)
    assert 0 < sum(verdicts) < len(verdicts)


def test_warped_blocks_equal_the_whole_grid_view_on_every_window(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block cache (``"blocks"``) reads every window exactly as the whole-grid view does (both exact warps),
    and agrees with the per-pixel oracle at least as well as the per-window warp."""
    mask = scene.lonlat_mask()
    rows, cols = random_windows(60, -SIZE // 2, scene.size - SIZE // 2, seed=11)
    reference = reproject_onto_image(mask, scene.image)
    read: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for view in T.MASK_VIEWS:
        T.force_mask_view(monkeypatch, view, block=40)
        sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
        assert sampler.mask_view == view
        read[view] = [sampler.read_mask(int(r), int(c)) for r, c in zip(rows, cols)]
        read[view] += [sampler.read_mask(int(r), int(c)) for r, c in zip(rows, cols)]  # now from cached blocks
    agree = {view: 0 for view in T.MASK_VIEWS}
    for i, (row_off, col_off) in enumerate(zip(rows.tolist(), cols.tolist())):
        for again in (i, i + len(rows)):
            np.testing.assert_array_equal(read["blocks"][again][0], read["grid"][i][0])
            np.testing.assert_array_equal(read["blocks"][again][1], read["grid"][i][1])
        rr, cc = window_coordinates(row_off, col_off, SIZE)
        inside = (rr >= 0) & (rr < scene.size) & (cc >= 0) & (cc < scene.size)
        truth = reference[np.clip(rr, 0, scene.size - 1), np.clip(cc, 0, scene.size - 1)]
        for view in T.MASK_VIEWS:
            agree[view] += int(np.count_nonzero(read[view][i][0][inside] == truth[inside]))
    assert agree["blocks"] >= agree["window"], agree
    assert crossgeo.io.mask_blocks.warped > 0


def test_warped_block_cache_stays_within_its_byte_bound(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bound smaller than the warped grid evicts least recently used blocks; reads stay identical."""
    mask = scene.lonlat_mask(margin=-0.005)  # smaller than the image: blocks at its edges carry alpha
    rows, cols = random_windows(30, -SIZE // 2, scene.size - SIZE // 2, seed=12)
    T.force_mask_view(monkeypatch, "grid")
    grid = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
    want = [grid.read_mask(int(r), int(c)) for r, c in zip(rows, cols)]
    T.force_mask_view(monkeypatch, "blocks", block=32)
    sampler = PatchSampler(scene.image, mask, scene.windows(rows, cols), SIZE, n_classes=4)
    assert sampler.mask_view == "blocks"
    cache = crossgeo.io.MaskBlockCache(6 * 32 * 32)  # six 32^2 uint8 blocks without invalid pixels
    monkeypatch.setattr(crossgeo.io, "mask_blocks", cache)
    for (r, c), (classes, valid) in zip(zip(rows, cols), want):
        got, got_valid = sampler.read_mask(int(r), int(c))
        np.testing.assert_array_equal(got, classes)
        np.testing.assert_array_equal(got_valid, valid)
        assert cache.bytes <= cache.max_bytes and len(cache) <= 6
        # The bound counts what is held: no block is a view keeping a larger read (its alpha band) alive.
        assert all(data.base is None for data, _ in cache._blocks.values())
    assert cache.warped > 6


def test_mask_view_prefers_the_block_cache_over_per_window_warps(scene: CoordinateScene) -> None:
    """Too large for GDAL's cache share, small enough for crossgeo's block cache: ``"blocks"``."""
    grid = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE).grid
    kept = scene.size * scene.size * 2  # one uint8 band and a validity byte
    view = crossgeo.io.mask_view_for
    assert view(grid, 2, "uint8", cache_bytes=0, block_cache_bytes=kept) == "blocks"
    assert view(grid, 2, "uint8", cache_bytes=0, block_cache_bytes=kept - 1) == "window"
    assert view(grid, 2, "uint8", cache_bytes=0, block_cache_bytes=0) == "window"
    assert view(grid, 2, "uint8", cache_bytes=0, block_cache_bytes=kept, views=2) == "window"


@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_a_bad_mask_cache_size_is_refused_at_construction(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CROSSGEO_MASK_CACHE_BYTES", value)
    monkeypatch.setattr(crossgeo.io, "mask_blocks", crossgeo.io.MaskBlockCache())
    monkeypatch.setattr(crossgeo.io, "LOOKUP_VIEW", False)  # the warps' views; the lookup and table need no cache
    monkeypatch.setattr(crossgeo.io, "TABLE_VIEW", False)
    monkeypatch.setattr(crossgeo.io, "GRID_VIEW_CACHE_SHARE", 0.0)
    with pytest.raises(ConfigError, match=r"CROSSGEO_MASK_CACHE_BYTES=.* is not a byte count"):
        PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, n_classes=4)
    monkeypatch.setenv("CROSSGEO_MASK_CACHE_BYTES", "0")
    monkeypatch.setattr(crossgeo.io, "mask_blocks", crossgeo.io.MaskBlockCache())
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows([0], [0]), SIZE, n_classes=4)
    assert sampler.mask_view == "window"  # 0 turns the block cache off


def test_default_n_classes_warns_once_when_it_binarises_class_indices(scene: CoordinateScene) -> None:
    """A single-band mask of classes 0..3 without n_classes is binarised as the original does, with a warning."""
    rows = np.indices((scene.size, scene.size))[0]
    classes = scene.aligned_mask((rows % 4)[None].astype("uint8"), "classes.tif")
    windows = scene.windows([0, 64, 128], [0, 0, 0])
    sampler = PatchSampler(scene.image, classes, windows, SIZE)
    with pytest.warns(UserWarning, match=r"holds 4 values \(0, 1, 2, 3\) .*n_classes is 2 .*set n_classes: 4"):
        patch = sampler[0]
    np.testing.assert_array_equal(patch.mask, (window_coordinates(0, 0, SIZE)[0] % 4 != 0).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler[1]  # once per sampler
        binary = scene.aligned_mask((255 * (rows % 2))[None].astype("uint8"), "binary.tif")
        patch = PatchSampler(scene.image, binary, windows, SIZE)[2]  # 0/255: a binary mask, no warning
        assert set(np.unique(patch.mask).tolist()) == {0, 1}
        PatchSampler(scene.image, classes, windows, SIZE, n_classes=4)[0]  # classes kept: no warning
