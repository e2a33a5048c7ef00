"""The part of a mask the image reaches: what the ``"lookup"`` and ``"table"`` views keep in memory.

A mask much larger than the image (a national land-cover raster beside one scene) keeps only the
pixels under the image (`crossgeo.io.reached_part`), so it costs that part's memory and a mask too
large to keep whole can be kept. The oracle is the exact answer, as in `test_mask_table` (the
table view) and the whole-grid view (the lookup view): a window reads the same whichever part is
kept, and a window past the kept part is read from the file.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
import rasterio
from test_mask_lookup import assert_same_reads
from test_mask_lookup import sampler as lookup_sampler
from test_mask_table import REF, SIZE, WINDOWS, decoded, exact_pixels, lonlat_transform, raw, utm_image

import crossgeo.io
from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.testing import CoordinateScene


def encoded_mask(path: Path, margin: float) -> tuple[Path, int]:
    """An EPSG:4326 source ``margin`` of its pixels larger than the UTM image on every side, pixel (row, col)
    holding ``row * width + col + 1`` (uint32), and its width."""
    transform, width, height = lonlat_transform(REF, margin=margin)
    rows, cols = np.mgrid[0:height, 0:width]
    data = (rows * width + cols + 1).astype(np.uint32)[None]
    return T.write_raster(path, data, crs="EPSG:4326", transform=transform), width


def kept() -> np.ndarray:
    """The one source `crossgeo.io.mask_blocks` keeps for the lookup or table view (read on first use)."""
    arrays = [block[0] for key, block in crossgeo.io.mask_blocks._blocks.items() if key[1:] == (-1, -1)]
    assert len(arrays) == 1, "one source kept"
    return arrays[0]


@pytest.fixture(autouse=True)
def fresh_mask_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crossgeo.io, "mask_blocks", crossgeo.io.MaskBlockCache())


def table_sampler(image: Path, mask: Path, monkeypatch: pytest.MonkeyPatch, keep: int = 2**40) -> PatchSampler:
    """A sampler whose mask is read through the table view, with ``keep`` bytes of `crossgeo.io.mask_blocks`."""
    T.force_mask_view(monkeypatch, "table")
    monkeypatch.setattr(crossgeo.io.mask_blocks, "max_bytes", keep)
    windows = T.write_windows_table(image.parent / "w.csv", [0], [0])
    return PatchSampler(image, mask, windows, SIZE, n_classes=256, out_of_range="fill")


def test_a_large_mask_keeps_the_part_under_the_image_and_reads_the_exact_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Table view: a mask ~3.5x the image's side keeps ~6 % of its pixels, and every window (inside, across
    the grid's edges, off the grid) reads the exact answer."""
    image = utm_image(tmp_path)
    mask, width = encoded_mask(tmp_path / "large.tif", margin=300)
    sampler = table_sampler(image, mask, monkeypatch)
    plan = sampler._plan.mask
    assert plan.view == "table" and plan.lookup_whole and plan.whole_window is not None
    rng = np.random.default_rng(7)
    windows = WINDOWS + [tuple(w) for w in rng.integers(-SIZE // 2, REF - SIZE // 2, (25, 2)).tolist()]
    for row_off, col_off in windows:
        data, invalid = raw(sampler, row_off, col_off)
        want = exact_pixels(sampler.grid, mask, row_off, col_off, SIZE, SIZE)
        np.testing.assert_array_equal(decoded(data, invalid, width), want, err_msg=f"window {row_off, col_off}")
        np.testing.assert_array_equal(invalid, want[0] < 0)
    row, col, height, part_width = plan.whole_window
    assert kept().shape == (1, height, part_width)
    with rasterio.open(mask) as src:
        assert height * part_width < src.height * src.width / 10
        # The part holds every source pixel a grid pixel picks, with the margin and no more.
        every = exact_pixels(sampler.grid, mask, 0, 0, REF, REF)
        picked = every[:, every[0] >= 0]
        assert row <= picked[0].min() and picked[0].max() < row + height
        assert col <= picked[1].min() and picked[1].max() < col + part_width
        assert picked[0].min() - row <= crossgeo.io.REACH_MARGIN + 1


def test_a_window_past_the_kept_part_is_read_from_the_file(tmp_path: Path) -> None:
    """A kept part that does not hold a window's pixels (a plan whose part is a corner of the mask): that window
    is read from the file, the others gathered from the part; all read the exact answer."""
    image = utm_image(tmp_path)
    mask, width = encoded_mask(tmp_path / "large.tif", margin=20)
    with rasterio.open(image) as src:
        grid = crossgeo.Grid.of(src)
    plan = crossgeo.io.SourcePlan(
        path=str(mask), option="mask_path", what="mask", bands=(1,), dtype="uint32", nodata_in_alpha=True
    )
    corner = (0, 0, 150, 150)  # the mask's upper left: it holds the first two windows' pixels, not the others
    reader = crossgeo.io.SourceReader(
        attrs.evolve(plan, view="table", lookup_whole=True, whole_window=corner, tolerance=crossgeo.io.EXACT_TOLERANCE),
        grid,
        SIZE,
    )
    reads = {"kept": 0, "file": 0}
    original = reader.dataset.read

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        reads["kept" if kwargs.get("window") == rasterio.windows.Window(0, 0, 150, 150) else "file"] += 1
        return original(*args, **kwargs)

    reader.dataset.read = counting  # type: ignore[method-assign]
    for row_off, col_off in [(0, 0), (10, 20), (200, 200), (100, 236), (236, 0)]:
        data, invalid = reader.read(row_off, col_off)
        want = exact_pixels(grid, mask, row_off, col_off, SIZE, SIZE)
        got = decoded(data, invalid, width)
        np.testing.assert_array_equal(got, want, err_msg=f"window {row_off, col_off}")
    reader.close()
    assert reads == {"kept": 1, "file": 3}  # the corner read once; the three windows past it from the file


def test_a_mask_about_the_image_size_is_kept_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's case: a mask covering little more than the image keeps all of it (no offsets, no checks)."""
    image = utm_image(tmp_path)
    mask, _ = encoded_mask(tmp_path / "close.tif", margin=4)
    plan = table_sampler(image, mask, monkeypatch)._plan.mask
    assert plan.lookup_whole and plan.whole_window is None


def test_a_mask_too_large_to_keep_whole_keeps_its_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the bound between the part's size and the mask's, the part is kept (it was a read per window)."""
    image = utm_image(tmp_path)
    mask, _ = encoded_mask(tmp_path / "large.tif", margin=300)
    with rasterio.open(mask) as src:
        whole_bytes = src.height * src.width * 4
    plan = table_sampler(image, mask, monkeypatch, keep=whole_bytes // 4)._plan.mask
    assert plan.lookup_whole and plan.whole_window is not None
    assert plan.whole_window[2] * plan.whole_window[3] * 4 <= whole_bytes // 4


def test_the_lookup_view_keeps_the_part_under_the_image(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookup view (a Web Mercator image, a lon/lat mask 0.05 degrees larger on every side): the part under the
    image is kept and the reads are the exact warp's, the grid's margins included."""
    mask = scene.lonlat_mask()
    grid = lookup_sampler(scene, mask, "grid", monkeypatch)
    lookup = lookup_sampler(scene, mask, "lookup", monkeypatch, whole=True)
    plan = lookup._plan.mask
    assert plan.view == "lookup" and plan.lookup_whole and plan.whole_window is not None
    assert_same_reads(scene, lookup, grid)
    with rasterio.open(mask) as src:
        assert kept().shape == (1, *plan.whole_window[2:])
        assert plan.whole_window[2] * plan.whole_window[3] < src.height * src.width / 2  # 36 % of it
