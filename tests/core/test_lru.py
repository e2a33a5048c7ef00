"""crossgeo.lru.LRUCache on real GeoTIFF handles: eviction closes, forks and pickles forget what is open."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from crossgeo import testing as T
from crossgeo.errors import ConfigError
from crossgeo.lru import LRUCache

FD = Path("/proc/self/fd")


def _close(key: str, dataset: Any) -> None:
    dataset.close()


def _open_tifs(folder: Path) -> list[str]:
    """Names of the GeoTIFFs in ``folder`` this process holds a descriptor on (one per handle)."""
    names = []
    for fd in os.listdir(FD):
        try:
            target = os.readlink(FD / fd)
        except OSError:  # the listing's own descriptor, already closed
            continue
        if target.startswith(str(folder)) and target.endswith(".tif"):
            names.append(Path(target).name)
    return sorted(names)


@pytest.fixture
def scenes(tmp_path: Path) -> list[str]:
    found, _ = T.write_scene_catalogue(tmp_path / "scenes", 5, size=64)
    return [s["image_path"] for s in found]


@pytest.mark.skipif(not FD.exists(), reason="needs /proc/self/fd")
def test_evicted_entries_are_closed_and_their_files_released(scenes: list[str]) -> None:
    folder = Path(scenes[0]).parent
    assert _open_tifs(folder) == []
    cache: LRUCache[str, Any] = LRUCache(2, rasterio.open, _close)
    handles = {}
    for path in scenes:
        with cache.acquire(path) as dataset:
            handles[path] = dataset
            assert dataset.read(1, window=((0, 1), (0, 1)))[0, 0] >= 0
    assert cache.keys() == tuple(scenes[-2:])  # least recently used first
    assert [handles[p].closed for p in scenes] == [True, True, True, False, False]
    assert _open_tifs(folder) == sorted(Path(p).name for p in scenes[-2:])
    with cache.acquire(scenes[3]):  # a hit: no reopening, and scenes[3] becomes the most recent
        pass
    assert cache.keys() == (scenes[4], scenes[3])
    cache.clear()
    assert cache.keys() == () and all(h.closed for h in handles.values())
    assert _open_tifs(folder) == []


def test_an_entry_in_use_is_never_evicted(scenes: list[str]) -> None:
    cache: LRUCache[str, Any] = LRUCache(1, rasterio.open, _close)
    with cache.acquire(scenes[0]) as held:
        for path in scenes[1:]:
            with cache.acquire(path):
                pass
            assert not held.closed and scenes[0] in cache  # beyond maxsize while busy
        first = held.read(1)
        cache.clear()  # closes only idle entries
        assert not held.closed
    np.testing.assert_array_equal(held.read(1), first)
    with cache.acquire(scenes[1]):  # scenes[0] is idle now: the next entry evicts it
        pass
    assert held.closed and cache.keys() == (scenes[1],)


def test_threads_share_the_bound(scenes: list[str]) -> None:
    cache: LRUCache[str, Any] = LRUCache(2, rasterio.open, _close)
    errors: list[BaseException] = []
    expected = {}
    for path in scenes:
        with rasterio.open(path) as src:
            expected[path] = src.read(1)
    lock = threading.Lock()  # rasterio datasets are not thread-safe; the bound is what is tested here

    def work(seed: int) -> None:
        try:
            for k in np.random.default_rng(seed).integers(0, len(scenes), 40):
                with cache.acquire(scenes[k]) as dataset, lock:
                    np.testing.assert_array_equal(dataset.read(1), expected[scenes[k]])
                assert len(cache) <= 2 + 4
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(cache) <= 2


def _in_child(cache: LRUCache[str, Any], parents: dict[str, Any], scenes: list[str], out: Any) -> None:
    inherited = cache.keys()
    with cache.acquire(scenes[0]) as own:
        reused = own is parents[scenes[0]]
        own.read(1)
    for path in scenes[1:]:
        with cache.acquire(path):
            pass
    cache.clear()
    out.put((inherited, reused, own.closed, [d.closed for d in parents.values()]))


def test_a_forked_child_neither_uses_nor_closes_its_parents_entries(scenes: list[str]) -> None:
    cache: LRUCache[str, Any] = LRUCache(2, rasterio.open, _close)
    parents = {}
    for path in scenes[:2]:
        with cache.acquire(path) as dataset:
            parents[path] = dataset
    before = {p: d.read(1) for p, d in parents.items()}
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_in_child, args=(cache, parents, scenes, out))
    child.start()
    inherited, reused, own_closed, parents_closed = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert inherited == ()  # the child starts with nothing open ...
    assert not reused  # ... opens its own handle ...
    assert own_closed and parents_closed == [False, False]  # ... and closes only its own
    assert cache.keys() == tuple(scenes[:2])  # the parent's cache is as it was, and its handles work
    for path, dataset in parents.items():
        assert not dataset.closed
        np.testing.assert_array_equal(dataset.read(1), before[path])


def test_pickles_without_its_entries(scenes: list[str]) -> None:
    cache: LRUCache[str, Any] = LRUCache(3, rasterio.open, _close)
    with cache.acquire(scenes[0]) as dataset:
        with pytest.raises((TypeError, pickle.PicklingError)):
            pickle.dumps(dataset)  # an open handle cannot cross processes ...
    clone = pickle.loads(pickle.dumps(cache))  # ... so the cache pickles without it
    assert clone.keys() == () and clone.maxsize == 3 and cache.keys() == (scenes[0],)
    with clone.acquire(scenes[0]) as reopened:
        assert reopened is not dataset and not dataset.closed
        np.testing.assert_array_equal(reopened.read(1), dataset.read(1))
    clone.clear()
    cache.clear()


def test_maxsize_is_checked() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="maxsize must be an integer >= 1"):
            LRUCache(bad, rasterio.open, _close)  # type: ignore[arg-type]
