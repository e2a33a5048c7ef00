"""crossgeo.keras.PatchPyDataset(read_threads=...): each batch's patches read at once, the one-reader batches."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossgeo import ConfigError, OptionTypeError, PatchSampler, testing
from crossgeo.keras import PatchPyDataset

AUGMENTATIONS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0},
]


def _epochs(dataset: PatchPyDataset, epochs: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(epochs):
        dataset.on_epoch_begin()
        out += [dataset[b] for b in range(len(dataset))]
        dataset.on_epoch_end()
    return out


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want) > 0
    for (x, y), (xw, yw) in zip(got, want):
        assert x.dtype == xw.dtype == np.float32 and y.dtype == yw.dtype == np.int64
        np.testing.assert_array_equal(x, xw)
        np.testing.assert_array_equal(y, yw)


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("threads", [2, 3])
def test_read_threads_give_the_one_reader_batches(sampler: PatchSampler, compact: bool, threads: int) -> None:
    options: dict[str, Any] = {"shuffle": True, "seed": 4, "augmentation_list": AUGMENTATIONS, "compact": compact}
    want = _epochs(PatchPyDataset(sampler, 4, read_threads=0, **options))
    before = threading.active_count()
    dataset = PatchPyDataset(sampler, 4, read_threads=threads, **options)
    assert dataset.read_threads == threads
    _assert_same(_epochs(dataset), want)
    assert threading.active_count() == before


def test_thread_churn_reads_with_bounded_handles(sampler: PatchSampler) -> None:
    """A pool per batch: threads end and new ones (often with a dead thread's ident) adopt their handles."""
    fresh = PatchSampler(sampler.image_path, sampler.mask_path, sampler.crops_path, sampler.patch_size, n_classes=3)
    want = _epochs(PatchPyDataset(fresh, 3, seed=1, read_threads=0), epochs=5)
    _assert_same(_epochs(PatchPyDataset(fresh, 3, seed=1, read_threads=2), epochs=5), want)
    assert fresh._readers.created <= 3, fresh._readers.created


def test_read_ahead_plans_each_stretch_of_the_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an image of 32^2 tiles the pool's threads share the decoded tiles of the windows planned (the epoch's
    next `PLAN_ITEMS` windows from each batch that reaches past the plan): the batches equal one reader's, every
    window is planned, in the epoch's order, and a tile is decoded about once."""
    import crossgeo.loading

    monkeypatch.setattr(crossgeo.loading, "PLAN_ITEMS", 10)
    image, mask, windows = testing.write_tiled_scene(tmp_path, 160, 30, 40, 3, seed=9)
    options: dict[str, Any] = {"shuffle": True, "seed": 2, "augmentation_list": AUGMENTATIONS}
    want = _epochs(PatchPyDataset(PatchSampler(image, mask, windows, 40, n_classes=3), 4, read_threads=0, **options))
    sampler = PatchSampler(image, mask, windows, 40, n_classes=3)
    planned: list[list[int]] = []
    plan_reads = sampler.plan_reads
    monkeypatch.setattr(sampler, "plan_reads", lambda positions, readers: (planned.append(positions),
                                                                           plan_reads(positions, readers)))  # fmt: skip
    dataset = PatchPyDataset(sampler, 4, read_threads=2, **options)
    orders = [dataset.plan.order(epoch).tolist() for epoch in (0, 1)]
    _assert_same(_epochs(dataset), want)
    # Batches of 4: the one from window 8 reaches past the first plan (0-9), the one from 16 past the second.
    assert planned == [order[start : start + 10] for order in orders for start in (0, 8, 16, 24)]
    store = sampler._kept.get(0)
    assert store is not None and 0 < store.decoded <= 1.5 * 25  # 25 tiles, ~120 windows' reads of 4-9 tiles


def test_defaults_and_checks(sampler: PatchSampler) -> None:
    from crossgeo.readahead import resolve_read_threads

    assert PatchPyDataset(sampler, 4).read_threads == resolve_read_threads(None)
    assert PatchPyDataset(sampler, 4, workers=2).read_threads == 0  # Keras builds batches in parallel
    assert PatchPyDataset(sampler, 4, workers=2, read_threads=2).read_threads == 2
    with pytest.raises(ConfigError, match="read_threads must be >= 0"):
        PatchPyDataset(sampler, 4, read_threads=-1)
    with pytest.raises(OptionTypeError, match="read_threads must be an integer"):
        PatchPyDataset(sampler, 4, read_threads=2.0)  # type: ignore[arg-type]


def test_mapping_key_and_damaged_tiles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mbtiles, mask, windows = testing.write_damaged_mbtiles_scene(tmp_path)
    config = {
        "image_mbtiles_path": mbtiles,
        "mask_path": mask,
        "crops_path": windows,
        "patch_size": 64,
        "selected_bands": [1, 2, 3],
        "on_read_error": "skip",
    }
    runs, skipped = [], []
    for threads in (0, 2):
        dataset = PatchPyDataset({**config, "read_threads": threads}, 4)
        assert dataset.read_threads == threads
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="crossgeo"):
            runs.append(_epochs(dataset, epochs=1))
        skipped.append(dataset.sampler.skipped)
        assert f"epoch 0: {dataset.sampler.skipped} sample(s) came from a replacement window" in caplog.text
    _assert_same(runs[1], runs[0])
    assert skipped[0] == skipped[1] > 0
