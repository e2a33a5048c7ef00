"""Mask decoders: colour maps (validation, lookup) and class indices."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from crossgeo import ConfigError
from crossgeo.io import nodata_pixels
from crossgeo.masks import ClassIndexDecoder, ColorMapDecoder, out_of_range_pixels, validate_color_map


@pytest.mark.parametrize(
    ("color_map", "message"),
    [
        ([], "non-empty list"),
        ("red", "non-empty list"),
        ([[255, 0, 0]], r"entry 0 is \[255, 0, 0\]; each entry must be \[R, G, B, class\]"),
        ([[255, 0, 0, 1], [0, 0, 1.5, 2]], r"entry 1 .* must be integers"),
        ([[256, 0, 0, 1]], r"entry 0 is \[256, 0, 0, 1\]; R, G and B must be within 0-255"),
        ([[-1, 0, 0, 1]], "within 0-255"),
        ([[1, 2, 3, -1]], "classes must be >= 0"),
        (
            [[1, 2, 3, 1], [4, 5, 6, 2], [1, 2, 3, 3]],
            r"colour \[1, 2, 3\] to class 1 \(entry 0\) and to class 3 \(entry 2\)",
        ),
        ([[1, 2, 3, True]], "must be integers"),
    ],
)
def test_bad_colour_maps(color_map: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_color_map(color_map)


def test_repeated_identical_entry_is_fine() -> None:
    assert validate_color_map([[1, 2, 3, 1], [1, 2, 3, 1]]) == [(1, 2, 3, 1), (1, 2, 3, 1)]


def test_colour_lookup_with_many_classes_and_fill() -> None:
    rng = np.random.default_rng(0)
    colours = rng.choice(256, size=(300, 3), replace=True)
    colours = np.unique(colours, axis=0)
    classes = np.arange(1, len(colours) + 1)
    decoder = ColorMapDecoder([[*map(int, c), int(k)] for c, k in zip(colours, classes)], fill_value=7)
    pick = rng.integers(0, len(colours), size=(40, 50))
    rgb = colours[pick].transpose(2, 0, 1).astype(np.uint8)
    rgb[:, 0, 0] = (1, 1, 1) if not ((colours == 1).all(axis=1)).any() else (0, 0, 0)
    invalid = np.zeros((40, 50), bool)
    invalid[-1] = True
    out = decoder(np.concatenate([rgb, np.full((1, 40, 50), 255, np.uint8)]), invalid)
    expected = classes[pick]
    expected[0, 0] = 0
    expected[-1] = 7
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def test_classes_above_255_and_wide_masks() -> None:
    decoder = ColorMapDecoder([[10, 20, 30, 1000]])
    data = np.array([[[10, 10, 300]], [[20, 20, 20]], [[30, 31, 30]]], dtype=np.uint16)
    np.testing.assert_array_equal(decoder(data, None), [[1000, 0, 0]])
    floats = data.astype(np.float32)
    floats[0, 0, 1] = 10.5
    np.testing.assert_array_equal(decoder(floats, None), [[1000, 0, 0]])


def test_decoder_pickles_without_its_table() -> None:
    decoder = ColorMapDecoder([[1, 2, 3, 4]])
    decoder(np.ones((3, 2, 2), np.uint8), None)
    assert decoder._lut is not None
    clone = pickle.loads(pickle.dumps(decoder))
    assert clone._lut is None
    np.testing.assert_array_equal(clone(np.array([[[1]], [[2]], [[3]]], np.uint8), None), [[4]])


def test_class_index_decoder() -> None:
    band = np.array([[[0, 1, 2, 300]]], dtype=np.uint16)
    invalid = np.array([[False, False, True, False]])
    np.testing.assert_array_equal(ClassIndexDecoder(2)(band, invalid), [[0, 1, 0, 1]])
    np.testing.assert_array_equal(ClassIndexDecoder(400, fill_value=255)(band, invalid), [[0, 1, 255, 300]])


def test_out_of_range_pixels_fast_path_agrees_with_the_full_comparison() -> None:
    """The max/min shortcut answers None exactly when no valid pixel is out of range."""
    rng = np.random.default_rng(3)
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        band = rng.integers(0, 5, (32, 32)).astype(dtype)
        assert out_of_range_pixels(band, 5) is None
        band[3, 4] = 7
        bad = out_of_range_pixels(band, 5)
        assert bad is not None and np.argwhere(bad).tolist() == [[3, 4]]
        invalid = np.zeros(band.shape, bool)
        invalid[3, 4] = True
        assert out_of_range_pixels(band, 5, invalid) is None
    signed = np.zeros((4, 4), np.int16)
    signed[1, 2] = -1
    assert np.argwhere(out_of_range_pixels(signed, 5)).tolist() == [[1, 2]]


def test_nodata_pixels_in_the_data_dtype() -> None:
    """Every band must equal nodata; a nodata the integer dtype cannot hold marks nothing."""
    data = np.zeros((3, 2, 2), np.uint8)
    data[:, 0, 0] = 255
    data[0, 1, 1] = 255  # one band only: not nodata
    assert nodata_pixels(data, 255.0).tolist() == [[True, False], [False, False]]
    assert nodata_pixels(data, -9999.0) is None
    assert nodata_pixels(data, 0.5) is None
    assert nodata_pixels(data, None) is None
    floats = np.ones((2, 2, 2), np.float32)
    floats[:, 1, 0] = np.nan
    assert nodata_pixels(floats, float("nan")).tolist() == [[False, False], [True, False]]
    assert nodata_pixels(floats, 1.0).tolist() == [[True, True], [False, True]]
