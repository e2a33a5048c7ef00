"""The read-ahead pool (crossgeo.readahead.ReadAhead): sequential output, in order, bounded handles and threads."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossgeo import ConfigError, PatchSampler
from crossgeo import testing as T
from crossgeo.readahead import ReadAhead
from crossgeo.testing import CoordinateScene

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def patches(sampler: PatchSampler, positions: list[int], threads: int) -> list[tuple[Any, ...]]:
    """(position, image, mask, mask_valid) of each patch read through a pool of ``threads``."""
    reads = ReadAhead(lambda i: sampler[i], positions, threads=threads)
    return [(p.index, p.image, p.mask, p.mask_valid) for p in reads]


def assert_same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for g, w in zip(got, want):
        for a, b in zip(g[1:], w[1:]):
            np.testing.assert_array_equal(a, b)


def warped_sampler(scene: CoordinateScene, n: int = 40, seed: int = 3) -> PatchSampler:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(-SIZE // 2, scene.size - SIZE // 2, (2, n))
    return PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE, n_classes=4)


@pytest.mark.parametrize("view", T.MASK_VIEWS)
@pytest.mark.parametrize("threads", [2, 3])
def test_read_ahead_yields_the_sequential_patches_in_order(
    scene: CoordinateScene, view: str, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    T.force_mask_view(monkeypatch, view)
    sampler = warped_sampler(scene)
    assert sampler.mask_view == view
    positions = [int(i) for i in np.random.default_rng(1).permutation(len(sampler))]
    want = [(p.index, p.image, p.mask, p.mask_valid) for p in (sampler[i] for i in positions)]
    assert_same(patches(sampler, positions, threads), want)
    assert_same(patches(sampler, positions, 1), want)  # 1 thread: a plain loop


def test_a_failed_read_is_raised_at_its_turn_after_the_earlier_results() -> None:
    def read(i: int) -> int:
        if i == 5:
            raise ValueError("item 5")
        return i * 10

    seen: list[int] = []
    with pytest.raises(ValueError, match="item 5"):
        for value in ReadAhead(read, range(20), threads=3):
            seen.append(value)
    assert seen == [0, 10, 20, 30, 40]


def test_thread_churn_opens_handles_once_per_concurrent_thread(scene: CoordinateScene) -> None:
    """A pool per epoch: its threads end, their readers go idle and the next pool's threads adopt them."""
    sampler = warped_sampler(scene, n=12)
    before = threading.active_count()
    want = patches(sampler, list(range(len(sampler))), 1)
    for _ in range(15):
        assert_same(patches(sampler, list(range(len(sampler))), 2), want)
    assert sampler._readers.created <= 3, sampler._readers.created  # the main thread's and two pool threads'
    assert len(sampler._readers) <= 3
    assert threading.active_count() == before


def test_stopping_early_leaves_no_thread_running(scene: CoordinateScene) -> None:
    sampler = warped_sampler(scene, n=30)
    before = threading.active_count()
    reads = ReadAhead(lambda i: sampler[i], range(len(sampler)), threads=2, depth=4)
    for n, patch in enumerate(reads):
        assert patch.index == n
        if n == 3:
            break
    reads.close()
    assert threading.active_count() == before


def test_pool_sizes_are_checked() -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="threads must be a whole number"):
            ReadAhead(abs, [1], threads=bad)  # type: ignore[arg-type]


def _child_read(sampler: PatchSampler, queue: Any) -> None:
    reads = ReadAhead(lambda i: sampler[i], range(len(sampler)), threads=2)
    queue.put([(p.index, p.image.tolist(), p.mask.tolist(), p.mask_valid.tolist()) for p in reads])


def _read_in_a_child(folder: Path, method: str) -> None:
    """Read every window in the parent, then in a ``method`` child process through a pool; both must agree."""
    scene = CoordinateScene(folder, 512)
    sampler = warped_sampler(scene, n=10)
    want = patches(sampler, list(range(len(sampler))), 2)  # the parent's handles and blocks exist before the fork
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_child_read, args=(sampler, queue))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert_same([(i, np.array(a), np.array(b), np.array(c)) for i, a, b, c in got], want)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_read_ahead_in_forked_and_spawned_processes_reads_what_the_parent_reads(method: str, tmp_path: Path) -> None:
    """Run in a fresh interpreter: forking the test process would also fork whatever threads earlier tests left
    running (servers, pools), whose held locks can hang a forked child whatever crossgeo does."""
    code = (
        "import sys; from pathlib import Path; import test_readahead as t; "
        f"t._read_in_a_child(Path(sys.argv[1]), {method!r})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_read_plans_tell_each_pass_its_windows_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """`crossgeo.loading.ReadPlans` (Keras' pool, tf.data's map): the next `PLAN_ITEMS` windows of the epoch's
    order from the batch that reaches past the plan, by position or by the count handed out, again for a new
    pass of the same epoch, and nothing for a sampler that cannot plan."""
    import types

    import crossgeo.loading
    from crossgeo.loading import ReadPlans

    monkeypatch.setattr(crossgeo.loading, "PLAN_ITEMS", 5)
    told: list[tuple[list[int], int]] = []
    sampler = types.SimpleNamespace(plan_reads=lambda windows, readers: told.append((windows, readers)))
    plans = ReadPlans(sampler, lambda epoch: np.arange(12) * 10 + epoch, per_epoch=12, readers=3)
    for _ in range(2):  # a fixed epoch read twice (tf.data's epoch=): each pass is planned
        for count in (2, 2, 2, 2, 2, 2):
            plans.reading(0, count)
    assert told == [([0, 10, 20, 30, 40], 3), ([40, 50, 60, 70, 80], 3), ([80, 90, 100, 110], 3)] * 2
    told.clear()
    for start in (0, 4, 8, 0):  # by position (Keras' batches of 4); a start at 0 begins a new pass
        plans.reading(1, 4, start=start)
    assert [windows for windows, _ in told] == [[1, 11, 21, 31, 41], [41, 51, 61, 71, 81], [81, 91, 101, 111],
                                                [1, 11, 21, 31, 41]]  # fmt: skip
    ReadPlans(object(), lambda epoch: np.arange(3), per_epoch=3, readers=1).reading(0, 3)  # no plan_reads: no-op
