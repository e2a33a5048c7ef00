"""The loader plan: what the torch, tf.data and Keras adapters decide the same way, with no framework.

`plan_loader` resolves, once per loader, everything a pass over a sampler's windows depends
on, and returns a frozen `LoaderPlan`:

* the options: each keyword, else the configuration mapping's key (``seed``,
  ``augmentation_list``, ``return_metadata``, ``data_loader.batch_size`` / ``shuffle`` /
  ``drop_last``; `crossgeo.config.resolve_source`), checked;
* the seed: the user's, or one drawn once (``base_seed``), so that every thread, worker
  process and replica of one loader computes the same window order;
* the augmentation pipeline, built once (`crossgeo.augment.build_augmentation`);
* the weights (`resolve_weights`) and the window order of an epoch (`LoaderPlan.order`:
  `epoch_order`, a seeded permutation or weighted draw, then this replica's share);
* the compact mask type (the narrowest integer type holding every class and the fill value)
  and the type the sampler decodes the mask into;
* which window and which of its draws an item of a pass is, for an epoch length other than
  the number of windows (``samples_per_epoch``, `LoaderPlan.served`).

The adapters keep only their framework's glue (tensors, ``tf.data`` graphs, ``PyDataset``
callbacks, shared memory between DataLoader workers), so the same seed, epoch and index give
the same numbers in all three. `SkipTally` and `report_skipped` say, when an epoch ends, how many
samples came from a replacement window (``on_read_error="skip"``).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import numpy as np

from crossgeo.augment import build_augmentation, decode_type, mask_dtype, to_model_inputs
from crossgeo.config import check_seed, resolve_source
from crossgeo.errors import ConfigError, OptionError, WindowError
from crossgeo.options import check_int
from crossgeo.readahead import PLAN_ITEMS, ReadAhead
from crossgeo.sampler import Patch, WindowSequence

__all__ = [
    "LoaderPlan",
    "PassCounter",
    "ReadPlans",
    "SkipTally",
    "check_epoch",
    "check_replicas",
    "check_weights",
    "draw_seed",
    "epoch_length",
    "epoch_order",
    "plan_loader",
    "read_ahead",
    "report_skipped",
    "require_shared_seed",
    "require_windows",
    "resolve_weights",
    "scene_blocks",
]

log = logging.getLogger("crossgeo")


# ---------------------------------------------------------------------- order and weights


def check_weights(weights: Any, n: int) -> np.ndarray:
    """``weights`` as float64, one finite non-negative number per window, not all zero.

    Raises `ConfigError` (a ``ValueError``) naming ``weights`` and the fix otherwise.
    """
    if isinstance(weights, (str, bytes, Mapping)) or np.ndim(weights) != 1:
        raise ConfigError(
            f"weights must be a 1-D sequence with one number per window ({n}), got {type(weights).__name__}."
        )
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"weights must hold numbers, one per window: {error}.") from error
    if values.shape != (n,):
        raise ConfigError(
            f"weights has {values.shape[0]} values but there are {n} windows; give one weight per window "
            "(in the windows' order)."
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ConfigError(f"weights holds NaN or infinite values (first at window {int(bad[0])}); fix or drop them.")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise ConfigError(
            f"weights holds {negative.size} negative value(s) (first {values[negative[0]]:g} at window "
            f"{int(negative[0])}); weights are relative sampling frequencies >= 0."
        )
    if n and not values.any():
        raise ConfigError("weights are all zero, so no window could be drawn; give some window a positive weight.")
    return values


def epoch_order(
    n: int, seed: int, epoch: int, weights: Any = None, *, blocks: tuple[np.ndarray, int] | None = None
) -> np.ndarray:
    """The window order of ``epoch`` (int64): a permutation of ``range(n)``, or a weighted draw.

    It depends only on ``(seed, epoch)`` (and ``weights`` / ``blocks``), so every worker,
    replica and framework adapter (torch, tf.data, Keras) visits the windows in the same order
    for the same seed. With ``weights`` (one non-negative number per window, see `check_weights`)
    the order is ``n`` windows drawn with replacement, window ``i`` with probability
    ``weights[i] / sum(weights)``: inverse-CDF sampling of ``n`` uniform numbers from the
    same seeded generator (a window of weight 0 is never drawn).

    ``blocks`` (``(scene of each window, k)``, from `scene_blocks`): a catalogue's
    ``order="scene-blocks"``. The scenes that have windows are permuted and cut into blocks of
    ``k`` consecutive scenes; the order is the blocks one after the other, each block's windows
    permuted. Every window still comes once per epoch, but at most ``k`` scenes are read in each
    stretch, so their files stay open and their blocks cached. Not combined with ``weights``.
    """
    sequence = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch], spawn_key=(0x0D3E,))
    rng = np.random.default_rng(sequence)
    if blocks is not None:
        if weights is not None:
            raise ConfigError(_BLOCKS_AND_WEIGHTS)
        scene, k = blocks
        if len(scene) != n:
            raise ValueError(f"blocks: {len(scene)} scene numbers for {n} windows.")
        present, window_scene = np.unique(scene, return_inverse=True)  # scenes with windows, 0..m-1 per window
        block_of = np.empty(len(present), dtype=np.int64)
        block_of[rng.permutation(len(present))] = np.arange(len(present)) // k  # scene -> its block's position
        shuffled = rng.permutation(n)
        return shuffled[np.argsort(block_of[window_scene[shuffled]], kind="stable")].astype(np.int64)
    if weights is None:
        return rng.permutation(n).astype(np.int64)
    cdf = np.cumsum(check_weights(weights, n))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cdf /= cdf[-1]  # the last entry is exactly 1.0 and the uniform numbers are < 1: never past the end
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


_BLOCKS_AND_WEIGHTS = (
    'order="scene-blocks" cannot be combined with weights: a weighted draw picks windows with replacement '
    'across all scenes, so it has no blocks of scenes; use order="random" with weights, or drop weights.'
)


def scene_blocks(dataset: Any, weights: Any = None) -> tuple[np.ndarray, int] | None:
    """``(scene of each window, block_scenes)`` when ``dataset``'s sampler asks for ``order="scene-blocks"``, else None.

    ``dataset``: a sampler, or an adapter's dataset with a ``sampler``. A `crossgeo.SceneSampler`
    built with ``order="scene-blocks"`` asks for it; any other sampler is ordered at random.
    Raises `ConfigError` when ``weights`` are given too (a weighted draw has no blocks).
    """
    sampler: Any = dataset if isinstance(dataset, WindowSequence) else getattr(dataset, "sampler", None)
    if getattr(sampler, "order", "random") != "scene-blocks":
        return None
    if weights is not None:
        raise ConfigError(_BLOCKS_AND_WEIGHTS)
    return np.asarray(sampler.scene, dtype=np.int64), int(sampler.block_scenes)


def resolve_weights(weights: Any, dataset: Any, where: str) -> np.ndarray | None:
    """The per-window sampling weights the adapters' ``weights=`` names, checked (None: no weighting).

    ``weights`` is a sequence/array with one non-negative number per window of ``dataset``, or
    the string ``"weight"``: the `crossgeo.windows.WEIGHT_COLUMN` of the sampler's windows
    table. Checked by `check_weights` (length, NaN, negative, all zero).
    """
    if weights is None:
        return None
    from crossgeo.windows import WEIGHT_COLUMN

    n = len(dataset)
    if isinstance(weights, str):
        sampler = dataset if isinstance(dataset, WindowSequence) else getattr(dataset, "sampler", None)
        if weights != WEIGHT_COLUMN or not isinstance(sampler, WindowSequence):  # Patch-, Scene-, ChipSampler
            raise OptionError(
                f"{where}: weights={weights!r}: a string names the windows table's {WEIGHT_COLUMN!r} column "
                f"(weights={WEIGHT_COLUMN!r}); otherwise pass one number per window."
            )
        if sampler.index.weight is None:
            raise ConfigError(
                f"{where}: weights={WEIGHT_COLUMN!r} but the windows {getattr(sampler, 'crops_path', '')} have no "
                f"{WEIGHT_COLUMN!r} "
                "column; add one with crossgeo.window_weights (or crossgeo windows --weights), or pass the weights."
            )
        weights = sampler.index.weight
    return check_weights(weights, n)


def require_windows(dataset: Any, where: str) -> None:
    """Refuse to iterate an empty window set, saying why (the adapters call it).

    An empty sampler is allowed to exist (a WARNING "no valid windows", length 0, as in the
    original), so a torch ``ConcatDataset`` over many scenes still builds; iterating one
    that is empty as a whole is an error, not a silent epoch of nothing.
    """
    if len(dataset) == 0:
        why = _why_empty(getattr(dataset, "sampler", dataset))
        raise WindowError(f"{where}: there are no windows to iterate {why}")


def _why_empty(sampler: Any) -> str:
    """Where an empty sampler's image and features lie (bounds and CRSs), and what to check."""
    source = getattr(sampler, "crops_path", None) or ""
    text = f"(no valid windows{f' in {source}' if source else ''})."
    grid = getattr(sampler, "grid", None)
    if grid is None or not hasattr(sampler, "image_path"):
        return text + " Check that the windows/features lie inside the image (crossgeo validate CONFIG lists them)."
    image_crs = str(grid.crs)
    text += (
        f" The image {sampler.image_path} covers {tuple(round(v, 6) for v in grid.bounds)} "
        f"(left, bottom, right, top) in {image_crs}."
    )
    report = sampler.index.report if hasattr(sampler, "index") else None
    features = None if report is None else report.features
    if report is None or features is None:
        return text + (
            " Check that the windows lie inside it (row_off/col_off in its pixels; crossgeo validate CONFIG "
            "lists what was dropped)."
        )
    return (
        f"{text} {features.describe(source, image_crs)} They are all outside the image "
        f"({report.outside_dropped} dropped): if their CRS is wrong, set the right one or reproject the "
        "features into the image's area (e.g. geopandas .set_crs(..., allow_override=True) / .to_crs(...)); "
        "check that crops_layer names the layer for this image."
    )


def require_shared_seed(seed: int | None, replicas: int, where: str, fix: str) -> None:
    """Refuse a random order split between ``replicas`` > 1 without a seed: each must compute the same order."""
    if seed is None and replicas > 1:
        raise ConfigError(
            f"{where} needs a seed: every replica (rank or input pipeline) must compute the same window order, "
            f"or their shares would overlap. {fix}"
        )


def check_epoch(epoch: Any) -> int:
    """An epoch number as an int: a non-negative integer (`crossgeo.options.check_int`)."""
    return check_int(epoch, "epoch", 0)


def check_replicas(num_replicas: Any, rank: Any) -> tuple[int, int]:
    """``(num_replicas, rank)`` of a replica taking its share of an epoch's order, checked."""
    num_replicas = check_int(num_replicas, "num_replicas", 1)
    return num_replicas, check_int(rank, "rank", 0, num_replicas - 1)


def draw_seed(seed: int | None) -> int:
    """``seed``, or (None) a seed drawn once from fresh entropy: what a loader's order and draws start from."""
    return int(seed) if seed is not None else int(np.random.default_rng().integers(2**32))


def epoch_length(samples_per_epoch: Any, n_windows: int) -> int:
    """The epoch length: ``samples_per_epoch`` when positive, else (None, ``<= 0`` as in the original) the windows."""
    if samples_per_epoch is not None:
        samples_per_epoch = check_int(samples_per_epoch, "samples_per_epoch")
    if samples_per_epoch is None or samples_per_epoch <= 0 or n_windows == 0:
        return n_windows
    return int(samples_per_epoch)


# ---------------------------------------------------------------------- the plan


@attrs.frozen(eq=False)
class LoaderPlan:
    """What a loader over ``sampler`` does each pass, decided once by `plan_loader` (picklable)."""

    sampler: Any
    """The patch source: a `crossgeo.PatchSampler`, `crossgeo.SceneSampler` or anything with ``len`` and ``get``."""
    seed: int | None
    """The seed given (None: unseeded)."""
    base_seed: int
    """``seed``, or one drawn once: every thread, process and replica of the loader orders windows by it."""
    augmentation: Any | None
    """The albumentations pipeline (None: no augmentation)."""
    weights: np.ndarray | None
    """One weight per window for a weighted draw (None: a permutation or the windows' order)."""
    blocks: tuple[np.ndarray, int] | None
    """A catalogue's ``order="scene-blocks"``: each window's scene and the scenes per block (`scene_blocks`)."""
    shuffle: bool
    batch_size: int | None
    drop_remainder: bool
    with_metadata: bool
    samples_per_epoch: int
    """Items per pass: the number of windows unless ``samples_per_epoch`` asked for another."""
    mask_type: np.dtype[Any]
    """The compact mask type: the narrowest integer type holding ``0..n_classes-1`` and the fill value."""
    read_threads: int | None = None
    """Threads reading patches ahead (`read_ahead`); None: `crossgeo.readahead.resolve_read_threads` decides."""

    @property
    def n_windows(self) -> int:
        return len(self.sampler)

    @property
    def passes_differ(self) -> bool:
        """Whether an item differs between passes (another window, or another seeded augmentation draw)."""
        return self.samples_per_epoch != self.n_windows or (self.seed is not None and self.augmentation is not None)

    def order(self, epoch: int, *, rank: int = 0, replicas: int = 1) -> np.ndarray:
        """The windows of ``epoch`` in visiting order (int64), every ``replicas``-th from ``rank`` on.

        A weighted draw with ``weights``, else a seeded permutation with ``shuffle`` (by blocks
        of scenes with a catalogue's ``order="scene-blocks"``), else the windows' own order; all
        replicas compute the same order, so their shares are disjoint.
        """
        n = self.n_windows
        if self.weights is not None:
            indices = epoch_order(n, self.base_seed, int(epoch), weights=self.weights)
        elif self.shuffle:
            indices = epoch_order(n, self.base_seed, int(epoch), blocks=self.blocks)
        else:
            indices = np.arange(n, dtype=np.int64)
        return indices[rank::replicas]

    def batches(self, count: int | None = None) -> int:
        """Batches in a pass of ``count`` items (default: every window), ``drop_remainder`` applied."""
        count = self.n_windows if count is None else count
        if self.batch_size is None:
            return count
        return count // self.batch_size if self.drop_remainder else math.ceil(count / self.batch_size)

    def decode_type(self, compact: bool = True) -> np.dtype[Any]:
        """The type the sampler decodes masks into for compact (or not) items (`crossgeo.augment.decode_type`)."""
        return decode_type(self.mask_type, self.augmentation, compact=compact)

    def served(self, index: int, pass_number: int) -> tuple[int, int]:
        """``(window, draw)`` of item ``index`` in pass ``pass_number``.

        Item ``j`` of pass ``k`` is number ``j + k * samples_per_epoch`` of an endless walk through
        the windows: window ``(j + k * samples_per_epoch) % n_windows``, augmented as that
        window's draw (its augmentation epoch) ``(j + k * samples_per_epoch) // n_windows``.
        With one item per window this is ``(index, pass_number)``.
        """
        drawn = index + pass_number * self.samples_per_epoch
        return drawn % self.n_windows, drawn // self.n_windows

    def output_shapes(self, channels_last: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(image shape, mask shape) of one model input, found on a blank patch when augmented (no read)."""
        size = self.sampler.patch_size
        bands = len(self.sampler.selected_bands)
        steps = getattr(self.sampler, "time_steps", None)  # a time series: (T, ...) images
        dates: tuple[int, ...] = () if steps is None else (int(steps),)
        if self.augmentation is None:
            image_shape: tuple[int, ...] = (*dates, size, size, bands) if channels_last else (*dates, bands, size, size)
            return image_shape, (size, size)
        blank = Patch(
            image=np.zeros((*dates, bands, size, size), dtype=self.sampler.image_dtype),
            mask=np.zeros((size, size), dtype=np.int64),
            row_off=0,
            col_off=0,
            index=0,
        )
        image, mask = to_model_inputs(blank, copy.deepcopy(self.augmentation), seed=0, channels_last=channels_last)
        return tuple(image.shape), tuple(mask.shape)


def plan_loader(
    source: Any,
    *,
    where: str,
    batch_size: Any = None,
    shuffle: bool = False,
    seed: Any = None,
    augmentation_list: Any = None,
    allowed_targets: Iterable[str] = (),
    drop_remainder: bool = False,
    with_metadata: bool = False,
    weights: Any = None,
    samples_per_epoch: Any = None,
    read_threads: Any = None,
    need_batch_size: bool = False,
    allow_empty: bool = False,
    any_sampler: bool = False,
) -> LoaderPlan:
    """The `LoaderPlan` of a loader named ``where`` over ``source``, every option checked.

    ``source``: a sampler, or a mapping of the original's keys (its options apply where the
    keyword is left at its default: `crossgeo.config.resolve_source`). ``need_batch_size``:
    refuse a missing batch size (Keras batches itself). ``allow_empty``: an empty window set
    is accepted here (the torch dataset refuses it when iterated, so a ``ConcatDataset`` of
    scenes still builds); otherwise `require_windows` refuses it now. ``any_sampler``: ``source``
    is taken as the sampler whatever its class (the torch dataset wraps any object with ``len``,
    ``get`` and the sampler's attributes); otherwise it is a `crossgeo.PatchSampler`,
    `crossgeo.SceneSampler` or a mapping.
    """
    sampler, options = (source, {}) if any_sampler else resolve_source(source, where)
    if not allow_empty:
        require_windows(sampler, where)
    checked_weights = resolve_weights(weights, sampler, where)
    batch_size = _check_batch_size(
        options.get("batch_size") if batch_size is None else batch_size, where, need_batch_size
    )
    seed = check_seed(options.get("seed") if seed is None else seed)
    if augmentation_list is None:
        augmentation_list = options.get("augmentation_list")
    fill = sampler.mask_fill_value
    return LoaderPlan(
        sampler=sampler,
        seed=seed,
        base_seed=draw_seed(seed),
        augmentation=build_augmentation(augmentation_list, allowed_targets=allowed_targets),
        weights=checked_weights,
        blocks=scene_blocks(sampler, checked_weights),
        shuffle=bool(shuffle or options.get("shuffle", False)),
        batch_size=batch_size,
        drop_remainder=bool(drop_remainder or options.get("drop_last", False)),
        with_metadata=bool(with_metadata or options.get("return_metadata", False)),
        samples_per_epoch=epoch_length(samples_per_epoch, len(sampler)),
        mask_type=mask_dtype(min(0, fill), max(sampler.n_classes - 1, fill, 1)),
        read_threads=_optional_count(options.get("read_threads") if read_threads is None else read_threads),
    )


def _optional_count(value: Any) -> int | None:
    return None if value is None else check_int(value, "read_threads", 0)


def _check_batch_size(batch_size: Any, where: str, required: bool) -> int | None:
    if batch_size is None:
        if required:
            raise OptionError(f"{where} needs batch_size, a positive integer (or a data_loader batch_size).")
        return None
    return check_int(batch_size, "batch_size", 1)


# ---------------------------------------------------------------------- reading ahead


def read_ahead(
    sampler: Any,
    served: Iterable[tuple[int, int]],
    *,
    mask_dtype: Any,
    threads: int,
    depth: int | None = None,
    plan: bool = False,
) -> ReadAhead[tuple[int, int], tuple[Patch, int]]:
    """``(patch, draw)`` for each ``(window, draw)`` of ``served``, in order, read ahead by ``threads`` threads.

    The patches are exactly ``sampler.get(window, mask_dtype=mask_dtype)``'s, yielded in the order of
    ``served`` (`crossgeo.readahead.ReadAhead`: at most ``depth``, default ``2 * threads``, read ahead;
    0 or 1 thread: read here, one by one). ``served`` is consumed in the caller's thread, so a loader
    computes which window and draw an item is there, in order. ``plan=True`` (a pass's items, as the torch
    loader's): with a pool, ``served`` is pulled `crossgeo.readahead.PLAN_ITEMS` at a time and the sampler is
    told the windows before they are read (`crossgeo.PatchSampler.plan_reads`). Only the reads run in the
    pool, each thread through its own handles: augmentation and conversion stay with the caller, so seeded
    and unseeded augmentations draw as in a sequential loop. Samples replaced by ``on_read_error="skip"`` are
    counted in the sampler's ``skipped``, one total for all threads. Close it (or exhaust it) to end
    the pool's threads.
    """
    plan_reads = getattr(sampler, "plan_reads", None) if plan else None
    return ReadAhead(
        lambda pair: (sampler.get(pair[0], mask_dtype=mask_dtype), pair[1]),
        served,
        threads=threads,
        depth=depth,
        plan=None if plan_reads is None else lambda pairs, threads: plan_reads([w for w, _ in pairs], threads),
    )


class ReadPlans:
    """Tells a sampler the windows of each epoch's order, `crossgeo.readahead.PLAN_ITEMS` at a time, as the reads
    reach them (`crossgeo.PatchSampler.plan_reads`), for loaders whose threads read an epoch in about its order:
    Keras' read-ahead pool and tf.data's map. The threads then share the image tiles the windows ahead need
    again (`crossgeo.io.PlannedBlocks`); reads out of order get the same pixels, only less of that help.

    ``order(epoch)`` is the epoch's window order, ``per_epoch`` the windows a pass reads of it; ``readers`` the
    threads reading at once (each adds `crossgeo.io.PLANNED_BLOCK_BYTES` of kept tiles). Thread-safe; a pass of
    an epoch starts again when its first batch comes (``start=0``) or the last pass handed out ``per_epoch``.
    """

    def __init__(self, sampler: Any, order: Callable[[int], np.ndarray], per_epoch: int, readers: int) -> None:
        self.plan_reads = getattr(sampler, "plan_reads", None)
        self.order, self.per_epoch, self.readers = order, per_epoch, readers
        self._lock = threading.Lock()
        self._epochs: dict[int, list[int]] = {}  # epoch -> [windows handed out, windows planned] in this pass

    @classmethod
    def of(cls, plan: LoaderPlan, order: Callable[[int], np.ndarray], windows: int, calls: int | None) -> ReadPlans:
        """For a loader of ``plan`` whose passes take ``windows`` of ``order`` (a last batch ``drop_remainder``
        drops is not read) in ``calls`` threads at once (None: tf.data's AUTOTUNE - the cores, at most 4)."""
        size = plan.batch_size
        read = windows // size * size if size and plan.drop_remainder else windows
        return cls(plan.sampler, order, read, min(os.cpu_count() or 1, 4) if calls is None else max(calls, 1))

    def reading(self, epoch: int, count: int, start: int | None = None) -> None:
        """``count`` windows of ``epoch`` are about to be read from ``start`` in its order (None: after the
        windows handed out so far in this pass): plan the next `PLAN_ITEMS` from there when they reach past the
        plan."""
        if self.plan_reads is None:
            return
        with self._lock:
            state = self._epochs.get(epoch)
            if state is None or start == 0:
                state = self._epochs[epoch] = [0, 0]
            start = state[0] if start is None else start
            state[0] = max(state[0], start + count)
            planned = start + count <= state[1]
            if not planned:
                state[1] = start + PLAN_ITEMS
            if state[0] >= self.per_epoch:  # handed out: the next pass of this epoch plans from its start
                del self._epochs[epoch]
        if not planned:
            self.plan_reads([int(w) for w in self.order(epoch)[start : start + PLAN_ITEMS]], self.readers)


# ---------------------------------------------------------------------- passes and skips


class PassCounter:
    """Counts the passes over a dataset (thread-safe): 0, 1, 2, ... (tf.data's epoch when none is given)."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def next(self) -> np.ndarray:
        with self._lock:
            value = self._next
            self._next += 1
        return np.asarray(value, dtype=np.int64)


def report_skipped(epoch: int, skipped: int) -> None:
    """Log an epoch's total of samples served from a replacement window (``on_read_error="skip"``).

    The adapters call it when an epoch ends; each unreadable window was already logged when met.
    """
    if skipped:
        log.warning(
            "crossgeo: epoch %d: %d sample(s) came from a replacement window because their window could not "
            "be read (on_read_error='skip'); the log above names each file, window and GDAL error.",
            epoch,
            skipped,
        )


class SkipTally:
    """Says at the end of each epoch how many samples came from a replacement window.

    With ``on_read_error="skip"`` the sampler logs every unreadable window as it meets it;
    the thread that finishes an epoch's last window (of ``per_epoch``) also logs the epoch's total.
    Thread-safe: windows of one epoch may be read by many threads at once (tf.data's map).
    """

    def __init__(self, sampler: Any, per_epoch: int) -> None:
        self.sampler = sampler
        self.per_epoch = per_epoch
        self._lock = threading.Lock()
        self._epochs: dict[int, list[int]] = {}  # epoch -> [windows done, sampler.skipped at start]

    def started(self, epoch: int) -> None:
        with self._lock:
            self._epochs.setdefault(epoch, [0, self.sampler.skipped])

    def finished(self, epoch: int) -> None:
        with self._lock:
            state = self._epochs[epoch]
            state[0] += 1
            if state[0] < self.per_epoch:
                return
            del self._epochs[epoch]
            skipped = self.sampler.skipped - state[1]
        report_skipped(epoch, skipped)
