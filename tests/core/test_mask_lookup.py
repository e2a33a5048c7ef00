"""The ``"lookup"`` mask view: a warp that separates into rows and columns, read without a warp.

Every case compares it with the whole-grid view (GDAL's exact warp, `crossgeo.io.EXACT_TOLERANCE`) on
the raw read (data bands and invalid pixels) of the whole grid and a margin around it, and on decoded
patches, including grids whose pixel centres fall exactly on the mask's pixel edges (ties).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.testing import CoordinateScene

SIZE = 64
PAD = 40


def sampler(
    scene: CoordinateScene, mask: Path, view: str, monkeypatch: pytest.MonkeyPatch, whole: bool = False, **options: Any
) -> Any:
    """``whole``: the lookup view keeps the whole mask in memory (else it reads a window of it per read)."""
    T.force_mask_view(monkeypatch, view)
    if whole:
        monkeypatch.setattr(crossgeo.io.mask_blocks, "max_bytes", 2**40)
    return PatchSampler(scene.image, mask, scene.windows([0], [0]), SIZE, n_classes=256, out_of_range="fill", **options)


def raw(sampler: PatchSampler, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    data, invalid = sampler._reader().read_mask(row_off, col_off, height, width)
    return data, np.zeros((height, width), bool) if invalid is None else invalid


def assert_same_as_the_grid_view(
    scene: CoordinateScene, mask: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> None:
    grid = sampler(scene, mask, "grid", monkeypatch, **options)
    for whole in (False, True):
        lookup = sampler(scene, mask, "lookup", monkeypatch, whole, **options)
        assert (lookup.mask_view, grid.mask_view, lookup._plan.mask.lookup_whole) == ("lookup", "grid", whole)
        assert_same_reads(scene, lookup, grid)


def assert_same_reads(scene: CoordinateScene, lookup: PatchSampler, grid: PatchSampler) -> None:
    n = scene.size + 2 * PAD
    (want, want_invalid), (got, got_invalid) = raw(grid, -PAD, -PAD, n, n), raw(lookup, -PAD, -PAD, n, n)
    np.testing.assert_array_equal(got_invalid, want_invalid)
    np.testing.assert_array_equal(got, want)  # NaN equals NaN here
    rng = np.random.default_rng(3)
    for row_off, col_off in rng.integers(-SIZE, scene.size, (40, 2)).tolist():
        np.testing.assert_array_equal(
            raw(lookup, row_off, col_off, SIZE, SIZE)[0], raw(grid, row_off, col_off, SIZE, SIZE)[0]
        )
        a, b = lookup.read(row_off, col_off), grid.read(row_off, col_off)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.mask_valid, b.mask_valid)


@pytest.mark.parametrize(
    "options",
    [{}, {"resolution": 0.00005}, {"nodata": 3}, {"margin": -0.01}, {"margin": -0.01, "nodata": 0}],
    ids=["lonlat", "finer", "nodata", "partial", "partial-nodata-0"],
)
def test_a_lonlat_mask_on_web_mercator_reads_as_the_exact_warp(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    assert_same_as_the_grid_view(scene, scene.lonlat_mask(**options), monkeypatch)


def test_a_colour_coded_lonlat_mask_reads_as_the_exact_warp(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    mask = scene.lonlat_mask("rgb.tif", palette=T.PALETTE)
    colours = [[*colour, c] for c, colour in enumerate(T.PALETTE)]
    assert_same_as_the_grid_view(scene, mask, monkeypatch, color_map=colours)


@pytest.mark.parametrize(
    "where",
    [
        Affine.translation(-0.5, -0.5),  # every pixel centre on a mask pixel edge
        Affine.translation(0.5, 0.5),  # ... and the mask's left and top edges on pixel centres
        Affine.scale(0.5),  # twice as fine: centres on edges again
        Affine.translation(-3, -3) @ Affine.scale(0.5),
        Affine.translation(-10, -7) @ Affine.scale(3),
        Affine.translation(-10.5, -7.5) @ Affine.scale(2),
        Affine.translation(-1 / 3, -2 / 3),
        Affine.translation(-20, 280) @ Affine.scale(1, -1),  # south-up
    ],
    ids=["half", "half-edges", "finer", "finer-shifted", "coarser", "coarser-half", "third", "south-up"],
)
def test_a_mask_in_the_image_crs_on_another_grid_reads_as_the_exact_warp(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, where: Affine
) -> None:
    classes = (np.arange(300 * 300).reshape(1, 300, 300) % 251).astype(np.uint8)
    mask = T.write_raster(scene.path("other.tif"), classes, crs=scene.crs, transform=scene.transform @ where)
    assert_same_as_the_grid_view(scene, mask, monkeypatch)


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_nodata_of_other_dtypes_reads_as_the_exact_warp(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    classes = (np.arange(300 * 300).reshape(1, 300, 300) % 251).astype(dtype)
    if dtype == "float32":
        classes[classes % 7 == 0], nodata = np.nan, float("nan")
        where = Affine.translation(-0.5, -0.5) @ Affine.scale(1.5)
    else:
        classes, nodata, where = classes * 3, 0, Affine.translation(-0.25, -0.75) @ Affine.scale(0.75)
    mask = T.write_raster(
        scene.path("nd.tif"), classes, crs=scene.crs, transform=scene.transform @ where, nodata=nodata
    )
    assert_same_as_the_grid_view(scene, mask, monkeypatch)


def test_warps_that_do_not_separate_keep_their_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UTM image with an EPSG:4326 mask, or a mask with an alpha band, is warped as before."""
    T.force_mask_view(monkeypatch, "lookup")
    utm = Affine(10, 0, 500000, 0, -10, 5000000)
    image = T.write_raster(tmp_path / "utm.tif", T.coordinate_bands(128, 128, "uint8"), crs="EPSG:32632", transform=utm)
    lonlat = Affine(0.0001, 0, 8.99, 0, -0.0001, 45.17)
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, 200, 200), np.uint8), crs="EPSG:4326", transform=lonlat)
    windows = T.write_windows_table(tmp_path / "w.csv", [0], [0])
    assert PatchSampler(image, mask, windows, SIZE).mask_view == "window"
    (tmp_path / "scene").mkdir()
    scene = CoordinateScene(tmp_path / "scene", 128)
    alpha = T.write_raster(
        tmp_path / "alpha.tif",
        np.stack([np.ones((200, 200), np.uint8), np.full((200, 200), 255, np.uint8)]),
        crs=scene.crs,
        transform=scene.transform @ Affine.scale(0.75),
        alpha="YES",  # GTiff ExtraSamples: band 2 is alpha
    )
    assert PatchSampler(scene.image, alpha, scene.windows([0], [0]), SIZE).mask_view == "window"


def test_lookup_axes_of_the_web_mercator_scene_match_a_per_pixel_transform(scene: CoordinateScene) -> None:
    """The axes are those of transforming each pixel centre: checked against every pixel of the grid."""
    import rasterio
    from rasterio.warp import transform as warp_transform

    mask = scene.lonlat_mask()
    with rasterio.open(mask) as src, rasterio.open(scene.image) as image:
        axes = crossgeo.io.lookup_axes(src, crossgeo.Grid.of(image))
        assert axes is not None
        rows, cols = np.mgrid[0 : scene.size, 0 : scene.size]
        xs, ys = scene.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        lon, lat = warp_transform(scene.crs, src.crs, xs, ys)
        mcol, mrow = ~src.transform @ (np.asarray(lon), np.asarray(lat))
    np.testing.assert_array_equal(
        np.floor(mrow + 1e-10).reshape(rows.shape), np.broadcast_to(axes[0][:, None], rows.shape)
    )
    np.testing.assert_array_equal(np.floor(mcol + 1e-10).reshape(rows.shape), np.broadcast_to(axes[1], rows.shape))


@pytest.mark.parametrize("whole", [False, True], ids=["windows", "whole"])
def test_threads_read_the_lookup_view_alike(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Threads that come and go (each with its own reader, or adopting an ended thread's) read the same patches."""
    T.force_mask_view(monkeypatch, "lookup")
    monkeypatch.setattr(crossgeo.io, "mask_blocks", crossgeo.io.MaskBlockCache(2**40 if whole else 0))
    rng = np.random.default_rng(8)
    offsets = rng.integers(-SIZE // 2, scene.size - SIZE // 2, (24, 2)).tolist()
    lookup = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(*zip(*offsets)), SIZE, n_classes=4)
    assert lookup.mask_view == "lookup"
    want = [lookup[i].mask for i in range(len(lookup))]
    got: dict[int, np.ndarray] = {}

    def read(first: int) -> None:
        for i in range(first, len(lookup), 4):
            got[i] = lookup[i].mask

    for _ in range(3):  # churn: new threads each round
        threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got) == list(range(len(lookup)))
        for i, mask in got.items():
            np.testing.assert_array_equal(mask, want[i])
        got.clear()


def test_a_repeated_window_is_a_copy_of_the_kept_one(scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window read again (a warm epoch) comes from `mask_blocks`, as read the first time, and is the reader's own."""
    mask = scene.lonlat_mask(margin=-0.01)  # windows at its edges carry invalid pixels
    grid = sampler(scene, mask, "grid", monkeypatch)
    cache = crossgeo.io.MaskBlockCache(2**40)
    monkeypatch.setattr(crossgeo.io, "mask_blocks", cache)
    lookup = sampler(scene, mask, "lookup", monkeypatch, whole=True)
    offsets = np.random.default_rng(5).integers(-SIZE, scene.size, (12, 2)).tolist()
    first = [raw(lookup, r, c, SIZE, SIZE) for r, c in offsets]
    assert any(invalid.any() for _, invalid in first) and not all(invalid.any() for _, invalid in first)
    kept = len(cache)
    assert kept == 1 + len(offsets)  # the whole mask and every window
    for data, invalid in first:  # a caller writing into a read changes nothing kept
        data[...] = 7
        invalid[...] = True
    for (r, c), (want, want_invalid) in zip(offsets, (raw(grid, r, c, SIZE, SIZE) for r, c in offsets)):
        got, got_invalid = raw(lookup, r, c, SIZE, SIZE)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_invalid, want_invalid)
    assert len(cache) == kept  # read back, not looked up again


def test_kept_windows_never_push_out_a_whole_mask(scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows fill only the room the whole masks leave: with two masks kept and room for two windows, one
    mask's windows do not evict the other's whole mask (nor their own); the rest are looked up each time."""
    masks = [scene.lonlat_mask(), scene.lonlat_mask("finer.tif", resolution=0.0002)]
    grids = [sampler(scene, mask, "grid", monkeypatch) for mask in masks]
    lookups = [sampler(scene, mask, "lookup", monkeypatch, whole=True) for mask in masks]
    sources = [lookup._reader().mask for lookup in lookups]
    wholes = [source._whole_source() for source in sources]
    assert wholes[0] is not None and wholes[1] is not None
    room = 2 * SIZE * SIZE
    cache = crossgeo.io.MaskBlockCache(wholes[0].nbytes + wholes[1].nbytes + room)
    monkeypatch.setattr(crossgeo.io, "mask_blocks", cache)
    offsets = [(0, 0), (10, 20), (30, 5), (60, 60), (0, 0), (60, 60)]
    for lookup, grid in zip(lookups, grids):
        for r, c in offsets:
            got, got_invalid = raw(lookup, r, c, SIZE, SIZE)
            want, want_invalid = raw(grid, r, c, SIZE, SIZE)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_invalid, want_invalid)
            assert cache.bytes <= cache.max_bytes
            assert all(
                (source.block_source, -1, -1) in cache._blocks for source in sources[: lookups.index(lookup) + 1]
            )
    assert len(cache) == 4  # two whole masks and the first mask's first two windows


def _mask_in_child(sampler: PatchSampler, index: int, out: Any) -> None:
    out.put(sampler[index].mask)


def test_a_forked_child_reads_a_vrt_mosaic_mask_the_parent_kept_whole(tmp_path: Path) -> None:
    """GDAL 3.10 reads a large VRT request on a process-wide thread pool; a forked DataLoader worker inherits
    the pool without its threads, so its first whole-mask read (the lookup view keeps a mask whole) waited
    forever (run with ``VRT_NUM_THREADS=ALL_CPUS`` in the environment, which wins over crossgeo's default, to
    see it). crossgeo reads VRT sources in the reading thread (``VRT_NUM_THREADS=1``)."""
    import multiprocessing

    from rasterio.warp import transform_bounds

    transform = T.web_mercator_transform(12, 2176, 1460)
    image = T.write_raster(tmp_path / "image.tif", T.coordinate_bands(512, 512), crs="EPSG:3857", transform=transform)
    left, bottom, right, top = transform_bounds("EPSG:3857", "EPSG:4326", *rasterio_bounds(transform, 512))
    whole = T.write_lonlat_mask(
        tmp_path / "mask.tif", (left - 0.01, bottom - 0.01, right + 0.01, top + 0.01), 0.00005, cell=0.002, n_classes=4
    )
    with rasterio.open(whole) as src:
        height, width = src.height, src.width
    halves = [
        T.write_scene_cut(whole, tmp_path / "west.tif", 0, 0, height, width // 2),
        T.write_scene_cut(whole, tmp_path / "east.tif", 0, width // 2, height, width - width // 2),
    ]
    vrt = T.write_vrt_mosaic(tmp_path / "mask.vrt", halves)
    windows = T.write_windows_table(tmp_path / "w.csv", [0, 256], [0, 256])
    sampler = PatchSampler(image, vrt, windows, 128, n_classes=4, image_dtype="uint16")
    assert (sampler.mask_view, sampler._plan.mask.lookup_whole) == ("lookup", True)
    expected = sampler[1].mask
    crossgeo.io.mask_blocks.clear()
    sampler[0]  # the parent reads the whole mosaic (on GDAL's VRT pool, where it has one)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_mask_in_child, args=(sampler, 1, out))
    crossgeo.io.mask_blocks.clear()  # the child must read the mosaic itself
    child.start()
    try:
        got = out.get(timeout=60)
    finally:
        child.kill()
        child.join(10)
    np.testing.assert_array_equal(got, expected)


def rasterio_bounds(transform: Affine, size: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a ``size``-pixel square grid."""
    left, top = transform * (0, 0)
    right, bottom = transform * (size, size)
    return left, bottom, right, top


def test_kept_windows_take_at_most_their_share_of_the_bound(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows fill at most `MaskBlockCache.window_share` of the bound (a process reading thousands of windows
    once each kept them all), counted as they come and go; reads equal the grid view's either way."""
    mask = scene.lonlat_mask()
    grid = sampler(scene, mask, "grid", monkeypatch)
    lookup = sampler(scene, mask, "lookup", monkeypatch, whole=True)
    whole = lookup._reader().mask._whole_source()
    assert whole is not None
    window = SIZE * SIZE * whole.itemsize  # windows inside the mask carry no validity array
    cache = crossgeo.io.MaskBlockCache(whole.nbytes + 40 * window)
    cache.window_share = 10.5 * window / cache.max_bytes  # room for 40 windows, a share of 10
    monkeypatch.setattr(crossgeo.io, "mask_blocks", cache)
    offsets = [(r, c) for r in range(0, scene.size - SIZE, 16) for c in range(0, scene.size - SIZE, 16)][:40]
    for r, c in offsets * 2:
        got, got_invalid = raw(lookup, r, c, SIZE, SIZE)
        want, want_invalid = raw(grid, r, c, SIZE, SIZE)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_invalid, want_invalid)
    kept = 10
    assert (len(cache), cache.window_bytes) == (1 + kept, kept * window)  # the whole mask and the first windows
    cache.put((-5, 0, 0), (np.zeros(cache.max_bytes - whole.nbytes - 3 * window, np.uint8), None))  # evicts windows
    windows = [key for key in cache._blocks if len(key) == 5]
    assert cache.window_bytes == len(windows) * window and len(windows) < kept
    cache.clear()
    assert (len(cache), cache.bytes, cache.window_bytes) == (0, 0, 0)
