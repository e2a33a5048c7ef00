"""Batches from DataLoader workers through reused shared-memory slots (`crossgeo.torch.ring`).

Every batch must equal the 0-worker loader's, epoch after epoch, whichever worker wrote which slot
(fork and spawn, persistent workers, an epoch broken off early), with every batch of a pass kept
(a slot is never handed out while its batch is unconverted), and a batch that does not fit its
slot or whose image already is float32 must come out as without the ring.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_scene import PATCH

import crossgeo.io
import crossgeo.torch.ring
from crossgeo import PatchSampler, testing
from crossgeo.torch import PatchDataset, make_dataloader
from crossgeo.torch.batches import OutputBuffers, collate_compact, finish_ring_batch
from crossgeo.torch.ring import BatchRing, RingBatch, RingSampler, SlotItems

FLIP = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]
NORMALIZE = [{"_target_": "albumentations.Normalize", "p": 1.0}]


def _dataset(scene: types.SimpleNamespace, **options: Any) -> PatchDataset:
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    options = {"augmentation_list": FLIP, "seed": 3, "samples_per_epoch": 40, "return_metadata": True, **options}
    return PatchDataset(sampler, **options)


def _epochs(dataset: PatchDataset, epochs: list[int], *, stop_after: int | None = None, **options: Any) -> Any:
    """The batches of ``epochs`` (each kept whole); the first epoch is broken off after ``stop_after`` batches."""
    loader = make_dataloader(dataset, batch_size=3, shuffle=True, **options)
    out: dict[int, list[dict[str, Any]]] = {}
    if stop_after is not None:
        dataset.set_epoch(0)
        for count, _batch in enumerate(loader, 1):
            if count == stop_after:
                break
    for epoch in epochs:
        dataset.set_epoch(epoch)
        out[epoch] = list(loader)
    return loader, out


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want) == 14  # 40 items in batches of 3
    for a, b in zip(got, want):
        assert a["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert torch.equal(a["metadata"]["row_off"], b["metadata"]["row_off"])
        assert torch.equal(a["metadata"]["col_off"], b["metadata"]["col_off"])


@pytest.mark.parametrize(
    ("context", "persistent", "stop_after"),
    [("fork", False, None), ("fork", True, 2), ("fork", False, 2), ("spawn", True, 1)],
)
def test_worker_batches_through_the_ring_equal_the_0_worker_batches(
    scene: types.SimpleNamespace, context: str, persistent: bool, stop_after: int | None
) -> None:
    dataset = _dataset(scene)
    _, want = _epochs(dataset, [1, 2, 3], num_workers=0)
    loader, got = _epochs(
        dataset,
        [1, 2, 3],
        stop_after=stop_after,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=persistent,
    )
    ring = loader._ring
    assert ring is not None and ring.slots == 2 * (2 + 1)  # prefetch_factor + 1 slots per worker
    assert ring.memory.is_shared() and ring._free == set(range(ring.slots))  # every slot given back
    assert bool(ring.memory.any())  # the workers wrote the batches there
    for epoch in (1, 2, 3):
        _assert_same(got[epoch], want[epoch])
    assert not torch.equal(got[1][0]["image"], got[2][0]["image"])  # the epochs differ (shuffle, flips)


def test_float_images_are_copied_out_of_their_slot(scene: types.SimpleNamespace) -> None:
    """A Normalize-d (float32) image is not converted: the loader copies it before the slot is reused."""
    dataset = _dataset(scene, augmentation_list=NORMALIZE)
    _, want = _epochs(dataset, [1], num_workers=0)
    loader, got = _epochs(dataset, [1], num_workers=2)
    assert loader._ring is not None
    assert got[1][0]["image"].dtype == torch.float32
    _assert_same(got[1], want[1])


def _items(dataset: PatchDataset, indices: list[int]) -> list[dict[str, Any]]:
    return [dataset.item(i, compact=True) for i in indices]


def test_a_batch_that_does_not_fit_its_slot_travels_whole(scene: types.SimpleNamespace) -> None:
    dataset = _dataset(scene)
    items = _items(dataset, [0, 1, 2])
    buffers = OutputBuffers()
    want = finish_ring_batch(collate_compact(items), None, None, buffers)
    small = BatchRing(slots=1, capacity=3 * PATCH * PATCH)  # room for the uint8 images only, not the masks
    packed = collate_compact(SlotItems(items, 0, small))
    assert isinstance(packed, RingBatch) and packed.layout == {} and packed.rest["image"].dtype == torch.uint8
    small.take()
    got = finish_ring_batch(packed, small, None, buffers)
    assert small._free == {0}  # the slot is free again
    roomy = BatchRing(slots=1, capacity=1 << 20)
    packed = collate_compact(SlotItems(items, 0, roomy))
    assert set(packed.layout) == {"image", "mask"}
    kept = finish_ring_batch(packed, roomy, None, buffers)
    # The slot is then reused for other items: what was handed out does not change.
    finish_ring_batch(collate_compact(SlotItems(_items(dataset, [5, 6, 7]), 0, roomy)), roomy, None, buffers)
    for out in (got, kept):
        assert torch.equal(out["image"], want["image"]) and torch.equal(out["mask"], want["mask"])
        assert torch.equal(out["metadata"]["row_off"], want["metadata"]["row_off"])


def test_each_workers_first_batch_carries_its_share_of_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch deals batch k to worker k % workers: a worker's first batch names every index it will be sent in
    the pass, in order (its reader keeps the image blocks it needs again: `crossgeo.io.PlannedBlocks`), up to
    `crossgeo.torch.ring.PLAN_BATCHES` batches, then the next plan comes with the batch after them."""
    batches = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13]]
    sent = list(RingSampler(batches, BatchRing(6, 64, parts=2)))
    assert [list(batch) for batch in sent] == batches
    assert [batch.plan for batch in sent] == [[0, 1, 2, 6, 7, 8, 12, 13], [3, 4, 5, 9, 10, 11], None, None, None]
    monkeypatch.setattr(crossgeo.torch.ring, "PLAN_BATCHES", 2)  # a plan names the next two batches
    sent = list(RingSampler(batches, BatchRing(6, 64, parts=2)))
    assert [batch.plan for batch in sent] == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11], None, None, [12, 13]]


_PLANNED_READS = None  # a multiprocessing.Value in the test below (forked workers inherit the patched class)


def _counted_plan(self: Any, windows: list[tuple[int, int]], size: int, readers: int = 1) -> None:
    assert _PLANNED_READS is not None
    with _PLANNED_READS.get_lock():
        _PLANNED_READS.value += len(windows)
    _PLAN(self, windows, size, readers)


_PLAN = crossgeo.io.PlannedBlocks.plan


@pytest.mark.parametrize(("context", "persistent"), [("fork", False), ("fork", True), ("spawn", False)])
def test_workers_told_their_windows_read_the_0_worker_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: str, persistent: bool
) -> None:
    """An image of 32^2 tiles (blocks a worker's reader keeps for the windows its plan names,
    `crossgeo.io.PlannedBlocks`): 2 workers' batches equal the 0-worker ones, epoch after epoch, with seeded
    flips; forked workers are told every window they read (counted through the class they inherit)."""
    global _PLANNED_READS
    import multiprocessing

    image, mask, windows = testing.write_tiled_scene(tmp_path, 256, 50, 48, 2, seed=5)
    dataset = PatchDataset(PatchSampler(image, mask, windows, 48, n_classes=2), augmentation_list=FLIP, seed=3)
    _PLANNED_READS = multiprocessing.get_context("fork").Value("i", 0)
    monkeypatch.setattr(crossgeo.io.PlannedBlocks, "plan", _counted_plan)
    _, want = _epochs(dataset, [0, 1], num_workers=0)
    _, got = _epochs(dataset, [0, 1], num_workers=2, multiprocessing_context=context, persistent_workers=persistent)
    for epoch in (0, 1):
        assert len(got[epoch]) == len(want[epoch]) == 17  # 50 windows in batches of 3
        for a, b in zip(got[epoch], want[epoch]):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert _PLANNED_READS.value == (100 if context == "fork" else 0)  # 50 windows, 2 epochs
    _, ahead = _epochs(dataset, [0, 1], num_workers=0, read_threads=2)  # the read-ahead pool plans them too
    for epoch in (0, 1):
        for a, b in zip(ahead[epoch], want[epoch], strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert _PLANNED_READS.value == (200 if context == "fork" else 100)
