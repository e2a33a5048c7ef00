"""What a DataLoader worker keeps: no looked-up mask windows, and fork and spawn workers serve the same batches.

The scene's mask is in EPSG:4326 on a Web Mercator image, so it is read through the ``"lookup"`` view with the
mask (the part under the image) kept in `crossgeo.io.mask_blocks`. A worker reads each window once per epoch, so
it keeps no window (`crossgeo.io.MaskBlockCache.keep_windows`): a collate function run in the worker reports what
its cache holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from torch.utils.data import default_collate

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo.testing import (
    CoordinateScene,
    decode_coordinates,
    force_mask_view,
    lonlat_classes,
    window_coordinates,
)
from crossgeo.torch import PatchDataset, make_dataloader

PATCH = 32
ROWS = [0, 40, 80, 120, 160, 200, 17, 63, 99, 140, 181, 224]
COLS = [0, 50, 100, 150, 200, 224, 31, 77, 111, 13, 190, 66]


def collate_reporting_the_cache(items: list[Any]) -> Any:
    """`default_collate`, plus what this process's `mask_blocks` holds: (entries, bytes)."""
    batch = default_collate(items)
    batch["kept"] = torch.tensor([len(crossgeo.io.mask_blocks), crossgeo.io.mask_blocks.bytes])
    return batch


@pytest.fixture
def scene(tmp_path: Path) -> CoordinateScene:
    return CoordinateScene(tmp_path, 256)


@pytest.fixture
def dataset(scene: CoordinateScene) -> PatchDataset:
    mask = scene.lonlat_mask(resolution=0.0001)
    sampler = PatchSampler(scene.image, mask, scene.windows(ROWS, COLS), PATCH, n_classes=4)
    assert (sampler.mask_view, sampler._plan.mask.lookup_whole) == ("lookup", True)
    return PatchDataset(sampler, return_metadata=True)


def kept_mask_bytes(dataset: PatchDataset) -> int:
    """The bytes of the mask the lookup view keeps: the part under the image (`SourcePlan.whole_window`) or all."""
    part = dataset.sampler._plan.mask.whole_window
    with rasterio.open(dataset.sampler.mask_path) as mask:
        height, width = (mask.height, mask.width) if part is None else part[2:]
        return height * width * np.dtype(mask.dtypes[0]).itemsize


def assert_true_pixels(batch: dict[str, Any], scene: CoordinateScene) -> None:
    """Each image encodes the pixel coordinates of its window; each mask holds the lon/lat classes there."""
    for image, mask, row_off, col_off in zip(
        batch["image"], batch["mask"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]
    ):
        want_rows, want_cols = window_coordinates(int(row_off), int(col_off), PATCH)
        rows, cols = decode_coordinates(np.round(image.numpy() * 255).astype(np.uint8))
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(cols, want_cols)
        xs, ys = scene.transform @ (want_cols + 0.5, want_rows + 0.5)
        lon, lat = rasterio.warp.transform("EPSG:3857", "EPSG:4326", xs.ravel(), ys.ravel())
        truth = lonlat_classes(np.array(lon), np.array(lat), 0.01, 4).reshape(PATCH, PATCH)
        assert (mask.numpy() == truth).mean() >= 0.95  # nearest neighbour: a pixel on a class edge may go either way


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_keep_no_looked_up_windows_and_serve_the_batches_of_one_process(
    scene: CoordinateScene, dataset: PatchDataset, context: str
) -> None:
    crossgeo.io.mask_blocks.clear()
    single = list(make_dataloader(dataset, batch_size=4, shuffle=False))
    assert [int(r) for b in single for r in b["metadata"]["row_off"]] == ROWS
    for batch in single:
        assert_true_pixels(batch, scene)
    assert len(crossgeo.io.mask_blocks) == 1 + len(ROWS)  # the main process keeps the windows it looked up

    crossgeo.io.mask_blocks.clear()  # forked workers must read the mask themselves
    options = {"batch_size": 4, "shuffle": False, "num_workers": 2, "multiprocessing_context": context}
    batches = list(make_dataloader(dataset, **options))
    assert len(batches) == len(single)
    for got, want in zip(batches, single):
        assert got["image"].dtype == torch.float32 and got["mask"].dtype == torch.int64
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["mask"], want["mask"])
        assert torch.equal(got["metadata"]["row_off"], want["metadata"]["row_off"])

    crossgeo.io.mask_blocks.clear()
    reports = [b["kept"].tolist() for b in make_dataloader(dataset, collate_fn=collate_reporting_the_cache, **options)]
    assert reports == [[1, kept_mask_bytes(dataset)]] * len(single)  # the kept mask, not one window more


def collate_reporting_the_block_cache(items: list[Any]) -> Any:
    """`default_collate`, plus this process's GDAL block cache bound in bytes."""
    batch = default_collate(items)
    batch["gdal_cachemax"] = torch.tensor(int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")))
    return batch


@pytest.mark.parametrize(("view", "lowered"), [("lookup", True), ("grid", False)])
def test_workers_lower_the_gdal_block_cache_unless_a_view_lives_in_it(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, view: str, lowered: bool
) -> None:
    """A worker's GDAL block cache is `crossgeo.io.WORKER_BLOCK_CACHE` at most, not with a ``"grid"`` view."""
    force_mask_view(monkeypatch, view)
    sampler = PatchSampler(scene.image, scene.lonlat_mask(resolution=0.0001), scene.windows(ROWS, COLS), PATCH)
    assert sampler.mask_view == view
    before = int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
    assert before > crossgeo.io.WORKER_BLOCK_CACHE  # the main process's default
    options = {"batch_size": 6, "num_workers": 2, "collate_fn": collate_reporting_the_block_cache}
    reports = {int(b["gdal_cachemax"]) for b in make_dataloader(PatchDataset(sampler), **options)}
    assert reports == {crossgeo.io.WORKER_BLOCK_CACHE if lowered else before}
    assert int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) == before  # the main process keeps its own
