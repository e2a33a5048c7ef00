"""Mask decoders: turn the mask bands read on the image grid into int64 class indices.

Two kinds, chosen and validated at construction (never inside a DataLoader worker):

* `ColorMapDecoder` - ``color_map`` entries ``[R, G, B, class]``; an exact RGB
  match on the first three bands, unknown colours -> 0. One table lookup per pixel
  (a lazily built 2**24 lookup table), however many classes.
* `ClassIndexDecoder` - single-band class indices kept as int64 (no uint8
  wrap); ``n_classes == 2`` binarises non-zero to 1.

Pixels the mask does not cover (or mask nodata) are passed in as ``invalid`` and become
``fill_value`` *after* the lookup, so they can never turn into foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import numpy as np

from crossgeo.errors import ConfigError, RasterError


def values_binarised(band: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray | None:
    """The distinct valid values of a single-band mask window when there are more than two; None otherwise.

    ``n_classes == 2`` (the default, as in the original) turns every non-zero value into 1:
    right for a 0/1 or 0/255 mask, silently wrong for class indices 0..3. A window of 0/1
    values costs a min and a max; the full count runs only when the values span more than that.
    """
    values = band if invalid is None else band[~invalid]
    if values.size == 0:
        return None
    low, high = values.min(), values.max()
    if high - low <= 1 and values.dtype.kind in "uib":
        return None  # at most two integer values
    if not np.any((values > low) & (values < high)):
        return None
    return np.unique(values)


def out_of_range_pixels(band: np.ndarray, n_classes: int, invalid: np.ndarray | None = None) -> np.ndarray | None:
    """(H, W) bool, True where a valid class-index pixel lies outside ``0..n_classes-1``; None if none does.

    Negative and non-finite values count too. A band whose dtype cannot hold such a value
    (uint8 with ``n_classes`` >= 256) costs no comparison.
    """
    kind = band.dtype.kind
    if kind == "u" and (1 << 8 * band.dtype.itemsize) <= n_classes:
        return None  # its largest value is below n_classes (np.iinfo costs microseconds per patch)
    if kind in "ui" and band.size and band.max() < n_classes and (kind == "u" or band.min() >= 0):
        return None  # the common case: two reductions instead of whole-band temporaries
    if kind == "u":
        bad = band >= n_classes  # unsigned: never negative, one comparison
    else:
        with np.errstate(invalid="ignore"):
            bad = ~((band >= 0) & (band < n_classes))
    if invalid is not None:
        bad &= ~invalid
    return bad if bad.any() else None


class MaskDecoder(Protocol):
    """Decodes ``(bands, H, W)`` mask data plus an ``invalid`` (H, W) bool array."""

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None, dtype: Any = np.int64) -> np.ndarray: ...


def _apply_fill(classes: np.ndarray, invalid: np.ndarray | None, fill_value: int) -> np.ndarray:
    if invalid is not None and invalid.any():
        classes[invalid] = fill_value
    return classes


class ColorMapDecoder:
    """RGB colour -> class via one lookup in a 2**24-entry table (built on first use)."""

    def __init__(self, color_map: Sequence[Sequence[int]], *, fill_value: int = 0) -> None:
        self.entries = validate_color_map(color_map)
        self.fill_value = fill_value
        self._lut: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The 16 MiB table is rebuilt lazily in each process rather than pickled.
        return {**self.__dict__, "_lut": None}

    @property
    def lut(self) -> np.ndarray:
        if self._lut is None:
            top = max(c for *_, c in self.entries) if self.entries else 0
            dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64
            lut = np.zeros(1 << 24, dtype=dtype)
            if self.entries:
                table = np.array(self.entries, dtype=np.int64)
                lut[rgb_keys(table[:, :3].T)] = table[:, 3]
            self._lut = lut
        return self._lut

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None, dtype: Any = np.int64) -> np.ndarray:
        """Classes (H, W) as ``dtype`` (int64; a narrower type for counting when it holds every class)."""
        rgb = bands[:3]
        if rgb.dtype == np.uint8:
            classes = self.lut.take(rgb_keys(rgb)).astype(dtype)
        else:
            # Wider or float masks: values outside 0..255 match no colour.
            in_range = _in_rgb_range(rgb)
            key = rgb_keys(np.where(in_range, rgb, 0))
            classes = np.where(in_range, self.lut[key], 0).astype(dtype)
        return _apply_fill(classes, invalid, self.fill_value)


class ClassIndexDecoder:
    """Single-band class indices as int64; ``n_classes == 2`` binarises non-zero to 1."""

    def __init__(self, n_classes: int, *, fill_value: int = 0) -> None:
        self.binarise = n_classes == 2
        self.fill_value = fill_value

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None, dtype: Any = np.int64) -> np.ndarray:
        """Classes (H, W) as ``dtype`` (int64; a narrower type for counting when it holds every class)."""
        band = bands[0]
        # copy=False: the bands are this read's own array, so a mask stored in ``dtype`` needs no copy.
        classes = (band != 0).astype(dtype) if self.binarise else band.astype(dtype, copy=False)
        return _apply_fill(classes, invalid, self.fill_value)


def rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """One uint32 key ``R << 16 | G << 8 | B`` per pixel of ``(3, ...)`` RGB values in 0-255.

    The key `ColorMapDecoder` looks classes up by; also used to count a mask's colours.
    """
    key = np.asarray(rgb[0]).astype(np.uint32)
    for band in (np.asarray(rgb[1]), np.asarray(rgb[2])):
        key <<= 8
        key |= band if band.dtype == np.uint8 else band.astype(np.uint32)  # uint8: no temporary copy
    return key


def _in_rgb_range(rgb: np.ndarray) -> np.ndarray:
    """Per pixel: all of R, G, B are whole numbers in 0-255 (so they can match a colour)."""
    return np.all((rgb >= 0) & (rgb <= 255) & (rgb == np.floor(rgb)), axis=0)


@attrs.frozen
class ColourCounts:
    """The colours of some mask pixels split by whether ``color_map`` knows them.

    Each entry is ``((R, G, B), pixels)``, most frequent first. Pixels whose values are not
    colours at all (outside 0-255 or fractional, in a wide or float mask) are counted in
    `unmapped` under their own values; the decoder makes them class 0 too.
    """

    mapped: tuple[tuple[tuple[int, int, int], int], ...]
    unmapped: tuple[tuple[tuple[int, int, int], int], ...]
    pixels: int


def colour_counts(rgb: np.ndarray, color_map: Any) -> ColourCounts:
    """Count the colours of ``rgb`` (3, N) mask pixels against ``color_map`` ([[R, G, B, class], ...]).

    Uses the decoder's own key (`rgb_keys`), so "unmapped" means exactly what
    `ColorMapDecoder` turns into class 0. Raises `ConfigError` for a malformed colour map.
    """
    known = {(r, g, b) for r, g, b, _ in validate_color_map(color_map)}
    pixels = np.asarray(rgb).reshape(3, -1)
    in_range = _in_rgb_range(pixels)
    counted: list[tuple[tuple[int, int, int], int]] = []
    keys, counts = np.unique(rgb_keys(pixels[:, in_range].astype(np.int64)), return_counts=True)
    for key, count in zip(keys.tolist(), counts.tolist()):
        counted.append(((key >> 16, (key >> 8) & 255, key & 255), int(count)))
    if not in_range.all():
        odd, odd_counts = np.unique(pixels[:, ~in_range], axis=1, return_counts=True)
        for column, count in zip(odd.T.tolist(), odd_counts.tolist()):
            r, g, b = column
            counted.append(((r, g, b), int(count)))
    counted.sort(key=lambda item: -item[1])
    return ColourCounts(
        mapped=tuple(c for c in counted if c[0] in known),
        unmapped=tuple(c for c in counted if c[0] not in known),
        pixels=int(pixels.shape[1]),
    )


def validate_color_map(color_map: Any) -> list[tuple[int, int, int, int]]:
    """Check ``[[R, G, B, class], ...]`` and return it as integer tuples.

    Raises `ConfigError` for malformed entries, RGB outside 0-255, negative
    classes and a colour mapped to two different classes.
    """
    if isinstance(color_map, (str, bytes)) or not isinstance(color_map, Sequence) or not color_map:
        raise ConfigError(
            f"color_map must be a non-empty list of [R, G, B, class] entries, got {type(color_map).__name__}: "
            f"{color_map!r}. "
            "Example: color_map: [[255, 0, 0, 1], [0, 255, 0, 2]]."
        )
    entries: list[tuple[int, int, int, int]] = []
    seen: dict[tuple[int, int, int], tuple[int, int]] = {}
    for pos, entry in enumerate(color_map):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 4:
            raise ConfigError(
                f"color_map entry {pos} is {entry!r}; each entry must be [R, G, B, class] (four integers)."
            )
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in entry):
            raise ConfigError(f"color_map entry {pos} is {list(entry)!r}; R, G, B and class must be integers.")
        r, g, b, c = (int(v) for v in entry)
        if not all(0 <= v <= 255 for v in (r, g, b)):
            raise ConfigError(f"color_map entry {pos} is {[r, g, b, c]}; R, G and B must be within 0-255.")
        if c < 0:
            raise ConfigError(f"color_map entry {pos} maps to class {c}; classes must be >= 0.")
        first_pos, first_class = seen.setdefault((r, g, b), (pos, c))
        if first_class != c:
            raise ConfigError(
                f"color_map maps colour {[r, g, b]} to class {first_class} (entry {first_pos}) and "
                f"to class {c} (entry {pos}); keep one entry per colour."
            )
        entries.append((r, g, b, c))
    return entries


def make_decoder(
    color_map: Any, n_classes: int, data_band_count: int, mask_path: str, *, fill_value: int = 0
) -> MaskDecoder:
    """Choose and validate the decoder for a mask with ``data_band_count`` non-alpha bands."""
    if color_map is not None:
        if data_band_count < 3:
            raise RasterError(
                f"color_map is set but the mask {mask_path} has {data_band_count} band(s); a colour "
                "map needs an RGB(A) mask. Remove color_map to use the band values as class indices."
            )
        return ColorMapDecoder(color_map, fill_value=fill_value)
    if data_band_count != 1:
        raise RasterError(
            f"The mask {mask_path} has {data_band_count} bands but no color_map was given; "
            "a multi-band (RGB/RGBA) mask needs color_map: [[R, G, B, class], ...]."
        )
    return ClassIndexDecoder(n_classes, fill_value=fill_value)
