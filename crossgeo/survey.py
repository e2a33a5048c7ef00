"""What the data holds, measured on a sample of a sampler's windows (for `validate` and `stats`).

`survey` reads windows through the sampler's own reader (image and raw mask bands, before
decoding, so ``out_of_range="error"`` does not stop it) and counts two things a user needs
before training:

* mask class values outside ``0..n_classes-1`` (class-index masks with ``n_classes`` > 2;
  binarising with 2 and colour maps have none by construction), which ``out_of_range``
  would stop at or fill;
* image pixels without data (``Patch.image_valid`` False: alpha 0, nodata, mask band,
  outside the image), which ``ignore_invalid_image`` keeps out of the loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import attrs
import numpy as np

from crossgeo.masks import ClassIndexDecoder, out_of_range_pixels

__all__ = ["SURVEY_WINDOWS", "ValueSurvey", "survey"]

SURVEY_WINDOWS = 64
"""Windows `survey` reads by default, spread evenly over the sampler's positions."""


@attrs.frozen
class ValueSurvey:
    """Counts over the surveyed windows (every pixel of each window)."""

    windows: int
    """Windows read."""
    pixels: int
    """Pixels of those windows (windows x patch_size**2)."""
    invalid_image_pixels: int
    """Pixels where the image has no data."""
    out_of_range: dict[float, int]
    """Mask value -> pixels, for valid mask pixels outside ``0..n_classes-1``."""
    n_classes: int

    @property
    def invalid_image_share(self) -> float:
        """Fraction of the surveyed pixels where the image has no data (0 when nothing was read)."""
        return self.invalid_image_pixels / self.pixels if self.pixels else 0.0

    def describe(self) -> str:
        """One line for a report."""
        text = f"{self.windows} window(s): {self.invalid_image_share:.2%} of image pixels without data"
        if self.out_of_range:
            values = ", ".join(f"{_plain(v)} ({n} px)" for v, n in sorted(self.out_of_range.items())[:10])
            text += f"; mask values outside 0..{self.n_classes - 1}: {values}"
        return text


def survey(sampler: Any, positions: Iterable[int] | None = None, *, max_windows: int = SURVEY_WINDOWS) -> ValueSurvey:
    """Survey ``positions`` of a `PatchSampler` (default: up to ``max_windows`` spread evenly).

    Reads each window's image and mask once; deterministic (no random choice).
    """
    n = len(sampler)
    if positions is None:
        chosen = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(np.int64))
    else:
        chosen = np.asarray(list(positions), dtype=np.int64)
    check_classes = isinstance(sampler.decoder, ClassIndexDecoder) and not sampler.decoder.binarise
    invalid_image = 0
    found: dict[float, int] = {}
    scenes = getattr(sampler, "opened", None)  # a SceneSampler: read through the window's scene
    for position in chosen:
        row_off, col_off = int(sampler.row_off[position]), int(sampler.col_off[position])
        with scenes(int(sampler.scene[position])) if scenes is not None else nullcontext(sampler) as source:
            _, image_valid = source.read_image(row_off, col_off)
            invalid_image += int(image_valid.size - np.count_nonzero(image_valid))
            if check_classes:
                bands, invalid = source.read_mask_bands(row_off, col_off)
                bad = out_of_range_pixels(bands[0], sampler.n_classes, invalid)
                if bad is not None:
                    values, counts = np.unique(bands[0][bad], return_counts=True)
                    for value, count in zip(values.tolist(), counts.tolist()):
                        found[value] = found.get(value, 0) + int(count)
    windows = len(chosen)
    return ValueSurvey(
        windows=windows,
        pixels=windows * sampler.patch_size**2,
        invalid_image_pixels=invalid_image,
        out_of_range=found,
        n_classes=sampler.n_classes,
    )


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
