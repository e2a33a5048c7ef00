"""The torch datasets: `PatchDataset` over a sampler, and the drop-in `MBTilesCropsGeoTifMaskDataset`.

Items are made by `crossgeo.augment.to_model_inputs` (or `to_compact_inputs`), the functions the tf.data
and Keras adapters call too. The epoch, the skip count and the visit counts live in shared memory so that
DataLoader workers (fork or spawn, persistent or not) see `PatchDataset.set_epoch`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Generator, Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from crossgeo.augment import to_compact_inputs, to_model_inputs
from crossgeo.config import build_sampler
from crossgeo.dropin import check_weighted_sampler, read_dropin, windows_frame
from crossgeo.loading import check_epoch, plan_loader, read_ahead
from crossgeo.memory import trim_heap
from crossgeo.options import REQUIRED, check_bool, check_int
from crossgeo.sampler import PatchSampler
from crossgeo.scenes import SceneSampler

__all__ = ["DATA_LOADER_KEYS", "MBTilesCropsGeoTifMaskDataset", "PatchDataset", "find_patch_dataset"]


log = logging.getLogger("crossgeo")

DATA_LOADER_KEYS = tuple(k for k in inspect.signature(DataLoader.__init__).parameters if k not in ("self", "dataset"))
"""Keys of a ``data_loader`` mapping: every ``torch.utils.data.DataLoader`` keyword but the dataset."""

Items = Generator[dict[str, Any], None, None]
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
        read_threads: Threads reading ahead for `make_dataloader`'s loader at ``num_workers: 0``
            (`items`). None: `crossgeo.readahead.resolve_read_threads`; 0 or 1: one reader.

    Each item is ``{"image": float32 tensor (C, H, W), "mask": int64 tensor (H, W)}``;
    integer images are scaled to 0..1 (uint8 / 255, uint16 / 65535) unless an
    augmentation (e.g. ``Normalize``) already made them float.

    Passes: once `set_epoch` or a loader from `make_dataloader` has set the epoch, pass ``k`` is
    that epoch; until then each item's visit ``k`` (counted in shared memory, ``dataset[i]`` too)
    is pass ``k``, so seeded augmentation changes per epoch alike for any number of workers.
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
        read_threads: int | None = None,
    ) -> None:
        return_metadata = check_bool(return_metadata, "return_metadata")
        self.read_threads = None if read_threads is None else check_int(read_threads, "read_threads", 0)
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
        self.sampler, self.mask_type, self.augmentation = sampler, plan.mask_type, plan.augmentation
        self.seed, self.return_metadata = plan.seed, return_metadata
        self.n_windows, self.samples_per_epoch = plan.n_windows, plan.samples_per_epoch
        # Shared memory: DataLoader workers (persistent or not, fork or spawn) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._epoch_set = False
        # Windows skipped by on_read_error="skip", summed over all worker processes.
        self._skipped = torch.zeros((), dtype=torch.int64).share_memory_()
        # Whether anything set the epoch (set_epoch, start_pass): then it fixes the pass; else the visits do.
        self._epoch_driven = torch.zeros((), dtype=torch.bool).share_memory_()
        # Visits per item, shared by all worker processes; only needed where the pass changes an item.
        visits = self.samples_per_epoch if plan.passes_differ else 0
        self._visits = torch.zeros(visits, dtype=torch.int64).share_memory_()

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
        # One worker serves a given item per pass (without replacement), so this read-then-add is not raced.
        self._visits[index] += 1
        return int(self._visits[index]) - 1

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
        before, patch = self.sampler.skipped, self.sampler.get(window, mask_dtype=self.plan.decode_type(compact))
        self._count_skips(before)
        return self._finish(patch, epoch, compact)

    def items(self, indices: Iterable[int], *, compact: bool, threads: int, depth: int | None = None) -> Items:
        """``item(i, compact=compact)`` for each of ``indices``, in order, ``threads`` reading ``depth`` patches ahead.

        Only the reads run in the pool (`crossgeo.loading.read_ahead`): the items, their augmentation,
        visits and skip count equal a loop of `item`. `make_dataloader`'s loader uses it at 0 workers.
        """
        served = (self.plan.served(int(i), self._pass_of(int(i))) for i in indices)
        mask_dtype = self.plan.decode_type(compact)
        reads = read_ahead(self.sampler, served, mask_dtype=mask_dtype, threads=threads, depth=depth, plan=True)
        counted = self.sampler.skipped
        try:
            for patch, epoch in reads:
                counted = self._count_skips(counted)
                yield self._finish(patch, epoch, compact)
        finally:
            reads.close()  # reads in flight finish (and count) before the pool ends
            self._count_skips(counted)

    def _count_skips(self, counted: int) -> int:
        """Add the sampler's skips since ``counted`` to the shared total; returns its count now."""
        now = self.sampler.skipped
        if now != counted:
            self._skipped.add_(now - counted)
        return now

    def _finish(self, patch: Any, epoch: int, compact: bool) -> dict[str, Any]:
        """The item of a patch read for draw ``epoch``: augmented and converted (`to_model_inputs`)."""
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
        given = {"image_mbtiles_path": image_mbtiles_path, "mask_path": mask_path, "crops_path": crops_path}
        given["patch_size"] = patch_size
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
            read_threads=config.read_threads,
        )
        check_weighted_sampler(self.data_loader, self.plan)

    @property
    def df(self) -> Any:
        """The windows as a pandas DataFrame: ``row_off``, ``col_off`` and, when the windows table has
        weights, ``sampler_weight`` (what the original's model reads for ``data_loader.weighted_sampler``)."""
        return windows_frame(self.sampler)


def find_patch_dataset(dataset: Any) -> PatchDataset | None:
    """The PatchDataset inside ``dataset`` (itself, or under ``Subset``-style ``.dataset`` wrappers)."""
    for _ in range(8):
        if isinstance(dataset, PatchDataset):
            return dataset
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None
