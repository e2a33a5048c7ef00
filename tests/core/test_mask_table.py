"""The ``"table"`` view: a nearest-neighbour warp that does not separate (a UTM image, a source in EPSG:4326),
read without a warp through `crossgeo.grid.nearest_table`.

The oracle is the exact per-pixel answer: every reference pixel centre moved into the source's CRS with
``rasterio.warp.transform``, then the source pixel holding it (GDAL's rule, `crossgeo.io.lookup_axes`).
Sources encode their own (row, col), so a read proves which source pixel each reference pixel got.
"""

from __future__ import annotations

import collections
import math
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

import crossgeo.grid
import crossgeo.io
from crossgeo import Grid, PatchSampler
from crossgeo import testing as T
from crossgeo.grid import nearest_table, work_array

UTM = "EPSG:32632"
UTM_TRANSFORM = Affine(10, 0, 600000.0, 0, -10, 5600040.0)
REF = 300
SIZE = 64
#: Windows inside, across the source's edges, past the grid's edges, and wholly outside the source.
WINDOWS = [(100, 100), (0, 0), (236, 236), (-20, 150), (150, -30), (270, 280), (-40, -40), (5, 250), (250, 5)]


def utm_image(folder: Path, size: int = REF) -> Path:
    return T.write_raster(
        folder / "image.tif", T.coordinate_bands(size, size, "uint8"), crs=UTM, transform=UTM_TRANSFORM
    )


def lonlat_transform(size: int, *, factor: float = 1.3, margin: float = 8.0) -> tuple[Affine, int, int]:
    """An EPSG:4326 grid of ~``factor`` x 10 m pixels over the UTM grid, ``margin`` pixels larger on every side
    (negative: smaller, so windows cross the source's edges)."""
    left, top = UTM_TRANSFORM.c, UTM_TRANSFORM.f
    lon0, lat0, lon1, lat1 = transform_bounds(UTM, "EPSG:4326", left, top - 10 * size, left + 10 * size, top)
    res = factor * 10 / (111320.0 * math.cos(math.radians((lat0 + lat1) / 2)))
    lon0, lat0, lon1, lat1 = lon0 - margin * res, lat0 - margin * res, lon1 + margin * res, lat1 + margin * res
    return Affine(res, 0, lon0, 0, -res, lat1), math.ceil((lon1 - lon0) / res), math.ceil((lat1 - lat0) / res)


def encoded_mask(path: Path, transform: Affine, width: int, height: int, **options: Any) -> Path:
    """A one-band uint16 source whose pixel (row, col) holds ``row * width + col + 1``."""
    rows, cols = np.mgrid[0:height, 0:width]
    data = (rows * width + cols + 1).astype(np.uint16)[None]
    return T.write_raster(path, data, crs="EPSG:4326", transform=transform, **options)


def table_inputs(image: Path, mask: Path) -> tuple[Grid, Any, tuple[int, int]]:
    """What `nearest_table` takes of a scene: the image's grid, the mask's pixel mapping onto it, the mask's shape."""
    with rasterio.open(image) as src:
        grid = Grid.of(src)
    with rasterio.open(mask) as src:
        return grid, crossgeo.io.source_pixels(src, grid), src.shape


def exact_pixels(grid: Grid, source: Path, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
    """(2, H, W): the source (row, col) of each window pixel from a transform of every pixel centre (-1: none)."""
    rows, cols = np.mgrid[row_off : row_off + height, col_off : col_off + width]
    xs, ys = grid.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    with rasterio.open(source) as src:
        lon, lat = warp_transform(grid.crs, src.crs, xs, ys)
        x, y = ~src.transform @ (np.asarray(lon), np.asarray(lat))
        shape = src.shape
    with np.errstate(invalid="ignore"):
        col, row = np.floor(x + 1e-10), np.floor(y + 1e-10)
        inside = (x >= 0) & (y >= 0) & (col < shape[1]) & (row < shape[0])
    inside &= (rows.ravel() >= 0) & (rows.ravel() < grid.height) & (cols.ravel() >= 0) & (cols.ravel() < grid.width)
    out = np.where(inside, [row, col], -1)
    return out.reshape(2, height, width).astype(np.int64)


def decoded(data: np.ndarray, invalid: np.ndarray | None, width: int) -> np.ndarray:
    """The (row, col) an `encoded_mask` read holds (-1 where invalid)."""
    value = data[0].astype(np.int64) - 1
    out = np.stack([value // width, value % width])
    if invalid is not None:
        out[:, invalid] = -1
    return out


def mask_sampler(image: Path, mask: Path, view: str, monkeypatch: pytest.MonkeyPatch, **options: Any) -> PatchSampler:
    T.force_mask_view(monkeypatch, view)
    windows = T.write_windows_table(image.parent / "w.csv", [0], [0])
    return PatchSampler(image, mask, windows, SIZE, n_classes=256, out_of_range="fill", **options)


def raw(sampler: PatchSampler, row_off: int, col_off: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    data, invalid = sampler._reader().read_mask(row_off, col_off, size, size)
    return data, np.zeros((size, size), bool) if invalid is None else invalid


def tie_transform(grid: Grid, res: float, width: int, height: int) -> Affine:
    """An EPSG:4326 source whose left edge passes exactly through pixel (10, 7)'s centre and whose top edge
    through pixel (3, 12)'s, at the longitude and latitude ``rasterio.warp.transform`` gives them."""
    (x1, x2), (y1, y2) = grid.transform @ (np.array([7.5, 12.5]), np.array([10.5, 3.5]))
    lon, lat = warp_transform(grid.crs, "EPSG:4326", [x1, x2], [y1, y2])
    return Affine(res, 0, lon[0], 0, -res, lat[1])


@pytest.mark.parametrize("margin", [8.0, -12.0], ids=["covering", "inside-the-grid"])
def test_the_table_view_reads_the_exact_per_pixel_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, margin: float
) -> None:
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=margin)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    sampler = mask_sampler(image, mask, "table", monkeypatch)
    assert sampler.mask_view == "table"
    grid = sampler.grid
    rng = np.random.default_rng(1)
    windows = WINDOWS + [tuple(w) for w in rng.integers(-SIZE // 2, REF - SIZE // 2, (30, 2)).tolist()]
    edges = 0
    for row_off, col_off in windows:
        data, invalid = raw(sampler, row_off, col_off)
        want = exact_pixels(grid, mask, row_off, col_off, SIZE, SIZE)
        np.testing.assert_array_equal(decoded(data, invalid, width), want, err_msg=f"window {row_off, col_off}")
        np.testing.assert_array_equal(invalid, want[0] < 0)
        assert (data[0][invalid] == 0).all()  # the warper's fill under invalid pixels
        edges += int(0 < invalid.sum() < invalid.size)
    assert edges >= 4  # windows that cross the grid's or the source's edges


def test_pixel_centres_on_source_pixel_edges_read_the_exact_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ties: the source's left and top edges pass exactly through reference pixel centres; whichever side the
    exact transform puts them, the table puts them there too."""
    image = utm_image(tmp_path)
    with rasterio.open(image) as src:
        grid = Grid.of(src)
    transform, width, height = lonlat_transform(REF, margin=-5)
    tie = tie_transform(grid, transform.a, width, height)
    mask = encoded_mask(tmp_path / "tie.tif", tie, width, height)
    sampler = mask_sampler(image, mask, "table", monkeypatch)
    assert sampler.mask_view == "table"
    with rasterio.open(mask) as src:
        to_source = crossgeo.io.source_pixels(src, grid)
    x, y = to_source(*(grid.transform @ (np.array([7.5, 12.5]), np.array([10.5, 3.5]))))
    assert abs(x[0]) < 1e-9 and abs(y[1]) < 1e-9  # the two centres lie on the source's edges
    for row_off, col_off in [(0, 0), (-3, 2), (5, -6)]:
        data, invalid = raw(sampler, row_off, col_off)
        want = exact_pixels(grid, mask, row_off, col_off, SIZE, SIZE)
        np.testing.assert_array_equal(decoded(data, invalid, width), want)


def test_without_the_fix_up_interpolated_pixels_pick_neighbours(tmp_path: Path) -> None:
    """Step (4) of `nearest_table` is what makes it exact: with a coarse lattice (one cell per window, large
    interpolation errors) and no fix-up, pixels near source pixel edges pick a neighbour; with it, none does.
    The default lattice (`crossgeo.grid.TABLE_STEP`) is exact too."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, factor=0.7)
    mask = encoded_mask(tmp_path / "fine.tif", transform, width, height)
    grid, to_source, shape = table_inputs(image, mask)
    wrong = {True: 0, False: 0}
    for row_off, col_off in [(0, 0), (100, 40), (200, 200)]:
        want = exact_pixels(grid, mask, row_off, col_off, 96, 96)
        for fix_up in (True, False):
            got = nearest_table(grid.transform, row_off, col_off, 96, 96, to_source, shape, step=96, fix_up=fix_up)
            wrong[fix_up] += int(np.count_nonzero(np.stack(got) != want))
        default = nearest_table(grid.transform, row_off, col_off, 96, 96, to_source, shape)
        np.testing.assert_array_equal(np.stack(default), want)
    assert wrong[True] == 0 and wrong[False] > 20, wrong


def test_failed_transforms_are_outside_the_source() -> None:
    """A point whose transform is not finite (off a projection's domain) gets no source pixel, nor do the
    cells around it; everything else is the exact answer - with the window's own lattice, and with the grid's
    moved once (`crossgeo.grid.TableLattice`) for windows on, beside and away from those cells."""
    transform = Affine(1, 0, 0, 0, -1, 0)

    def to_source(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = 0.37 * xs + 0.011 * ys**2 / 50, -0.41 * ys + 0.003 * xs**2 / 40
        dead = (xs > 20) & (xs < 27.3) & (ys < -30)
        return np.where(dead, np.inf, x), np.where(dead, np.nan, y)

    rows, cols = np.mgrid[0:70, 0:60]
    x, y = to_source(*(transform @ (cols + 0.5, rows + 0.5)))
    with np.errstate(invalid="ignore"):
        inside = (x >= 0) & (y >= 0) & (np.floor(x + 1e-10) < 25) & (np.floor(y + 1e-10) < 30)
        want = np.where(inside, [np.floor(y + 1e-10), np.floor(x + 1e-10)], -1)
    got = nearest_table(transform, 0, 0, 70, 60, to_source, (30, 25), step=16)
    np.testing.assert_array_equal(np.stack(got), want)
    assert (got[0][35:, 21:26] == -1).all() and (got[0] >= 0).sum() > 500
    lattice = crossgeo.grid.TableLattice.build(transform, to_source, (0, 0), (5, 4), 16)
    assert lattice.unsure is not None and lattice.unsure.sum() >= 2
    for row_off, col_off, h, w in [(0, 0, 70, 60), (20, 10, 30, 30), (0, 0, 20, 20), (40, 30, 30, 30)]:
        got = nearest_table(transform, row_off, col_off, h, w, to_source, (30, 25), step=16, lattice=lattice)
        np.testing.assert_array_equal(np.stack(got), want[:, row_off : row_off + h, col_off : col_off + w])


def test_the_mask_reads_as_the_exact_warps_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's setup (10 m UTM grid, a class mask in EPSG:4326 at ~13 m): patches through the table view
    equal those of the whole-grid and block views (GDAL's exact warps), invalid pixels included; and the
    table view is what a sampler picks by default."""
    image = utm_image(tmp_path, 400)
    transform, width, height = lonlat_transform(400, margin=-6)  # windows at the edges carry invalid pixels
    left, top = transform.c, transform.f
    bounds = (left, top - height * transform.a, left + width * transform.a, top)
    mask = T.write_lonlat_mask(tmp_path / "mask.tif", bounds, transform.a, cell=0.0005, n_classes=5)
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(-SIZE // 2, 400 - SIZE // 2, (2, 60))
    windows = T.write_windows_table(tmp_path / "w.csv", rows, cols)
    default = PatchSampler(image, mask, windows, SIZE, n_classes=5)
    assert default.mask_view == "table"
    patches = {}
    for view in ("table", "grid", "blocks"):
        T.force_mask_view(monkeypatch, view)
        sampler = PatchSampler(image, mask, windows, SIZE, n_classes=5)
        assert sampler.mask_view == view
        patches[view] = [sampler[i] for i in range(len(sampler))]
    partial = 0
    for view in ("grid", "blocks"):
        for got, want in zip(patches["table"], patches[view]):
            np.testing.assert_array_equal(got.mask, want.mask)
            np.testing.assert_array_equal(got.mask_valid, want.mask_valid)
            partial += int(0 < got.mask_valid.sum() < got.mask_valid.size)
    assert partial > 0


def test_nodata_and_uncovered_pixels_are_invalid_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mask nodata and pixels the mask does not cover are invalid exactly where the exact warp says (against the
    whole-grid view), and a window wholly off the mask is wholly invalid."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-30)
    classes = ((np.arange(height)[:, None] // 7 + np.arange(width) // 5) % 4).astype(np.uint8)[None]
    mask = T.write_raster(tmp_path / "nd.tif", classes, crs="EPSG:4326", transform=transform, nodata=3)
    table = mask_sampler(image, mask, "table", monkeypatch, mask_fill_value=9)
    grid = mask_sampler(image, mask, "grid", monkeypatch, mask_fill_value=9)
    assert (table.mask_view, grid.mask_view) == ("table", "grid")
    for row_off, col_off in [*WINDOWS, (-63, -63), (299, 0)]:
        (got, got_invalid), (want, want_invalid) = raw(table, row_off, col_off), raw(grid, row_off, col_off)
        np.testing.assert_array_equal(got_invalid, want_invalid)
        np.testing.assert_array_equal(got, want)
        a, b = table.read(row_off, col_off), grid.read(row_off, col_off)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.mask_valid, b.mask_valid)
    corner, _ = table.read_mask(-63, -63)
    assert (corner == 9).all()
    inner, valid = table.read_mask(120, 120)
    assert valid.any() and not valid.all() and 9 in inner and 3 not in inner  # nodata: the fill, never a class


def test_a_nearest_image_source_in_epsg_4326_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stacked source in another CRS with nearest resampling: the table view, every pixel the exact answer
    (the per-window warp got 99.992 % of them), the valid pixels as the whole-grid view had them."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-10)
    geo = T.write_raster(
        tmp_path / "geo.tif", T.coordinate_bands(height, width, "uint16"), crs="EPSG:4326", transform=transform
    )
    mask = T.write_raster(tmp_path / "m.tif", np.ones((1, REF, REF), np.uint8), crs=UTM, transform=UTM_TRANSFORM)
    rng = np.random.default_rng(6)
    rows, cols = rng.integers(-SIZE // 2, REF - SIZE // 2, (2, 25))
    windows = T.write_windows_table(tmp_path / "w.csv", rows, cols)
    sources = {"ref": image, "geo": {"path": geo, "resampling": "nearest"}}
    sampler = PatchSampler(sources, mask, windows, SIZE, image_dtype="uint16", out_of_range="fill")
    assert [p.view for p in sampler._plan.image] == ["aligned", "table"]
    T.force_mask_view(monkeypatch, "grid")
    warped = PatchSampler(sources, mask, windows, SIZE, image_dtype="uint16", out_of_range="fill")
    assert warped._plan.image[1].view == "grid"
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        data, invalid = sampler._reader()._read_source(1, r, c)
        want = exact_pixels(sampler.grid, geo, r, c, SIZE, SIZE)
        valid = want[0] >= 0
        np.testing.assert_array_equal(np.zeros_like(valid) if invalid is None else invalid, ~valid)
        np.testing.assert_array_equal(data[:2][:, valid], want[:, valid])
        assert (data[:, ~valid] == 0).all()  # the fill (no nodata)
        patch, other = sampler[i], warped[i]
        np.testing.assert_array_equal(other.image_valid, patch.image_valid)
        np.testing.assert_array_equal(other.image[:, patch.image_valid], patch.image[:, patch.image_valid])


def test_a_repeated_window_is_a_copy_of_the_kept_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the lookup view: a window read again comes from `mask_blocks` (the whole mask kept beside it)."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-12)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    T.force_mask_view(monkeypatch, "table")
    cache = crossgeo.io.MaskBlockCache(2**40)
    monkeypatch.setattr(crossgeo.io, "mask_blocks", cache)
    windows = T.write_windows_table(tmp_path / "w.csv", [0], [0])
    sampler = PatchSampler(image, mask, windows, SIZE, n_classes=256, out_of_range="fill")
    assert sampler._plan.mask.lookup_whole
    first = [raw(sampler, r, c) for r, c in WINDOWS]
    assert len(cache) == 1 + len(WINDOWS)  # the whole mask and every window
    for data, invalid in first:  # a caller writing into a read changes nothing kept
        data[...] = 7
        invalid[...] = True
    for r, c in WINDOWS:
        data, invalid = raw(sampler, r, c)
        want = exact_pixels(sampler.grid, mask, r, c, SIZE, SIZE)
        np.testing.assert_array_equal(decoded(data, invalid, width), want)
        np.testing.assert_array_equal(invalid, want[0] < 0)
    assert len(cache) == 1 + len(WINDOWS)  # read back, not computed again


def test_sources_the_table_does_not_take_are_warped_as_before(tmp_path: Path) -> None:
    """A mask with an alpha band, an image source with nodata on several bands and a bilinear source keep
    GDAL's warp (the table reproduces neither the warper's alpha nor its multi-band nodata rule)."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF)
    ones = np.ones((height, width), np.uint8)
    alpha = T.write_raster(
        tmp_path / "alpha.tif", np.stack([ones, ones * 255]), crs="EPSG:4326", transform=transform, alpha="YES"
    )
    windows = T.write_windows_table(tmp_path / "w.csv", [0], [0])
    assert PatchSampler(image, alpha, windows, SIZE).mask_view in ("grid", "blocks", "window")
    plain = T.write_raster(tmp_path / "m.tif", ones[None], crs="EPSG:4326", transform=transform)
    assert PatchSampler(image, plain, windows, SIZE).mask_view == "table"
    bands = T.write_raster(tmp_path / "b.tif", np.stack([ones, ones]), crs="EPSG:4326", transform=transform, nodata=0)
    sources: dict[str, Any] = {
        "ref": image,
        "nodata": {"path": bands, "resampling": "nearest"},
        "bilinear": {"path": plain, "resampling": "bilinear"},
        "one": {"path": plain, "resampling": "nearest"},
    }
    views = [p.view for p in PatchSampler(sources, plain, windows, SIZE)._plan.image]
    assert views[0] == "aligned" and views[1] in ("grid", "window") and views[2] in ("grid", "window")
    assert views[3] == "table"


def test_a_window_whose_transforms_fail_reads_as_the_exact_warp(tmp_path: Path) -> None:
    """A mask in an orthographic projection seen from a longitude/latitude grid that reaches past its horizon:
    rasterio refuses a batch with a point off the projection's domain, so such a window is warped by GDAL
    (exactly), which leaves those pixels without data; the others are read through the table. (Readers built
    directly: the sampler's coverage survey of the mask does not transform past the horizon either.)"""
    ortho = "+proj=ortho +lat_0=0 +lon_0=0 +datum=WGS84"
    classes = ((np.arange(200)[:, None] // 3 + np.arange(120) // 4) % 4 + 1).astype(np.uint8)[None]
    mask = T.write_raster(tmp_path / "ortho.tif", classes, crs=ortho, transform=Affine(3000, 0, 6.0e6, 0, -3000, 3.0e5))
    grid = Grid(120, 650, Affine(0.05, 0, 70.0, 0, -0.05, 3.0), rasterio.crs.CRS.from_epsg(4326))  # horizon: 90
    plan = crossgeo.io.SourcePlan(
        path=str(mask), option="mask_path", what="mask", bands=(1,), dtype="uint8", nodata_in_alpha=True
    )
    table = crossgeo.io.SourceReader(
        attrs.evolve(plan, view="table", tolerance=crossgeo.io.EXACT_TOLERANCE), grid, SIZE
    )
    warped = crossgeo.io.SourceReader(
        attrs.evolve(plan, view="grid", tolerance=crossgeo.io.EXACT_TOLERANCE), grid, SIZE
    )
    with pytest.raises(CPLE_BaseError, match="projection domain"):  # what the table view falls back on
        table.to_source(*(grid.transform @ (np.array([0.5, 600.5]), np.array([0.5, 0.5]))))
    covered = failed = 0
    for col_off in range(0, 650, SIZE // 2):
        for row_off in (0, 56):
            want, want_invalid = warped.read(row_off, col_off)
            got, got_invalid = table.read(row_off, col_off)
            np.testing.assert_array_equal(got_invalid, want_invalid)
            np.testing.assert_array_equal(got, want)
            covered += int((~got_invalid).sum())
            failed += int(grid.transform.c + 0.05 * (col_off + SIZE) > 90)  # a point past the horizon
    table.close()
    warped.close()
    assert covered > 1000 and failed > 0


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (1, 70), (31, 33), (32, 32), (33, 64), (64, 65), (65, 31), (97, 130), (256, 256), (246, 256)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_every_band_shape_reads_the_exact_answer(tmp_path: Path, shape: tuple[int, int]) -> None:
    """`nearest_table` interpolates whole bands of `crossgeo.grid.TABLE_STEP` rows at once and the last band
    apart: windows of one row, of less than a band, of exactly a band, a band and a row, and a last band
    shorter or longer than the others - inside the source, across its edges and wholly off it - pick the
    exact answer, into fresh intp arrays or int32 ``out`` arrays (the reader's)."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-12)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    grid, to_source, source_shape = table_inputs(image, mask)
    rows, cols = shape
    offsets = {(REF - rows) // 2, 0, REF - rows}, {(REF - cols) // 2, 0, REF - cols}
    kinds = set()
    for row_off in offsets[0]:
        for col_off in offsets[1]:
            want = exact_pixels(grid, mask, row_off, col_off, rows, cols)
            out = tuple(np.full(shape, 77, dtype=np.int32) for _ in range(2))
            for given in (None, out):
                got = nearest_table(grid.transform, row_off, col_off, rows, cols, to_source, source_shape, out=given)
                if given is not None:
                    assert got[0] is out[0] and got[1] is out[1]
                np.testing.assert_array_equal(np.stack(got), want, err_msg=f"window {row_off, col_off, shape}")
            kinds.add((bool((want[0] >= 0).all()), bool((want[0] < 0).all())))
    assert (True, False) in kinds or rows * cols > 60 * 60  # windows wholly on the source
    assert (False, False) in kinds or rows * cols < 9  # and across its edges


def test_moves_far_past_the_source_pick_no_pixel() -> None:
    """Source coordinates far past an int32 (a source seen from far off) are outside, not wrapped round into
    an index; the nearby ones keep the exact answer."""
    transform = Affine(1, 0, 0, 0, -1, 0)

    def to_source(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.where(xs > 30, 2.0**32 + 5 + xs, xs * 0.7), np.where(ys < -40, -(2.0**33) + ys, -ys * 0.9)

    out = tuple(np.empty((70, 60), dtype=np.int32) for _ in range(2))
    rows, cols = nearest_table(transform, 0, 0, 70, 60, to_source, (50, 40), out=out)
    x, y = to_source(*(transform @ np.meshgrid(np.arange(60) + 0.5, np.arange(70) + 0.5)))
    inside = (x >= 0) & (y >= 0) & (np.floor(x + 1e-10) < 40) & (np.floor(y + 1e-10) < 50)
    np.testing.assert_array_equal(rows, np.where(inside, np.floor(y + 1e-10), -1))
    np.testing.assert_array_equal(cols, np.where(inside, np.floor(x + 1e-10), -1))
    assert inside.sum() > 1000 and (~inside).sum() > 1000


def test_a_table_read_allocates_no_whole_window_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table read keeps its whole-window work in per-thread work arrays (`crossgeo.grid.work_array`): fresh
    ones cost page faults, more than the arithmetic. Traced by ``tracemalloc`` (numpy reports to it): a 256^2
    read across the source's edges peaks below one float64 array of the window (~2 MB before)."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-12)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    sampler = mask_sampler(image, mask, "table", monkeypatch)
    reader = sampler._reader().mask
    assert reader is not None and reader.plan.view == "table"
    for row_off, col_off in [(22, 22), (20, 40), (40, 2)]:
        reader._table(row_off, col_off, 256, 256)  # the work arrays, the lattice layout of the shape
        tracemalloc.start()
        try:
            data, invalid = reader._table(row_off, col_off, 256, 256)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        want = exact_pixels(sampler.grid, mask, row_off, col_off, 256, 256)
        np.testing.assert_array_equal(decoded(data, invalid, width), want)
        assert peak < 256 * 256 * 8, (row_off, col_off, peak)


def test_work_arrays_are_kept_per_thread_and_slot() -> None:
    """`crossgeo.grid.work_array`: the same memory for a slot and dtype in one thread (a smaller shape a view
    of it), another slot or thread its own, and a fresh array past `crossgeo.grid.WORK_ELEMENTS`."""
    first = work_array("test-a", (64, 64), np.float64)
    assert np.shares_memory(first, work_array("test-a", (32, 100), np.float64))
    assert work_array("test-a", (32, 100), np.float64).shape == (32, 100)
    assert not np.shares_memory(first, work_array("test-b", (64, 64), np.float64))
    assert not np.shares_memory(first, work_array("test-a", (64, 64), np.int32))
    grown = work_array("test-a", (128, 128), np.float64)
    assert grown.shape == (128, 128) and np.shares_memory(grown, work_array("test-a", (64, 64), np.float64))
    other: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: other.append(work_array("test-a", (64, 64), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], grown)
    huge = (crossgeo.grid.WORK_ELEMENTS // 100 + 1, 100)
    assert not np.shares_memory(work_array("test-c", huge, np.uint8), work_array("test-c", huge, np.uint8))


def test_threads_reading_tables_at_once_read_the_exact_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread has its own work arrays: four threads reading windows of two shapes at once (each through
    its own reader, as a read-ahead pool does) get the exact answer on every window."""
    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-12)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    sampler = mask_sampler(image, mask, "table", monkeypatch)
    rng = np.random.default_rng(9)
    windows = [(int(r), int(c), size) for (r, c), size in zip(rng.integers(-20, 250, (48, 2)), [64, 97] * 24)]

    def read(window: tuple[int, int, int]) -> np.ndarray:
        row_off, col_off, size = window
        data, invalid = sampler._reader().read_mask(row_off, col_off, size, size)
        return decoded(data, invalid, width)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(read, windows))
    for (row_off, col_off, size), pixels in zip(windows, got):
        np.testing.assert_array_equal(pixels, exact_pixels(sampler.grid, mask, row_off, col_off, size, size))


def counting(to_source: Any) -> tuple[Any, list[int]]:
    """``to_source`` and the number of points of each call made to it."""
    calls: list[int] = []

    def move(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(xs))
        return to_source(xs, ys)

    return move, calls


def test_a_grids_lattice_gives_every_window_the_exact_answer(tmp_path: Path) -> None:
    """`crossgeo.grid.TableLattice` of the whole grid, moved once: each window slices its nodes (no transform but
    the fix-up's, so at most one call per window where its own lattice takes two) and reads exactly what its
    own lattice reads - the exact answer - at every offset from the lattice's nodes, on the grid's last rows
    and columns (a window ending on a node included), for 1-pixel and odd-sized windows."""
    image = utm_image(tmp_path, size=257)  # 257 = 8 * 32 + 1: the last row and column lie on nodes
    transform, width, height = lonlat_transform(257, margin=-6)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    grid, to_source, shape = table_inputs(image, mask)
    step = crossgeo.grid.TABLE_STEP
    lattice = crossgeo.grid.TableLattice.build(
        grid.transform, to_source, (0, 0), crossgeo.grid.TableLattice.grid_cells(257, 257, step), step
    )
    assert lattice.nodes.shape == (2, 10, 10) and lattice.errors.shape == (9, 9) and lattice.unsure is None
    rng = np.random.default_rng(3)
    windows = [(0, 0, 64, 64), (256, 256, 1, 1), (224, 193, 33, 64), (31, 32, 1, 70), (200, 0, 57, 257)]
    windows += [(int(r), int(c), int(h), int(w)) for r, c, h, w in rng.integers([0, 0, 1, 1], 200, (12, 4))]
    windows = [(r, c, min(h, 257 - r), min(w, 257 - c)) for r, c, h, w in windows]
    sliced_calls = own_calls = 0
    for row_off, col_off, h, w in windows:
        want = exact_pixels(grid, mask, row_off, col_off, h, w)
        moved, calls = counting(to_source)
        got = nearest_table(grid.transform, row_off, col_off, h, w, moved, shape, lattice=lattice)
        np.testing.assert_array_equal(np.stack(got), want, err_msg=str((row_off, col_off, h, w)))
        sliced_calls += len(calls)
        assert len(calls) <= 1 and all(n < 100 for n in calls), calls  # the fix-up's pixels only
        moved, calls = counting(to_source)
        own = nearest_table(grid.transform, row_off, col_off, h, w, moved, shape)
        np.testing.assert_array_equal(np.stack(own), want)
        own_calls += len(calls)
        assert calls[0] >= 9  # its own lattice: at least one cell's nodes, midpoints and centre
    assert own_calls > sliced_calls + len(windows) - 1
    # A lattice that does not hold the window (another part of the grid, or a coarser step): the window's own.
    corner = lattice.part((0, 0), (2, 2))
    assert corner is not None and np.shares_memory(corner.nodes, lattice.nodes)
    assert corner.part((3, 3), (1, 1)) is None
    moved, calls = counting(to_source)
    got = nearest_table(grid.transform, 100, 100, 64, 64, moved, shape, lattice=corner)
    np.testing.assert_array_equal(np.stack(got), exact_pixels(grid, mask, 100, 100, 64, 64))
    assert calls[0] == 7 * 7  # its own 3 x 3 cells: nodes, midpoints, centres


def _worker_reads(sampler: PatchSampler, windows: list[tuple[int, int]]) -> tuple[bool, list[np.ndarray]]:
    """In a child process: whether the mask's reader found the grid's lattice, and its reads of ``windows``."""
    reader = sampler._reader().mask
    assert reader is not None
    return reader.lattice is not None, [reader.read(r, c)[0] for r, c in windows]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_the_grids_lattice_is_moved_when_the_sampler_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """A sampler with a table-view mask moves its grid's lattice when it is built (`crossgeo.io.table_lattice`):
    its readers and forked workers slice it, a spawned worker moves each window's own - the same pixels. A grid
    whose lattice passes `crossgeo.io.TABLE_LATTICE_POINTS` keeps none and reads the same too."""
    import multiprocessing

    image = utm_image(tmp_path)
    transform, width, height = lonlat_transform(REF, margin=-12)
    mask = encoded_mask(tmp_path / "geo.tif", transform, width, height)
    sampler = mask_sampler(image, mask, "table", monkeypatch)
    windows = [(0, 0), (37, 101), (236, 236), (-20, 150)]
    reader = sampler._reader().mask
    assert reader is not None and reader.lattice is not None
    assert reader.lattice.nodes.shape[1:] == (REF // 32 + 1 + 1, REF // 32 + 1 + 1)
    want = [reader.read(r, c)[0] for r, c in windows]
    for (row_off, col_off), data in zip(windows, want):
        pixels = decoded(data, None, width)
        exact = exact_pixels(sampler.grid, mask, row_off, col_off, SIZE, SIZE)
        np.testing.assert_array_equal(pixels[:, exact[0] >= 0], exact[:, exact[0] >= 0])
    with multiprocessing.get_context(start).Pool(1) as pool:
        found, got = pool.apply(_worker_reads, (sampler, windows))
    assert found == (start == "fork")
    for one, other in zip(got, want):
        np.testing.assert_array_equal(one, other)
    monkeypatch.setattr(crossgeo.io, "TABLE_LATTICE_POINTS", 100)
    monkeypatch.setattr(crossgeo.io, "_lattices", collections.OrderedDict())  # this process's kept ones
    small_reader = mask_sampler(image, mask, "table", monkeypatch)._reader().mask
    assert small_reader is not None and small_reader.lattice is None
    for (row_off, col_off), data in zip(windows, want):
        np.testing.assert_array_equal(small_reader.read(row_off, col_off)[0], data)
