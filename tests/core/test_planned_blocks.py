"""`crossgeo.io.PlannedBlocks`: a sampler told the windows it will read keeps the image blocks they need again.

The image encodes each pixel's (row, col), so a read proves where its pixels came from; every read must equal a
plain window read whether the plan is followed, has gaps, or is never given, in one thread or several sharing
the store, and a followed plan must decode fewer blocks than the plain least-recently-used order would.
"""

from __future__ import annotations

import collections
import multiprocessing
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.grid import BlockLayout
from crossgeo.readahead import ReadAhead

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


def samplers(folder: Path, n: int, seed: int, count: int = 2) -> tuple[list[tuple[int, int]], list[PatchSampler]]:
    """``n`` random windows of the tiled image (its mask the class ``row % 5``) and ``count`` samplers reading them."""
    image = tiled_image(folder)
    mask = T.write_raster(folder / "mask.tif", (T.coordinate_bands(200, 232)[:1] % 5).astype("uint8"),
                          crs="EPSG:32632", transform=UTM)  # fmt: skip
    order = windows(n, seed=seed)
    table = T.write_windows_table(folder / "w.csv", [r for r, _ in order], [c for _, c in order])
    return order, [PatchSampler(image, mask, table, SIZE, n_classes=5, image_dtype="uint16") for _ in range(count)]


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


@pytest.mark.parametrize("plan", ["followed", "gaps", "none"])
def test_planned_reads_equal_window_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str) -> None:
    """Reads through the kept blocks equal window reads (partial edge tiles included, a window past the raster
    declined), the blocks kept stay within the capacity, and a followed plan decodes fewer blocks than the
    least-recently-used order would with the same room (the rule GDAL's block cache follows); reads missing
    from the plan do not undo it for the rest."""
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
        assert blocks.decoded < 0.85 * lru, (blocks.decoded, lru)  # 50 reads outside the plan in between


@pytest.fixture
def gdal_cache() -> Iterator[None]:
    """GDAL's block cache as it was before the test (a plan lowers it for the whole process)."""
    before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    yield
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", before)


def test_a_sampler_told_its_windows_reads_the_same_patches(tmp_path: Path, gdal_cache: None) -> None:
    """`PatchSampler.plan_reads`: the image's reader keeps blocks for the windows named, in their order, and a
    DataLoader worker's plan lowers GDAL's block cache (another leaves it); the patches equal those of a sampler
    never told, in order or not."""
    order, (told, plain) = samplers(tmp_path, 60, seed=8)
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", 64 << 20)
    told.plan_reads(list(range(0, 60, 2)))
    reader = told._reader().images[0]
    assert reader.planned is not None and int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) == 64 << 20
    told.plan_reads(list(range(0, 60, 2)), worker=True)
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


def test_threads_share_one_store_and_read_what_one_reader_reads(tmp_path: Path, gdal_cache: None) -> None:
    """The threads of a read-ahead pool (`crossgeo.readahead.ReadAhead`'s ``plan=``) and short-lived threads
    (ids reused) read through one store: every patch equals an untold sampler's (band 1 the row, band 2 the
    column), each block is decoded about once where a thread-private cache of the same room decodes it again."""
    order, (told, plain) = samplers(tmp_path, 240, seed=11)
    planned: list[tuple[int, int]] = []

    def plan(positions: list[int], readers: int) -> None:
        planned.append((len(positions), readers))
        told.plan_reads(positions, readers)

    reads = ReadAhead(lambda i: told[i], range(240), threads=3, plan=plan)
    for index, patch in enumerate(reads):
        np.testing.assert_array_equal(patch.image, plain[index].image)
        np.testing.assert_array_equal(patch.mask, plain[index].mask)
        row_off, col_off = order[index]
        assert (patch.image[0] == np.arange(row_off, row_off + SIZE)[:, None]).all()
        assert (patch.image[1] == np.arange(col_off, col_off + SIZE)).all()
    assert planned == [(240, 3)]
    store = told._kept.get(0)
    assert store is not None and store.capacity == 3 * crossgeo.io.PLANNED_BLOCK_BYTES // (3 * 32 * 32 * 2)
    touched = [(r, c) for row_off, col_off in order for r in range(row_off // 32, (row_off + SIZE - 1) // 32 + 1)
               for c in range(col_off // 32, (col_off + SIZE - 1) // 32 + 1)]  # fmt: skip
    # Every block fits: each decoded once, a few twice (missed by two threads at once), of ~1,000 block reads.
    assert len(set(touched)) <= store.decoded < 1.5 * len(set(touched)) < 0.1 * len(touched)
    # Short-lived threads, two at a time, each reading a few planned windows through its own handles.
    told.plan_reads(list(range(240)), readers=2)
    before, got = store.decoded, {}

    def read(chunk: range) -> None:
        for index in chunk:
            got[index] = told[index]

    for start in range(0, 240, 8):
        pair = [threading.Thread(target=read, args=(range(s, s + 4),)) for s in (start, start + 4)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
    assert sorted(got) == list(range(240))
    for index, patch in got.items():
        np.testing.assert_array_equal(patch.image, plain[index].image)
    assert told._kept.get(0) is store and store.decoded == before  # every block still kept: none decoded again


def test_forked_and_unpickled_samplers_start_without_kept_blocks(tmp_path: Path, gdal_cache: None) -> None:
    """A forked child (a DataLoader worker) and an unpickled copy (a spawned one) do not use the blocks the
    parent kept: their plan comes with their own windows."""
    _, (sampler,) = samplers(tmp_path, 20, seed=2, count=1)
    sampler.plan_reads(list(range(20)))
    assert sampler[0].image is not None and sampler._kept.get(0) is not None
    assert pickle.loads(pickle.dumps(sampler))._kept.get(0) is None
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply(_kept_in_child, (sampler,)) == (None, True)


def _kept_in_child(sampler: PatchSampler) -> tuple[Any, bool]:
    inherited = sampler._kept.get(0)
    patch = sampler[3]
    row_off, col_off = sampler.index.row_off[3], sampler.index.col_off[3]
    return inherited, bool((patch.image[0] == np.arange(row_off, row_off + SIZE)[:, None]).all()) and bool(
        (patch.image[1] == np.arange(col_off, col_off + SIZE)).all()
    )
