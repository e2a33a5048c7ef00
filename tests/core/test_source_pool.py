"""The sources of a patch read concurrently (`crossgeo.io.SourcePool`): the patches a sequential read gives.

Real band files written by rasterio encode their own pixel coordinates (`crossgeo.testing.coordinate_bands`)
at 10, 20 and 30 m, so every channel says where it was read; each test compares the pool's patches with a
read one source after the other (``CROSSGEO_SOURCE_THREADS=0``) and checks which threads read.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from servers import FileServer, running

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.errors import ConfigError, ReadError
from crossgeo.readahead import ReadAhead

UTM = "EPSG:32632"
ORIGIN = (500000.0, 5000000.0)
REF = 600  # reference grid side (10 m pixels): whole 20 m and 30 m pixels
PATCH = 64
OFFSETS = [(0, 0), (100, 37), (448, 448), (300, 5), (17, 401)]


def band_file(folder: Path, name: str, res: float) -> Path:
    side = int(REF * 10 / res)
    data = T.coordinate_bands(side, side, "uint16")
    return T.write_raster(
        folder / f"{name}.tif", data, crs=UTM, transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
    )


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Any]:
    sources = {name: str(band_file(tmp_path, name, res)) for name, res in (("B10", 10), ("B20", 20), ("B30", 30))}
    mask = T.write_raster(
        tmp_path / "mask.tif",
        (np.arange(REF * REF).reshape(1, REF, REF) % 3).astype(np.uint8),
        crs=UTM,
        transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]),
    )
    rows, cols = zip(*OFFSETS)
    windows = T.write_windows_table(tmp_path / "windows.csv", list(rows), list(cols))
    return {
        "image_path": sources,
        "mask_path": str(mask),
        "crops_path": str(windows),
        "patch_size": PATCH,
        "image_dtype": "native",
    }


def expected(scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every window read one source after the other; checked against the coordinates it must hold."""
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "0")
    sampler = PatchSampler(**scene, n_classes=3)
    patches = [(sampler[i].image, sampler[i].mask) for i in range(len(sampler))]
    sampler.close()
    for (row, col), (image, _) in zip(OFFSETS, patches):
        rows, cols = np.mgrid[row : row + PATCH, col : col + PATCH]
        for at, factor in enumerate((1, 2, 3)):  # 10 m, 20 m, 30 m: source pixel = reference pixel // factor
            np.testing.assert_array_equal(image[3 * at], rows // factor)
            np.testing.assert_array_equal(image[3 * at + 1], cols // factor)
    monkeypatch.delenv("CROSSGEO_SOURCE_THREADS")
    return patches


@pytest.fixture
def readers_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(source path, reading thread's name) of every source read; each read takes 20 ms more, so that
    the caller cannot read every source before a pool thread starts."""
    seen: list[tuple[str, str]] = []
    read = crossgeo.io.SourceReader.read

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((self.plan.path, threading.current_thread().name))
        time.sleep(0.02)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(crossgeo.io.SourceReader, "read", recording)
    return seen


def test_sources_read_in_pool_threads_give_the_sequential_patches(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch, readers_seen: list[tuple[str, str]]
) -> None:
    want = expected(scene, monkeypatch)
    readers_seen.clear()
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "3")
    sampler = PatchSampler(**scene, n_classes=3)
    for i, (image, mask) in enumerate(want):
        patch = sampler[i]
        np.testing.assert_array_equal(patch.image, image)
        np.testing.assert_array_equal(patch.mask, mask)
    sampler.close()
    caller = threading.current_thread().name
    sources = set(scene["image_path"].values())
    # The image sources in the caller's thread and the pool's (each read once per patch); the mask, on the
    # image grid (a plain read: not worth a thread), in the caller's after them.
    readers = {name for path, name in readers_seen if path in sources}
    assert caller in readers and any(name.startswith(crossgeo.io.SOURCE_THREAD_PREFIX) for name in readers)
    assert readers <= {caller} | {name for name in readers if name.startswith(crossgeo.io.SOURCE_THREAD_PREFIX)}
    assert sum(path in sources for path, _ in readers_seen) == 3 * len(want)
    assert {name for path, name in readers_seen if path == scene["mask_path"]} == {caller}


def lonlat_scene(folder: Path) -> dict[str, Any]:
    """One UTM coordinate image and a lon/lat checkerboard mask in EPSG:4326 (read through the "table" view)."""
    image = band_file(folder, "image", 10)
    bounds = transform_bounds(UTM, "EPSG:4326", ORIGIN[0], ORIGIN[1] - REF * 10, ORIGIN[0] + REF * 10, ORIGIN[1])
    mask = T.write_lonlat_mask(folder / "mask4326.tif", bounds, 0.0001, cell=0.0007, n_classes=3)
    rows, cols = zip(*OFFSETS)
    windows = T.write_windows_table(folder / "windows.csv", list(rows), list(cols))
    return {"image_path": str(image), "mask_path": str(mask), "crops_path": str(windows), "patch_size": PATCH}


def test_the_mask_is_read_beside_a_single_image_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers_seen: list[tuple[str, str]]
) -> None:
    """One image source and a warped mask: two reads per patch, in two threads at once, the sequential patch;
    a window kept from an earlier read (`crossgeo.io.MaskBlockCache`) is a copy, read in the caller."""
    scene = lonlat_scene(tmp_path)
    # A cache of its own (earlier tests' masks would leave no room for windows), keeping none yet: every read
    # computes its table.
    monkeypatch.setattr(crossgeo.io, "mask_blocks", crossgeo.io.MaskBlockCache())
    monkeypatch.setattr(crossgeo.io.mask_blocks, "keep_windows", False)
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "0")
    sequential = PatchSampler(**scene, n_classes=3, image_dtype="native")
    assert sequential.mask_view == "table"
    want = [sequential[i] for i in range(len(sequential))]
    sequential.close()
    assert {name for _, name in readers_seen} == {threading.current_thread().name}
    readers_seen.clear()
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "2")
    sampler = PatchSampler(**scene, n_classes=3, image_dtype="native")
    for i, patch in enumerate(want):
        got = sampler[i]
        np.testing.assert_array_equal(got.image, patch.image)
        np.testing.assert_array_equal(got.mask, patch.mask)
        np.testing.assert_array_equal(got.mask_valid, patch.mask_valid)
    assert len(readers_seen) == 2 * len(want)
    # Each patch's two reads (the image and the mask, in either order), by two threads.
    for first, second in zip(readers_seen[0::2], readers_seen[1::2]):
        assert {first[0], second[0]} == {scene["image_path"], scene["mask_path"]}
        assert first[1] != second[1]
    # The classes came from where the windows lie: the checkerboard of the mask's own pixels.
    assert {int(v) for patch in want for v in np.unique(patch.mask)} == {0, 1, 2}
    monkeypatch.setattr(crossgeo.io.mask_blocks, "keep_windows", True)
    sampler[1]  # computed (in two threads) and kept
    readers_seen.clear()
    np.testing.assert_array_equal(sampler[1].mask, want[1].mask)
    assert [name for _, name in readers_seen] == [threading.current_thread().name] * 2
    sampler.close()


def test_a_remote_mask_is_read_in_the_caller_after_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers_seen: list[tuple[str, str]]
) -> None:
    """A remote source's retry reopens every handle of the reader: no read of it beside another."""
    scene = lonlat_scene(tmp_path)
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "2")
    local = PatchSampler(**scene, n_classes=3, image_dtype="native")
    want = local[2]
    local.close()
    readers_seen.clear()
    with running(FileServer(tmp_path)) as server:
        remote = PatchSampler(**{**scene, "mask_path": f"{server.url}/mask4326.tif"}, n_classes=3, image_dtype="native")
        got = remote[2]
        remote.close()
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_array_equal(got.image, want.image)
    assert {name for _, name in readers_seen} == {threading.current_thread().name}
    assert [path.endswith("mask4326.tif") for path, _ in readers_seen] == [False, True]


@pytest.mark.parametrize("threads", ["0", "1"])
def test_zero_or_one_source_thread_reads_in_the_caller(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch, readers_seen: list[tuple[str, str]], threads: str
) -> None:
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", threads)
    sampler = PatchSampler(**scene, n_classes=3)
    sampler[1]
    sampler.close()
    assert {name for _, name in readers_seen} == {threading.current_thread().name}


def test_read_ahead_threads_and_disabled_pools_read_their_sources_in_order(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch, readers_seen: list[tuple[str, str]]
) -> None:
    """No pool inside a pool: read-ahead threads (and DataLoader workers, `enabled` off) read every source."""
    want = expected(scene, monkeypatch)
    readers_seen.clear()
    sampler = PatchSampler(**scene, n_classes=3)
    got = list(ReadAhead(sampler.__getitem__, range(len(sampler)), threads=2))
    assert all(name.startswith("crossgeo-read") for _, name in readers_seen)
    for patch, (image, _) in zip(got, want):
        np.testing.assert_array_equal(patch.image, image)
    readers_seen.clear()
    monkeypatch.setattr(crossgeo.io.source_pool, "enabled", False)
    sampler[2]
    sampler.close()
    assert {name for _, name in readers_seen} == {threading.current_thread().name}


def test_short_lived_threads_read_the_sequential_patches(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread churn: 40 threads, each reading one patch through the pool, one after another and two at once."""
    want = expected(scene, monkeypatch)
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "2")
    sampler = PatchSampler(**scene, n_classes=3)
    results: dict[int, np.ndarray] = {}

    def read(k: int) -> None:
        results[k] = sampler[k % len(want)].image

    for start in range(0, 40, 2):
        threads = [threading.Thread(target=read, args=(k,)) for k in (start, start + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    sampler.close()
    for k, image in results.items():
        np.testing.assert_array_equal(image, want[k % len(want)][0])
    assert len(results) == 40


def _child_reads(sampler: PatchSampler, queue: Any) -> None:
    queue.put([sampler[i].image for i in range(len(sampler))])


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)")
def test_a_forked_child_reads_through_a_new_pool(scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    want = expected(scene, monkeypatch)
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "2")
    sampler = PatchSampler(**scene, n_classes=3)
    sampler[0]  # the parent's pool has started its thread before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_reads, args=(sampler, queue))
    child.start()
    images = queue.get(timeout=60)
    child.join(timeout=60)
    sampler.close()
    assert child.exitcode == 0
    for image, (expected_image, _) in zip(images, want):
        np.testing.assert_array_equal(image, expected_image)


def test_a_failing_source_raises_its_error_after_every_read_ended(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing source's ReadError, raised once the other sources' reads ended; the sampler reads on after it."""
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "3")
    sampler = PatchSampler(**scene, n_classes=3)
    broken = scene["image_path"]["B20"]
    read = crossgeo.io.SourceReader.read
    running = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        running.append(1)
        try:
            if self.plan.path == broken:
                raise ReadError(f"Reading the image source {broken} failed (test)")
            return read(self, *args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(crossgeo.io.SourceReader, "read", failing)
    with pytest.raises(ReadError, match="B20"):
        sampler[1]
    assert running == []
    monkeypatch.setattr(crossgeo.io.SourceReader, "read", read)
    assert sampler[1].image.shape == (9, PATCH, PATCH)
    sampler.close()


def test_an_image_error_comes_before_a_mask_error_as_in_a_sequential_read(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mask is taken first by the threads but its error ranks after the image sources', like the sequential read."""
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "3")
    sampler = PatchSampler(**scene, n_classes=3)
    broken = {scene["image_path"]["B30"], scene["mask_path"]}
    read = crossgeo.io.SourceReader.read

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.plan.path in broken:
            raise ReadError(f"Reading {self.plan.path} failed (test)")
        return read(self, *args, **kwargs)

    monkeypatch.setattr(crossgeo.io.SourceReader, "read", failing)
    with pytest.raises(ReadError, match="B30"):
        sampler[3]
    broken.discard(scene["image_path"]["B30"])
    with pytest.raises(ReadError, match="mask"):
        sampler[3]
    sampler.close()


def test_a_bad_source_threads_value_is_refused_when_the_sampler_is_built(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSGEO_SOURCE_THREADS", "two")
    with pytest.raises(ConfigError, match="CROSSGEO_SOURCE_THREADS must be a whole number"):
        PatchSampler(**scene, n_classes=3)
