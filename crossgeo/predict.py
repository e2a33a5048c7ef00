"""Tiled prediction over a whole image.

`predict_raster` is the reverse of the sampler: it cuts the image into windows, prepares
them exactly as training prepares images (`crossgeo.augment.scale_image`, the scaling
`to_model_inputs` applies when no augmentation runs), calls any ``predict`` callable on
float32 batches (N, C, H, W), blends the scores of overlapping windows and writes a GeoTIFF
on the image's own grid. Comparing a prediction with a mask is `crossgeo.evaluation`'s;
which framework loads a model file is `crossgeo.models`'.

Window grid. Along each axis, window offsets are ``0, s, 2s, ...`` with stride
``s = patch_size - overlap`` while the window stays inside the image, plus a last window
flush with the far edge (offset ``extent - patch_size``) when the stride does not land
there (`crossgeo.grid.axis_offsets`, as `crossgeo.planning.grid_windows` lays them).
Only an image smaller than a patch gets a window reaching past its edge (padded with
the image's nodata or 0; those pixels are not written).

Blend weights. ``blend="linear"``: the score a window gives its pixel ``(i, j)`` (position
inside the patch of size P) is weighted by ``w(i) * w(j)`` with::

    w(t) = min(t + 0.5, P - t - 0.5) / (P / 2)        t = 0 .. P - 1

a tent that is ``1 / P`` at a window's outermost pixels and ``1 - 1 / P`` at its centre.
It is never zero, so a pixel covered by one window keeps that window's score, and in an
overlap the window whose centre is nearer counts more: scores fade from one window into
the next without a seam. The blended score is ``sum(w * score) / sum(w)`` over the windows
covering the pixel. ``blend="none"``: ``w`` is 1 for the window whose centre is nearest
(ties go to the earlier window) and 0 for the others. The windows form a product grid, so
``sum(w)`` is the product of a per-row and a per-column sum: the weights are divided by
those sums per axis beforehand (`normalised_weights`), and no weight raster is kept.

Memory. Scores are accumulated for one strip of windows (patch_size rows x image width x
K float32); when the next strip starts, the rows no later window touches are converted and
written, and the rest moves up. Batches are read ahead in one background thread
(`prefetch`, ``read_ahead`` batches deep), which a pool of ``read_threads`` threads fills
(`crossgeo.readahead.ReadAhead`, a batch each), so the model does not wait for I/O. An
image of one batch is read in the calling thread: a thread's first open of a raster costs
GDAL's per-thread setup (PROJ's database: ~13 ms CPU, against ~1 ms to read a window), and
one batch has nothing to overlap with (a 256^2 image: 117 -> 59 ms, CPU 40 -> 19 ms per call).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np

from crossgeo.augment import scale_image, scales_image
from crossgeo.errors import ConfigError, OptionError
from crossgeo.evaluation import evaluate as evaluate  # moved to crossgeo.evaluation; importable here as before
from crossgeo.evaluation import read_classes as read_classes
from crossgeo.files import check_not_input, input_paths
from crossgeo.grid import Grid, axis_offsets
from crossgeo.inspection import ImageInfo, check_int, inspect_any_image, read_plan
from crossgeo.io import COMPRESSIONS, RasterReader, StripWriter, check_output_path
from crossgeo.models import model_file_framework as model_file_framework  # moved to crossgeo.models
from crossgeo.readahead import READ_THREADS, ReadAhead, check_read_threads
from crossgeo.threads import PerThread

__all__ = [
    "BLENDS",
    "OUTPUTS",
    "TTAS",
    "Prediction",
    "blend_weights",
    "normalised_weights",
    "predict_raster",
    "prefetch",
    "tta_transforms",
]

log = logging.getLogger("crossgeo")

BLENDS = ("linear", "none")
OUTPUTS = ("class", "scores", "probabilities")
TTAS = (None, "flips", "d4")
_CHUNK = 512
"""Columns converted and written at a time when a strip is finished (bounds temporaries)."""
WRITE_BEHIND = 4
"""Blocks `predict_raster` queues for its writer thread (`crossgeo.io.StripWriter` ``behind``): GDAL compresses and
writes a finished strip while the next windows are scored (held extra: at most 4 strips of classes, or 4 chunks of
`_CHUNK` columns of a strip)."""
_T = TypeVar("_T")


# ---------------------------------------------------------------------- window grid and weights


def blend_weights(offsets: np.ndarray, patch_size: int, extent: int, blend: str) -> np.ndarray:
    """(windows, patch_size) float32 weights of each window's pixels along one axis (see the module doc)."""
    size = patch_size
    if blend == "linear":
        t = np.arange(size, dtype=np.float64)
        tent = (np.minimum(t + 0.5, size - t - 0.5) / (size / 2)).astype(np.float32)
        return np.broadcast_to(tent, (len(offsets), size))
    # Nearest centre: pixel centre p + 0.5 belongs to the first window whose centre is at
    # least as close as the next one's (ties to the earlier window).
    centres = offsets + size / 2
    bounds = (centres[:-1] + centres[1:]) / 2
    positions = np.arange(max(extent, size)) + 0.5
    owner = np.searchsorted(bounds, positions, side="left")
    weights = np.zeros((len(offsets), size), dtype=np.float32)
    for j, off in enumerate(offsets):
        span = owner[off : off + size]
        weights[j, : len(span)] = span == j
    return weights


def normalised_weights(offsets: np.ndarray, weights: np.ndarray, extent: int) -> np.ndarray:
    """Each window's weights divided by the sum of the weights of all windows at that position.

    Along an axis the normalised weights of the windows covering a position add up to 1,
    and the 2-D weight of a window is the product of its row and column weights, so
    blended scores need no division at the end; where one window covers a position its
    weight there is exactly 1 (its score is kept as is).
    """
    size = weights.shape[1]
    total = np.zeros(max(extent, size), dtype=np.float64)
    for off, w in zip(offsets, weights):
        total[off : off + size] += w
    result = np.empty(weights.shape, dtype=np.float32)
    for j, (off, w) in enumerate(zip(offsets, weights)):
        result[j] = w / total[off : off + size]
    return result


def tta_transforms(tta: str | None) -> list[tuple[int, bool]]:
    """Test-time transforms as (quarter turns, flip left-right first); ``(0, False)`` is the identity.

    ``"flips"``: identity, left-right, up-down, both (4); ``"d4"``: the 8 flips/rotations.
    """
    if tta is None:
        return [(0, False)]
    if tta == "flips":
        return [(0, False), (0, True), (2, True), (2, False)]
    return [(k, flip) for k in range(4) for flip in (False, True)]


def _forward(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The transformed batch, always a new array: a model that writes into its input cannot reach ``x``."""
    if flip:
        x = x[..., ::-1]
    return np.array(np.rot90(x, k, axes=(-2, -1)), order="C")


def _inverse(y: np.ndarray, k: int, flip: bool) -> np.ndarray:
    y = np.rot90(y, -k, axes=(-2, -1))
    return y[..., ::-1] if flip else y


# ---------------------------------------------------------------------- read-ahead

_END = object()


def prefetch(items: Iterable[_T], depth: int = 2) -> Iterator[_T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    An exception raised while producing is re-raised here; when the consumer stops early
    the thread stops too and closes ``items`` (a generator's ``finally`` runs in the
    thread that ran it). ``depth < 1`` iterates in the calling thread.
    """
    if depth < 1:
        yield from items
        return
    slots: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # handed to the consumer
            put((_END, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="crossgeo-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------- prediction


@attrs.frozen
class Prediction:
    """What `predict_raster` wrote: the file, its content and what it left as nodata."""

    path: Path
    output: str
    n_classes: int
    nodata: float
    windows: int
    invalid_pixels: int
    """Pixels where the image has no data (nodata, alpha 0, mask band): written as ``nodata``."""


def _choice(value: Any, choices: Sequence[Any], option: str) -> Any:
    if value not in choices:
        raise ConfigError(f"{option} {value!r} is not one of {', '.join(map(repr, choices))}.")
    return value


def _class_dtype(k: int) -> tuple[str, int]:
    if k <= 255:
        return "uint8", 255
    if k <= 65535:
        return "uint16", 65535
    raise ConfigError(f"output='class' holds at most 65535 classes, the model gives {k}; use output='scores'.")


class _Strips:
    """Blends window scores one strip at a time and writes each finished run of rows."""

    def __init__(
        self,
        grid: Grid,
        rows: np.ndarray,
        cols: np.ndarray,
        size: int,
        blend: str,
        output: str,
        k: int,
        writer: StripWriter,
    ) -> None:
        self.height, self.width, self.size, self.output, self.k = grid.height, grid.width, size, output, k
        self.rows, self.writer = rows, writer
        self.row_weights = normalised_weights(rows, blend_weights(rows, size, grid.height, blend), grid.height)
        self.col_weights = normalised_weights(cols, blend_weights(cols, size, grid.width, blend), grid.width)
        # A window alone on its rows and columns (overlap 0 away from a flush edge) is added as is.
        self.alone_rows = (self.row_weights == 1).all(axis=1)
        self.alone_cols = (self.col_weights == 1).all(axis=1)
        padded = max(grid.width, size)
        self.scores = np.zeros((k, size, padded), dtype=np.float32)
        self.valid = np.zeros((size, padded), dtype=bool)
        self.weighted = np.empty((k, size, size), dtype=np.float32)
        self.dirty = False  # scores were accumulated in this strip
        self.any_invalid = False  # a window of the strip's rows had pixels without image data
        # output="class": a window alone on its pixels is decided at once (argmax of its own
        # scores, no accumulation); `direct` marks its columns in the current strip.
        self.class_dtype, _ = _class_dtype(k) if output == "class" else ("uint8", 0)
        self.classes = np.zeros((size, padded), dtype=self.class_dtype) if output == "class" else None
        self.direct = np.zeros(padded, dtype=bool)
        self.best = np.empty((size, size), dtype=np.float32)  # `_argmax` buffers
        self.better = np.empty((size, size), dtype=bool)
        self.step = np.empty((size, size), dtype=self.class_dtype)
        self.strip = 0
        self.invalid_pixels = 0
        self.nodata: float = _class_dtype(k)[1] if output == "class" else np.nan if output == "scores" else 255

    def add(self, strip: int, col: int, col_off: int, scores: np.ndarray, valid: np.ndarray | None) -> None:
        """Add one window's (K, P, P) scores and where it has image data (None: everywhere), strip by strip."""
        while strip > self.strip:
            self._advance()
        span = slice(col_off, col_off + self.size)
        if valid is None:
            self.valid[:, span] = True
        else:
            self.valid[:, span] = valid
            self.any_invalid = True
        alone = self.alone_rows[strip] and self.alone_cols[col]
        if alone and self.classes is not None:
            # Decided at once: the argmax goes straight into the strip's classes, no float copy.
            _argmax(scores, self.classes[:, span], self.best, self.better, self.step)
            self.direct[span] = True
            return
        self.dirty = True
        if alone:  # nothing else adds to these pixels: a copy, not a sum
            self.scores[:, :, span] = scores
        else:
            weight = self.row_weights[strip][:, None] * self.col_weights[col][None, :]
            np.multiply(scores, weight, out=self.weighted)
            self.scores[:, :, span] += self.weighted

    def finish(self) -> None:
        """Write the rows of the last strip."""
        self._write(int(self.rows[self.strip]), self.height - int(self.rows[self.strip]))

    def _advance(self) -> None:
        row_off = int(self.rows[self.strip])
        shift = int(self.rows[self.strip + 1]) - row_off
        self._write(row_off, shift)
        keep = self.size - shift
        if self.dirty:
            for t in range(keep):  # row by row: no temporary strip-sized copy
                self.scores[:, t] = self.scores[:, t + shift]
            self.scores[:, keep:] = 0
            self.dirty = keep > 0
        self.direct[:] = False  # a window decided at once is alone on its rows: nothing of it is kept
        self.valid[:keep] = self.valid[shift:]
        self.valid[keep:] = False
        self.any_invalid = self.any_invalid and keep > 0
        self.strip += 1

    def _write(self, row_off: int, n: int) -> None:
        if self.classes is not None and not self.any_invalid and self.direct[: self.width].all():
            # Every pixel decided at once and valid (overlap 0, no flush edge window): one write, one copy
            # (the writer thread owns what it is given; the strip's buffer is reused).
            self.writer.write(self.classes[None, :n, : self.width].copy(), row_off, 0)
            return
        for c0 in range(0, self.width, _CHUNK):
            c1 = min(c0 + _CHUNK, self.width)
            block = self.scores[:, :n, c0:c1]
            invalid = ~self.valid[:n, c0:c1] if self.any_invalid else None
            if invalid is not None:
                self.invalid_pixels += int(invalid.sum())
            self.writer.write(self._convert(block, invalid, n, c0, c1), row_off, c0)

    def _convert(self, block: np.ndarray, invalid: np.ndarray | None, n: int, c0: int, c1: int) -> np.ndarray:
        if self.classes is not None:
            direct = self.direct[c0:c1]
            decided = self.classes[:n, c0:c1]
            if direct.all():
                classes = decided.copy()
            else:
                classes = _argmax(block)
                classes[:, direct] = decided[:, direct]
            if invalid is not None:
                classes[invalid] = self.nodata
            return classes[None]
        scores = block.copy()
        if self.output == "scores":
            if invalid is not None:
                scores[:, invalid] = np.nan
            return scores
        scores -= scores.max(axis=0)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=0)
        probabilities = np.rint(scores * 254).astype(np.uint8)
        if invalid is not None:
            probabilities[:, invalid] = 255
        return probabilities


def _argmax(
    scores: np.ndarray,
    classes: np.ndarray | None = None,
    best: np.ndarray | None = None,
    better: np.ndarray | None = None,
    step: np.ndarray | None = None,
) -> np.ndarray:
    """The index of the largest of (K, H, W) scores (the first of equal ones, as ``numpy.argmax``).

    Class by class: no (K, H, W) temporary copy. Written into ``classes`` (H, W) when given
    (else a new array of the smallest class dtype); ``best`` (float32), ``better`` (bool) and
    ``step`` (the classes' dtype) are optional (H, W) work buffers.

    Where class ``k`` beats the best so far, the classes so far are all below ``k``, so
    ``maximum(classes, k * better)`` sets ``k`` exactly there: two plain passes instead of a
    masked copy, which branches per pixel (1.8 against 0.2 ms per 5 x 256^2 window where
    ``better`` changes from pixel to pixel, as a real model's scores do at class edges).
    """
    shape = scores.shape[1:]
    if classes is None:
        classes = np.empty(shape, dtype=_class_dtype(len(scores))[0])
    best = np.empty(shape, dtype=np.float32) if best is None or best.shape != shape else best
    better = np.empty(shape, dtype=bool) if better is None or better.shape != shape else better
    if step is None or step.shape != shape or step.dtype != classes.dtype:
        step = np.empty(shape, dtype=classes.dtype)
    classes[...] = 0
    last = len(scores) - 1
    for k in range(1, last + 1):
        previous = scores[0] if k == 1 else best
        np.greater(scores[k], previous, out=better)
        np.multiply(better, k, out=step, dtype=step.dtype)
        np.maximum(classes, step, out=classes)
        if k < last:  # the best of classes 0..k, for the next class
            np.maximum(previous, scores[k], out=best)
    return classes


def _batches(
    image: ImageInfo,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    batch_size: int,
    scale: bool,
    read_threads: int = READ_THREADS,
) -> Iterator[tuple[list[tuple[int, int]], np.ndarray, list[np.ndarray | None]]]:
    """((strip, column) of each window, images (N, C, P, P) float32 prepared for the model, valid (P, P) or None
    per window (None: every pixel has image data)).

    Reads with the sampler's own reader (image only), so image validity (alpha, nodata,
    mask band, outside the raster) means exactly what `Patch.image_valid` means. Batches are
    read and scaled by a `crossgeo.readahead.ReadAhead` pool of ``read_threads`` threads (each
    with its own reader, one batch in flight per thread), in order: the batches one reader gives.
    """
    plan = read_plan(image, None, size)
    readers: PerThread[RasterReader] = PerThread(partial(RasterReader, plan), close=RasterReader.close)

    def read(chunk: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], np.ndarray, list[np.ndarray | None]]:
        reader = readers.get()
        x: np.ndarray | None = None
        valid: list[np.ndarray | None] = []
        for n, (i, j) in enumerate(chunk):
            data, bad = reader.read_image(int(rows[i]), int(cols[j]))
            if x is None:
                x = np.empty((len(chunk), *data.shape), dtype=np.float32)
            scale_image(data, out=x[n], scale=scale)  # straight into the batch: no stacked copy
            valid.append(None if bad is None else ~bad)
        assert x is not None
        return chunk, x, valid

    windows = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    chunks = [windows[start : start + batch_size] for start in range(0, len(windows), batch_size)]
    reads = ReadAhead(read, chunks, threads=read_threads, depth=read_threads)
    try:
        yield from reads
    finally:
        reads.close()
        readers.clear()


def _call(predict: Callable[[np.ndarray], Any], x: np.ndarray, n_classes: int | None, where: str) -> np.ndarray:
    """Run the model on one batch and check what it returned."""
    n, _, height, width = x.shape
    scores = np.asarray(predict(x))
    if scores.ndim != 4 or scores.shape[0] != n or scores.shape[2:] != (height, width):
        raise ConfigError(
            f"predict returned scores of shape {scores.shape} for a batch of shape {x.shape} ({where}); it must "
            f"return (N, K, H, W) = ({n}, K, {height}, {width}): one score per class and pixel, channels first."
        )
    if n_classes is not None and scores.shape[1] != n_classes:
        raise ConfigError(
            f"predict returned {scores.shape[1]} score bands but n_classes is {n_classes} ({where}); "
            "set n_classes to the model's number of outputs (or leave it None)."
        )
    if scores.dtype.kind not in "fiub":
        raise ConfigError(f"predict returned {scores.dtype} scores ({where}); return a float array.")
    scores = scores.astype(np.float32, copy=False)
    if not np.isfinite(scores).all():
        raise ConfigError(
            f"predict returned NaN or infinite scores ({where}); check the model and its inputs "
            "(images are float32 scaled like training: uint8 / 255, uint16 / 65535)."
        )
    return scores


def _model_scores(
    predict: Callable[[np.ndarray], Any],
    x: np.ndarray,
    transforms: list[tuple[int, bool]],
    n_classes: int | None,
    where: str,
) -> np.ndarray:
    """The batch's scores, averaged over the test-time transforms after undoing each.

    Each pass gets its own copy of the batch (`_forward`), so a model that modifies its
    input in place (``torch.from_numpy`` shares memory; ``ReLU(inplace=True)``) does not
    change what the later passes see.
    """
    if len(transforms) == 1:
        return _call(predict, x, n_classes, where)
    total: np.ndarray | None = None
    for k, flip in transforms:
        scores = _inverse(_call(predict, _forward(x, k, flip), n_classes, where), k, flip)
        total = scores.copy() if total is None else np.add(total, scores, out=total)
    assert total is not None
    total /= np.float32(len(transforms))
    return total


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="window", desc="crossgeo predict")


def predict_raster(
    image_path: str | os.PathLike[str] | Sequence[Any] | Mapping[str, Any],
    predict: Callable[[np.ndarray], Any],
    out_path: str | os.PathLike[str],
    *,
    patch_size: int,
    overlap: int = 0,
    batch_size: int = 8,
    selected_bands: Sequence[int] | None = None,
    image_dtype: str = "uint8",
    image_resampling: str = "bilinear",
    reference: str | None = None,
    blend: str = "linear",
    output: str = "class",
    n_classes: int | None = None,
    tta: str | None = None,
    cog: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    read_ahead: int = 2,
    compress: str = "deflate",
    option: str = "out_path",
    read_threads: int = READ_THREADS,
) -> Prediction:
    """Run ``predict`` over the whole image in tiles and write the blended result as a GeoTIFF.

    Args:
        image_path: The image (GeoTIFF, MBTiles, VRT, ...); the output has its CRS,
            transform, width and height exactly. A list or mapping of sources (as
            `crossgeo.PatchSampler` takes it) is stacked as the sampler stacks it: the model
            gets the same channels (`PatchSampler.channels`), every source brought onto the
            reference grid, and the output is written on that reference grid (the first
            source's, or ``reference``'s). A pixel where any source has no data is written
            as nodata.
        predict: Called with float32 batches (N, C, patch_size, patch_size), prepared as
            training prepares images (``scale_image``: uint8 / 255, uint16 / 65535 for
            ``image_dtype`` "uint8" / "uint16"; "float32" and "native" values unchanged; no
            augmentation); returns scores (N, K, patch_size, patch_size)
            as anything ``numpy.asarray`` takes. See `crossgeo.torch.predict_raster` and
            `crossgeo.keras.predict_raster` for models.
        out_path: The GeoTIFF to write (tiled 256 x 256, ``compress``). Written under a
            temporary name in its folder and renamed at the end (`crossgeo.files`): an
            existing file keeps its content until then, and a failed run leaves none. It
            may not be ``image_path`` itself (refused even with ``overwrite``).
        patch_size: Window height and width in pixels (the model's input size).
        overlap: Pixels shared by neighbouring windows, ``0 <= overlap < patch_size``.
        batch_size: Windows per call of ``predict``.
        selected_bands: 1-based image bands (None: all), as in training.
        image_dtype: "uint8" | "uint16" | "float32" | "native", as in training.
        image_resampling: With several sources: the resampling of a source brought onto the
            reference grid that names none of its own, as in training.
        reference: With several sources: the source whose grid the output is on (None: the first).
        blend: "linear" (tent weights, see the module doc) or "none" (nearest window centre).
        output: "class" - argmax, uint8 with nodata 255 (uint16 / 65535 when K > 255);
            "scores" - K float32 bands, nodata NaN; "probabilities" - softmax as uint8
            0-254, nodata 255. Pixels where the image has no data get the nodata value.
        n_classes: Expected K; the model's output is checked against it (None: any K).
        tta: None, "flips" (4) or "d4" (8 flips/rotations): scores averaged after undoing
            each transform.
        cog: Write a Cloud-Optimized GeoTIFF (GDAL's COG driver, with overviews:
            nearest for classes, average for scores/probabilities).
        progress: A tqdm progress bar (when tqdm is installed).
        overwrite: Replace ``out_path`` if it exists (refused otherwise).
        read_ahead: Batches read ahead in a background thread (0: read in this thread).
        read_threads: Threads reading windows for that thread, each with its own handles
            (`crossgeo.readahead.ReadAhead`; 0 or 1: one reader). The output is the same.
            An image of one batch is read in this thread whatever both say.
        compress: "deflate" (level 1; every TIFF reader decodes it) or "zstd" (level 1;
            faster to write and smaller, needs a reader built with zstd); also the COG's.
        option: The name errors give ``out_path`` (the CLI passes ``--out``).

    Raises:
        crossgeo.errors.WriteError: Writing ``out_path`` failed; a full disk says "disk full"
            (``errno.ENOSPC``). The previous ``out_path``, if any, is unchanged.

    Returns:
        A `Prediction` naming the file, K, the nodata value and how many pixels got it.
    """
    # Longer than 80 lines: one pipeline (check, plan strips, read ahead, predict with TTA, blend, write) whose
    # steps share the strip state; the steps themselves are helpers (_batches, _forward, StripWriter).
    if not callable(predict):
        raise OptionError(f"predict must be a callable taking (N, C, H, W) float32 batches, got {predict!r}.")
    size = check_int(patch_size, "patch_size", 1)
    overlap = check_int(overlap, "overlap", 0)
    if overlap >= size:
        raise ConfigError(f"overlap must be smaller than patch_size ({size}), got {overlap}; e.g. overlap={size // 4}.")
    batch_size = check_int(batch_size, "batch_size", 1)
    read_ahead = check_int(read_ahead, "read_ahead", 0)
    read_threads = check_read_threads(read_threads)
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes", 1)
    blend = _choice(blend, BLENDS, "blend")
    output = _choice(output, OUTPUTS, "output")
    tta = _choice(tta, TTAS, "tta")
    compress = _choice(compress, COMPRESSIONS, "compress")
    if isinstance(out_path, (str, os.PathLike)):
        check_not_input(out_path, input_paths(None, {"image_path": image_path}), option=option)
    final = check_output_path(out_path, overwrite=overwrite, option=option)
    image = inspect_any_image(
        image_path,
        selected_bands=selected_bands,
        image_dtype=image_dtype,
        image_resampling=image_resampling,
        reference=reference,
    )
    grid = image.grid
    rows = axis_offsets(grid.height, size, size - overlap)
    cols = axis_offsets(grid.width, size, size - overlap)
    total = len(rows) * len(cols)
    if total <= batch_size:  # one batch: read in this thread (the module doc)
        read_threads, read_ahead = 0, 0
    transforms = tta_transforms(tta)
    bar = _progress(total, progress)
    strips: _Strips | None = None
    writer: StripWriter | None = None
    try:
        batches = _batches(image, rows, cols, size, batch_size, scales_image(image_dtype), read_threads)
        for windows, x, valid in prefetch(batches, read_ahead):
            i, j = windows[0]
            where = f"batch from window row_off={rows[i]}, col_off={cols[j]}"
            scores = _model_scores(predict, x, transforms, n_classes, where)
            if strips is None:
                k = scores.shape[1]
                count, dtype, nodata = (
                    (1, *_class_dtype(k))
                    if output == "class"
                    else (k, "float32", np.nan)
                    if output == "scores"
                    else (k, "uint8", 255)
                )
                writer = StripWriter(
                    final,
                    grid,
                    count=count,
                    dtype=dtype,
                    nodata=nodata,
                    overwrite=overwrite,
                    compress=compress,
                    option=option,
                    behind=WRITE_BEHIND,
                )
                strips = _Strips(grid, rows, cols, size, blend, output, k, writer)
            elif scores.shape[1] != strips.k:
                raise ConfigError(f"predict returned {scores.shape[1]} score bands, earlier {strips.k} ({where}).")
            for (i, j), window_scores, window_valid in zip(windows, scores, valid):
                strips.add(i, j, int(cols[j]), window_scores, window_valid)
            del x, scores, window_scores  # not kept alive while the next batch is read and scored
            if bar is not None:
                bar.update(len(windows))
        assert strips is not None and writer is not None
        strips.finish()
        path = writer.finish(cog=cog, overview_resampling="nearest" if output == "class" else "average")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    if strips.invalid_pixels:
        log.info(
            "crossgeo: %d pixel(s) of %s have no image data and were written as nodata %s",
            strips.invalid_pixels,
            image.path,
            strips.nodata,
        )
    return Prediction(Path(path), output, strips.k, strips.nodata, total, strips.invalid_pixels)
