"""What DataLoader workers run for crossgeo: seeding (`worker_init_fn`), compact collation, and the
conversion of compact batches to float32 / int64 as they leave the loader (`finish_batch`)."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from crossgeo import io as crossgeo_io
from crossgeo.augment import scale_image, seed_augmentation
from crossgeo.torch.dataset import PatchDataset, find_patch_dataset
from crossgeo.torch.ring import BatchRing, RingBatch, SlotItems

__all__ = [
    "CompactItems",
    "ConvertingCollate",
    "OutputBuffers",
    "chain",
    "collate_compact",
    "converting_collate_fn",
    "finish_batch",
    "finish_ring_batch",
    "worker_init_fn",
]


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker and make sure it opens its own raster handles.

    Python's ``random`` and numpy's global generator get the worker's torch seed (which
    differs per worker and per epoch); an unseeded (``seed=None``) augmentation pipeline
    is reseeded from it too, so forked workers do not repeat each other's augmentations.
    Handles a forked worker inherited from the parent process are dropped unused, and the worker
    keeps no looked-up mask windows (`crossgeo.io.MaskBlockCache.keep_windows`): it reads each once. Its
    patches' sources are read one after the other (`crossgeo.io.SourcePool`): the workers fill the cores.
    Its GDAL block cache is lowered to `crossgeo.io.WORKER_BLOCK_CACHE` (`crossgeo.io.cap_block_cache`).
    """
    info = get_worker_info()
    if info is None:  # pragma: no cover - only called inside workers
        return
    crossgeo_io.mask_blocks.keep_windows = False
    crossgeo_io.source_pool.enabled = False
    worker_seed = info.seed % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    dataset = find_patch_dataset(info.dataset)
    if dataset is None:
        return
    crossgeo_io.cap_block_cache(crossgeo_io.WORKER_BLOCK_CACHE, getattr(dataset.sampler, "reading_plan", None))
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
    Items given a slot of a `BatchRing` (`SlotItems`) are stacked into it (`BatchRing.pack`).
    """
    slotted = items if isinstance(items, SlotItems) and items.slot is not None else None
    if items and isinstance(items[0], Mapping) and "image" in items[0]:
        if len({item["image"].dtype for item in items}) > 1:
            items = [{**item, "image": torch.from_numpy(scale_image(item["image"].numpy()))} for item in items]
    if slotted is not None and slotted.ring is not None:
        return slotted.ring.pack(SlotItems(items, slotted.slot, slotted.ring))
    return default_collate(items)


_SCALE = {torch.uint8: 255, torch.uint16: 65535}


def _model_image(image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A compact image (or batch) as the model takes it: float32, uint8 / 255 and uint16 / 65535, other types
    only cast - into ``out`` (float32, the image's shape) if given. The one conversion rule of `finish_batch`
    and `ConvertingCollate`, elementwise: the same bits per patch or per batch."""
    scale = _SCALE.get(image.dtype)
    image = image.to(torch.float32) if out is None else out.copy_(image)
    return image if scale is None else image.div_(scale)


class ConvertingCollate:
    """The ``collate_fn`` of a loader without workers that converts on the CPU (`make_dataloader`).

    Each compact item is converted as `finish_batch` converts a batch (float32, uint8 / 255 and uint16 /
    65535; masks int64) straight into its row of the batch tensors `OutputBuffers` lends: bit for bit
    `finish_batch(collate_compact(items))`, without the stacked compact copy, each item converted soon after
    it was read. Measured with `benchmarks.loader_bench` (600 windows of the 8192^2 scene, 5 pairs of fresh
    processes, medians): reading ahead (``read_threads=2``), whose pool threads compete with the main thread
    for the cores, 3.96 -> 3.75 CPU ms per patch and 421 -> 449 patches/s, a few per cent, near the noise
    (the pairs ranged 3.5-4.4 ms); with one reader no difference (3.17 -> 3.20). Items that are not
    image/mask mappings of one shape go through `collate_compact` (and `finish_batch` converts them).
    """

    def __init__(self, buffers: OutputBuffers) -> None:
        self.buffers = buffers

    def __call__(self, items: list[Any]) -> Any:
        first = items[0] if items else None
        if not isinstance(first, Mapping) or not all(_same_layout(item, first) for item in items):
            return collate_compact(items)
        size = torch.Size((len(items),))
        image = self.buffers.empty(size + first["image"].shape, torch.float32)
        mask = self.buffers.empty(size + first["mask"].shape, torch.int64)
        for row, item in enumerate(items):
            _model_image(item["image"], image[row])
            mask[row].copy_(item["mask"])
        rest = [{key: value for key, value in item.items() if key not in ("image", "mask")} for item in items]
        others = default_collate(rest) if rest[0] else {}
        return {key: image if key == "image" else mask if key == "mask" else others[key] for key in first}


def converting_collate_fn(workers: int, device: torch.device | None) -> Any:
    """A converting loader's ``collate_fn``: `ConvertingCollate` without workers on the CPU (its batches leave
    float32 / int64), else `collate_compact` (the workers stack; `finish_batch` converts, on the device if any)."""
    if workers or (device is not None and device.type != "cpu"):
        return collate_compact
    return ConvertingCollate(OutputBuffers())


def _same_layout(item: Any, first: Mapping[str, Any]) -> bool:
    """Whether ``item`` is an image/mask mapping with the keys and the image and mask shapes of ``first``."""
    return (
        isinstance(item, Mapping)
        and item.keys() == first.keys()
        and all(isinstance(item.get(key), torch.Tensor) for key in ("image", "mask"))
        and item["image"].shape == first["image"].shape
        and item["mask"].shape == first["mask"].shape
    )


class CompactItems(Dataset[dict[str, Any]]):
    """A `PatchDataset` seen by a loader that converts batches: its items, compact (see `make_dataloader`).

    Only the items differ; every other attribute is the dataset's own (epoch, seed, skips ...).
    A batch of indices tagged with a slot of ``ring`` (`crossgeo.torch.ring.SlotIndices`) keeps
    the tag on its items, for `collate_compact`.
    """

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset
        self.ring: BatchRing | None = None

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        plan = getattr(indices, "plan", None)
        if plan is not None:
            self._plan_reads(plan)
        items = [self.dataset.item(index, compact=True) for index in indices]
        slot = getattr(indices, "slot", None)
        return SlotItems(items, slot, self.ring) if slot is not None else items

    def _plan_reads(self, indices: list[int]) -> None:
        """Tell the sampler the windows of the items this worker reads next, in order
        (`crossgeo.torch.ring.RingSampler`; a sampler without `crossgeo.PatchSampler.plan_reads` ignores them)."""
        dataset, plan_reads = self.dataset, getattr(self.dataset.sampler, "plan_reads", None)
        if plan_reads is not None:
            plan_reads([dataset.plan.served(int(i), dataset._pass_of(int(i)))[0] for i in indices], worker=True)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset.item(index, compact=True)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "ring") or name.startswith("__"):  # not set yet while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)


class OutputBuffers:
    """The float32 / int64 tensors `finish_batch` converts compact batches into on the CPU, reused.

    A converted batch is new memory in the main process; glibc serves buffers of that size from
    its heap once one was freed, and the heap of a loop converting batches that DataLoader
    workers sent grew by hundreds of MB it never gave back (docs/performance.md). Here a pass
    converts into at most ``slots`` tensors (an image and a mask per batch), each handed out again once nothing holds
    it: no reference to the tensor object (your ``batch`` variable, a list of batches), no view
    of its memory (a slice, ``.numpy()``, a tensor autograd saved) - the values you keep never
    change. When every slot is held, a batch gets a fresh tensor, as without a pool.
    """

    def __init__(self, slots: int = 8) -> None:
        self.slots = slots
        self._tensors: list[torch.Tensor] = []
        self._idle = self._calibrate()

    def empty(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A tensor of ``shape`` and ``dtype`` whose values will be overwritten: a pooled one nobody holds, or new."""
        spare = None
        for slot, tensor in enumerate(self._tensors):
            if self._idle is not None and _holders(tensor) == self._idle:
                if tensor.shape == shape and tensor.dtype == dtype:
                    return tensor
                spare = slot
        fresh = torch.empty(shape, dtype=dtype)
        if spare is not None:
            self._tensors[spare] = fresh  # an idle buffer of another shape (a last batch)
        elif len(self._tensors) < self.slots:
            self._tensors.append(fresh)
        return fresh

    @staticmethod
    def _calibrate() -> tuple[int, int] | None:
        """What `_holders` says of a tensor only a pool holds (looked at as `empty` does); None: cannot tell."""
        if not hasattr(torch._C, "_storage_Use_Count"):
            return None  # no way to see views of the memory: never reuse
        probe = [torch.empty(1)]
        for _slot, tensor in enumerate(probe):
            return _holders(tensor)
        return None  # pragma: no cover - the list has one tensor


def _holders(tensor: torch.Tensor) -> tuple[int, int]:
    """(Python references to ``tensor``, references to its memory: views, arrays, saved tensors)."""
    return sys.getrefcount(tensor), torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


def finish_ring_batch(batch: Any, ring: BatchRing | None, device: torch.device | None, buffers: OutputBuffers) -> Any:
    """`finish_batch` of a batch that came in a slot of ``ring`` (if it did), the slot then free again.

    The result never is memory of the slot: what the conversion left there (an image already
    float32, a mask already int64) is copied out first."""
    if ring is None or not isinstance(batch, RingBatch):
        return finish_batch(batch, device, buffers)
    out = finish_batch(ring.unpack(batch), device, buffers)
    if isinstance(out, Mapping):
        out = {key: value.clone() if ring.holds(value) else value for key, value in out.items()}
    ring.release(batch.slot)
    return out


def finish_batch(batch: Any, device: torch.device | str | None = None, buffers: OutputBuffers | None = None) -> Any:
    """Move a batch to ``device`` (if given) and convert compact images/masks there: float32 and int64.

    uint8 / 255 and uint16 / 65535 in float32, other types only cast: elementwise, so the
    result equals `crossgeo.augment.to_model_inputs` bit for bit whether done per patch, per
    batch, on the CPU or on the device (the compact batch crosses the bus, 4x-8x smaller).
    On the CPU with ``buffers``, the results are written into its reused tensors (`OutputBuffers`).
    Batches that are not ``{"image", "mask", ...}`` mappings pass through unchanged.
    """
    if not isinstance(batch, Mapping) or not isinstance(batch.get("image"), torch.Tensor):
        return batch
    out = dict(batch)
    image, mask = batch["image"], batch["mask"]
    if device is not None:
        image = image.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
    into = None
    if buffers is not None and image.device.type == "cpu" and image.dtype != torch.float32:
        into = buffers.empty(image.shape, torch.float32)
    image = _model_image(image, into)
    if buffers is not None and mask.device.type == "cpu" and mask.dtype != torch.int64:
        mask = buffers.empty(mask.shape, torch.int64).copy_(mask)
    out["image"], out["mask"] = image, mask.to(torch.int64)
    return out
