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


@given(
    res=st.sampled_from([0.5, 10.0, 0.0001, 30.0]),
    k=st.integers(1, 7),
    m=st.integers(1, 7),
    dx=st.integers(-50, 50),
    dy=st.integers(-50, 50),
    x0=st.integers(-100_000, 100_000),
    y0=st.integers(-100_000, 100_000),
)
def test_scaled_offset_of_a_grid_whose_pixels_are_blocks_of_the_reference(
    res: float, k: int, m: int, dx: int, dy: int, x0: int, y0: int
) -> None:
    image = Grid(100, 100, Affine(res, 0, x0 * res, 0, -res, y0 * res), "EPSG:32632")
    # The coarse grid's origin dx (dy) reference pixels left of (above) the reference origin.
    coarse = Grid(20, 20, Affine(m * res, 0, (x0 - dx) * res, 0, -k * res, (y0 + dy) * res), "EPSG:32632")
    if (k, m) == (1, 1):
        assert G.scaled_offset(image, coarse) is None  # that is pixel_offset's case
        return
    assert G.scaled_offset(image, coarse) == ((dy, dx), (k, m))
    half = Grid(20, 20, coarse.transform @ Affine.translation(0.5 / m, 0), "EPSG:32632")
    assert G.scaled_offset(image, half) is None  # edges half a reference pixel off
    assert G.scaled_offset(image, Grid(20, 20, coarse.transform, "EPSG:32633")) is None
    assert G.scaled_offset(coarse, image) is None  # the reference is the coarser one
    rotated = Grid(20, 20, coarse.transform @ Affine.rotation(10), "EPSG:32632")
    assert G.scaled_offset(image, rotated) is None


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


MASK_CRSS = [
    "EPSG:4326",
    "EPSG:3857",
    "EPSG:32632",
    "+proj=lcc +lat_1=44 +lat_2=47 +lat_0=45 +lon_0=11 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs",
]


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(24, 96),
    patch=st.integers(4, 48),
    zoom=st.integers(10, 14),
    mask_crs=st.sampled_from(MASK_CRSS),
    mask_res_factor=st.floats(0.3, 3.0),
    margin=st.floats(-0.3, 0.3),
    n_classes=st.integers(2, 5),
    offsets=st.lists(st.tuples(st.integers(-40, 100), st.integers(-40, 100)), min_size=1, max_size=4),
)
def test_random_grids_and_crss_give_full_patches_of_declared_classes(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    patch: int,
    zoom: int,
    mask_crs: str,
    mask_res_factor: float,
    margin: float,
    n_classes: int,
    offsets: list[tuple[int, int]],
) -> None:
    import rasterio
    from rasterio.warp import transform_bounds

    windows = [(r, c) for r, c in offsets if not G.outside(np.array([r]), np.array([c]), patch, size, size)[0]]
    if not windows:
        return
    folder = tmp_path_factory.mktemp("prop")
    tile = 2 ** (zoom - 2)  # a tile near lon 0..90, lat 0..67
    transform = T.web_mercator_transform(zoom, 2 * tile + 3, tile + 5)
    image = T.write_raster(folder / "i.tif", T.coordinate_bands(size, size), crs="EPSG:3857", transform=transform)
    with rasterio.open(image) as src:
        bounds = transform_bounds(src.crs, mask_crs, *src.bounds)
        resolution = abs(src.transform.a) * mask_res_factor
    if rasterio.crs.CRS.from_user_input(mask_crs).is_geographic:
        resolution = (bounds[2] - bounds[0]) / size * mask_res_factor
    width, height = bounds[2] - bounds[0], bounds[3] - bounds[1]
    mask_bounds = (bounds[0] - margin * width, bounds[1] - margin * height, bounds[2] + margin * width, bounds[3])
    cell = (bounds[2] - bounds[0]) / 7 if rasterio.crs.CRS.from_user_input(mask_crs).is_geographic else 0.02
    mask = T.write_lonlat_mask(folder / "m.tif", mask_bounds, resolution, cell=cell, n_classes=n_classes, crs=mask_crs)
    table = T.write_windows_table(folder / "w.csv", [r for r, _ in windows], [c for _, c in windows])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low coverage is expected for negative margins
        sampler = PatchSampler(
            image, mask, table, patch, image_dtype="uint16", n_classes=n_classes, mask_fill_value=255
        )
    declared = {0, 1} if n_classes == 2 else set(range(n_classes))
    for i, (row_off, col_off) in enumerate(windows):
        p = sampler[i]
        assert p.image.shape == (3, patch, patch) and p.mask.shape == (patch, patch)
        assert set(np.unique(p.mask)) <= declared | {255}
        assert ((p.mask == 255) == ~p.mask_valid).all()
        rows, cols = np.mgrid[row_off : row_off + patch, col_off : col_off + patch]
        inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        got_rows, got_cols = T.decode_coordinates(p.image)
        assert (got_rows[inside] == rows[inside]).all() and (got_cols[inside] == cols[inside]).all()
        assert not p.mask_valid[~inside].any()


def test_coarsened_keeps_the_footprint_with_at_most_max_side_pixels() -> None:
    grid = Grid(600, 1000, Affine(2.0, 0.0, 100.0, 0.0, -3.0, 50.0), "EPSG:32632")
    coarse = grid.coarsened(512)
    assert (coarse.height, coarse.width) == (307, 512) and coarse.crs == grid.crs
    assert coarse.bounds == pytest.approx(grid.bounds)
    assert grid.coarsened(2000) == grid  # already small enough: the same grid
