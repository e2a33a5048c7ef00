"""The Ray workers of ``write_chips(engine="ray")`` on a fresh local two-CPU cluster (#25): ready before the
first shard, one copy of the sampler each, reading without importing boto3."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import ray

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.chips import write_chips

pytestmark = pytest.mark.usefixtures("cluster")

SIZE = 32


def _worker_state(meet: str) -> tuple[int, bool, list[str], bool]:
    """This worker's process id, whether it imported botocore, the calls whose sampler it keeps and whether it
    reads a patch's sources side by side (`crossgeo.io.SourcePool`); it returns once two of these run at once
    (one file each in ``meet``), so that they ask both workers."""
    import crossgeo.io
    import crossgeo.ray

    kept = list(crossgeo.ray._WORKER_SAMPLER)
    state = os.getpid(), "botocore" in sys.modules, kept, crossgeo.io.source_pool.enabled
    (Path(meet) / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(meet).iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def _both_workers(meet: Path) -> list[tuple[int, bool, list[str], bool]]:
    meet.mkdir()
    return ray.get([ray.remote(num_cpus=1)(_worker_state).remote(str(meet)) for _ in range(2)])


def test_workers_unpickle_the_sampler_before_the_shards_and_defer_boto3(tmp_path: Path) -> None:
    scenes, mask = T.write_scene_catalogue(tmp_path / "scenes", 40, size=32, windows=((0, 0),))
    sampler = SceneSampler(scenes, SIZE, mask_path=mask, n_classes=4)
    local = write_chips(sampler, tmp_path / "local", shard_size=4, progress=False)
    import crossgeo.ray

    shipped = crossgeo.ray.start_workers(sampler)  # what write_chips(engine="ray") does first
    states = _both_workers(tmp_path / "meet")
    assert len({pid for pid, *_ in states}) == 2
    # Each worker unpickled this call's sampler before any shard was handed out, read no boto3 for it and
    # reads sources one after the other (it holds one CPU).
    assert [tuple(state[1:]) for state in states] == [(False, [shipped[0]], False)] * 2
    spread = write_chips(sampler, tmp_path / "ray", shard_size=4, engine="ray", progress=False)
    assert [s["files"] for s in json.loads((local / "manifest.json").read_text())["shards"]] == [
        s["files"] for s in json.loads((spread / "manifest.json").read_text())["shards"]
    ]
    states = _both_workers(tmp_path / "meet-again")
    assert len({pid for pid, *_ in states}) == 2
    assert all(not botocore and len(kept) == 1 for _, botocore, kept, _ in states)  # the last call's sampler only
