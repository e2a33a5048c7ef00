"""`make_dataloader`: a DataLoader from a dataset's ``data_loader`` options, seeded, in the epoch order
the tf.data and Keras adapters use (`EpochOrderSampler`), with compact transfer where it wins."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.pin_memory import pin_memory

from crossgeo.config import check_keys, check_seed
from crossgeo.dropin import DROPIN_DATA_LOADER_KEYS, configured_weights, loader_options
from crossgeo.errors import OptionError, OptionTypeError
from crossgeo.loading import (
    check_replicas,
    check_weights,
    epoch_order,
    report_skipped,
    require_shared_seed,
    require_windows,
    resolve_weights,
    scene_blocks,
)
from crossgeo.memory import trim_heap
from crossgeo.options import check_int
from crossgeo.readahead import resolve_read_threads
from crossgeo.torch import batches
from crossgeo.torch.batches import CompactItems, OutputBuffers, chain, worker_init_fn
from crossgeo.torch.dataset import DATA_LOADER_KEYS, PatchDataset, find_patch_dataset
from crossgeo.torch.ring import BatchRing, RingSampler, pass_ring

__all__ = ["EpochOrderSampler", "PatchDataLoader", "make_dataloader"]


class PatchDataLoader(DataLoader[Any]):
    """A ``DataLoader`` that keeps a `PatchDataset`'s augmentation epoch in step.

    On each ``iter()``: an explicit ``dataset.set_epoch(e)`` since the last pass wins; else
    the epoch of a sampler with ``.epoch`` (``DistributedSampler``) is followed when it was
    changed (or on the first pass); else the epoch advances by one after the first pass.
    """

    _passes = 0
    _sampler_epoch: int | None = None
    device: torch.device | None = None
    """Where `make_dataloader(device=...)` moves each batch (None: stays on the CPU)."""
    converts: bool = False
    """Whether batches arrive compact and are converted to float32 / int64 as they leave (`finish_batch`)."""
    read_threads: int | None = None
    """`make_dataloader`'s ``read_threads`` (None: the dataset's, else `crossgeo.readahead.resolve_read_threads`)."""
    _buffers: OutputBuffers | None = None
    _ring: BatchRing | None = None
    """Where CPU workers write compact batches (`crossgeo.torch.ring`): one per pass, kept with persistent workers."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        require_windows(self.dataset, "make_dataloader")
        self._sync_epoch()
        dataset = find_patch_dataset(self.dataset)
        # Before super().__iter__() starts the workers: they get the ring with the dataset.
        ring = self._ring = pass_ring(self, dataset) if isinstance(self.dataset, CompactItems) else None
        iterator: Iterator[Any] = super().__iter__()
        threads = self._pool_size(dataset)
        if dataset is not None and threads > 1:
            iterator = self._read_ahead(iterator, dataset, threads)
        if self.converts or self.device is not None:
            if self._buffers is None:
                self._buffers = OutputBuffers()
            iterator = (batches.finish_ring_batch(batch, ring, self.device, self._buffers) for batch in iterator)
        return iterator if dataset is None else _reporting_skips(iterator, dataset)

    @property
    def _index_sampler(self) -> Any:
        """torch's batches of indices, each given a slot of the pass's ring (`RingSampler`) when there is one."""
        indices = DataLoader._index_sampler.fget(self)  # type: ignore[attr-defined]
        return indices if self._ring is None else RingSampler(indices, self._ring)

    def _pool_size(self, dataset: PatchDataset | None) -> int:
        """Threads reading ahead in this pass: none with workers, unbatched, or items not the dataset's own."""
        if dataset is None or self.num_workers or self.batch_sampler is None:
            return 0
        if self.dataset is not dataset and not isinstance(self.dataset, CompactItems):
            return 0  # wrapped (Subset, ...): its indices are not the dataset's
        if type(dataset).__getitem__ is not PatchDataset.__getitem__:
            return 0  # a subclass's own items are never bypassed
        return resolve_read_threads(dataset.read_threads if self.read_threads is None else self.read_threads)

    def _read_ahead(self, single: Any, dataset: PatchDataset, threads: int) -> Iterator[Any]:
        """The batches of torch's single-process pass ``single``, the items' patches read ahead by ``threads``.

        The batches come from torch's own pass (its sampler iterator, so a ``generator`` draws as
        without read-ahead), are collated by the loader's ``collate_fn`` and pinned as torch pins
        them; only the items are made by `PatchDataset.items`, in order, identical to ``dataset[i]``.
        """
        sizes: collections.deque[int] = collections.deque()

        def indices() -> Iterator[int]:
            for batch in iter(single._next_index, None):  # torch's batch sampler, as its pass draws it
                sizes.append(len(batch))
                yield from batch

        compact = isinstance(self.dataset, CompactItems) or dataset.compact
        # A batch ahead (at least two items per thread): the pool rarely waits for the loop, nor it for the pool.
        depth = max(2 * threads, self.batch_size or 1)
        items = dataset.items(indices(), compact=compact, threads=threads, depth=depth)
        try:
            for first in items:  # batch k's first item: its size is known (its indices started)
                batch = self.collate_fn([first, *itertools.islice(items, sizes.popleft() - 1)])
                yield pin_memory(batch, self.pin_memory_device) if self.pin_memory else batch
        finally:
            items.close()

    def _sync_epoch(self) -> None:
        dataset = find_patch_dataset(self.dataset)
        if dataset is None:
            return
        sampler_epoch = _sampler_epoch(self)
        changed = sampler_epoch is not None and (self._passes == 0 or sampler_epoch != self._sampler_epoch)
        dataset.start_pass(follow=sampler_epoch if changed else None, advance=self._passes > 0)
        self._sampler_epoch = sampler_epoch
        self._passes += 1


def _reporting_skips(batches: Iterator[Any], dataset: PatchDataset) -> Iterator[Any]:
    """Pass the batches through; at the end of the epoch, say how many windows were skipped."""
    start, epoch = dataset.skipped, dataset.epoch
    yield from batches
    trim_heap()  # the epoch's freed patch buffers go back to the OS (workers forked next inherit less)
    skipped = dataset.skipped - start
    report_skipped(epoch, skipped)


def _sampler_epoch(loader: DataLoader[Any]) -> int | None:
    for candidate in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        epoch = getattr(candidate, "epoch", None)
        if isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool):
            return int(epoch)
    return None


class EpochOrderSampler(Sampler[int]):
    """Orders a `PatchDataset`'s windows with `crossgeo.loading.epoch_order`.

    The order depends only on ``(seed, dataset.epoch)`` (and ``weights``), so it equals the
    tf.data and Keras adapters' order for the same seed, epoch and weights. Without
    ``weights``: a permutation per epoch, by blocks of scenes for a catalogue built with
    ``order="scene-blocks"`` (`make_dataloader` uses it for ``shuffle: true`` with a seed, or
    with scene blocks). With ``weights`` (one per window, checked): ``len(dataset)`` windows drawn
    with replacement in proportion to them. ``seed`` defaults to the dataset's.

    Under DDP every rank computes the same order and takes every ``num_replicas``-th entry
    from ``rank`` on (as tf.data's ``input_context`` shards), so the ranks' shares are
    disjoint and together are the single-process order. ``num_replicas`` and ``rank`` default
    to the initialised ``torch.distributed`` group's (1 and 0 without one).
    """

    def __init__(
        self,
        dataset: PatchDataset,
        *,
        weights: Any = None,
        seed: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        seed = dataset.seed if seed is None else check_seed(seed)
        if seed is None:
            raise OptionError("EpochOrderSampler needs a seed: a PatchDataset with a seed, or seed=<int>.")
        self.dataset = dataset
        self.seed: int = seed
        self.weights = None if weights is None else check_weights(weights, len(dataset))
        self.blocks = scene_blocks(dataset, self.weights)  # a catalogue's order="scene-blocks"
        self.num_replicas, self.rank = _replicas(num_replicas, rank)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(len(self.dataset), self.seed, self.dataset.epoch, weights=self.weights, blocks=self.blocks)
        return iter(order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``, the unset ones from the initialised process group (else 1 and 0), checked."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    return check_replicas(num_replicas, rank)


def make_dataloader(
    dataset: Dataset[Any],
    *,
    weights: Any = None,
    device: torch.device | str | None = None,
    compact_transfer: bool | None = None,
    read_threads: int | None = None,
    **overrides: Any,
) -> PatchDataLoader:
    """A DataLoader honouring ``dataset.data_loader`` (shuffle, num_workers, batch_size, ...).

    ``overrides`` are DataLoader keywords that win over the dataset's options (e.g.
    ``sampler=DistributedSampler(dataset)``, which also drops a configured ``shuffle``).
    With ``num_workers: 0`` the worker-only options (``prefetch_factor``,
    ``persistent_workers``) are dropped. With a dataset ``seed``, ``shuffle`` visits the
    windows in `EpochOrderSampler`'s order (the tf.data/Keras order for that seed
    and epoch). `worker_init_fn` runs in every worker (before a
    ``worker_init_fn`` you pass).

    ``weights``: weighted sampling - each epoch draws ``len(dataset)`` windows with
    replacement in proportion to them (shuffling is implied), the same indices in the same
    order as ``crossgeo.tensorflow.make_dataset(weights=...)`` and
    ``crossgeo.keras.PatchPyDataset(weights=...)`` for the dataset's seed and epoch (a
    dataset without a seed gets one drawn once). One non-negative number per window, or
    ``"weight"`` for the windows table's ``weight`` column (`crossgeo.window_weights`).
    Under DDP (an initialised ``torch.distributed`` group) each rank takes its share of the
    draw (`EpochOrderSampler`); the dataset then needs a seed. The original's
    ``data_loader.weighted_sampler: true`` means ``weights="weight"``.

    ``device``: each batch is moved there as it leaves the loader. With a compact dataset
    (``PatchDataset(compact=True)``) workers collate with `collate_compact` (unless you pass
    a ``collate_fn``) and `finish_batch` converts each batch after the move, on the device.

    ``compact_transfer``: when the loader batches a `PatchDataset` itself (not wrapped, no ``collate_fn`` of
    yours, no ``__getitem__`` of a subclass), its items can travel compact, as with ``compact=True``, each batch
    converted once as it leaves (on ``device`` if given); the batches are bit-identical to the float items
    stacked and ``dataset[i]`` is unchanged. None (default) and True do so: without workers (on the CPU) each
    item is converted straight into its row of the batch (`crossgeo.torch.batches.ConvertingCollate`), with a
    ``device`` the compact batch crosses the bus, and with CPU workers 4x-8x fewer bytes travel (the workers
    stack them into reused shared-memory slots, `crossgeo.torch.ring`) and the main process converts each
    batch into reused buffers (`crossgeo.torch.batches.OutputBuffers`; a buffer is reused only once nothing
    holds it), so its heap does not grow as it did when every converted batch was new memory (peak 1.0 GB
    against 0.4 GB; docs/performance.md). False never.

    ``read_threads``: threads reading the next items' patches ahead at ``num_workers: 0``
    (`PatchDataset.items`), the batches identical and in the same order; None: the dataset's
    ``read_threads``, else one reader (`crossgeo.readahead.resolve_read_threads`).
    """
    check_keys(overrides, DATA_LOADER_KEYS, "make_dataloader()")
    if compact_transfer is not None and not isinstance(compact_transfer, bool):
        raise OptionTypeError(f"compact_transfer must be None, true or false, got {compact_transfer!r}.")
    require_windows(dataset, "make_dataloader")  # before torch's RandomSampler says "num_samples=0"
    patch_dataset = find_patch_dataset(dataset)
    configured = getattr(dataset, "data_loader", None) or getattr(patch_dataset, "data_loader", None)
    options = loader_options(configured, overrides)
    weighted = {k: options.pop(k) for k in DROPIN_DATA_LOADER_KEYS if k in options}
    if weighted.get("weighted_sampler") and weights is None and patch_dataset is not None:
        weights = configured_weights(weighted, len(patch_dataset))
    if weights is not None:
        if patch_dataset is None or dataset is not patch_dataset:
            raise OptionError(
                "make_dataloader(weights=...) needs a crossgeo PatchDataset itself (not wrapped), whose epoch "
                "and seed fix the draw; weight a Subset by passing its own weights to a WeightedRandomSampler."
            )
        if "sampler" in overrides or "batch_sampler" in overrides:
            raise OptionError(
                "make_dataloader(weights=...) draws the windows itself; do not pass sampler/batch_sampler."
            )
        options.pop("shuffle", None)  # implied: the draw is random
        checked = resolve_weights(weights, patch_dataset, "make_dataloader")
        replicas, rank = _replicas(None, None)
        require_shared_seed(
            patch_dataset.seed, replicas, "make_dataloader(weights=...) under DDP", "Build the dataset with seed=<int>."
        )
        options["sampler"] = EpochOrderSampler(
            patch_dataset, weights=checked, seed=patch_dataset.plan.base_seed, rank=rank, num_replicas=replicas
        )
    elif patch_dataset is not None and (patch_dataset.seed is not None or patch_dataset.plan.blocks is not None):
        seed = patch_dataset.seed
        if options.get("shuffle") and dataset is patch_dataset and "sampler" not in options:
            # The same window order as the tf.data and Keras adapters for this (seed, epoch); a catalogue's
            # order="scene-blocks" is kept without a seed too (by the dataset's drawn seed).
            del options["shuffle"]
            options["sampler"] = EpochOrderSampler(patch_dataset, seed=patch_dataset.plan.base_seed)
        elif options.get("generator") is None and seed is not None:
            options["generator"] = torch.Generator().manual_seed(seed)
    options["worker_init_fn"] = chain(worker_init_fn, options.get("worker_init_fn"))
    if compact_transfer is None:
        compact_transfer = True  # measured: faster and no heap growth, with workers too (reused buffers)
    own_collate = options.get("collate_fn") is None
    converts = patch_dataset is not None and own_collate and patch_dataset.compact
    # Only for the items PatchDataset itself makes: a subclass's own __getitem__ is never bypassed.
    plain_items = type(dataset).__getitem__ is PatchDataset.__getitem__
    if own_collate and compact_transfer and not converts and dataset is patch_dataset and plain_items:
        dataset, converts = CompactItems(patch_dataset), True
    target = torch.device(device) if device is not None else None
    if converts:
        options["collate_fn"] = batches.converting_collate_fn(options.get("num_workers") or 0, target)
    loader = PatchDataLoader(dataset, **options)
    loader.device = target
    loader.converts = converts
    loader.read_threads = None if read_threads is None else check_int(read_threads, "read_threads", 0)
    return loader
