"""crossgeo.ray on a local two-CPU cluster: patches as a ray.data.Dataset, chip stores and scene predictions (#25)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.chips import ChipSampler, write_chips
from crossgeo.ray import predict_scenes, read_patches

pytestmark = pytest.mark.usefixtures("cluster")

SIZE = 32


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], Path]:
    folder = tmp_path_factory.mktemp("catalogue")
    return T.write_scene_catalogue(folder, 6, size=64, windows=((0, 0), (32, 16), (16, 32)))


@pytest.fixture(scope="module")
def live(catalogue: tuple[list[dict[str, str]], Path]) -> SceneSampler:
    scenes, mask = catalogue
    return SceneSampler(scenes, SIZE, mask_path=mask, n_classes=4)


def test_read_patches_rows_are_the_samplers_patches(live: SceneSampler, tmp_path: Path) -> None:
    rows = read_patches(live, batch_size=5).take_all()
    assert len(rows) == len(live) == 18
    for row in rows:
        patch = live[int(row["index"])]
        np.testing.assert_array_equal(row["image"], patch.image)
        np.testing.assert_array_equal(row["mask"], patch.mask)
        np.testing.assert_array_equal(row["mask_valid"], patch.mask_valid)
        assert (row["row_off"], row["col_off"], row["scene"]) == (patch.row_off, patch.col_off, patch.scene)
    store = write_chips(live, tmp_path / "chips", shard_size=4, progress=False)
    from_store = sorted(read_patches(store).take_all(), key=lambda r: int(r["index"]))
    for row, original in zip(from_store, sorted(rows, key=lambda r: int(r["index"]))):
        np.testing.assert_array_equal(row["image"], original["image"])
        np.testing.assert_array_equal(row["mask"], original["mask"])


def test_ray_engine_writes_the_same_store(live: SceneSampler, tmp_path: Path) -> None:
    local = write_chips(live, tmp_path / "local", shard_size=4, progress=False)
    spread = write_chips(live, tmp_path / "ray", shard_size=4, engine="ray", progress=False)
    shards = [json.loads((store / "manifest.json").read_text())["shards"] for store in (local, spread)]
    assert shards[0] == shards[1]  # every shard file has the same bytes (sha256)
    a, b = ChipSampler(local), ChipSampler(spread)
    for i in range(len(live)):
        np.testing.assert_array_equal(a[i].image, b[i].image)
        np.testing.assert_array_equal(a[i].mask, b[i].mask)
    # Resuming with the ray engine keeps finished shards and rewrites a missing one.
    (spread / "mask" / "c" / "2" / "0" / "0").unlink()
    (spread / "manifest.json").unlink()
    write_chips(live, spread, shard_size=4, engine="ray", resume=True, progress=False)
    assert json.loads((spread / "manifest.json").read_text())["shards"] == shards[0]


def two_classes() -> Any:
    """A model factory (picklable): class 1 where the first band is above mid-range."""

    def predict(batch: np.ndarray) -> np.ndarray:
        high = batch[:, :1] > 0.5
        return np.concatenate([~high, high], axis=1).astype(np.float32)

    return predict


def test_predict_scenes_one_output_per_scene_failures_reported_reruns_skip(
    catalogue: tuple[list[dict[str, str]], Path], tmp_path: Path
) -> None:
    scenes, _ = catalogue
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    listed = [*scenes[:3], {"image_path": str(broken)}]
    out = tmp_path / "predictions"
    records = predict_scenes(listed, two_classes, out, patch_size=SIZE, n_classes=2)
    assert [r["status"] for r in records] == ["written", "written", "written", "failed"], [r["error"] for r in records]
    assert "broken.tif" in records[3]["error"]
    for record, scene in zip(records[:3], scenes):
        with rasterio.open(record["out_path"]) as dst, rasterio.open(scene["image_path"]) as src:
            assert (dst.width, dst.height, dst.transform) == (src.width, src.height, src.transform)
            np.testing.assert_array_equal(dst.read(1), (src.read(1) / 255 > 0.5).astype(np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["scene0000.tif", "scene0001.tif", "scene0002.tif"]
    again = predict_scenes(listed, two_classes, out, patch_size=SIZE, n_classes=2)
    assert [r["status"] for r in again] == ["skipped", "skipped", "skipped", "failed"]


def _open_in_ray_workers(folder: Path) -> list[str]:
    """Files under ``folder`` that a Ray worker process of this machine holds open (Linux /proc)."""
    held = []
    for proc in Path("/proc").iterdir():
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        held += [link for link in links if link.startswith(str(folder))]
    return held


def test_ray_engine_same_arrays_on_many_scenes_no_handle_left_open(tmp_path: Path) -> None:
    """engine="ray" on the 2-CPU cluster against engine=None, 200 scenes in 13 shards (7 tasks of 4, 3, 2, 1, 1,
    1 and 1 shards, so each worker runs several with the sampler it unpickled once): the same shard bytes; no
    worker keeps an input open after."""
    scenes, mask = T.write_scene_catalogue(tmp_path / "many", 200, size=32, windows=((0, 0),))
    sampler = SceneSampler(scenes, SIZE, mask_path=mask, n_classes=4)
    local = write_chips(sampler, tmp_path / "local", shard_size=16, progress=False)
    spread = write_chips(sampler, tmp_path / "ray", shard_size=16, engine="ray", progress=False)
    assert [s["files"] for s in json.loads((local / "manifest.json").read_text())["shards"]] == [
        s["files"] for s in json.loads((spread / "manifest.json").read_text())["shards"]
    ]
    if Path("/proc/self/fd").is_dir():
        assert _open_in_ray_workers(tmp_path / "many") == []
