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

import numpy as np

from crossgeo.errors import ConfigError, RasterError

OUT_OF_RANGE = ("error", "fill")
"""What a class-index mask value outside ``0..n_classes-1`` does (the ``out_of_range`` option)."""


def out_of_range_pixels(band: np.ndarray, n_classes: int, invalid: np.ndarray | None = None) -> np.ndarray | None:
    """(H, W) bool, True where a valid class-index pixel lies outside ``0..n_classes-1``; None if none does.

    Negative and non-finite values count too. A band whose dtype cannot hold such a value
    (uint8 with ``n_classes`` >= 256) costs no comparison.
    """
    if band.dtype.kind == "u" and np.iinfo(band.dtype).max < n_classes:
        return None
    with np.errstate(invalid="ignore"):
        bad = ~((band >= 0) & (band < n_classes))
    if invalid is not None:
        bad &= ~invalid
    return bad if bad.any() else None


class MaskDecoder(Protocol):
    """Decodes ``(bands, H, W)`` mask data plus an ``invalid`` (H, W) bool array."""

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None) -> np.ndarray: ...


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
            for r, g, b, c in self.entries:
                lut[(r << 16) | (g << 8) | b] = c
            self._lut = lut
        return self._lut

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
        rgb = bands[:3]
        if rgb.dtype == np.uint8:
            key = rgb[0].astype(np.uint32)
            key <<= 8
            key |= rgb[1]
            key <<= 8
            key |= rgb[2]
            classes = self.lut.take(key).astype(np.int64)
        else:
            # Wider or float masks: values outside 0..255 match no colour.
            in_range = np.all((rgb >= 0) & (rgb <= 255) & (rgb == np.floor(rgb)), axis=0)
            safe = np.where(in_range, rgb, 0).astype(np.int32)
            key = (safe[0] << 16) | (safe[1] << 8) | safe[2]
            classes = np.where(in_range, self.lut[key], 0).astype(np.int64)
        return _apply_fill(classes, invalid, self.fill_value)


class ClassIndexDecoder:
    """Single-band class indices as int64; ``n_classes == 2`` binarises non-zero to 1."""

    def __init__(self, n_classes: int, *, fill_value: int = 0) -> None:
        self.binarise = n_classes == 2
        self.fill_value = fill_value

    def __call__(self, bands: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
        band = bands[0]
        classes = (band != 0).astype(np.int64) if self.binarise else band.astype(np.int64)
        return _apply_fill(classes, invalid, self.fill_value)


def validate_color_map(color_map: Any) -> list[tuple[int, int, int, int]]:
    """Check ``[[R, G, B, class], ...]`` and return it as integer tuples.

    Raises `ConfigError` for malformed entries, RGB outside 0-255, negative
    classes and a colour mapped to two different classes.
    """
    if isinstance(color_map, (str, bytes)) or not isinstance(color_map, Sequence) or not color_map:
        raise ConfigError(
            f"color_map must be a non-empty list of [R, G, B, class] entries, got {color_map!r}. "
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
