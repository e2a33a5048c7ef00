"""PyTorch adapter: a map-style ``Dataset``, the drop-in class and a DataLoader helper.

* `PatchDataset` wraps a `crossgeo.PatchSampler` and returns
  ``{"image": float32 (C, H, W), "mask": int64 (H, W)}`` (plus ``"metadata"``), made by
  `crossgeo.augment.to_model_inputs` - the same function the tf.data and Keras
  adapters call, so all three give identical numbers.
* `MBTilesCropsGeoTifMaskDataset` accepts the configuration keys of the original
  ``pytorch_segmentation_models_trainer`` class unchanged (switch ``_target_`` in the Hydra
  config), and rejects unknown keys with a suggestion.
* `make_dataloader` builds a ``DataLoader`` from the dataset's ``data_loader`` options,
  seeds every worker and keeps the augmentation epoch in step with the loop.

Reproducible augmentation: with ``seed`` set, sample ``i`` in epoch ``e`` is augmented with
a generator seeded from ``(seed, e, i)`` only, so ``num_workers=0`` and ``num_workers=2`` (or
two DDP ranks) give the same numbers. The epoch lives in shared memory, so
`PatchDataset.set_epoch` reaches persistent workers too. Where nothing sets the epoch (a plain
``DataLoader``, as the original's Lightning model builds), the ``k``-th visit of sample ``i`` is
augmented as epoch ``k``: the visits are counted in shared memory, so augmentation still changes
every epoch, identically with 0 workers, worker processes and persistent workers.
"""

from __future__ import annotations

import inspect
import io
import logging
import random
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "crossgeo.torch needs PyTorch, which is not installed. In a clone of crossgeo install it with: "
        "pip install -c ci/requirements-torch.txt '.[torch]' (the constraint file pins the CPU build)"
    ) from _error

import numpy as np

from crossgeo.augment import scale_image, seed_augmentation, to_compact_inputs, to_model_inputs
from crossgeo.config import build_sampler, check_keys, check_seed
from crossgeo.dropin import (
    DROPIN_DATA_LOADER_KEYS,
    check_weighted_sampler,
    configured_weights,
    loader_options,
    read_dropin,
    windows_frame,
)
from crossgeo.errors import ConfigError, OptionError, OptionTypeError
from crossgeo.loading import (
    check_epoch,
    check_replicas,
    check_weights,
    epoch_order,
    plan_loader,
    report_skipped,
    require_shared_seed,
    require_windows,
    resolve_weights,
    scene_blocks,
)
from crossgeo.memory import trim_heap
from crossgeo.models import is_exported_program
from crossgeo.options import REQUIRED, check_bool
from crossgeo.sampler import PatchSampler
from crossgeo.scenes import SceneSampler

__all__ = [
    "EpochOrderSampler",
    "MBTilesCropsGeoTifMaskDataset",
    "PatchDataLoader",
    "PatchDataset",
    "collate_compact",
    "finish_batch",
    "make_dataloader",
    "worker_init_fn",
]

log = logging.getLogger("crossgeo")

DATA_LOADER_KEYS = tuple(k for k in inspect.signature(DataLoader.__init__).parameters if k not in ("self", "dataset"))
"""Keys of a ``data_loader`` mapping: every ``torch.utils.data.DataLoader`` keyword but the dataset."""

TRIM_EVERY = 256
"""Items after which a process returns freed patch buffers to the OS (`crossgeo.memory.trim_heap`)."""


class PatchDataset(Dataset[dict[str, Any]]):
    """A map-style dataset of model-ready patches from a `crossgeo.PatchSampler`.

    Args:
        sampler: The patch source (its windows define ``len`` and the index order).
        augmentation_list: ``_target_`` dicts (OmegaConf containers too), albumentations
            transforms or a ready ``A.Compose``; ``None`` and ``[]`` mean no augmentation.
            ``ToTensorV2`` is accepted and ignored: the image is always a float32
            (C, H, W) tensor. A bad entry raises at construction, naming its position.
        return_metadata: Add ``"metadata": {"row_off": int, "col_off": int}`` to each sample.
        seed: Make augmentation depend only on ``(seed, epoch, index)``; see
            `set_epoch`. ``None``: each DataLoader worker draws from its own seed.
        allowed_targets: Module prefixes of your own transform classes (albumentations
            subclasses) that ``_target_`` may name besides ``albumentations``'s; code only (see
            `crossgeo.augment`; ``CROSSGEO_ALLOWED_TRANSFORMS`` adds more).
        samples_per_epoch: The epoch length (``len(dataset)``); item ``j`` of pass ``k`` serves
            window ``(j + k * samples_per_epoch) % n_windows``, augmented as the draw
            ``(j + k * samples_per_epoch) // n_windows`` of that window. ``None`` (or ``<= 0``, as in
            the original): one item per window.
        compact: Items carry the image in its stored dtype (uint8/uint16; float32 when an
            augmentation made it float) and the mask in the narrowest integer type holding
            ``0..n_classes-1`` and ``mask_fill_value``: 4x-8x fewer bytes from DataLoader
            workers. Loaders from `make_dataloader` convert each batch to float32 / int64
            in the main process (or on its ``device``), bit-identical to ``compact=False``.

    Each item is ``{"image": float32 tensor (C, H, W), "mask": int64 tensor (H, W)}``;
    integer images are scaled to 0..1 (uint8 / 255, uint16 / 65535) unless an
    augmentation (e.g. ``Normalize``) already made them float.

    Passes: once `set_epoch` or a loader from `make_dataloader` has set the epoch, pass ``k``
    is that epoch. Until then (a plain ``DataLoader`` that never calls ``set_epoch``), each
    item counts its own visits in shared memory and visit ``k`` is pass ``k``, so a seeded
    augmentation differs per epoch and is the same for any number of workers, persistent or
    not. Reading ``dataset[i]`` yourself counts as a visit too.
    """

    def __init__(
        self,
        sampler: PatchSampler | SceneSampler,
        *,
        augmentation_list: Any = None,
        return_metadata: bool = False,
        seed: int | None = None,
        allowed_targets: Iterable[str] = (),
        compact: bool = False,
        samples_per_epoch: int | None = None,
    ) -> None:
        return_metadata = check_bool(return_metadata, "return_metadata")
        self.compact = check_bool(compact, "compact")
        self._served = 0
        self.allowed_targets = (allowed_targets,) if isinstance(allowed_targets, str) else tuple(allowed_targets)
        self.plan = plan = plan_loader(
            sampler,
            where=type(self).__name__,
            seed=seed,
            augmentation_list=augmentation_list,
            allowed_targets=self.allowed_targets,
            with_metadata=return_metadata,
            samples_per_epoch=samples_per_epoch,
            allow_empty=True,
            any_sampler=True,
        )
        self.sampler, self.mask_type, self.augmentation, self.seed = (
            sampler,
            plan.mask_type,
            plan.augmentation,
            plan.seed,
        )
        self.return_metadata = return_metadata
        self.n_windows, self.samples_per_epoch = plan.n_windows, plan.samples_per_epoch
        # Shared memory: DataLoader workers (persistent or not, fork or spawn) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._epoch_set = False
        # Windows skipped by on_read_error="skip", summed over all worker processes.
        self._skipped = torch.zeros((), dtype=torch.int64).share_memory_()
        # Whether anything set the epoch (set_epoch, start_pass): then it fixes the pass; else the visits do.
        self._epoch_driven = torch.zeros((), dtype=torch.bool).share_memory_()
        # Visits per item, shared by all worker processes; only needed where the pass changes an item.
        self._visits = torch.zeros(
            self.samples_per_epoch if plan.passes_differ else 0, dtype=torch.int64
        ).share_memory_()

    # ------------------------------------------------------------------ epochs

    @property
    def epoch(self) -> int:
        """The epoch augmentation is seeded with (with ``seed`` set)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Augment the next pass as epoch ``epoch`` (call before iterating, like ``DistributedSampler``).

        Loaders from `make_dataloader` also advance the epoch by themselves when this
        is not called (and follow ``sampler.set_epoch`` of a ``DistributedSampler``).
        """
        self._epoch.fill_(check_epoch(epoch))
        self._epoch_set = True
        self._epoch_driven.fill_(True)

    def start_pass(self, *, follow: int | None = None, advance: bool = False) -> int:
        """Fix the epoch of a pass that is starting (loaders call it on each ``iter()``); returns it.

        A `set_epoch` since the last pass wins; else the epoch becomes ``follow`` (e.g. a
        ``DistributedSampler``'s epoch) when given; else it goes up by one when ``advance``.
        """
        if not self._epoch_set:
            if follow is not None:
                self._epoch.fill_(int(follow))
            elif advance:
                self._epoch.add_(1)
        self._epoch_set = False
        self._epoch_driven.fill_(True)
        return self.epoch

    def _pass_of(self, index: int) -> int:
        """The pass item ``index`` is served in: the epoch once one was set, else its own visit count."""
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} is out of range for a dataset of {self.samples_per_epoch} items.")
        if self._visits.numel() == 0 or bool(self._epoch_driven):
            return self.epoch
        visit = int(self._visits[index])
        # One worker serves a given item per pass (without replacement), so this read-then-add is not raced.
        self._visits[index] += 1
        return visit

    # ------------------------------------------------------------------ dataset

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def skipped(self) -> int:
        """Samples served from a replacement window so far (``on_read_error="skip"``), all workers."""
        return int(self._skipped.item())

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, compact=self.compact)

    def item(self, index: int, *, compact: bool) -> dict[str, Any]:
        """Item ``index`` as ``compact=`` asks, whatever the dataset's own setting (`make_dataloader` uses it)."""
        index = int(index)
        window, epoch = self.plan.served(index, self._pass_of(index))  # which window, and which of its draws
        before = self.sampler.skipped
        patch = self.sampler.get(window, mask_dtype=self.plan.decode_type(compact))
        if self.sampler.skipped != before:
            self._skipped.add_(self.sampler.skipped - before)
        if compact:
            image, mask = to_compact_inputs(
                patch, self.augmentation, seed=self.seed, epoch=epoch, mask_type=self.mask_type
            )
        else:
            image, mask = to_model_inputs(patch, self.augmentation, seed=self.seed, epoch=epoch)
        item: dict[str, Any] = {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask)}
        if self.return_metadata:
            item["metadata"] = {"row_off": int(patch.row_off), "col_off": int(patch.col_off)}
        self._served += 1
        if self._served % TRIM_EVERY == 0:
            trim_heap()  # a worker's freed patch buffers would otherwise stay resident
        return item

    def close(self) -> None:
        """Close the raster handles this process opened (they reopen on the next item)."""
        self.sampler.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.sampler!r}, augmentation={'yes' if self.augmentation else 'none'}, "
            f"return_metadata={self.return_metadata}, seed={self.seed})"
        )


class MBTilesCropsGeoTifMaskDataset(PatchDataset):
    """Drop-in for ``pytorch_segmentation_models_trainer``'s class of the same name.

    Takes the original's configuration keys unchanged, so a Hydra config only needs its
    ``_target_`` changed to ``crossgeo.torch.MBTilesCropsGeoTifMaskDataset``. Options are
    those of `crossgeo.PatchSampler` (``image_mbtiles_path`` is its ``image_path``)
    and `PatchDataset`; a ``scenes`` key (with ``max_open``) builds a `crossgeo.SceneSampler`
    over a catalogue instead of one image; ``data_loader`` is kept for `make_dataloader`.

    The keys the original's Lightning model adds or reads are accepted too
    (`crossgeo.options.DROPIN_OPTIONS`): ``samples_per_epoch`` sets the epoch length,
    ``gpu_augmentation_list`` is kept for the model, ``data_loader.weighted_sampler`` draws
    by the windows' ``weight`` column (`df` exposes it as ``sampler_weight`` for the original's
    model). Like the original (``**kwargs``), unknown keys are accepted, with an
    `crossgeo.options.IgnoredOptionWarning` naming the closest known key; `crossgeo.PatchSampler`
    and the CLI stay strict. Bad values of known keys still raise.

    Hydra hands every YAML key to this class as a keyword argument, so it takes no
    ``allowed_targets`` (a configuration must not widen what ``_target_`` may name: a
    `crossgeo.ConfigError`); allow your own transform modules with the environment variable
    ``CROSSGEO_ALLOWED_TRANSFORMS`` (see `crossgeo.augment`). Hydra's default ``_recursive_: true``
    instantiates nested ``_target_`` entries itself, before crossgeo sees them: set
    ``_recursive_: false`` so crossgeo's checks apply to ``augmentation_list``.
    """

    def __init__(
        self,
        image_mbtiles_path: Any = REQUIRED,
        mask_path: Any = REQUIRED,
        crops_path: Any = REQUIRED,
        patch_size: Any = REQUIRED,
        **options: Any,
    ) -> None:
        # ``options``: the sampler's and the adapter's options of crossgeo.options (one list) and the original
        # pipeline's extra keys (DROPIN_OPTIONS); anything else is dropped with a warning naming the closest key.
        given = {
            "image_mbtiles_path": image_mbtiles_path,
            "mask_path": mask_path,
            "crops_path": crops_path,
            "patch_size": patch_size,
        }
        config = read_dropin({k: v for k, v in given.items() if v is not REQUIRED} | options, DATA_LOADER_KEYS)
        self.data_loader = config.data_loader
        self.gpu_augmentation_list = config.gpu_augmentation_list
        """The original's GPU (kornia) augmentations: its Lightning model applies them, not the dataset."""
        super().__init__(
            build_sampler(config.sampler_options),
            augmentation_list=config.augmentation_list,
            return_metadata=config.return_metadata,
            seed=config.seed,
            samples_per_epoch=config.samples_per_epoch,
        )
        check_weighted_sampler(self.data_loader, self.plan)

    @property
    def df(self) -> Any:
        """The windows as a pandas DataFrame: ``row_off``, ``col_off`` and, when the windows table has
        weights, ``sampler_weight`` (what the original's model reads for ``data_loader.weighted_sampler``)."""
        return windows_frame(self.sampler)


# ---------------------------------------------------------------------- DataLoader


class _CompactItems(Dataset[dict[str, Any]]):
    """A `PatchDataset` seen by a loader that converts batches: its items, compact (see `make_dataloader`).

    Only the items differ; every other attribute is the dataset's own (epoch, seed, skips ...).
    """

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset.item(index, compact=True)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):  # not set yet while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _find_patch_dataset(dataset: Any) -> PatchDataset | None:
    """The PatchDataset inside ``dataset`` (itself, or under ``Subset``-style ``.dataset`` wrappers)."""
    for _ in range(8):
        if isinstance(dataset, PatchDataset):
            return dataset
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


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
    dataset = _find_patch_dataset(info.dataset)
    if dataset is None:
        return
    dataset.sampler.release_inherited_handles()
    if dataset.seed is None and dataset.augmentation is not None:
        seed_augmentation(dataset.augmentation, worker_seed)


def _chain(first: Callable[[int], None], second: Callable[[int], None] | None) -> Callable[[int], None]:
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

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        require_windows(self.dataset, "make_dataloader")
        self._sync_epoch()
        iterator: Iterator[Any] = super().__iter__()
        dataset = _find_patch_dataset(self.dataset)
        if self.converts or self.device is not None:
            iterator = (finish_batch(batch, self.device) for batch in iterator)
        return iterator if dataset is None else _reporting_skips(iterator, dataset)

    def _sync_epoch(self) -> None:
        dataset = _find_patch_dataset(self.dataset)
        if dataset is None:
            return
        sampler_epoch = _sampler_epoch(self)
        changed = sampler_epoch is not None and (self._passes == 0 or sampler_epoch != self._sampler_epoch)
        dataset.start_pass(follow=sampler_epoch if changed else None, advance=self._passes > 0)
        self._sampler_epoch = sampler_epoch
        self._passes += 1


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

    ``compact_transfer``: when the loader batches a `PatchDataset` itself (not wrapped, no
    ``collate_fn`` of yours, no ``__getitem__`` of a subclass), its items can travel compact,
    as with ``compact=True``, each batch converted once as it leaves (on ``device`` if
    given); the batches are bit-identical to the float items stacked and ``dataset[i]`` is
    unchanged. None (default) does so where it wins on speed and memory alike: without
    workers (no per-item float32 copy; a steadier heap) and with a ``device`` (the compact
    batch crosses the bus). With CPU workers the float batches arrive in shared memory,
    while converted ones are new heap memory in the main process, which glibc fragments
    (+700 MB measured; docs/performance.md), so None keeps float items there; True asks
    for compact transfer anyway, False never.
    """
    check_keys(overrides, DATA_LOADER_KEYS, "make_dataloader()")
    if compact_transfer is not None and not isinstance(compact_transfer, bool):
        raise OptionTypeError(f"compact_transfer must be None, true or false, got {compact_transfer!r}.")
    require_windows(dataset, "make_dataloader")  # before torch's RandomSampler says "num_samples=0"
    patch_dataset = _find_patch_dataset(dataset)
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
    options["worker_init_fn"] = _chain(worker_init_fn, options.get("worker_init_fn"))
    if compact_transfer is None:
        compact_transfer = not options.get("num_workers") or device is not None
    own_collate = options.get("collate_fn") is None
    converts = patch_dataset is not None and own_collate and patch_dataset.compact
    # Only for the items PatchDataset itself makes: a subclass's own __getitem__ is never bypassed.
    plain_items = type(dataset).__getitem__ is PatchDataset.__getitem__
    if own_collate and compact_transfer and not converts and dataset is patch_dataset and plain_items:
        dataset, converts = _CompactItems(patch_dataset), True
    if converts:
        options["collate_fn"] = collate_compact
    loader = PatchDataLoader(dataset, **options)
    loader.device = torch.device(device) if device is not None else None
    loader.converts = converts
    return loader


# ---------------------------------------------------------------------- tiled prediction

__all__ += ["load_model", "predict_raster"]  # appended here: the top of this module belongs to the dataset code


def load_model(path: Any, *, device: str | torch.device = "cpu", option: str = "model_path") -> Any:
    """A ``torch.export`` program (``.pt2``) or a TorchScript file, loaded onto ``device``.

    Model files are code. A ``torch.export.save`` archive is checked first
    (`crossgeo.models.check_exported_program`: no pickled payloads, torch operators only,
    size-only guards; its sample inputs must load with torch's restricted ``weights_only``
    unpickler), then loaded from the checked bytes with ``torch.export.load``; the model is
    its ``.module()``. TorchScript loads with ``torch.jit.load`` (its own loader runs no
    arbitrary pickled objects). A ``torch.save`` file or a Keras file is refused by
    `crossgeo.models.model_file_framework` with the way to export a loadable file.
    """
    from crossgeo.models import model_file_framework

    framework = model_file_framework(path, option=option)
    if framework != "torch":
        raise ConfigError(
            f"{option} {str(path)!r} is a {framework.capitalize()} model file, not a torch one; load it with "
            f"crossgeo.{framework}.load_model, or export the torch model with torch.export.save (.pt2)."
        )
    data = Path(path).read_bytes()  # checked and loaded from the same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        exported = is_exported_program(archive.namelist())
        if exported:
            _check_exported_archive(archive, f"{option} {str(path)!r}")
    if exported:
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as error:
            raise ConfigError(f"{option} {str(path)!r} could not be loaded by torch.export.load: {error}") from error
        return program.module().to(torch.device(device))
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript in favour of torch.export
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=Warning)
            return torch.jit.load(str(path), map_location=torch.device(device))
    except RuntimeError as error:
        raise ConfigError(f"{option} {str(path)!r} could not be loaded by torch.jit.load: {error}") from error


def _check_exported_archive(archive: zipfile.ZipFile, where: str) -> None:
    """`check_exported_program`, and sample inputs that torch's restricted unpickler loads (else
    ``torch.export.load`` would retry them with ``weights_only=False``)."""
    from crossgeo.models import check_exported_program

    check_exported_program(archive, where=where)
    for name in archive.namelist():
        if name.split("/")[1:3] == ["data", "sample_inputs"] and not name.endswith("/"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception as error:
                raise ConfigError(
                    f"{where} is a torch.export program whose sample inputs ({name}) are not plain tensors "
                    f"(torch's weights_only loader refuses them: {type(error).__name__}); export it with "
                    "plain tensor example inputs."
                ) from error


def predict_raster(
    model: torch.nn.Module, image_path: Any, out_path: Any, *, device: str | torch.device = "cpu", **kw: Any
) -> Any:
    """`crossgeo.predict.predict_raster` with a torch model (e.g. a ``torch.jit.load``-ed one).

    The model is moved to ``device`` and put in eval mode (restored to train mode after
    if it was training); each float32 (N, C, H, W) batch goes to ``device``, runs under
    ``torch.no_grad()``, and its (N, K, H, W) output comes back as float32 numpy. Reading
    runs ahead of the model in a background thread. ``kw`` are `predict_raster`'s options
    (``patch_size`` is required). Returns its `crossgeo.predict.Prediction`.
    """
    from crossgeo.predict import predict_raster as predict_tiles

    if not isinstance(model, torch.nn.Module):
        raise OptionError(f"model must be a torch.nn.Module (or a TorchScript module), got {type(model).__name__}.")
    target = torch.device(device)
    training: bool | None = model.training
    model.to(target)
    try:
        model.eval()
    except NotImplementedError:  # a torch.export module: its mode was fixed when it was exported
        training = None

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            scores = model(torch.from_numpy(batch).to(target))
        if not isinstance(scores, torch.Tensor):
            raise OptionError(
                f"model returned {type(scores).__name__}; predict_raster needs a tensor of scores (N, K, H, W)."
            )
        return scores.detach().to("cpu", torch.float32).numpy()

    try:
        return predict_tiles(image_path, run, out_path, **kw)
    finally:
        if training is not None:
            model.train(training)
