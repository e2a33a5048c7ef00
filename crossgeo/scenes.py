"""SceneSampler: one sampler over a catalogue of scenes, with a bound on open files.

Each scene's image is its own reference grid (nothing is merged or re-warped between
scenes); a scene is read by its own `PatchSampler`, built from that scene's `Inspection`
in the catalogue's record (`crossgeo.catalogue.inspect_catalogue`). The catalogue adds what
one sampler cannot do alone:

* one global window order over all scenes (so a shuffle mixes scenes), each `Patch`
  carrying its ``scene`` (the scene's position in the catalogue);
* a shared mask and a shared vector file of crops (see `crossgeo.catalogue`);
* at most ``max_open`` scenes with open handles per process (least recently used closed
  first, `crossgeo.lru.LRUCache`), so thousands of scenes run in DataLoader workers
  without running out of file descriptors;
* inspection of every scene at construction, reporting all bad scenes at once, each named
  by its position and file (one `CatalogueError` whose ``problems`` are the records).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import numpy as np

from crossgeo.catalogue import (
    COVERAGE_SAMPLES,
    SCENE_COLUMNS,
    CatalogueInspection,
    Scene,
    SceneWindows,
    inspect_catalogue,
    read_catalogue,
)
from crossgeo.errors import CatalogueError
from crossgeo.lru import LRUCache
from crossgeo.options import REQUIRED, PathLike, SceneOptions
from crossgeo.sampler import Patch, PatchSampler, WindowSequence

__all__ = ["COVERAGE_SAMPLES", "SCENE_COLUMNS", "Scene", "SceneSampler", "SceneWindows", "read_catalogue"]

log = logging.getLogger("crossgeo")


def check_max_open(value: Any) -> int:
    """``max_open``: an integer >= 1, checked as `crossgeo.options.SceneOptions` declares it."""
    return SceneOptions(max_open=value).max_open


def check_order(order: Any, block_scenes: Any) -> tuple[str, int]:
    """``order`` and ``block_scenes``, checked as `crossgeo.options.SceneOptions` declares them."""
    checked = SceneOptions(order=order, block_scenes=block_scenes)
    return checked.order, checked.block_scenes


def _close_scene(position: int, sampler: PatchSampler) -> None:
    """`LRUCache`'s ``on_evict``: close a scene's handles in every thread (they reopen on its next read)."""
    sampler.close()


class SceneSampler(WindowSequence):
    """Fixed-size patches from a catalogue of scenes, each scene's image its own reference grid.

    Args:
        scenes: A list of mappings, or a CSV/Parquet table (path, pandas DataFrame, pyarrow
            Table), with ``image_path`` and optional ``mask_path`` / ``crops_path`` per scene.
            Relative paths in a table file start at the table's folder.
        patch_size: Window height and width in pixels.
        mask_path: The mask of every scene without its own (e.g. one GeoTIFF or VRT over the
            whole region, in any CRS).
        crops_path: A vector file of features for every scene without its own crops: each
            feature goes to the first scene (catalogue order) that holds their whole window.
        max_open: At most this many scenes keep open handles per process (least recently
            used closed first; they reopen on their next read).
        order: How a shuffled epoch orders the windows (`crossgeo.loading.epoch_order`):
            ``"random"`` (one permutation of all windows) or ``"scene-blocks"`` (scenes
            permuted, grouped ``block_scenes`` at a time, windows permuted within each block):
            less random, but each block's scenes are read together while open and cached.
        block_scenes: Scenes per block with ``order="scene-blocks"`` (keep it <= ``max_open``).
        group_by: The column naming each place of a time-series catalogue: the rows of one
            group (one place at several dates, dated by a ``time`` column) make one scene whose
            patches are (T, C, H, W), every date brought onto the grid of the group's first row
            (its mask and windows too). None: every row is its own scene.
        time_steps: T with ``group_by`` (default: the largest group's date count); shorter
            groups are padded with zeros, flagged False in `Patch.time_valid`.
        time_selection: ``"all"`` (every date, time order; a longer group is an error),
            ``"latest"`` (the latest ``time_steps``; the others counted in ``skipped_dates``)
            or ``"random"`` (``time_steps`` dates drawn per sample from (seed, epoch, window)
            by `crossgeo.augment.to_model_inputs`, so every adapter draws the same ones;
            ``sampler[i]`` then holds all of the group's dates).
        **options: The options of `crossgeo.PatchSampler` (``selected_bands``,
            ``image_dtype``, ``color_map``, ``window_index_cache``, ...), shared by all scenes.

    ``len`` is the total window count; ``sampler[i]`` is a `Patch` whose ``scene`` is the
    position of its scene and ``index`` is ``i``. Windows are numbered scene by scene in
    catalogue order; adapters shuffle over all of them. Scenes may differ in CRS, resolution
    and size but must agree on band count and dtype after ``selected_bands`` / ``image_dtype``.

    Construction inspects every scene (`crossgeo.catalogue.inspect_catalogue`: files, CRS,
    bands, dtypes, overlap with the mask, windows) and raises one `CatalogueError` (a
    `ConfigError`) listing every bad scene by position and file; its ``problems`` are the
    records. A scene with no windows is reported and skipped (`empty_scenes`).
    """

    def __init__(
        self,
        scenes: Any,
        patch_size: int = REQUIRED,
        *,
        mask_path: PathLike | None = None,
        crops_path: Any = None,
        max_open: int = 32,
        order: Literal["random", "scene-blocks"] = "random",
        block_scenes: int = 8,
        group_by: str | None = None,
        time_steps: int | None = None,
        time_selection: Literal["all", "latest", "random"] = "all",
        **options: Any,
    ) -> None:
        max_open = check_max_open(max_open)
        ordering = check_order(order, block_scenes)
        inspection = inspect_catalogue(
            scenes,
            patch_size,
            mask_path=mask_path,
            crops_path=crops_path,
            group_by=group_by,
            time_steps=time_steps,
            time_selection=time_selection,
            **options,
        )
        self._setup(inspection, max_open, ordering)
        for text in inspection.warnings:
            warnings.warn(text, stacklevel=2)

    @classmethod
    def from_inspection(
        cls, inspection: CatalogueInspection, *, max_open: Any = 32, order: Any = "random", block_scenes: Any = 8
    ) -> SceneSampler:
        """The sampler of a catalogue inspection (``crossgeo validate`` samples through it); warns nothing.

        Raises `CatalogueError` listing the inspection's problems when it has any.
        """
        sampler = cls.__new__(cls)
        sampler._setup(inspection, check_max_open(max_open), check_order(order, block_scenes))
        return sampler

    def _setup(self, inspection: CatalogueInspection, max_open: int, ordering: tuple[str, int]) -> None:
        if not inspection.ok:
            raise CatalogueError(inspection.describe_problems(), inspection.problems)
        assert inspection.windows is not None
        options, windows = inspection.options, inspection.windows
        self.max_open = max_open
        #: A shuffled epoch's order ("random" or "scene-blocks") and the scenes per block (`crossgeo.loading`).
        self.order, self.block_scenes = ordering
        self.options = options
        self.catalogue: list[Scene] = list(inspection.scenes)
        self.source = inspection.source
        self.shared_mask_path = inspection.shared_mask_path
        self.shared_crops_path = inspection.shared_crops_path
        # An epoch visits every scene: their warped masks share GDAL's block cache.
        self.samplers = [
            PatchSampler.from_inspection(s, grid_views=len(self.catalogue)) for s in inspection.inspections
        ]
        #: All windows: scene position, row and column offsets (int64, read-only).
        self.index = windows.index
        self.windows_info = windows
        counts = inspection.windows_per_scene()
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        #: Positions of scenes without any window (reported and skipped).
        self.empty_scenes: tuple[int, ...] = tuple(int(p) for p in np.flatnonzero(counts == 0))
        first = self.samplers[0]
        #: Descriptions for reports: the catalogue, and the shared mask (or "per-scene masks").
        self.image_path = f"{len(self.catalogue)} scenes of {self.source}"
        self.mask_path = self.shared_mask_path or "per-scene masks"
        #: The first scene's image record (the scenes agree on its bands and dtype).
        self.image_info = first.image_info
        self.patch_size: int = options["patch_size"]
        self.selected_bands = first.selected_bands
        self.image_dtype = first.image_dtype
        self.unit_scale = first.unit_scale
        self.n_classes: int = options["n_classes"]
        self.mask_fill_value: int = options["mask_fill_value"]
        self.color_map = options["color_map"]
        self.decoder = first.decoder
        self.on_read_error: str = options["on_read_error"]
        self.window_index_cache = options["window_index_cache"]
        #: Time series (``group_by``): the grouping column, T and how dates are chosen (None: single dates).
        self.group_by = inspection.group_by
        self.time_steps: int | None = inspection.time_steps if self.group_by is not None else None
        self.time_selection = inspection.time_selection
        #: Dates left out of the time series (``time_selection="latest"``).
        self.skipped_dates = inspection.skipped_dates
        #: ``(source name, 1-based band)`` per channel of `Patch.image` (the first scene's, as `PatchSampler.channels`);
        #: for a time series one date's channels, a source named without its date (``"image"`` for a one-file date).
        self.channels: tuple[tuple[str, int], ...] = first.channels
        if self.time_steps is not None:
            dates = len(self.catalogue[0].dates)
            self.selected_bands = first.image_info.bands[: len(first.image_info.bands) // dates]  # one date's bands
            self.channels = tuple(
                (name.split("/", 1)[1] if "/" in name else "image", band)
                for name, band in first.channels[: len(self.selected_bands)]
            )
        #: Samples this process served from a replacement window (``on_read_error="skip"``).
        self.skipped = 0
        #: Positions of the windows this process found unreadable (never read again here).
        self.unreadable: set[int] = set()
        #: The scenes this process keeps open (at most ``max_open`` idle ones).
        self._open: LRUCache[int, PatchSampler] = LRUCache(max_open, self.samplers.__getitem__, _close_scene)
        self._log_counts()

    def _log_counts(self) -> None:
        windows, empty = self.windows_info, self.empty_scenes
        log.info(
            "crossgeo: %d window(s) in %d scene(s) of %s%s",
            len(self.index),
            len(self.catalogue),
            self.source,
            f" (cached in {self.window_index_cache})" if windows.from_cache else "",
        )
        if empty:
            log.warning(
                "crossgeo: %d of %d scene(s) have no valid windows and are skipped: %s%s",
                len(empty),
                len(self.catalogue),
                ", ".join(f"{self.catalogue[p].where} ({self.catalogue[p].image_label})" for p in empty[:10]),
                " ..." if len(empty) > 10 else "",
            )
        if windows.unassigned:
            log.warning(
                "crossgeo: %d of %d feature(s) of %s lie wholly inside no scene (their window would cross a scene "
                "edge or lie outside every scene) and are not used.",
                windows.unassigned,
                windows.shared_features,
                self.shared_crops_path,
            )
        if self.skipped_dates:
            log.warning(
                "crossgeo: %s: %d date(s) of the time series are not used: time_selection='latest' keeps the latest "
                "%s of each group (raise time_steps to use more).",
                self.source,
                self.skipped_dates,
                self.time_steps,
            )
        if len(self.index) == 0:
            log.warning("crossgeo: %s: no valid windows in any scene; this sampler has length 0.", self.source)

    # ------------------------------------------------------------------ sequence

    @property
    def scenes(self) -> int:
        """The number of scenes in the catalogue (skipped empty ones included)."""
        return len(self.catalogue)

    @property
    def scene(self) -> np.ndarray:
        """Scene position of every window (int64; never None for a catalogue)."""
        assert self.index.scene is not None
        return self.index.scene

    def windows_per_scene(self) -> np.ndarray:
        """Window count of every scene (int64, catalogue order)."""
        return np.diff(self._starts)

    @property
    def patch_shape(self) -> tuple[int, ...]:
        """The shape of `Patch.image` as model inputs see it: (C, H, W), or (T, C, H, W) for a time series."""
        size = self.patch_size
        shape = (len(self.selected_bands), size, size)
        return shape if self.time_steps is None else (self.time_steps, *shape)

    def _read_window(self, position: int, mask_dtype: Any = np.int64) -> Patch:
        scene = int(self.scene[position])
        row_off, col_off = int(self.row_off[position]), int(self.col_off[position])
        local = position - int(self._starts[scene])  # the window's position in its scene's sampler
        with self.opened(scene) as sampler:
            checking = sampler.check_binarised
            patch = sampler.read(row_off, col_off, index=local, mask_dtype=mask_dtype)
        if checking and not sampler.check_binarised:  # it warned: once for the catalogue, not once per scene
            for other in self.samplers:
                other.check_binarised = False
        return self._finished(patch, scene, position)

    def read(self, scene: int, row_off: int, col_off: int, *, index: int = -1) -> Patch:
        """The patch of any window on scene ``scene``'s grid."""
        with self.opened(scene) as sampler:
            patch = sampler.read(row_off, col_off, index=-1)
        return self._finished(patch, scene, index)

    def _finished(self, patch: Patch, scene: int, index: int) -> Patch:
        """The scene's patch as this catalogue's: its ``scene`` and ``index``; a time series' dates as (T, C, H, W).

        A group's sampler stacks its dates' bands in time order (one image source per date), so
        the (T * C, H, W) read is a (T, C, H, W) view; a group shorter than ``time_steps`` is
        padded with zeros, its padding flagged False in ``time_valid`` and NaT in ``times``.
        """
        if self.time_steps is None:
            return attrs.evolve(patch, scene=scene, index=index)
        group = self.catalogue[scene]
        dates, steps = len(group.dates), self.time_steps
        image = patch.image.reshape(dates, -1, *patch.image.shape[1:])
        # One source per date, or several (a date of several band files): a date is valid where all of its are.
        flags = np.ones(dates, bool) if patch.source_valid is None else np.asarray(patch.source_valid, bool)
        valid = np.asarray(flags.reshape(dates, -1).all(axis=1), bool)
        times = np.array(group.times, dtype="datetime64[s]")
        if dates < steps:
            padded = np.zeros((steps, *image.shape[1:]), image.dtype)
            padded[:dates] = image
            image = padded
            valid = np.concatenate([valid, np.zeros(steps - dates, bool)])
            times = np.concatenate([times, np.full(steps - dates, np.datetime64("NaT"), "datetime64[s]")])
        return attrs.evolve(
            patch, image=image, scene=scene, index=index, times=times, time_valid=valid, time_steps=steps
        )

    def read_mask(self, row_off: int, col_off: int, *, scene: int) -> tuple[np.ndarray, np.ndarray]:
        """Only the mask of a window of scene ``scene``: (classes (H, W) int64, valid (H, W) bool)."""
        with self.opened(scene) as sampler:
            return sampler.read_mask(row_off, col_off)

    # ------------------------------------------------------------------ handles

    @contextmanager
    def opened(self, scene: int) -> Iterator[PatchSampler]:
        """Scene ``scene``'s `PatchSampler` to read from, within the ``max_open`` bound.

        While the block runs the scene counts as in use (never closed); entering it closes the
        least recently used idle scenes beyond ``max_open``.
        """
        if not 0 <= scene < len(self.samplers):
            raise IndexError(f"scene {scene} out of range for {len(self.samplers)} scenes.")
        with self._open.acquire(scene) as sampler:
            yield sampler

    @property
    def open_scenes(self) -> tuple[int, ...]:
        """Scenes this process keeps open, least recently used first."""
        return self._open.keys()

    def release_inherited_handles(self) -> None:
        """Forget the handles a forked process inherited from its parent (DataLoader workers call it)."""
        self._open.forget_inherited()
        for sampler in self.samplers:
            sampler.release_inherited_handles()

    def close(self) -> None:
        """Close the handles this process opened (they reopen on the next read)."""
        self._open.clear()

    def __repr__(self) -> str:
        series = "" if self.time_steps is None else f", group_by={self.group_by!r}, time_steps={self.time_steps}"
        return (
            f"SceneSampler({self.source!r}, scenes={len(self.catalogue)}, patch_size={self.patch_size}, "
            f"windows={len(self)}, max_open={self.max_open}{series})"
        )
