"""Compact transfer (``PatchDataset(compact=True)``, and `make_dataloader`'s default): narrow items, float batches.

Every batch of a compact loader must equal the float loader's (``compact_transfer=False``:
the float items stacked) bit for bit, for uint8 and uint16 images, with 0 and 2 workers,
moved to a device, and with an augmentation that makes some images float (``Normalize``
with p=0.5) so a batch mixes float and integer items.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
import torch
from torch_scene import PATCH, assert_window

from crossgeo import PatchSampler, testing
from crossgeo.torch import PatchDataset, make_dataloader

FLIP_AND_SOMETIMES_NORMALIZE = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.Normalize", "p": 0.5},
]


def _batches(dataset: PatchDataset, **options: Any) -> list[dict[str, Any]]:
    loader = make_dataloader(dataset, batch_size=3, **options)
    assert loader.converts is (dataset.compact or options.get("compact_transfer", True))
    dataset.set_epoch(1)
    return list(loader)


def _assert_same(compact: list[dict[str, Any]], plain: list[dict[str, Any]]) -> None:
    assert len(compact) == len(plain) > 0
    for a, b in zip(compact, plain):
        assert a["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
        assert torch.equal(a["image"], b["image"])  # bit-identical floats (no NaN here)
        assert torch.equal(a["mask"], b["mask"])
        if "metadata" in b:
            assert torch.equal(a["metadata"]["row_off"], b["metadata"]["row_off"])


def test_items_are_compact_and_the_loader_restores_them(scene: types.SimpleNamespace) -> None:
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    dataset = PatchDataset(sampler, compact=True, return_metadata=True)
    item = dataset[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, PATCH, PATCH)
    assert item["mask"].dtype == torch.uint8
    plain = PatchDataset(sampler, return_metadata=True)
    for workers in (0, 2):
        compact_batches = _batches(dataset, num_workers=workers)
        _assert_same(compact_batches, _batches(plain, num_workers=workers, compact_transfer=False))
        first = compact_batches[0]
        assert_window(first["image"][0], int(first["metadata"]["row_off"][0]), int(first["metadata"]["col_off"][0]))
        assert set(first["mask"].unique().tolist()) <= {0, 1}


def test_device_move_converts_after_the_move(scene: types.SimpleNamespace) -> None:
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    compact = _batches(PatchDataset(sampler, compact=True), device="cpu")
    _assert_same(compact, _batches(PatchDataset(sampler), compact_transfer=False))
    assert compact[0]["image"].device == torch.device("cpu")


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_that_makes_some_images_float(scene: types.SimpleNamespace, workers: int) -> None:
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    options = {"augmentation_list": FLIP_AND_SOMETIMES_NORMALIZE, "seed": 5}
    compact = PatchDataset(sampler, compact=True, **options)
    dtypes = {compact[i]["image"].dtype for i in range(len(compact))}
    assert dtypes == {torch.uint8, torch.float32}  # the batches below mix both
    _assert_same(
        _batches(compact, num_workers=workers),
        _batches(PatchDataset(sampler, **options), num_workers=workers, compact_transfer=False),
    )


def test_uint16_image_and_ignore_index_fill(scene: types.SimpleNamespace, tmp_path: Any) -> None:
    image16 = testing.write_raster(
        tmp_path / "image16.tif",
        testing.coordinate_bands(256, 256, "uint16"),
        crs=scene.crs,
        transform=scene.transform,
    )
    sampler = PatchSampler(
        str(image16), scene.mask_tif, scene.windows_csv, PATCH, n_classes=2, image_dtype="uint16", mask_fill_value=255
    )
    item = PatchDataset(sampler, compact=True)[0]
    assert item["image"].dtype == torch.uint16 and item["mask"].dtype == torch.uint8
    compact = _batches(PatchDataset(sampler, compact=True))
    plain = _batches(PatchDataset(sampler), compact_transfer=False)
    _assert_same(compact, plain)
    rows = np.rint(compact[0]["image"][0, 0].numpy() * 65535).astype(np.int64)
    np.testing.assert_array_equal(rows[:, 0], np.arange(PATCH) + int(sampler.row_off[0]))


def test_compact_must_be_a_bool(scene: types.SimpleNamespace) -> None:
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    with pytest.raises(TypeError, match="compact must be true or false"):
        PatchDataset(sampler, compact="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_transfers_compact_by_default_with_and_without_workers(
    scene: types.SimpleNamespace, context: str
) -> None:
    """Compact transfer of a float PatchDataset's items, converted per batch: the float items, stacked."""
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    options = {"augmentation_list": FLIP_AND_SOMETIMES_NORMALIZE, "seed": 5, "return_metadata": True}
    dataset = PatchDataset(sampler, **options)
    assert make_dataloader(dataset, batch_size=3).converts  # no workers: compact by default
    assert make_dataloader(dataset, batch_size=3, num_workers=2).converts  # CPU workers too (reused buffers)
    assert not make_dataloader(dataset, batch_size=3, num_workers=2, compact_transfer=False).converts
    loader = make_dataloader(dataset, batch_size=3, num_workers=2, multiprocessing_context=context)
    assert loader.converts and loader.dataset.epoch == dataset.epoch and len(loader.dataset) == len(dataset)
    dataset.set_epoch(2)
    batches = list(loader)
    assert dataset[0]["image"].dtype == torch.float32  # the dataset itself is unchanged
    expected = [dataset[i] for i in range(len(dataset))]  # epoch 2, as the loader saw
    stacked = [
        {key: torch.stack([item[key] for item in expected[i : i + 3]]) for key in ("image", "mask")}
        for i in range(0, len(expected), 3)
    ]
    _assert_same(batches, stacked)


def test_compact_transfer_leaves_custom_items_alone(scene: types.SimpleNamespace) -> None:
    """A subclass with its own __getitem__, a collate_fn of yours or compact_transfer=False keep float items."""

    class Tagged(PatchDataset):
        def __getitem__(self, index: int) -> dict[str, Any]:
            item = super().__getitem__(index)
            item["tag"] = index
            return item

    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    tagged = make_dataloader(Tagged(sampler), batch_size=3)
    assert not tagged.converts and next(iter(tagged))["tag"].tolist() == [0, 1, 2]
    assert not make_dataloader(PatchDataset(sampler), batch_size=3, compact_transfer=False).converts
    collate = make_dataloader(PatchDataset(sampler), batch_size=3, collate_fn=lambda items: items)
    assert not collate.converts and next(iter(collate))[0]["image"].dtype == torch.float32
    with pytest.raises(TypeError, match="compact_transfer must be None, true or false"):
        make_dataloader(PatchDataset(sampler), compact_transfer="yes")


def _items(images: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Compact items of these images; each mask's pixels count from its item's position."""
    masks = [torch.arange(64, dtype=torch.uint8).reshape(8, 8) + k for k in range(len(images))]
    return [
        {"image": image, "mask": mask, "metadata": {"row_off": k}} for k, (image, mask) in enumerate(zip(images, masks))
    ]


@pytest.mark.parametrize("kind", ["uint8", "uint16", "mixed", "int16"])
def test_converting_collate_is_collate_compact_then_finish_batch(kind: str) -> None:
    """No workers: each item converted into its row of the batch, bit for bit what stacking then converting gives."""
    from crossgeo.torch.batches import ConvertingCollate, OutputBuffers, collate_compact, finish_batch

    generator = np.random.default_rng(7)
    top = {"uint8": 256, "uint16": 65536, "mixed": 256, "int16": 3000}[kind]
    dtype = "uint8" if kind == "mixed" else kind
    images = [torch.from_numpy(generator.integers(0, top, (3, 8, 8)).astype(dtype)) for _ in range(4)]
    if kind == "mixed":  # an augmentation that made some images float (already scaled)
        images[1] = torch.from_numpy(generator.random((3, 8, 8), dtype=np.float32))
    items = _items(images)
    collate = ConvertingCollate(OutputBuffers())
    batch, expected = collate(items), finish_batch(collate_compact(items))
    assert list(batch) == ["image", "mask", "metadata"]
    assert batch["image"].dtype == torch.float32 and batch["mask"].dtype == torch.int64
    assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["mask"], expected["mask"])
    assert batch["mask"][2, 0, 1].item() == 1 + 2  # row 2 is item 2's mask
    assert batch["metadata"]["row_off"].tolist() == [0, 1, 2, 3]
    assert finish_batch(batch)["image"] is batch["image"]  # nothing left to convert as the batch leaves


def test_converting_collate_reuses_buffers_and_leaves_odd_items_to_collate_compact() -> None:
    from crossgeo.torch.batches import ConvertingCollate, OutputBuffers

    collate = ConvertingCollate(OutputBuffers())
    images = [torch.full((3, 8, 8), k, dtype=torch.uint8) for k in range(3)]
    first = collate(_items(images))
    memory = first["image"].data_ptr()
    held = collate(_items(images))  # the first batch is still held: new memory
    assert held["image"].data_ptr() != memory
    del first
    again = collate(_items(images[::-1]))  # nobody holds the first batch's tensors now: reused
    assert again["image"].data_ptr() == memory
    assert again["image"][0, 0, 0, 0].item() == pytest.approx(2 / 255) and held["image"][0, 0, 0, 0].item() == 0
    odd = {"image": torch.zeros((3, 4, 4), dtype=torch.uint8), "mask": torch.zeros((4, 4))}
    uneven = [*_items(images[:2]), odd]
    with pytest.raises(RuntimeError):  # not one shape: default collation's own error, as without the fast path
        collate(uneven)


def test_the_loader_converts_items_into_rows_only_without_workers_on_the_cpu(scene: types.SimpleNamespace) -> None:
    from crossgeo.torch.batches import ConvertingCollate, collate_compact

    sampler = PatchSampler(scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2)
    dataset = PatchDataset(sampler)
    assert isinstance(make_dataloader(dataset, batch_size=3).collate_fn, ConvertingCollate)
    assert isinstance(make_dataloader(dataset, batch_size=3, device="cpu").collate_fn, ConvertingCollate)
    assert make_dataloader(dataset, batch_size=3, num_workers=2).collate_fn is collate_compact
    assert make_dataloader(dataset, batch_size=3, device="meta").collate_fn is collate_compact  # converts there
