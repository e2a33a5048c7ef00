"""Batches from DataLoader workers through reused shared-memory slots (`crossgeo.torch.ring`).

Every batch must equal the 0-worker loader's, epoch after epoch, whichever worker wrote which slot
(fork and spawn, persistent workers, an epoch broken off early), with every batch of a pass kept
(a slot is never handed out while its batch is unconverted), and a batch that does not fit its
slot or whose image already is float32 must come out as without the ring.
"""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
from torch_scene import PATCH

from crossgeo import PatchSampler
from crossgeo.torch import PatchDataset, make_dataloader
from crossgeo.torch.batches import OutputBuffers, collate_compact, finish_ring_batch
from crossgeo.torch.ring import BatchRing, RingBatch, SlotItems

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
