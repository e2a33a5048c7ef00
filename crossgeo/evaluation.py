"""Evaluation of a class prediction against a reference mask, and reading a prediction's windows.

`evaluate` brings a reference mask onto the prediction's grid through the sampler's read
path and counts a confusion matrix; it returns an `Evaluation` record. `read_classes`
reads windows of a class raster on an image's grid (``crossgeo preview --prediction``,
the demo's figure).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from crossgeo.errors import ConfigError, NoOverlapError, RasterError
from crossgeo.grid import Grid, outside_pixels, pixel_offset
from crossgeo.inspection import check_int, inspect_image, inspect_mask, read_plan
from crossgeo.io import EXACT_TOLERANCE, RasterReader

__all__ = ["Evaluation", "evaluate", "read_classes"]


@attrs.frozen(eq=False)
class Evaluation:
    """What `evaluate` counted: the confusion matrix and the metrics derived from it.

    The per-class arrays have one float64 value per class (NaN for a class absent from
    both the reference and the prediction).
    """

    confusion: np.ndarray
    """(K, K) int64; rows = reference class, columns = predicted class."""
    iou: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    accuracy: float
    """Share of counted pixels whose predicted class is the reference class (NaN when none was counted)."""
    mean_iou: float
    """Mean of `iou` over the classes where it is not NaN."""
    pixels: int
    """Pixels counted (the sum of `confusion`)."""
    ignored: Mapping[str, int]
    """Pixels not counted, by reason: ``no_mask_data``, ``prediction_nodata``, ``ignore_value``."""

    @property
    def n_classes(self) -> int:
        """K, the number of classes."""
        return len(self.confusion)

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, ignored: Mapping[str, int]) -> Evaluation:
        """The metrics of a (K, K) confusion matrix (rows = reference, columns = predicted)."""
        tp = np.diag(confusion).astype(np.float64)
        reference = confusion.sum(axis=1)
        predicted = confusion.sum(axis=0)
        fp, fn = predicted - tp, reference - tp
        total = int(confusion.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / (tp + fp + fn)
            precision = tp / predicted
            recall = tp / reference
            f1 = 2 * tp / (2 * tp + fp + fn)
        return cls(
            confusion=confusion,
            iou=iou,
            f1=f1,
            precision=precision,
            recall=recall,
            accuracy=float(tp.sum() / total) if total else float("nan"),
            mean_iou=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            pixels=total,
            ignored=dict(ignored),
        )


def read_classes(
    prediction_path: str | os.PathLike[str],
    grid: Grid,
    windows: Iterable[tuple[int, int]],
    size: int,
    *,
    option: str = "prediction_path",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``size`` windows ``(row_off, col_off)`` of a class raster on ``grid``: (classes int64, valid bool) each.

    The prediction must lie on ``grid`` exactly (as `predict_raster` writes it on its
    image's grid; otherwise an error naming both grids). ``valid`` is False where the
    prediction holds its nodata and outside the raster (there ``classes`` is 0).
    """
    prediction = inspect_image(prediction_path, option=option, image_dtype="native")
    if prediction.raster.count != 1 or np.dtype(prediction.dtype).kind not in "ui":
        raise RasterError(
            f"{option} {prediction.path} has {prediction.raster.count} band(s) of {np.dtype(prediction.dtype)}; "
            "a class raster (predict_raster(output='class')) has one integer band."
        )
    if pixel_offset(grid, prediction.grid) != (0, 0) or (prediction.grid.height, prediction.grid.width) != (
        grid.height,
        grid.width,
    ):
        raise RasterError(
            f"{option} {prediction.path} is not on the image's grid ({prediction.grid.width} x "
            f"{prediction.grid.height} px, {prediction.grid.crs}; the image: {grid.width} x {grid.height} px, "
            f"{grid.crs}); predict this configuration's image (crossgeo predict CONFIG ...)."
        )
    nodata = prediction.raster.nodata
    reader = RasterReader(read_plan(prediction, None, size))
    result = []
    try:
        for row_off, col_off in windows:
            data, outside = reader.read_image(int(row_off), int(col_off))
            classes = data[0].astype(np.int64)
            valid = np.ones(classes.shape, dtype=bool) if outside is None else ~outside
            if nodata is not None:
                valid &= classes != nodata
            classes[~valid] = 0
            result.append((classes, valid))
    finally:
        reader.close()
    return result


def _windows_of(grid: Grid, windows: Any, tile: int) -> list[tuple[int, int, int]]:
    if windows is None:
        return [(r, c, tile) for r in range(0, grid.height, tile) for c in range(0, grid.width, tile)]
    result = []
    for pos, window in enumerate(windows):
        if len(window) != 3 or not all(isinstance(v, (int, np.integer)) for v in window) or window[2] < 1:
            raise ConfigError(f"windows entry {pos} is {window!r}; give (row_off, col_off, size) integer triples.")
        result.append((int(window[0]), int(window[1]), int(window[2])))
    return result


def evaluate(
    prediction_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    *,
    n_classes: int,
    color_map: Sequence[Sequence[int]] | None = None,
    windows: Iterable[tuple[int, int, int]] | None = None,
    mask_fill_value: int | None = None,
    tile: int = 512,
) -> Evaluation:
    """Compare a class prediction with a reference mask on the prediction's grid.

    The mask is read through the sampler's read path (plain windows when the grids
    coincide, else nearest-neighbour onto the prediction's grid, here with every pixel
    centre transformed exactly rather than within GDAL's default 0.125-pixel
    approximation) and decoded with ``color_map`` / ``n_classes`` as the sampler does
    (``n_classes == 2`` binarises a class-index mask).

    Args:
        prediction_path: A single-band integer class raster (``predict_raster(output="class")``).
        mask_path: The reference mask, in any CRS/resolution that overlaps the prediction.
        n_classes: Classes K; predicted or reference classes outside ``0..K-1`` are an error.
        color_map: ``[[R, G, B, class], ...]`` for a colour-coded mask.
        windows: ``(row_off, col_off, size)`` windows on the prediction grid to evaluate
            (None: the whole prediction). A pixel inside several windows counts once per window.
        mask_fill_value: A reference class to ignore (an ignore index painted into the
            mask, e.g. 255); None ignores nothing beyond missing data.
        tile: Size of the windows the whole prediction is read in.

    Pixels are ignored where the mask has no data (outside it, nodata, alpha 0), where the
    prediction holds its nodata, and where the reference is ``mask_fill_value``; the
    counts are returned under ``ignored``.

    Returns:
        An `Evaluation`: ``confusion`` (K x K int64; rows = reference class, columns =
        predicted class), per-class ``iou``, ``f1``, ``precision``, ``recall`` (float64
        arrays; NaN for a class absent from both), ``accuracy``, ``mean_iou`` (over classes
        not NaN), ``pixels`` (counted) and ``ignored`` (counts by reason).
    """
    k = check_int(n_classes, "n_classes", 1)
    tile = check_int(tile, "tile", 1)
    if mask_fill_value is not None:
        mask_fill_value = check_int(mask_fill_value, "mask_fill_value", 0)
    prediction = inspect_image(prediction_path, option="prediction_path", image_dtype="native")
    if prediction.raster.count != 1 or np.dtype(prediction.dtype).kind not in "ui":
        raise RasterError(
            f"prediction_path {prediction.path} has {prediction.raster.count} band(s) of {np.dtype(prediction.dtype)}; "
            "evaluate needs a single-band integer class raster, as predict_raster(output='class') writes."
        )
    grid, nodata = prediction.grid, prediction.raster.nodata
    try:
        mask, decoder = inspect_mask(mask_path, prediction, color_map=color_map, n_classes=k)
    except NoOverlapError as error:
        raise NoOverlapError(
            f"prediction_path and mask_path do not overlap: {error} Evaluate a prediction against the "
            "mask of the same scene."
        ) from error
    todo = _windows_of(grid, windows, tile)
    plans = {
        size: read_plan(prediction, mask, size, mask_tolerance=EXACT_TOLERANCE) for size in {s for _, _, s in todo}
    }
    confusion = np.zeros(k * k, dtype=np.int64)
    ignored = {"no_mask_data": 0, "prediction_nodata": 0, "ignore_value": 0}
    readers = {size: RasterReader(plan) for size, plan in plans.items()}
    try:
        for row_off, col_off, size in todo:
            reader = readers[size]
            (image, _), (bands, invalid) = reader.read_patch(row_off, col_off)
            predicted = image[0].astype(np.int64)
            reference = decoder(bands, None)
            outside = outside_pixels(row_off, col_off, size, grid.height, grid.width)
            keep = np.ones((size, size), dtype=bool) if outside is None else ~outside
            for reason, drop in (
                ("no_mask_data", invalid),
                ("prediction_nodata", predicted == nodata if nodata is not None else None),
                ("ignore_value", reference == mask_fill_value if mask_fill_value is not None else None),
            ):
                if drop is not None:
                    ignored[reason] += int((keep & drop).sum())
                    keep &= ~drop
            ref, pred = reference[keep], predicted[keep]
            for name, values in (("reference", ref), ("predicted", pred)):
                bad = (values < 0) | (values >= k)
                if bad.any():
                    raise ConfigError(
                        f"The {name} class {int(values[bad][0])} in the window row_off={row_off}, col_off={col_off} "
                        f"is outside 0..{k - 1} (n_classes={k}); set n_classes to the number of classes"
                        + (" or mask_fill_value to the ignore value." if name == "reference" else ".")
                    )
            confusion += np.bincount(ref * k + pred, minlength=k * k)
    finally:
        for reader in readers.values():
            reader.close()
    return Evaluation.from_confusion(confusion.reshape(k, k), ignored)
