"""`crossgeo.io.PlannedBlocks`: a reader told the windows it will read keeps the image blocks it needs again.

The image encodes each pixel's (row, col), so a read proves where its pixels came from; every read must equal a
plain window read whether the plan is followed, left, or never given, and a followed plan must decode fewer
blocks than the plain least-recently-used order would.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.grid import BlockLayout

SIZE = 40
UTM = Affine(10, 0, 600000.0, 0, -10, 5600000.0)


def tiled_image(folder: Path, height: int = 200, width: int = 232) -> Path:
    """A uint16 image of 32^2 tiles (the last row and column of tiles partial) encoding (row, col)."""
    return T.write_raster(
        folder / "image.tif", T.coordinate_bands(height, width), crs="EPSG:32632", transform=UTM, blocksize=32
    )


def windows(n: int, seed: int, height: int = 200, width: int = 232) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, height - SIZE + 1, n), rng.integers(0, width - SIZE + 1, n)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def lru_decodes(order: list[tuple[int, int]], capacity: int, block: int = 32) -> int:
    cache: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
    misses = 0
    for row_off, col_off in order:
        for key in [(r, c) for r in range(row_off // block, (row_off + SIZE - 1) // block + 1)
                    for c in range(col_off // block, (col_off + SIZE - 1) // block + 1)]:  # fmt: skip
            if key in cache:
                cache.move_to_end(key)
                continue
            misses += 1
            cache[key] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return misses


@pytest.mark.parametrize("plan", ["followed", "left", "none"])
def test_planned_reads_equal_window_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str) -> None:
    """Reads through the kept blocks equal window reads (partial edge tiles included, a window past the raster
    declined), the blocks kept stay within the capacity, and a followed plan decodes fewer blocks than the
    least-recently-used order would with the same room (the rule GDAL's block cache follows)."""
    image = tiled_image(tmp_path)
    monkeypatch.setattr(crossgeo.io, "PLANNED_BLOCK_BYTES", 12 * 3 * 32 * 32 * 2)  # room for 12 blocks
    order = [*windows(300, seed=4), (160, 192), (0, 0)]  # the last row and column of (partial) tiles
    with rasterio.open(image) as src:
        layout = BlockLayout.of(src)
        assert layout is not None and (layout.height, layout.width) == (32, 32)
        blocks = crossgeo.io.PlannedBlocks(src, [1, 2, 3], np.dtype("uint16"), layout)
        assert blocks.capacity == 12
        if plan != "none":
            blocks.plan(order if plan == "followed" else order[:100] + order[150:], SIZE)
        for row_off, col_off in order:
            got = blocks.read(row_off, col_off, SIZE, SIZE)
            want = src.read([1, 2, 3], window=Window(col_off, row_off, SIZE, SIZE))
            assert got is not None and got.dtype == np.uint16
            np.testing.assert_array_equal(got, want, err_msg=str((row_off, col_off)))
            assert len(blocks.blocks) <= blocks.capacity
        assert blocks.read(180, 10, SIZE, SIZE) is None  # past the bottom edge: the plain read fills it
    lru = lru_decodes(order, 12)
    if plan == "followed":
        assert blocks.decoded < 0.8 * lru, (blocks.decoded, lru)
    elif plan == "none":
        assert blocks.decoded == lru  # no future known: the least recently used block goes first
    else:
        assert 0.8 * lru < blocks.decoded < lru  # a third of the reads planned


@pytest.fixture
def gdal_cache() -> Iterator[None]:
    """GDAL's block cache as it was before the test (a plan lowers it for the whole process)."""
    before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    yield
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", before)


def test_a_sampler_told_its_windows_reads_the_same_patches(tmp_path: Path, gdal_cache: None) -> None:
    """`PatchSampler.plan_reads`: the image's reader keeps blocks for the windows named, in their order, and
    lowers GDAL's block cache; the patches equal those of a sampler never told, in order or not."""
    image = tiled_image(tmp_path)
    mask = T.write_raster(tmp_path / "mask.tif", (T.coordinate_bands(200, 232)[:1] % 5).astype("uint8"),
                          crs="EPSG:32632", transform=UTM)  # fmt: skip
    order = windows(60, seed=8)
    table = T.write_windows_table(tmp_path / "w.csv", [r for r, _ in order], [c for _, c in order])
    told = PatchSampler(image, mask, table, SIZE, n_classes=5, image_dtype="uint16")
    plain = PatchSampler(image, mask, table, SIZE, n_classes=5, image_dtype="uint16")
    told.plan_reads(list(range(0, 60, 2)))
    reader = told._reader().images[0]
    assert reader.planned is not None
    assert int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) <= crossgeo.io.PLANNED_GDAL_CACHE
    for index in [*range(0, 60, 2), 5, 7, 0]:  # the plan, then off it
        a, b = told[index], plain[index]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        row_off, col_off = order[index]
        assert (a.image[0] == np.arange(row_off, row_off + SIZE)[:, None]).all()  # band 1 is the row
        assert (a.image[1] == np.arange(col_off, col_off + SIZE)).all()  # band 2 the column
    assert reader.planned.decoded > 0


def test_mbtiles_images_keep_their_tiles_and_vrt_mosaics_do_not(tmp_path: Path, gdal_cache: None) -> None:
    """The original's MBTiles image (GDAL decodes it tile by tile) keeps decoded tiles for a plan and reads the
    patches an untold sampler reads; a VRT mosaic (its blocks are resampled, not decoded) ignores the plan."""
    scene = T.CoordinateScene(tmp_path, 512)
    mask = scene.aligned_mask((T.coordinate_bands(512, 512, "uint8")[:1] % 3).astype("uint8"))
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, 512 - 64, 24), rng.integers(0, 512 - 64, 24)
    table = scene.windows(rows.tolist(), cols.tolist())
    told, plain = (PatchSampler(scene.mbtiles, mask, table, 64, n_classes=3) for _ in range(2))
    told.plan_reads(list(range(24)))
    reader = told._reader().images[0]
    assert reader.planned is not None and reader.planned.layout.width == 256
    for index in range(24):
        np.testing.assert_array_equal(told[index].image, plain[index].image)
    assert 0 < reader.planned.decoded <= 4  # the MBTiles' four tiles, each decoded once
    halves = [
        T.write_raster(tmp_path / f"half{i}.tif", T.coordinate_bands(512, 256, "uint8", col0=256 * i),
                       crs=scene.crs, transform=scene.transform @ Affine.translation(256 * i, 0), blocksize=64)
        for i in range(2)
    ]  # fmt: skip
    mosaic = PatchSampler(T.write_vrt_mosaic(tmp_path / "mosaic.vrt", halves), mask, table, 64, n_classes=3)
    mosaic.plan_reads(list(range(24)))
    assert mosaic._reader().images[0].planned is None
