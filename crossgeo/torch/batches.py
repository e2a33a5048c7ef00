"""What DataLoader workers run for crossgeo: seeding (`worker_init_fn`), compact collation, and the
conversion of compact batches to float32 / int64 as they leave the loader (`finish_batch`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from crossgeo.augment import scale_image, seed_augmentation
from crossgeo.torch.dataset import find_patch_dataset

__all__ = ["chain", "collate_compact", "finish_batch", "worker_init_fn"]


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker and make sure it opens its own raster handles.

    Python's ``random`` and numpy's global generator get the worker's torch seed (which
    differs per worker and per epoch); an unseeded (``seed=None``) augmentation pipeline
    is reseeded from it too, so forked workers do not repeat each other's augmentations.
    Handles a forked worker inherited from the parent process are dropped unused.
    """
    info = get_worker_info()
    if info is None:  # pragma: no cover - only called inside workers
        return
    worker_seed = info.seed % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    dataset = find_patch_dataset(info.dataset)
    if dataset is None:
        return
    dataset.sampler.release_inherited_handles()
    if dataset.seed is None and dataset.augmentation is not None:
        seed_augmentation(dataset.augmentation, worker_seed)


def chain(first: Callable[[int], None], second: Callable[[int], None] | None) -> Callable[[int], None]:
    if second is None:
        return first
    return _Chained(first, second)


class _Chained:
    """Picklable composition of two worker init functions (spawn pickles them)."""

    def __init__(self, first: Callable[[int], None], second: Callable[[int], None]) -> None:
        self.first, self.second = first, second

    def __call__(self, worker_id: int) -> None:
        self.first(worker_id)
        self.second(worker_id)


def collate_compact(items: list[Any]) -> Any:
    """``default_collate`` for compact items (``PatchDataset(compact=True)``), run in the workers.

    Stacks the images in their stored dtype and the masks in their narrow type. When an
    augmentation made some images of the batch float and left others integer, those are
    scaled to float32 here first (the numbers `to_model_inputs` gives), so the stack is exact.
    """
    if items and isinstance(items[0], Mapping) and "image" in items[0]:
        if len({item["image"].dtype for item in items}) > 1:
            items = [{**item, "image": torch.from_numpy(scale_image(item["image"].numpy()))} for item in items]
    return default_collate(items)


_SCALE = {torch.uint8: 255, torch.uint16: 65535}


def finish_batch(batch: Any, device: torch.device | str | None = None) -> Any:
    """Move a batch to ``device`` (if given) and convert compact images/masks there: float32 and int64.

    uint8 / 255 and uint16 / 65535 in float32, other types only cast: elementwise, so the
    result equals `crossgeo.augment.to_model_inputs` bit for bit whether done per patch, per
    batch, on the CPU or on the device (the compact batch crosses the bus, 4x-8x smaller).
    Batches that are not ``{"image", "mask", ...}`` mappings pass through unchanged.
    """
    if not isinstance(batch, Mapping) or not isinstance(batch.get("image"), torch.Tensor):
        return batch
    out = dict(batch)
    image, mask = batch["image"], batch["mask"]
    if device is not None:
        image = image.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
    scale = _SCALE.get(image.dtype)
    image = image.to(torch.float32)
    if scale is not None:
        image = image.div_(scale)
    out["image"], out["mask"] = image, mask.to(torch.int64)
    return out
