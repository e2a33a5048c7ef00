"""Per-thread state (crossgeo.threads.PerThread) under churning threads, forks and pickling.

Thread idents are reused by new threads: these tests start and end many short-lived threads
and check in each one that it reads under crossgeo's GDAL options, gets correct patches, and
that the rasters are opened a bounded number of times (not once per patch or per thread).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.env import get_gdal_config

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.testing import CoordinateScene, window_coordinates
from crossgeo.threads import PerThread

SIZE = 32
CHECKED = ("GDAL_HTTP_MAX_RETRY", "GDAL_DISABLE_READDIR_ON_OPEN", "VSI_CACHE")
"""GDAL options crossgeo sets (crossgeo.io.GDAL_OPTIONS) whose values rasterio reads back unchanged."""
FOREIGN = {"GDAL_HTTP_MAX_RETRY": 1, "GDAL_DISABLE_READDIR_ON_OPEN": False, "VSI_CACHE": False}
"""Other values for them, set process-wide (main thread) so a thread missing crossgeo's Env shows it."""


def gdal_now() -> dict[str, Any]:
    return {key: get_gdal_config(key) for key in CHECKED}


def crossgeo_options() -> dict[str, Any]:
    return {key: crossgeo.io.GDAL_OPTIONS[key] for key in CHECKED}


@pytest.fixture
def no_gdal_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    """crossgeo's own values apply (an environment variable of the same name would override them)."""
    for key in CHECKED:
        monkeypatch.delenv(key, raising=False)


@contextmanager
def foreign_gdal_defaults() -> Iterator[None]:
    """Process-wide GDAL values differing from crossgeo's (rasterio's main-thread options are global).

    A thread that has not entered crossgeo's own Env reads these, not crossgeo's. Entered
    after the samplers are built (building one enters crossgeo's Env in the main thread).
    """
    assert threading.current_thread() is threading.main_thread()
    with rasterio.Env(**FOREIGN):
        assert gdal_now() == FOREIGN
        yield


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every raster crossgeo's readers open (crossgeo.io.open_raster), by path."""
    opened: list[str] = []
    real = crossgeo.io.open_raster

    def counting(path: str, option: str, **kwargs: Any) -> Any:
        opened.append(path)
        return real(path, option, **kwargs)

    monkeypatch.setattr(crossgeo.io, "open_raster", counting)
    return opened


def check_patch(sampler: PatchSampler, reference: PatchSampler, position: int, image: Any, mask: Any) -> None:
    """The patch shows its own window (coordinate-encoding image) and the mask a fresh sampler reads."""
    rows, cols = T.decode_coordinates(image)
    want_rows, want_cols = window_coordinates(int(sampler.row_off[position]), int(sampler.col_off[position]), SIZE)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(cols, want_cols)
    np.testing.assert_array_equal(mask, reference[position].mask)


def make_sampler(scene: CoordinateScene, n: int = 24) -> PatchSampler:
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(0, scene.size - SIZE, n), rng.integers(0, scene.size - SIZE, n)
    return PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE, n_classes=4)


# ---------------------------------------------------------------------- PerThread itself


class Resource:
    """A value that records where it was made and whether it was closed."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def resources(**kwargs: Any) -> PerThread[Resource]:
    return PerThread(Resource, close=Resource.close, **kwargs)


def run_in_threads(n: int, work: Callable[[], Any]) -> list[Any]:
    """``work`` in ``n`` threads alive at the same time; their results."""
    together = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(k: int) -> None:
        results[k] = work()
        together.wait()  # nobody ends before everybody has its value

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_live_threads_never_share_a_value() -> None:
    values = resources()
    held = run_in_threads(5, values.get)
    assert len({id(v) for v in held}) == 5
    assert values.created == len(values) == 5
    assert all(v.thread != threading.get_ident() for v in held)


def test_values_of_ended_threads_are_adopted_however_threads_churn() -> None:
    values = resources()
    idents = []
    for _ in range(10):
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: values.get(), range(30)))
    for _ in range(40):
        thread = threading.Thread(target=lambda: idents.append((threading.get_ident(), id(values.get()))))
        thread.start()
        thread.join()
    assert len({ident for ident, _ in idents}) < len(idents)  # idents were reused
    # At most as many values as threads used them at once (3), however many threads came and went.
    assert values.created == len(values) <= 3
    assert {value for _, value in idents} <= {id(v) for v in values.values()}


def test_thread_bound_values_end_with_their_thread_even_when_idents_repeat() -> None:
    """adopt=False (an entered GDAL Env): every new thread makes its own, ended ones are closed."""
    values = resources(adopt=False)
    seen: list[tuple[int, Resource]] = []
    for _ in range(20):
        thread = threading.Thread(target=lambda: seen.append((threading.get_ident(), values.get())))
        thread.start()
        thread.join()
    assert len({ident for ident, _ in seen}) < len(seen)  # idents were reused ...
    assert values.created == 20  # ... yet no thread took over an ended thread's value
    assert all(value.closed for _, value in seen) and len(values) == 0


def test_discard_and_clear_close_and_remake() -> None:
    values = resources()
    first = values.get()
    values.discard()
    assert first.closed and values.get() is not first
    (other,) = run_in_threads(1, values.get)  # now idle
    mine = values.get()
    values.clear()
    assert mine.closed and other.closed and len(values) == 0
    assert values.get() is not mine and values.created == 4


def test_pickling_keeps_no_value() -> None:
    values: PerThread[list[int]] = PerThread(partial(list, [1, 2]))
    values.get().append(3)
    clone = pickle.loads(pickle.dumps(values))
    assert len(clone) == 0 and clone.created == 0
    assert clone.get() == [1, 2] and values.get() == [1, 2, 3]


# ---------------------------------------------------------------------- readers and the GDAL Env


def test_churned_threads_read_under_crossgeo_options_with_bounded_opens(
    scene: CoordinateScene, no_gdal_env_vars: None, count_opens: list[str]
) -> None:
    sampler = make_sampler(scene)
    reference = make_sampler(scene)
    results: list[tuple[int, int, Any, dict[str, Any]]] = []
    lock = threading.Lock()

    def read(position: int) -> None:
        patch = sampler[position]
        options = gdal_now()
        with lock:
            results.append((threading.get_ident(), position, patch, options))

    n = len(sampler)
    with foreign_gdal_defaults():
        for round_ in range(6):  # executors created and shut down again and again
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(read, range(round_ % 3, n, 3)))
        for position in range(n):  # plain threads, one after the other: idents repeat
            thread = threading.Thread(target=read, args=(position,))
            thread.start()
            thread.join()
        assert gdal_now() == FOREIGN  # the main thread's own options were left alone

    assert len(results) == 6 * n // 3 + n
    idents = [ident for ident, *_ in results[-n:]]
    assert len(set(idents)) < len(idents)  # new threads did get ended threads' idents
    # Two rasters per reader, and no more readers than threads alive at once (4).
    assert len(count_opens) == 2 * sampler._readers.created <= 2 * 4
    for _, position, patch, options in results:
        assert options == crossgeo_options(), "a thread read without crossgeo's GDAL options"
        check_patch(sampler, reference, position, patch.image, patch.mask)


def test_gdal_options_hold_in_a_thread_that_adopted_handles(scene: CoordinateScene, no_gdal_env_vars: None) -> None:
    sampler = make_sampler(scene, 4)
    with foreign_gdal_defaults():
        (first,) = run_in_threads(1, lambda: (sampler[0], gdal_now())[1])
        (second,) = run_in_threads(1, lambda: (sampler[1], gdal_now(), sampler._readers.created)[1:])
    assert second[1] == 1  # the second thread read through the first one's handles ...
    assert first == second[0] == crossgeo_options()  # ... and still under crossgeo's options


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == target
        except OSError:  # closed meanwhile
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc/self/fd")
def test_a_reader_made_where_an_adopted_one_was_made_has_its_own_handles(scene: CoordinateScene) -> None:
    """tf.data's pattern: a reader moves to another thread, then a new one is made on its first OS thread.

    A tf.data call runs on a fresh Python thread state of a pooled OS thread: when it ends its
    reader goes idle and a call on another OS thread adopts it. GDAL hands a shared-opened file
    to every opener on one OS thread, so a GDAL-shared mask made the next reader opened on the
    first OS thread read through the handle the adopted reader was using on the other thread
    at the same time (a data race: ZIPDecode errors in a parallel tf.data map).
    """
    sampler = make_sampler(scene, 4)
    reference = make_sampler(scene, 4)
    mask = scene.lonlat_mask()
    first = sampler._reader()
    del sampler._readers._local.lease  # this thread state "ends" (the OS thread lives on): the reader goes idle
    adopted: list[Any] = []
    holding, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        adopted.append(sampler._reader())
        holding.set()
        release.wait(60)
        adopted.append(sampler[1])

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert holding.wait(60)
        second = sampler._reader()  # made on the first OS thread while the other thread holds the first reader
        assert adopted == [first] and second is not first and len(sampler._readers) == 2
        assert _open_files(mask) == 2  # one mask handle per reader (a GDAL-shared open gave 1)
        patch = sampler[2]
    finally:
        release.set()
        thread.join(60)
    check_patch(sampler, reference, 2, patch.image, patch.mask)
    check_patch(sampler, reference, 1, adopted[1].image, adopted[1].mask)


def _read_in_child(sampler: PatchSampler, opened: list[str], out: Any) -> None:
    inherited = len(sampler._readers)
    patch = sampler[1]
    out.put((inherited, len(opened), sampler._readers.created, patch.image, patch.mask, gdal_now()))


def test_a_forked_child_opens_its_own_handles(
    scene: CoordinateScene, no_gdal_env_vars: None, count_opens: list[str]
) -> None:
    sampler = make_sampler(scene, 4)
    reference = make_sampler(scene, 4)
    sampler[0]
    assert len(sampler._readers) == 1 and len(count_opens) == 2
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    with foreign_gdal_defaults():
        child = context.Process(target=_read_in_child, args=(sampler, count_opens, out))
        child.start()
        inherited, opened, created, image, mask, options = out.get(timeout=60)
        child.join(timeout=60)
    assert child.exitcode == 0
    assert inherited == 0  # the parent's reader is not the child's ...
    assert opened == 2 + 2 and created == 1  # ... the child opened both rasters itself
    assert options == crossgeo_options()
    check_patch(sampler, reference, 1, image, mask)
    patch = sampler[2]  # the parent's handles still work
    check_patch(sampler, reference, 2, patch.image, patch.mask)


# ---------------------------------------------------------------------- import side effects

_LOGGERS = """
import logging, sys
def state():
    names = ["rasterio", "rasterio._err", "rasterio._env", "rasterio._base", "rasterio._io"]
    return {n: (logging.getLogger(n).level, [type(f).__name__ for f in logging.getLogger(n).filters]) for n in names}
import rasterio
before = state()
import crossgeo, crossgeo.io, crossgeo.sampler
after_import = state()
from crossgeo.io import open_raster
with open_raster(sys.argv[1], "image_path"):
    pass
after_open = state()
import rasterio._err
print(before == after_import, before == after_open, type(rasterio._err.log).__name__)
"""


def test_rasterio_loggers_keep_their_configuration_and_the_trap_comes_with_the_first_open(
    scene: CoordinateScene,
) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _LOGGERS, str(scene.image)],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": ""},
        check=True,
    )
    # Loggers are never touched (levels, filters); the GDAL failure trap arrives with the first raster opened.
    assert done.stdout.split() == ["True", "True", "_FailureRecorder"]


VSI_CACHE_PROBE = """
import ctypes, sys
import numpy as np
from crossgeo import PatchSampler
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in fields.split()]  # all ten: glibc writes the whole struct
libc.mallinfo2.restype = Info
image, mask, windows, size = sys.argv[1:5]
sampler = PatchSampler(image, mask, windows, int(size), n_classes=4)
before = libc.mallinfo2().uordblks
images = [sampler.read_image(int(r), int(c))[0] for r, c in zip(sampler.row_off, sampler.col_off)]
print(libc.mallinfo2().uordblks - before - sum(i.nbytes for i in images))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2 measures the heap")
@pytest.mark.parametrize("vsi_cache", [None, "TRUE"])
def test_local_rasters_are_read_without_gdals_per_handle_file_cache(tmp_path: Path, vsi_cache: str | None) -> None:
    """GDAL's ``VSI_CACHE`` keeps up to 25 MB of a file's bytes per open handle (in every worker and thread) that
    the OS page cache already holds: a local file is opened without it, unless the user's environment sets it."""
    scene = CoordinateScene(tmp_path, 1024)
    noise = np.random.default_rng(0).integers(0, 256, (3, 1024, 1024), dtype=np.uint8)  # 3 MB, incompressible
    image = T.write_raster(tmp_path / "noise.tif", noise, crs=scene.crs, transform=scene.transform)
    rows, cols = np.mgrid[0:1024:256, 0:1024:256]
    windows = scene.windows(rows.ravel().tolist(), cols.ravel().tolist())
    env = {k: v for k, v in os.environ.items() if k != "VSI_CACHE"} | {"GDAL_CACHEMAX": "1"}
    if vsi_cache is not None:
        env["VSI_CACHE"] = vsi_cache
    probe = [sys.executable, "-c", VSI_CACHE_PROBE, str(image), str(scene.lonlat_mask()), str(windows), "256"]
    kept = int(subprocess.run(probe, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])
    if vsi_cache is None:
        assert kept < 1_500_000, kept  # GDAL's 1 MB block cache and small change: not the file's 3 MB
    else:
        assert kept > 2_500_000, kept  # the user asked for it: the file's bytes are kept
