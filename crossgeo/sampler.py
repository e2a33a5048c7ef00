"""PatchSampler: window index x raster reads x mask decoder -> numpy patches.

Everything that can be checked is checked in ``__init__`` (files, bands, dtypes, colour
map, windows, overlap), so a bad configuration fails in the main process with a message
naming the file and option, not inside a DataLoader worker.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import attrs
import numpy as np

from crossgeo.augment import scales_image
from crossgeo.errors import ClassRangeError, ConfigError, RasterError, ReadError
from crossgeo.grid import outside_pixels
from crossgeo.inspection import Inspection, inspect_sources, read_plan, source_coverage
from crossgeo.io import KeptBlocks, RasterReader, ReadPlan, ensure_gdal_env
from crossgeo.masks import ClassIndexDecoder, out_of_range_pixels, values_binarised
from crossgeo.options import REQUIRED, SAMPLER_OPTIONS, ImageSource, PathLike, sampler_option_names
from crossgeo.threads import PerThread
from crossgeo.windows import WindowIndex

__all__ = ["Patch", "PatchSampler", "WindowSequence"]

log = logging.getLogger("crossgeo")


@attrs.frozen(eq=False)
class Patch:
    """One training sample as numpy arrays on the reference grid.

    ``image`` is (C, H, W) in the sampler's ``image_dtype`` (unscaled); ``mask`` is
    (H, W) int64 class indices; ``row_off`` / ``col_off`` locate the window's top-left
    pixel on the reference grid; ``index`` is the window's position in the sampler;
    ``mask_valid`` (H, W) bool is True where the mask has data (False where it does not
    cover the window or marks nodata: those pixels hold the fill value); ``image_valid``
    (H, W) bool is True where the image has data (False outside the image, where its
    alpha band is 0, every selected band is nodata or its per-dataset mask band is 0; with several
    image sources, where any source has no data); ``scene`` is the position of the window's scene in a
    `crossgeo.SceneSampler` catalogue (None otherwise); ``unit_scale`` says whether model inputs divide
    the integer image by its type's maximum (the sampler's ``image_dtype`` "uint8" / "uint16"; False for
    "float32" and "native", whose values reach the model as read - the original's rule,
    `crossgeo.augment.scales_image`).
    """

    image: np.ndarray
    mask: np.ndarray
    row_off: int
    col_off: int
    index: int
    mask_valid: np.ndarray | None = None
    image_valid: np.ndarray | None = None
    scene: int | None = None
    unit_scale: bool = True
    source_valid: np.ndarray | None = None
    """(S,) bool per image source of a stacked image: False where the source has no pixel in the window
    (``missing="fill"``: its channels hold its fill); None for a single-path image."""
    times: np.ndarray | None = None
    """A time series (`crossgeo.SceneSampler` with ``group_by``): (T,) datetime64[s], the date of each of
    ``image``'s (T, C, H, W) dates in time order (NaT for padding); None otherwise."""
    time_valid: np.ndarray | None = None
    """(T,) bool: False for a padded date (and, with ``missing="fill"``, a date with no pixel in the window)."""
    time_steps: int | None = None
    """T of the model inputs; ``image`` holds more dates only under ``time_selection="random"``, whose draw of
    ``time_steps`` of them happens in `crossgeo.augment.to_model_inputs` (`crossgeo.augment.select_dates`)."""


_SKIP_LOCK = threading.Lock()
"""Guards ``skipped += 1`` (a read, an add and a store) when several threads read one sampler."""


class WindowSequence:
    """``sampler[i]`` for a sequence of windows, with ``on_read_error="skip"`` replacement.

    Shared by `PatchSampler`, `crossgeo.SceneSampler` and `crossgeo.ChipSampler`: a subclass
    sets ``index`` (its windows), provides ``_read_window(position)`` and the attributes
    ``on_read_error``, ``unreadable`` and ``skipped``. The length and the offset arrays are
    the index's, here once.
    """

    index: WindowIndex
    on_read_error: str
    unreadable: set[int]
    skipped: int

    def __len__(self) -> int:
        return len(self.index)

    @property
    def row_off(self) -> np.ndarray:
        """Row offsets of all windows, each on its scene's grid for a catalogue (int64, read-only)."""
        return self.index.row_off

    @property
    def col_off(self) -> np.ndarray:
        """Column offsets of all windows, each on its scene's grid for a catalogue (int64, read-only)."""
        return self.index.col_off

    @property
    def scene(self) -> np.ndarray | None:
        """Scene position of every window in a catalogue (int64); None for windows on one image."""
        return self.index.scene

    def _read_window(self, position: int, mask_dtype: Any = np.int64) -> Patch:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Patch:
        return self.get(index)

    def get(self, index: int, *, mask_dtype: Any = np.int64) -> Patch:
        """``sampler[index]`` with the mask's classes as ``mask_dtype``.

        The compact loaders ask for the narrowest integer type holding every class and the
        fill value, so no int64 copy of the mask is made per patch only to be narrowed again.
        Every adapter reads through this method (``sampler[i]`` too): a subclass that wraps
        reads overrides it.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, not {type(index).__name__}.")
        n = len(self)
        position = int(index) + n if index < 0 else int(index)
        if not 0 <= position < n:
            raise IndexError(f"window index {index} out of range for {n} windows.")
        if self.on_read_error == "raise":
            return self._read_window(position, mask_dtype)
        for attempt in range(n):
            candidate = (position + attempt) % n
            if candidate in self.unreadable:
                continue
            try:
                patch = self._read_window(candidate, mask_dtype)
            except ReadError as error:
                self.unreadable.add(candidate)
                log.warning(
                    "crossgeo: window %d is unreadable and is replaced by the next readable one from now on "
                    "(on_read_error='skip'): %s",
                    candidate,
                    error,
                )
                continue
            if candidate != position:
                with _SKIP_LOCK:  # threads reading ahead (crossgeo.readahead) count into one total
                    self.skipped += 1
            return patch
        raise ReadError(f"Every one of the {n} windows failed to read (on_read_error='skip'); see the log for why.")


class PatchSampler(WindowSequence):
    """Fixed-size image/mask patches from an image (the reference grid), a mask and windows.

    Args:
        image_path: Image raster (GeoTIFF, MBTiles, VRT, ...); its pixel grid is the
            reference grid, unless ``target_crs``/``target_resolution`` ask for another.
            ``image_mbtiles_path=`` (the original's name) is accepted for it.
        mask_path: Mask raster in any CRS/resolution; brought onto the reference grid
            nearest-neighbour (no warp at all when the grids coincide).
        crops_path: Windows: a CSV/Parquet file of pixel offsets, a vector file whose
            features' bounding-box centres become centred windows, or a table in memory
            (`WindowIndex`, pandas DataFrame, pyarrow Table, numpy (N, 2) array).
        patch_size: Window height and width in pixels.
        **aliases: ``image_mbtiles_path`` (the original's name for ``image_path``). Any
            other name raises `OptionError` (a ``TypeError``) suggesting the closest known one.

    The keyword-only options are `crossgeo.options.SamplerOptions`' fields, with the same
    types and defaults (a test keeps them equal); each is described under "Options" below
    and in the [configuration reference](../reference/configuration.md). A value of the
    wrong type raises `OptionTypeError`, a value out of range or not among the choices
    `ConfigError` (both ``ValueError``).

    Construction inspects the image, the mask and the windows (`crossgeo.inspection`) and
    fails there, naming the file and option, rather than inside a DataLoader worker; the
    records are kept as `image_info`, `mask_info` and `windows_info`. Warnings (Python
    ``warnings``) flag a patch larger than the image, windows mostly outside it and a mask
    covering little of it. An empty window set is a logged WARNING ("no valid windows")
    and a sampler of length 0.
    """

    def __init__(
        self,
        image_path: ImageSource = REQUIRED,
        mask_path: PathLike = REQUIRED,
        crops_path: Any = REQUIRED,
        patch_size: int = REQUIRED,
        *,
        color_map: Sequence[Sequence[int]] | None = None,
        n_classes: int = 2,
        selected_bands: Sequence[int] | None = None,
        image_dtype: Literal["uint8", "uint16", "float32", "native"] = "uint8",
        image_resampling: str = "bilinear",
        crops_layer: str | None = None,
        col_off_key: str = "col_off",
        row_off_key: str = "row_off",
        split: str | None = None,
        window_index_cache: PathLike | None = None,
        target_crs: Any = None,
        target_resolution: float | tuple[float, float] | None = None,
        mask_fill_value: int = 0,
        out_of_range: Literal["error", "fill"] = "error",
        ignore_invalid_image: bool = False,
        on_read_error: Literal["raise", "skip"] = "raise",
        reference: str | None = None,
        missing: Literal["error", "fill"] = "error",
        **aliases: Any,
    ) -> None:
        given = locals()  # the parameters are SamplerOptions' fields (tests/core/test_docs.py keeps them equal)
        config = {name: given[name] for name in sampler_option_names() if given[name] is not REQUIRED}
        self._setup(inspect_sources(config | aliases, where="PatchSampler"))

    @classmethod
    def from_inspection(cls, inspection: Inspection, *, grid_views: int = 1) -> PatchSampler:
        """The sampler of an inspection without problems (``crossgeo validate`` samples through it).

        ``grid_views``: samplers sharing GDAL's block cache (a catalogue's scenes; `crossgeo.io.mask_view_for`).
        """
        if not inspection.ok:
            first = inspection.problems[0].error if inspection.problems else None
            raise ConfigError(f"The inspection found problems; no sampler can be built: {first}")
        sampler = cls.__new__(cls)
        sampler._setup(inspection, warn=False, grid_views=grid_views)
        return sampler

    def _setup(self, inspection: Inspection, *, warn: bool = True, grid_views: int = 1) -> None:
        image, mask, windows, decoder = inspection.image, inspection.mask, inspection.windows, inspection.decoder
        assert image is not None and mask is not None and windows is not None and decoder is not None
        options = inspection.options
        #: The inspection records: what the image, mask and windows steps found.
        self.image_info, self.mask_info, self.windows_info = image, mask, windows
        self.image_path, self.mask_path, self.crops_path = image.path, mask.path, windows.source
        self.patch_size: int = options["patch_size"]
        self.n_classes: int = options["n_classes"]
        self.mask_fill_value: int = options["mask_fill_value"]
        self.on_read_error: str = options["on_read_error"]
        self.out_of_range: str = options["out_of_range"]
        self.ignore_invalid_image: bool = options["ignore_invalid_image"]
        self.color_map = options["color_map"]
        self.crops_layer = options["crops_layer"]
        self.split: str | None = options["split"]
        self.col_off_key, self.row_off_key = options["col_off_key"], options["row_off_key"]
        self.image_resampling = options["image_resampling"]
        self.window_index_cache = options["window_index_cache"]
        self.selected_bands = image.bands
        self.image_dtype = np.dtype(image.dtype)
        #: Model inputs scale the image to 0..1 (image_dtype "uint8"/"uint16"; not "native"/"float32").
        self.unit_scale = scales_image(options["image_dtype"])
        self.grid = image.grid
        self.mask_coverage = mask.coverage
        self.decoder = decoder
        #: Whether to look at mask values binarised by ``n_classes`` 2 (until the first warning; a
        #: `crossgeo.SceneSampler` turns it off in every scene once one of them warned).
        self.check_binarised = isinstance(decoder, ClassIndexDecoder) and decoder.binarise
        #: Samples this process served from a replacement window (``on_read_error="skip"``).
        self.skipped = 0
        #: Positions of the windows this process found unreadable (never read again here).
        self.unreadable: set[int] = set()
        if warn:
            for text in inspection.warnings:
                warnings.warn(text, stacklevel=3)
        self._plan = read_plan(image, mask, self.patch_size, resampling=self.image_resampling, grid_views=grid_views)
        self.index = windows.index
        #: ``(source name, 1-based band)`` per channel of `Patch.image`.
        self.channels: tuple[tuple[str, int], ...] = image.channels
        self.missing: str = options["missing"]
        self.reference: str | None = image.sources[image.reference].name if image.sources else None
        #: (N, S) bool: whether image source s has a pixel in window n (None: a single-path image).
        self.source_coverage = source_coverage(image, self.index, self.patch_size)
        self._check_source_coverage()
        log.info(
            "crossgeo: windows from %s%s: %s",
            windows.source,
            f" (cached in {self.window_index_cache})" if windows.from_cache else "",
            self.index.report.describe(),
        )
        if len(self.index) == 0:
            log.warning(
                "crossgeo: %s: no valid windows (%s); this sampler has length 0. Check that the windows/features "
                "overlap the image %s.",
                windows.source,
                self.index.report.describe(),
                image.path,
            )
        self._kept = KeptBlocks()  # the image's blocks kept for planned reads, shared by the readers of every thread
        self._readers: PerThread[RasterReader] = PerThread(
            partial(RasterReader, self._plan, self._kept), close=RasterReader.close
        )

    def _check_source_coverage(self) -> None:
        """``missing="error"``: refuse windows an image source has no pixel in, naming the source and the windows."""
        coverage = self.source_coverage
        if coverage is None or self.missing != "error" or coverage.all():
            return
        sources = self.image_info.sources
        for s in range(coverage.shape[1]):
            bad = np.flatnonzero(~coverage[:, s])
            if bad.size:
                first = ", ".join(f"({int(self.row_off[i])}, {int(self.col_off[i])})" for i in bad[:5])
                raise RasterError(
                    f"The image source {sources[s].name!r} ({sources[s].path}) has no pixel in {bad.size} of "
                    f"{len(self.index)} window(s) of {self.crops_path} (row_off, col_off: {first}"
                    f"{' ...' if bad.size > 5 else ''}). Set missing: fill to fill that source there (flagged in "
                    "Patch.source_valid), or drop those windows."
                )

    # ------------------------------------------------------------------ sequence

    @property
    def aligned(self) -> bool:
        """True when the mask is read with plain windows (its grid coincides with the image's)."""
        return self.mask_view == "aligned"

    @property
    def reading_plan(self) -> ReadPlan:
        """How this sampler's sources are read (`crossgeo.io.ReadPlan`: each source's view)."""
        return self._plan

    @property
    def mask_view(self) -> str:
        """How the mask reaches the reference grid: ``"aligned"`` (plain windowed reads), ``"lookup"`` (a warp
        that separates into rows and columns: a plain read and two index lookups), ``"table"`` (any other
        warp of a mask without alpha or mask band: a plain read and a per-pixel gather of the exact warp's
        pixels, `crossgeo.grid.nearest_table`), ``"grid"`` (one
        warped view of the whole grid per reader, its blocks cached by GDAL), ``"blocks"`` (the same view,
        its blocks kept by crossgeo: `crossgeo.io.MaskBlockCache`) or ``"window"`` (a warp per read);
        see `crossgeo.io.mask_view_for`."""
        mask = self._plan.mask
        assert mask is not None
        return mask.view

    def _read_window(self, position: int, mask_dtype: Any = np.int64) -> Patch:
        row_off = int(self.index.row_off[position])
        col_off = int(self.index.col_off[position])
        return self.read(row_off, col_off, index=position, mask_dtype=mask_dtype)

    def plan_reads(self, positions: list[int], readers: int = 1, *, worker: bool = False) -> None:
        """The windows to be read next, in order, by ``readers`` threads of this process (a DataLoader worker's
        share of a pass, a read-ahead pool's): the image's blocks may be kept for them, shared by the threads
        (`crossgeo.io.PlannedBlocks`). Only a hint: any other order reads the same pixels. ``worker``: the
        process reads for this sampler only (a DataLoader worker), so GDAL's block cache is lowered beside the
        kept blocks (`crossgeo.io.PLANNED_GDAL_CACHE`); else it stays as the application set it."""
        offsets = [(int(self.index.row_off[p]), int(self.index.col_off[p])) for p in positions]
        self._reader().plan_windows(offsets, readers, lower_gdal_cache=worker)

    def read(self, row_off: int, col_off: int, *, index: int = -1, mask_dtype: Any = np.int64) -> Patch:
        """The patch of any window on the reference grid (it may reach past the edges).

        ``mask_dtype`` narrows the classes (it must hold every class and the fill value).
        The per-patch path of every loader: one reader lookup, no work for a window wholly
        inside the grid beyond the reads (image and mask side by side:
        `crossgeo.io.RasterReader.read_patch`) and the mask's range check and decode.
        """
        reader = self._reader()
        try:
            (image, image_invalid), (bands, invalid) = reader.read_patch(row_off, col_off)
        except ReadError:
            self._discard_reader()
            raise
        size = self.patch_size
        mask, valid = self._decode_mask(
            bands, self._with_outside(invalid, row_off, col_off, size, size), row_off, col_off, mask_dtype
        )
        if image_invalid is None or not image_invalid.any():
            image_valid = np.ones((size, size), dtype=bool)
        else:
            image_valid = ~image_invalid
            if self.ignore_invalid_image:
                mask[image_invalid] = self.mask_fill_value
                valid &= image_valid
        return Patch(
            image=image,
            mask=mask,
            row_off=row_off,
            col_off=col_off,
            index=index,
            mask_valid=valid,
            image_valid=image_valid,
            unit_scale=self.unit_scale,
            source_valid=None if self.source_coverage is None or index < 0 else self.source_coverage[index],
        )

    def read_image(self, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
        """Only the image of a window: (image (C, H, W), valid (H, W) bool), no mask read."""
        try:
            image, invalid = self._reader().read_image(row_off, col_off)
        except ReadError:
            self._discard_reader()
            raise
        return image, (np.ones(image.shape[1:], dtype=bool) if invalid is None else ~invalid)

    def read_mask(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None, *, dtype: Any = np.int64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Only the mask of a window: (classes (H, W) int64, valid (H, W) bool), no image read.

        Pixels outside the reference grid get the fill value even where the mask has data
        there: there is no image under them to learn from. ``dtype`` narrows the classes for
        counting (`class_fractions`); the caller makes sure it holds every class and the fill value.
        """
        bands, invalid = self.read_mask_bands(row_off, col_off, height, width)
        return self._decode_mask(bands, invalid, row_off, col_off, dtype)

    def _decode_mask(
        self, bands: np.ndarray, invalid: np.ndarray | None, row_off: int, col_off: int, dtype: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classes and validity of a window's raw mask bands (``out_of_range`` applied)."""
        if isinstance(self.decoder, ClassIndexDecoder) and not self.decoder.binarise:
            bad = out_of_range_pixels(bands[0], self.n_classes, invalid)
            if bad is not None:
                if self.out_of_range == "error":
                    found = np.unique(bands[0][bad])
                    raise ClassRangeError(
                        f"The mask {self.mask_path} holds class value(s) {', '.join(map(str, found[:10].tolist()))}"
                        f"{' ...' if found.size > 10 else ''} outside 0..{self.n_classes - 1} (n_classes "
                        f"{self.n_classes}) in the window row_off={row_off}, col_off={col_off} (patch_size "
                        f"{self.patch_size}, {int(bad.sum())} pixel(s)). Raise n_classes, fix the mask, or set "
                        "out_of_range: fill to give them mask_fill_value."
                    )
                invalid = bad if invalid is None else invalid | bad
        elif self.check_binarised and isinstance(self.decoder, ClassIndexDecoder):
            self._warn_binarised(bands[0], invalid, row_off, col_off)
        classes = self.decoder(bands, invalid, dtype)
        valid = np.ones(classes.shape, dtype=bool) if invalid is None else ~invalid
        return classes, valid

    def _warn_binarised(self, band: np.ndarray, invalid: np.ndarray | None, row_off: int, col_off: int) -> None:
        """Warn once when ``n_classes`` 2 binarises a window of more than two mask values (class indices?)."""
        values = values_binarised(band, invalid)
        if values is None:
            return
        self.check_binarised = False
        listed = ", ".join(f"{v:g}" for v in values[:10].tolist()) + (" ..." if values.size > 10 else "")
        warnings.warn(
            f"The mask {self.mask_path} holds {values.size} values ({listed}) in the window row_off={row_off}, "
            f"col_off={col_off}, but n_classes is 2 (the default, as in the original MBTilesCropsGeoTifMaskDataset), "
            f"so every non-zero value becomes class 1. If they are class indices set n_classes: "
            f"{int(values.max()) + 1}; if the mask is binary, ignore this.",
            stacklevel=4,
        )

    def read_mask_bands(
        self, row_off: int, col_off: int, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask's raw data bands on a window and where they are invalid (None: nowhere), undecoded.

        ``height``/``width`` (default: the patch size) read any rectangle of the reference grid.
        """
        height = self.patch_size if height is None else height
        width = self.patch_size if width is None else width
        try:
            bands, invalid = self._reader().read_mask(row_off, col_off, height, width)
        except ReadError:
            self._discard_reader()
            raise
        return bands, self._with_outside(invalid, row_off, col_off, height, width)

    def _with_outside(
        self, invalid: np.ndarray | None, row_off: int, col_off: int, height: int, width: int
    ) -> np.ndarray | None:
        """``invalid`` plus the pixels outside the reference grid (no data to learn from there)."""
        grid = self.grid
        outside = outside_pixels(row_off, col_off, height, grid.height, grid.width, width_size=width)
        if outside is None:
            return invalid
        return outside if invalid is None else invalid | outside

    # ------------------------------------------------------------------ handles

    def _reader(self) -> RasterReader:
        """This thread's reader (see `crossgeo.threads.PerThread`), used under crossgeo's GDAL options.

        Opened on first use and reused; a new thread adopts the reader of a thread that
        ended, so short-lived threads (tf.data's) do not reopen the rasters per patch.
        """
        ensure_gdal_env()
        return self._readers.get()

    def _discard_reader(self) -> None:
        """After a failed read, reopen this thread's handles on the next read.

        GDAL caches a block that failed to decode (e.g. a corrupt MBTiles tile) as blank
        data; with the handles kept, the next window on that block would read the blank
        silently instead of failing again. (Called from an ``except`` in each read rather than
        a ``@contextmanager``, which costs microseconds on every read.)
        """
        self._readers.discard()

    def release_inherited_handles(self) -> None:
        """Forget the handles a forked process inherited from its parent; they are never used here.

        Also done on the first read in a new process; DataLoader workers call it at start-up.
        """
        self._readers.forget_inherited()

    def close(self) -> None:
        """Close the handles this process opened, in every thread (they reopen on the next read), and drop the
        image blocks kept for planned reads."""
        self._readers.clear()
        self._kept.clear()

    def __repr__(self) -> str:
        return (
            f"PatchSampler(image_path={self.image_path!r}, mask_path={self.mask_path!r}, "
            f"crops_path={self.crops_path!r}, patch_size={self.patch_size}, windows={len(self)})"
        )

    def read_mask_region(
        self, row_off: int, col_off: int, height: int, width: int, *, dtype: Any = np.int64
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mask of any ``height x width`` rectangle: (classes, valid bool), as `read_mask` gives.

        Each pixel gets exactly the class and validity `read_mask` gives it in any window
        holding it (fill value outside the grid and where the mask has no data), so
        overlapping windows can share one read (`crossgeo.planning.class_fractions`).
        ``dtype`` (default int64) narrows the classes when it holds every one of them.
        """
        return self.read_mask(row_off, col_off, height, width, dtype=dtype)


PatchSampler.__doc__ = (
    (PatchSampler.__doc__ or "")
    + "\n    Options:\n"
    + "".join(
        f"        {o.name} ({o.type}, default {o.default!r}): {o.doc}\n"
        for o in SAMPLER_OPTIONS
        if o.default is not REQUIRED
    )
)
