"""Grid maths (snap, clamp, padding, grid coincidence), property-tested with hypothesis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from crossgeo import Grid, PatchSampler
from crossgeo import grid as G
from crossgeo import testing as T

sizes = st.integers(1, 512)
offsets = st.integers(-2000, 2000)


@given(centre=st.floats(-1e5, 1e5, allow_nan=False), size=sizes)
def test_centred_window_contains_its_centre_symmetrically(centre: float, size: int) -> None:
    off = int(G.centred_offsets(np.array([centre]), size)[0])
    # The window's centre is within half a pixel of the requested centre.
    assert abs((off + size / 2) - centre) <= 0.5
    assert off <= centre <= off + size


@given(off=offsets, size=sizes, extent=st.integers(1, 3000))
def test_clamp_moves_windows_inside(off: int, size: int, extent: int) -> None:
    clamped = int(G.clamp_offsets(np.array([off]), size, extent)[0])
    if size <= extent:
        assert 0 <= clamped and clamped + size <= extent
        if 0 <= off <= extent - size:
            assert clamped == off
    else:
        assert clamped == 0


@given(off=offsets, size=sizes, extent=st.integers(1, 3000))
def test_overlap_and_outside_agree(off: int, size: int, extent: int) -> None:
    start, stop = G.overlap(off, size, extent)
    pixels = set(range(off, off + size)) & set(range(extent))
    assert (stop - start if stop > start else 0) == len(pixels)
    if pixels:
        assert (start, stop) == (min(pixels), max(pixels) + 1)
    assert bool(G.outside(np.array([off]), np.array([0]), size, extent, 10**6)[0]) == (not pixels)


@given(
    res=st.floats(0.01, 1000),
    dx=st.integers(-50, 50),
    dy=st.integers(-50, 50),
    x0=st.floats(-1e6, 1e6),
    y0=st.floats(-1e6, 1e6),
)
def test_pixel_offset_of_coinciding_grids(res: float, dx: int, dy: int, x0: float, y0: float) -> None:
    image = Grid(100, 100, Affine(res, 0, x0, 0, -res, y0), "EPSG:3857")
    other = Grid(80, 90, image.transform @ Affine.translation(dx, dy), "EPSG:3857")
    assert G.pixel_offset(image, other) == (-dy, -dx)
    shifted = Grid(80, 90, image.transform @ Affine.translation(dx + 0.5, dy), "EPSG:3857")
    assert G.pixel_offset(image, shifted) is None
    finer = Grid(80, 90, Affine(res / 2, 0, x0, 0, -res / 2, y0), "EPSG:3857")
    assert G.pixel_offset(image, finer) is None
    assert G.pixel_offset(image, Grid(80, 90, other.transform, "EPSG:4326")) is None


def test_grid_bounds_and_window_transform() -> None:
    grid = Grid(10, 20, Affine(2, 0, 100, 0, -3, 50), "EPSG:3857")
    assert grid.bounds == (100, 20, 140, 50)
    assert grid.window_transform(2, 5) == Affine(2, 0, 110, 0, -3, 44)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 48),
    width=st.integers(8, 48),
    size=st.integers(1, 40),
    row_off=st.integers(-40, 48),
    col_off=st.integers(-40, 48),
)
def test_patches_are_always_full_size_and_read_the_right_pixels(
    tmp_path_factory: pytest.TempPathFactory, height: int, width: int, size: int, row_off: int, col_off: int
) -> None:
    """Padding: any window touching the raster is size x size with the right pixels inside."""
    if G.outside(np.array([row_off]), np.array([col_off]), size, height, width)[0]:
        return
    folder: Path = tmp_path_factory.mktemp("pad")
    transform = Affine(10, 0, 0, 0, -10, 1000)
    image = T.write_raster(
        folder / "i.tif", T.coordinate_bands(height, width), crs="EPSG:3857", transform=transform, tiled=False
    )
    classes = (T.coordinate_bands(height, width)[:1] % 3 + 1).astype(np.uint8)
    mask = T.write_raster(folder / "m.tif", classes, crs="EPSG:3857", transform=transform, tiled=False)
    windows = T.write_windows_table(folder / "w.csv", [row_off], [col_off])
    patch = PatchSampler(image, mask, windows, size, image_dtype="uint16", n_classes=4)[0]
    assert patch.image.shape == (3, size, size) and patch.mask.shape == (size, size)
    rows, cols = np.mgrid[row_off : row_off + size, col_off : col_off + size]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    got_rows, got_cols = T.decode_coordinates(patch.image)
    assert (got_rows[inside] == rows[inside]).all() and (got_cols[inside] == cols[inside]).all()
    assert (patch.image[:, ~inside] == 0).all() and (patch.mask[~inside] == 0).all()
    assert (patch.mask[inside] == rows[inside] % 3 + 1).all()
