"""Decode less (#26.3): windows on the image file's blocks, and the blocks each patch decodes.

Real tiled / striped / band-interleaved GeoTIFFs written by rasterio whose pixels encode their
own coordinates, so a patch proves where it was read from; block counts against hand-computed
cases and a brute-force count (hypothesis); ``stats`` / ``validate`` print the amplification.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from crossgeo import ConfigError, Grid, OptionError, PatchSampler, grid_windows, random_windows
from crossgeo import testing as T
from crossgeo.grid import BlockLayout, align_step, blocks_touched, decode_amplification, min_blocks
from crossgeo.io import RasterInfo
from crossgeo.survey import block_decoding

REPO = Path(__file__).resolve().parents[2]
TRANSFORM = Affine(1.0, 0, 500000, 0, -1.0, 5600000)
CRS = "EPSG:32632"


def write(path: Path, height: int, width: int, **profile: Any) -> Path:
    """A uint16 coordinate-encoding image (band 1 = row, band 2 = col) written with ``profile``."""
    options: dict[str, Any] = {"tiled": True, "blocksize": 256, **profile}
    return T.write_raster(path, T.coordinate_bands(height, width), crs=CRS, transform=TRANSFORM, **options)


def write_mask(path: Path, height: int, width: int) -> Path:
    return T.write_raster(path, np.ones((1, height, width), np.uint8), crs=CRS, transform=TRANSFORM)


def assert_patches_come_from_their_offsets(image: Path, mask: Path, frame: pd.DataFrame, size: int) -> None:
    sampler = PatchSampler(str(image), str(mask), frame[["row_off", "col_off"]], size, image_dtype="native")
    for i in range(len(sampler)):
        patch = sampler[i]
        rows, cols = T.decode_coordinates(patch.image)
        assert (rows == patch.row_off + np.arange(size)[:, None]).all()
        assert (cols == patch.col_off + np.arange(size)[None, :]).all()


def coverage(frame: pd.DataFrame, size: int, height: int, width: int) -> np.ndarray:
    counts = np.zeros((height, width), dtype=np.int64)
    for r, c in zip(frame.row_off, frame.col_off):
        counts[r : r + size, c : c + size] += 1
    return counts


# --------------------------------------------------------------------------- block geometry (pure)


def test_blocks_touched_hand_computed() -> None:
    # 256-pixel blocks on a 1000-pixel axis: [0, 256) one block, [1, 257) two, [200, 456) two, [512, 768) one,
    # [744, 1000) two; a 400-pixel window [200, 600) touches blocks 0, 1 and 2.
    assert blocks_touched(np.array([0, 1, 200, 512, 744]), 256, 256, 1000).tolist() == [1, 2, 2, 1, 2]
    assert blocks_touched(np.array([200]), 400, 256, 1000).tolist() == [3]
    # Windows clipped to the raster: past the far edge, before the start, entirely outside.
    assert blocks_touched(np.array([900, -100, 1000, -300]), 256, 256, 1000).tolist() == [1, 1, 0, 0]
    assert min_blocks(256, 256, 1000) == 1 and min_blocks(300, 256, 1000) == 2 and min_blocks(512, 256, 300) == 2
    assert min_blocks(256, 16, 1000) == 16 and min_blocks(256, 1000, 1000) == 1  # strips: 16 rows; full width


def test_align_step_hand_computed() -> None:
    assert align_step(512, 256, 4096) == 256  # a multiple of the block: block origins
    assert align_step(128, 256, 4096) == 128  # a divisor: multiples of the patch stay inside one block
    assert align_step(300, 256, 4096) == 256  # larger, not a multiple: block origins still give the minimum
    assert align_step(100, 256, 4096) is None  # smaller and not a divisor: no step without gaps
    assert align_step(300, 4096, 4096) == 1 and align_step(300, 1, 4096) == 1  # a strip's width; scanlines


def test_decode_amplification_hand_computed() -> None:
    layout = BlockLayout(256, 256)
    # (0, 0) touches 1 block, (100, 0) 2, (100, 100) 4: mean 7/3 against a minimum of 1.
    found = decode_amplification(np.array([0, 100, 100]), np.array([0, 0, 100]), 256, layout, 1024, 1024)
    assert found.minimum == 1 and found.mean_blocks == pytest.approx(7 / 3)
    assert found.amplification == pytest.approx(7 / 3) and found.above_minimum == 2
    assert found.share_above == pytest.approx(2 / 3) and found.decoded_pixels == pytest.approx(7 / 3)
    # Band-interleaved: one block plane per band read; the ratio is the same.
    banded = decode_amplification(np.array([100]), np.array([100]), 256, BlockLayout(256, 256, "band"), 1024, 1024, 3)
    assert banded.planes == 3 and banded.amplification == 4.0
    # 16-row strips of a 1024-wide raster: 16 strips minimum, 17 when the window starts inside a strip;
    # every window decodes 4 x its pixels (strips are 1024 wide, the window 256).
    strips = decode_amplification(np.array([0, 8]), np.array([0, 300]), 256, BlockLayout(16, 1024), 1024, 1024)
    assert strips.minimum == 16 and strips.mean_blocks == 16.5 and strips.decoded_pixels == pytest.approx(16.5 / 4)


@settings(max_examples=200, deadline=None)
@given(
    off=st.integers(-600, 1200),
    size=st.integers(1, 700),
    block=st.integers(1, 400),
    extent=st.integers(1, 1000),
)
def test_blocks_touched_equals_a_brute_force_count(off: int, size: int, block: int, extent: int) -> None:
    pixels = [p for p in range(off, off + size) if 0 <= p < extent]
    assert blocks_touched(np.array([off]), size, block, extent)[0] == len({p // block for p in pixels})
    if 0 <= off and off + size <= extent:  # a window inside touches at least the minimum ...
        assert blocks_touched(np.array([off]), size, block, extent)[0] >= min_blocks(size, block, extent)
    step = align_step(size, block, extent)
    if step is not None and step > 1 and off >= 0 and off % step == 0 and off + size <= extent:
        # ... and exactly the minimum when it starts on the aligned step.
        assert blocks_touched(np.array([off]), size, block, extent)[0] == min_blocks(size, block, extent)


def test_raster_info_records_the_block_layout(tmp_path: Path) -> None:
    tiled = write(tmp_path / "t.tif", 600, 500)
    strips = write(tmp_path / "s.tif", 600, 500, tiled=False, blockysize=16)
    banded = write(tmp_path / "b.tif", 600, 500, interleave="band")
    expected = {
        tiled: BlockLayout(256, 256),
        strips: BlockLayout(16, 500),
        banded: BlockLayout(256, 256, "band"),
    }
    for path, layout in expected.items():
        with rasterio.open(path) as dataset:
            assert RasterInfo.of(dataset).blocks == layout
    assert BlockLayout(16, 500).describe(500) == "16-row strips"
    assert BlockLayout(256, 256, "band").describe(500) == "256 x 256 tiles, band-interleaved"


# --------------------------------------------------------------------------- aligned windows


@pytest.mark.parametrize(("height", "width", "size", "stride"), [(1000, 900, 256, None), (1000, 900, 512, 256)])
def test_aligned_grid_windows_start_on_blocks_and_stay_inside(
    tmp_path: Path, height: int, width: int, size: int, stride: int | None
) -> None:
    image, mask = write(tmp_path / "i.tif", height, width), write_mask(tmp_path / "m.tif", height, width)
    free = grid_windows(image, size, stride=stride)
    aligned = grid_windows(image, size, stride=stride, align="blocks")
    assert (aligned.row_off % 256 == 0).all() and (aligned.col_off % 256 == 0).all()
    assert (aligned.row_off + size <= height).all() and (aligned.col_off + size <= width).all()
    # Same stride, no flush last row/column: one window fewer per axis where the edge was not flush.
    step = stride or size
    assert sorted(set(aligned.row_off)) == list(range(0, height - size + 1, step))
    assert len(set(aligned.row_off)) == len(set(free.row_off)) - 1
    assert len(set(aligned.col_off)) == len(set(free.col_off)) - 1
    # Every pixel is covered except the edge remainder, which attrs["edge_uncovered"] reports.
    rows, cols = aligned.attrs["edge_uncovered"]
    covered = coverage(aligned, size, height, width)
    assert covered[: height - rows, : width - cols].min() >= 1
    assert covered[height - rows :].sum() == 0 and covered[:, width - cols :].sum() == 0
    assert (rows, cols) == (height - (int(aligned.row_off.max()) + size), width - (int(aligned.col_off.max()) + size))
    # Each aligned window decodes the minimum; the free ones (flush edge windows) do not.
    layout = BlockLayout(256, 256)
    assert decode_amplification(aligned.row_off, aligned.col_off, size, layout, height, width).above_minimum == 0
    assert decode_amplification(free.row_off, free.col_off, size, layout, height, width).above_minimum > 0
    assert_patches_come_from_their_offsets(image, mask, aligned, size)


def test_aligned_windows_larger_than_a_block_but_not_a_multiple_overlap(tmp_path: Path) -> None:
    image, mask = write(tmp_path / "i.tif", 1024, 1024), write_mask(tmp_path / "m.tif", 1024, 1024)
    aligned = grid_windows(image, 300, align="blocks")  # stride 300 -> 256: windows overlap by 44 pixels
    assert sorted(set(aligned.row_off)) == [0, 256, 512] and aligned.attrs["edge_uncovered"] == (212, 212)
    found = decode_amplification(aligned.row_off, aligned.col_off, 300, BlockLayout(256, 256), 1024, 1024)
    assert found.minimum == 4 and found.above_minimum == 0  # 2 x 2 blocks each, the fewest for 300 pixels
    free = random_windows(image, 300, 50, seed=0)  # free offsets: up to 3 x 3 blocks
    assert decode_amplification(free.row_off, free.col_off, 300, BlockLayout(256, 256), 1024, 1024).amplification > 1
    drawn = random_windows(image, 300, 50, seed=0, align="blocks")
    assert decode_amplification(drawn.row_off, drawn.col_off, 300, BlockLayout(256, 256), 1024, 1024).above_minimum == 0
    assert_patches_come_from_their_offsets(image, mask, aligned, 300)


def test_aligned_grid_windows_round_the_stride_down_to_the_block(tmp_path: Path) -> None:
    image = write(tmp_path / "i.tif", 1024, 1024)
    aligned = grid_windows(image, 512, stride=300, align="blocks")  # 300 -> 256: still every pixel covered
    assert sorted(set(aligned.row_off)) == [0, 256, 512]
    assert coverage(aligned, 512, 1024, 1024).min() >= 1 and aligned.attrs["edge_uncovered"] == (0, 0)
    small = grid_windows(image, 256, stride=100, align="blocks")  # shorter than a block -> one block
    assert sorted(set(small.col_off)) == [0, 256, 512, 768]


def test_aligned_windows_of_a_patch_dividing_the_block_lie_in_one_block(tmp_path: Path) -> None:
    image, mask = write(tmp_path / "i.tif", 700, 600), write_mask(tmp_path / "m.tif", 700, 600)
    aligned = grid_windows(image, 128, align="blocks")
    assert (aligned.row_off % 128 == 0).all() and (aligned.col_off % 128 == 0).all()
    assert ((aligned.row_off // 256) == ((aligned.row_off + 127) // 256)).all()
    assert sorted(set(aligned.row_off)) == [0, 128, 256, 384, 512]  # 700 - 640 = 60 rows at the edge uncovered
    assert aligned.attrs["edge_uncovered"] == (60, 88)
    drawn = random_windows(image, 128, 300, seed=5, align="blocks")
    assert (drawn.row_off % 128 == 0).all() and (drawn.col_off % 128 == 0).all()
    assert_patches_come_from_their_offsets(image, mask, drawn.iloc[:20], 128)


def test_aligned_random_windows_start_on_blocks_inside_and_reproducible(tmp_path: Path) -> None:
    image, mask = write(tmp_path / "i.tif", 1100, 1300), write_mask(tmp_path / "m.tif", 1100, 1300)
    drawn = random_windows(image, 256, 2000, seed=7, align="blocks")
    assert len(drawn) == 2000  # the same n as without align
    assert (drawn.row_off % 256 == 0).all() and (drawn.col_off % 256 == 0).all()
    assert (drawn.row_off + 256 <= 1100).all() and (drawn.col_off + 256 <= 1300).all()
    # Uniform over the aligned offsets: every admissible one is drawn (rows 0..768, cols 0..1024).
    assert sorted(set(drawn.row_off)) == [0, 256, 512, 768] and sorted(set(drawn.col_off)) == [0, 256, 512, 768, 1024]
    assert drawn.equals(random_windows(image, 256, 2000, seed=7, align="blocks"))
    # Unaligned draws are unchanged by the new option.
    assert random_windows(image, 256, 50, seed=7).equals(random_windows(image, 256, 50, seed=7, align=None))
    assert_patches_come_from_their_offsets(image, mask, drawn.iloc[:10], 256)


def test_aligned_windows_inside_an_aoi(tmp_path: Path) -> None:
    image = write(tmp_path / "i.tif", 1024, 1024)
    # An AOI over pixels cols 100..900, rows 300..1000 (map y = 5600000 - row).
    aoi = shapely.box(500100, 5600000 - 1000, 500900, 5600000 - 300)
    for frame in (
        grid_windows(image, 256, aoi=aoi, align="blocks"),
        random_windows(image, 256, 200, seed=1, aoi=aoi, align="blocks"),
    ):
        assert (frame.row_off % 256 == 0).all() and (frame.col_off % 256 == 0).all()
        assert set(frame.row_off) == {512} and set(frame.col_off) == {256, 512}  # the only aligned fits
        assert (frame.col_off >= 100).all() and (frame.col_off + 256 <= 900).all()
    with pytest.raises(ConfigError, match="block-aligned"):
        random_windows(
            image, 256, 5, seed=1, aoi=shapely.box(500100, 5600000 - 400, 500400, 5600000 - 100), align="blocks"
        )


def test_aligned_windows_on_strips_align_rows_only(tmp_path: Path) -> None:
    image, mask = (
        write(tmp_path / "s.tif", 500, 400, tiled=False, blockysize=16),
        write_mask(tmp_path / "m.tif", 500, 400),
    )
    aligned = grid_windows(image, 64, stride=50, align="blocks")
    assert (aligned.row_off % 16 == 0).all()  # stride 50 -> 48 (3 strips)
    assert sorted(set(aligned.row_off))[:3] == [0, 48, 96]
    free_cols = sorted(set(grid_windows(image, 64, stride=50).col_off))
    assert sorted(set(aligned.col_off)) == free_cols  # one strip spans the width: columns as without align
    drawn = random_windows(image, 64, 100, seed=2, align="blocks")
    assert (drawn.row_off % 16 == 0).all() and (drawn.col_off % 16 != 0).any()
    assert_patches_come_from_their_offsets(image, mask, drawn.iloc[:10], 64)


def test_align_refuses_a_patch_size_that_does_not_fit_the_blocks(tmp_path: Path) -> None:
    image = write(tmp_path / "i.tif", 1024, 1024)
    for make in (
        lambda: grid_windows(image, 100, align="blocks"),
        lambda: random_windows(image, 100, 4, seed=0, align="blocks"),
    ):
        with pytest.raises(ConfigError) as caught:
            make()
        text = str(caught.value)
        assert "patch_size 100 is smaller than the image's 256 x 256 blocks" in text and str(image) in text
        assert "Use patch_size 64 or 128" in text and "leave align unset" in text
    with pytest.raises(ConfigError, match="needs the image path"):  # a Grid has no blocks (nor has a warped image)
        grid_windows(Grid(100, 100, TRANSFORM, CRS), 64, align="blocks")
    with pytest.raises(OptionError, match="align must be None or 'blocks'"):
        grid_windows(image, 256, align="tiles")


def test_aligned_grid_logs_the_uncovered_edge(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = write(tmp_path / "i.tif", 600, 512)
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        grid_windows(image, 256, align="blocks")
    assert "leaves the last 88 row(s) and 0 column(s) in no window" in caplog.text


# --------------------------------------------------------------------------- stats and validate


def run(*argv: Any) -> tuple[int, str]:
    from crossgeo.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def config(tmp_path: Path, name: str, rows: list[int], cols: list[int], size: int = 256, **extra: Any) -> Path:
    yaml = pytest.importorskip("yaml")
    image, mask = write(tmp_path / "i.tif", 1024, 1024), write_mask(tmp_path / "m.tif", 1024, 1024)
    windows = T.write_windows_table(tmp_path / f"{name}.csv", rows, cols)
    options = {
        "image_path": str(image),
        "mask_path": str(mask),
        "crops_path": str(windows),
        "patch_size": size,
        "image_dtype": "native",
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"train_dataset": options}))
    return path


def test_stats_and_validate_report_the_amplification_and_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    # Windows at 100-pixel offsets: (0, 0) 1 block, (100, 100) 4, (300, 0) 2, (600, 600) 4 -> mean 11/4.
    unaligned = config(tmp_path, "free", [0, 100, 300, 600], [0, 100, 0, 600])
    code, out = run("stats", unaligned, "--json", tmp_path / "s.json")
    assert code == 0
    assert "256 x 256 tiles: 2.75 block(s) decoded per patch, minimum 1 (amplification x2.75); 75% of 4" in out
    assert "fix: snap the windows to the blocks: crossgeo windows --align blocks" in out
    blocks = json.loads((tmp_path / "s.json").read_text())["blocks"]
    assert blocks["amplification"] == 2.75 and blocks["share_above_minimum"] == 0.75 and blocks["minimum"] == 1
    assert blocks["block_shape"] == [256, 256] and blocks["mask_amplification"] == 2.75
    code, out = run("validate", unaligned)
    assert code == 0
    assert "warn  blocks" in out and "amplification x2.75" in out and 'align="blocks"' in out
    aligned = config(tmp_path, "aligned", [0, 256, 512], [0, 512, 768])
    code, out = run("validate", aligned, "--strict")
    assert code == 0 and "ok    blocks        256 x 256 tiles: 1.00 block(s) decoded per patch, minimum 1" in out


def test_validate_names_retiling_for_a_patch_that_does_not_fit_and_for_strips(tmp_path: Path) -> None:
    large = config(tmp_path, "large", [250], [250], size=300)  # 3 x 3 blocks against 2 x 2: snapping helps
    _, out = run("validate", large)
    assert "warn  blocks" in out and "amplification x2.25" in out and "snap the windows" in out
    small = config(tmp_path, "small", [200], [200], size=100)  # 2 x 2 blocks against 1; 100 does not divide 256
    _, out = run("validate", small)
    assert "warn  blocks" in out and "patch_size 100 is smaller than the 256 x 256 blocks" in out
    image = write(tmp_path / "strips.tif", 1024, 1024, tiled=False, blockysize=8)
    mask = write_mask(tmp_path / "m.tif", 1024, 1024)
    sampler = PatchSampler(
        str(image), str(mask), pd.DataFrame({"row_off": [0], "col_off": [0]}), 128, image_dtype="native"
    )
    found = block_decoding(sampler)
    assert found.image is not None and found.image.layout == BlockLayout(8, 1024)
    assert found.image.amplification == 1.0 and found.image.decoded_pixels == pytest.approx(8.0)
    fix = found.fix()
    assert fix is not None and "whole-width strips" in fix and "TILED=YES" in fix
    # One row off the 8-row strips: 17 strips against 16 (x1.06) is worth snapping; x1.03 is not.
    off = PatchSampler(str(image), str(mask), pd.DataFrame({"row_off": [1], "col_off": [0]}), 128, image_dtype="native")
    assert "snap the windows" in (block_decoding(off).fix() or "")
    mixed = pd.DataFrame({"row_off": [0, 1], "col_off": [0, 0]})
    half = block_decoding(PatchSampler(str(image), str(mask), mixed, 128, image_dtype="native"))
    assert half.image is not None and half.image.share_above == 0.5 and "snap" not in (half.fix() or "")


def test_block_decoding_is_not_measured_for_a_warped_image(tmp_path: Path) -> None:
    image, mask = write(tmp_path / "i.tif", 512, 512), write_mask(tmp_path / "m.tif", 512, 512)
    windows = pd.DataFrame({"row_off": [0, 100], "col_off": [0, 100]})
    warped = PatchSampler(str(image), str(mask), windows, 128, target_crs="EPSG:3857", image_dtype="native")
    found = block_decoding(warped)
    assert found.image is None and "warped" in found.reason and found.fix() is None
    assert found.describe().startswith("not measured: the image is warped")


# --------------------------------------------------------------------------- the benchmark


def test_blocks_bench_runs_and_checks_its_patches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("benchmarks", None)
    from benchmarks import blocks_bench

    result = blocks_bench.measure(1024, 6, 1, tmp_path)
    assert set(result["variants"]) == {"random", "grid, shuffled", "grid, row-major"}
    for entry in result["variants"].values():
        assert entry["aligned"]["amplification"] == 1.0 and entry["unaligned"]["blocks_per_patch"] > 1
        assert entry["ratio"] > 0
    assert "aligned / unaligned" in blocks_bench.format_result(result)


def test_windows_command_align_blocks(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    path = config(tmp_path, "cli", [0], [0])
    out = tmp_path / "aligned.csv"
    code, _ = run("windows", path, "--random", 40, "--align", "blocks", "--seed", 3, "--out", out)
    assert code == 0
    table = pd.read_csv(out)
    assert len(table) == 40 and (table.row_off % 256 == 0).all() and (table.col_off % 256 == 0).all()
    code, _ = run("windows", path, "--grid", 128, "--align", "blocks", "--out", out)  # stride 128 -> one tile
    table = pd.read_csv(out)
    assert code == 0 and sorted(set(table.row_off)) == [0, 256, 512, 768] and len(table) == 16
    warped = config(tmp_path, "warped", [0], [0], target_crs="EPSG:3857")
    from crossgeo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["windows", str(warped), "--align", "blocks", "--out", str(out)])
    assert code == 1 and 'align="blocks"' in err.getvalue() and "warped image" in err.getvalue()


def test_block_decoding_of_a_catalogue_sums_its_scenes(tmp_path: Path) -> None:
    from crossgeo import SceneSampler

    # Three 512 x 512 scenes of 256 x 256 tiles, windows (0, 0) -> 1 tile and (100, 100) -> 4 in each.
    scenes, mask = T.write_scene_catalogue(tmp_path, 3, size=512, windows=((0, 0), (100, 100)))
    sampler = SceneSampler(scenes, 256, mask_path=mask, n_classes=4)
    found = block_decoding(sampler)
    assert found.image is not None and found.scope == "3 scenes"
    assert found.image.windows == 6 and found.image.mean_blocks == 2.5 and found.image.above_minimum == 3
    assert found.describe().startswith("3 scenes: 256 x 256 tiles: 2.50 block(s) decoded per patch, minimum 1")
    fix = found.fix()
    assert fix is not None and 'align="blocks"' in fix
