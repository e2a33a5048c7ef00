"""Windows as data (crossgeo.planning): geometry, exact class fractions, balance, splits, weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine

from crossgeo import (
    ConfigError,
    Grid,
    OptionError,
    OptionTypeError,
    PatchSampler,
    WindowPlan,
    balanced_windows,
    class_fractions,
    grid_windows,
    plan_windows,
    random_windows,
    spatial_split,
    window_weights,
)
from crossgeo import testing as T
from crossgeo.testing import PALETTE, CoordinateScene

GRID = Grid(300, 200, Affine(10, 0, 500000, 0, -10, 4000000), "EPSG:32632")


def coverage(frame: pd.DataFrame, size: int, height: int, width: int) -> np.ndarray:
    counts = np.zeros((height, width), dtype=np.int64)
    for r, c in zip(frame.row_off, frame.col_off):
        counts[max(r, 0) : r + size, max(c, 0) : c + size] += 1
    return counts


# --------------------------------------------------------------------------- grid and random windows


@pytest.mark.parametrize(
    ("height", "width", "size", "stride"),
    [(300, 200, 64, None), (300, 200, 64, 32), (300, 200, 50, 70), (256, 256, 64, None), (40, 30, 64, None)],
)
def test_grid_windows_cover_every_pixel_and_stay_inside(height: int, width: int, size: int, stride: int | None) -> None:
    grid = Grid(height, width, GRID.transform, GRID.crs)
    frame = grid_windows(grid, size, stride=stride)
    assert frame.row_off.dtype == np.int64 and frame.col_off.dtype == np.int64
    assert len(frame) == len(frame.drop_duplicates())
    if height < size or width < size:  # smaller than the patch: one window at the origin
        assert frame[["row_off", "col_off"]].values.tolist() == [[0, 0]]
        return
    assert (frame.row_off >= 0).all() and (frame.col_off >= 0).all()
    assert (frame.row_off + size <= height).all() and (frame.col_off + size <= width).all()
    covered = coverage(frame, size, height, width)
    if stride is None or stride <= size:
        assert covered.min() >= 1
    else:  # a stride longer than the patch leaves gaps by request; the edges are still reached
        assert covered[-1].max() >= 1 and covered[:, -1].max() >= 1
    step = stride or size
    rows = sorted(set(frame.row_off))
    assert rows[: len(rows) - 1] == list(range(0, step * (len(rows) - 1), step))
    assert rows[-1] == height - size  # flush with the bottom edge


def test_grid_windows_from_a_raster_path(scene: CoordinateScene) -> None:
    frame = grid_windows(scene.image, 128, stride=100)
    with rasterio.open(scene.image) as src:
        assert (src.height, src.width) == (512, 512)
    assert sorted(set(frame.row_off)) == [0, 100, 200, 300, 384]
    assert len(frame) == 25


def test_random_windows_inside_uniform_and_reproducible() -> None:
    size, n = 64, 20000
    frame = random_windows(GRID, size, n, seed=3)
    assert len(frame) == n
    assert frame.row_off.min() >= 0 and frame.row_off.max() <= GRID.height - size
    assert frame.col_off.min() >= 0 and frame.col_off.max() <= GRID.width - size
    # Both ends of the range are reachable and every offset is about equally likely (chi-square, 8 bins).
    for values, high in ((frame.row_off, GRID.height - size), (frame.col_off, GRID.width - size)):
        assert values.min() == 0 and values.max() == high
        observed = np.bincount(values.to_numpy() * 8 // (high + 1), minlength=8)
        expected = np.diff(np.ceil(np.arange(9) * (high + 1) / 8)) * n / (high + 1)
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        assert chi2 < 24.3, (observed, expected)  # 99.9 % quantile of chi-square with 7 degrees of freedom
    pd.testing.assert_frame_equal(frame, random_windows(GRID, size, n, seed=3))
    assert not frame.equals(random_windows(GRID, size, n, seed=4))


def test_random_windows_smaller_image_than_patch() -> None:
    frame = random_windows(Grid(20, 30, GRID.transform, GRID.crs), 64, 5, seed=0)
    assert frame.values.tolist() == [[0, 0]] * 5


# --------------------------------------------------------------------------- AOI


def _aoi_file(path: Path, polygon: Any, crs: str) -> Path:
    import geopandas as gpd

    gpd.GeoDataFrame({"id": [1]}, geometry=[polygon], crs=crs).to_file(path, engine="pyogrio")
    return path


def test_aoi_vector_file_in_another_crs(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    import geopandas as gpd

    left, bottom, right, top = scene.lonlat_bounds
    # A triangle in lon/lat over the image's south-west half.
    triangle = shapely.Polygon([(left - 0.01, top + 0.01), (left - 0.01, bottom - 0.01), (right + 0.01, bottom - 0.01)])
    aoi = _aoi_file(scene.path("aoi.gpkg"), triangle, "EPSG:4326")
    size = 64
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        frame = grid_windows(scene.image, size, stride=32, aoi=aoi)
    everything = grid_windows(scene.image, size, stride=32)
    dropped = len(everything) - len(frame)
    assert 0 < len(frame) < len(everything) and frame.attrs["aoi_dropped"] == dropped
    assert f"{dropped} of {len(everything)} windows" in caplog.text
    # Independently: the AOI in the image CRS (geopandas) contains each kept window's map box, not the dropped ones.
    in_image_crs = gpd.GeoSeries([triangle], crs="EPSG:4326").to_crs(scene.crs).iloc[0]
    t = scene.transform

    def box(r: int, c: int) -> Any:
        x0, y0 = t @ (c, r)
        x1, y1 = t @ (c + size, r + size)
        return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    kept = set(zip(frame.row_off, frame.col_off))
    for r, c in zip(everything.row_off, everything.col_off):
        assert in_image_crs.contains(box(r, c)) == ((r, c) in kept), (r, c)

    windows = random_windows(scene.image, size, 300, seed=1, aoi=aoi)
    assert len(windows) == 300
    assert all(in_image_crs.contains(box(r, c)) for r, c in zip(windows.row_off, windows.col_off))
    assert windows.attrs["aoi_dropped"] > 0
    pd.testing.assert_frame_equal(windows, random_windows(scene.image, size, 300, seed=1, aoi=aoi))


def test_aoi_shapely_geometry_in_image_crs() -> None:
    t = GRID.transform
    # Pixel rectangle rows 10..150, cols 20..120 as a map polygon.
    (x0, y0), (x1, y1) = t @ (20, 10), t @ (120, 150)
    aoi = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    frame = grid_windows(GRID, 32, stride=16, aoi=aoi)
    assert frame.row_off.min() >= 10 and (frame.row_off + 32).max() <= 150
    assert frame.col_off.min() >= 20 and (frame.col_off + 32).max() <= 120
    expected = [(r, c) for r in range(0, 300 - 32 + 1, 16) for c in range(0, 200 - 32 + 1, 16)]
    expected = [(r, c) for r, c in expected if r >= 10 and r + 32 <= 150 and c >= 20 and c + 32 <= 120]
    assert sorted(zip(frame.row_off, frame.col_off)) == sorted(expected)
    windows = random_windows(GRID, 32, 500, seed=0, aoi=aoi)
    assert windows.row_off.between(10, 150 - 32).all() and windows.col_off.between(20, 120 - 32).all()


def test_aoi_bad_input(tmp_path: Path) -> None:
    far = shapely.box(0, 0, 10, 10)  # far from the grid's map extent
    with pytest.raises(ConfigError, match=r"aoi .*does not overlap"):
        grid_windows(GRID, 32, aoi=far)
    tiny = shapely.box(*(GRID.transform @ (5, 5)), *(GRID.transform @ (10, 10)))
    with pytest.raises(ConfigError, match="aoi admits no"):
        random_windows(GRID, 32, 3, seed=0, aoi=tiny)
    with pytest.raises(ConfigError, match="aoi admits no"):
        grid_windows(GRID, 32, aoi=tiny)
    import geopandas as gpd

    gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.box(500000, 3998000, 501000, 4000000)]).to_file(
        tmp_path / "nocrs.shp", engine="pyogrio"
    )
    with pytest.raises(ConfigError, match=r"aoi .*has no CRS"):
        grid_windows(GRID, 32, aoi=tmp_path / "nocrs.shp")
    with pytest.raises(ConfigError, match=r"aoi .*does not exist"):
        grid_windows(GRID, 32, aoi=tmp_path / "missing.gpkg")
    with pytest.raises(OptionError, match="aoi must be"):
        grid_windows(GRID, 32, aoi=[1, 2, 3])


# --------------------------------------------------------------------------- class fractions


def per_window_truth(sampler: PatchSampler) -> pd.DataFrame:
    """The reference: count classes of ``sampler[i].mask`` where ``mask_valid``, window by window."""
    size = sampler.patch_size
    rows: list[dict[str, Any]] = []
    for i in range(len(sampler)):
        patch = sampler[i]
        valid = patch.mask_valid if patch.mask_valid is not None else np.ones_like(patch.mask, bool)
        classes = np.bincount(patch.mask[valid], minlength=sampler.n_classes)
        rows.append(
            {"valid": np.count_nonzero(valid) / size**2, **{f"class_{k}": n / size**2 for k, n in enumerate(classes)}}
        )
    return pd.DataFrame(rows)


def assert_exact(sampler: PatchSampler) -> pd.DataFrame:
    frame = class_fractions(sampler)
    truth = per_window_truth(sampler)
    assert list(frame.columns) == ["row_off", "col_off", *truth.columns]
    assert frame.row_off.tolist() == sampler.row_off.tolist() and frame.col_off.tolist() == sampler.col_off.tolist()
    np.testing.assert_array_equal(frame[truth.columns].to_numpy(), truth.to_numpy())  # exact, not approximate
    np.testing.assert_allclose(frame.filter(like="class_").sum(axis=1), frame.valid, rtol=0, atol=1e-12)
    return frame


def _overlapping_windows(scene: CoordinateScene, size: int, stride: int, name: str = "windows.csv") -> Path:
    """Overlapping windows, the first row and column starting outside the image, the last reaching past it."""
    offsets = np.arange(-size // 2, scene.size - size // 4, stride)
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    return scene.windows(rows.ravel(), cols.ravel(), name)


def test_class_fractions_exact_on_an_aligned_class_mask_with_nodata(scene: CoordinateScene) -> None:
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 5, (1, 512 + 40, 512 + 40)).astype(np.uint8)
    classes[:, 100:160, 200:300] = 255  # nodata
    mask = scene.aligned_mask(classes, pad=20, nodata=255)
    sampler = PatchSampler(scene.image, mask, _overlapping_windows(scene, 96, 40), 96, n_classes=5)
    assert sampler.aligned
    frame = assert_exact(sampler)
    assert (frame.valid < 1).sum() > 10 and (frame.valid == 1).sum() > 10  # outside and nodata pixels occur


def test_class_fractions_exact_on_a_mask_smaller_than_the_image(scene: CoordinateScene) -> None:
    classes = (T.coordinate_bands(400, 400, "uint16")[1] // 50 % 3).astype(np.uint8)[None]
    mask = T.write_raster(scene.path("small.tif"), classes, crs=scene.crs, transform=scene.transform)
    sampler = PatchSampler(scene.image, mask, _overlapping_windows(scene, 64, 48), 64, n_classes=3, mask_fill_value=2)
    frame = assert_exact(sampler)
    assert (frame.valid == 0).any()


@pytest.mark.parametrize("palette", [None, PALETTE])
def test_class_fractions_exact_on_a_warped_lonlat_mask(scene: CoordinateScene, palette: Any) -> None:
    # The mask (EPSG:4326) stops short of the image on every side: windows hold uncovered pixels too.
    mask = scene.lonlat_mask("m.tif", margin=-0.003, resolution=0.00011, palette=palette)
    options: dict[str, Any] = {"n_classes": 4}
    if palette is not None:
        options["color_map"] = [[r, g, b, k] for k, (r, g, b) in enumerate(palette)]
    sampler = PatchSampler(scene.image, mask, _overlapping_windows(scene, 80, 40), 80, **options)
    assert not sampler.aligned
    frame = assert_exact(sampler)
    assert ((frame.valid > 0) & (frame.valid < 1)).sum() > 10
    assert all((frame[f"class_{k}"] > 0).any() for k in range(4))


def test_class_fractions_exact_on_a_mask_in_a_projected_crs(scene: CoordinateScene) -> None:
    """A UTM mask under a Web Mercator image: the warp's scanlines are curved, so region reads must match windows."""
    from rasterio.warp import transform_bounds

    with rasterio.open(scene.image) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:32632", *src.bounds)
    mask = T.write_lonlat_mask(
        scene.path("utm.tif"),
        (left - 200, bottom - 200, right + 200, top + 200),
        9.0,
        cell=0.004,
        n_classes=4,
        crs="EPSG:32632",
    )
    sampler = PatchSampler(scene.image, mask, _overlapping_windows(scene, 128, 64), 128, n_classes=4)
    assert not sampler.aligned
    assert_exact(sampler)


def test_class_fractions_exact_on_real_data(real_data: Path, tmp_path: Path) -> None:
    """Landsat RGB.byte.tif (UTM 18N) with the world land mask (EPSG:4326, 0.125 degree pixels)."""
    image = real_data / "RGB.byte.tif"
    windows = grid_windows(image, 128, stride=64)
    crops = tmp_path / "windows.parquet"
    windows.to_parquet(crops)
    sampler = PatchSampler(image, real_data / "world.byte.tif", crops, 128, n_classes=2)
    frame = assert_exact(sampler)
    assert len(frame) == len(windows) and (frame.class_1 > 0).any() and (frame.class_0 > 0).any()


def test_read_mask_region_equals_read_mask(scene: CoordinateScene) -> None:
    mask = scene.lonlat_mask("m.tif", margin=-0.003, resolution=0.00011)
    sampler = PatchSampler(scene.image, mask, scene.windows([0], [0]), 64, n_classes=4)
    classes, valid = sampler.read_mask_region(-10, 100, 300, 64)
    for r in (-10, 50, 226):
        expected, expected_valid = sampler.read_mask(r, 100)
        np.testing.assert_array_equal(classes[r + 10 : r + 74], expected)
        np.testing.assert_array_equal(valid[r + 10 : r + 74], expected_valid)
    assert classes.dtype == np.int64 and valid.dtype == bool and classes.shape == (300, 64)


# --------------------------------------------------------------------------- balance


def rare_class_scene(scene: CoordinateScene) -> PatchSampler:
    """Classes 0 (background) and 1 (common stripes) everywhere, class 2 in 4 small squares (rare)."""
    data = np.zeros((512, 512), dtype=np.uint8)
    data[:, ::7] = 1
    for r, c in ((40, 40), (300, 100), (100, 420), (450, 450)):
        data[r : r + 6, c : c + 6] = 2
    mask = scene.aligned_mask(data[None], "rare.tif")
    windows = grid_windows(scene.image, 32, stride=8)
    crops = scene.path("grid.parquet")
    windows.to_parquet(crops)
    return PatchSampler(scene.image, mask, crops, 32, n_classes=3)


def test_balanced_windows_serve_a_rare_class(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    fractions = class_fractions(rare_class_scene(scene))
    before = (fractions.class_2 > 0).mean()
    assert 0.005 < before < 0.05  # rare among the candidates
    n = 600
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        chosen = balanced_windows(fractions, n, seed=0)
    assert len(chosen) == n and list(chosen.columns) == list(fractions.columns)
    after = (chosen.class_2 > 0).mean()
    assert abs(after - 1 / 3) < 0.05, (before, after)  # about 1/K of the chosen windows
    assert chosen.attrs["presence"]["before"]["class_2"] == pytest.approx(before)
    assert chosen.attrs["presence"]["after"]["class_2"] == pytest.approx(after)
    assert "class_2" in caplog.text and "->" in caplog.text
    # Rows come from the table; without replacement while enough candidates remain (class 2 has fewer here).
    merged = chosen.merge(fractions, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    rare_candidates = int((fractions.class_2 > 0).sum())
    assert chosen[chosen.class_2 == 0].duplicated().sum() == 0
    assert chosen[chosen.class_2 > 0].drop_duplicates().shape[0] == rare_candidates
    pd.testing.assert_frame_equal(chosen, balanced_windows(fractions, n, seed=0))
    assert not chosen.equals(balanced_windows(fractions, n, seed=1))


def test_plan_windows_returns_a_window_plan_record(scene: CoordinateScene) -> None:
    sampler = rare_class_scene(scene)
    config = {"image_path": scene.image, "mask_path": sampler.mask_path, "patch_size": 32, "n_classes": 3}
    splits = {"train": 0.75, "val": 0.25}
    plan = plan_windows(config, stride=16, balanced=120, splits=splits, block=128, seed=0, weights=True)
    assert isinstance(plan, WindowPlan) and len(plan) == len(plan.windows) == plan.counts["windows"]
    assert plan.windows.attrs == {}  # counts live on the record, not in pandas attrs (no Parquet metadata)
    assert set(plan.windows.columns) >= {"row_off", "col_off", "valid", "class_2", "split", "weight"}
    candidates = len(grid_windows(scene.image, 32, stride=16))
    assert plan.counts["candidates"] == candidates and plan.counts["aoi_dropped"] == 0
    kept = candidates - plan.counts["low_valid_dropped"] - plan.counts["straddling_dropped"]
    assert sum(plan.presence[name]["candidates"] for name in splits) == kept
    assert {name: plan.presence[name]["chosen"] for name in splits} == {"train": 90, "val": 30}
    assert plan.windows["split"].value_counts().to_dict() == {"train": 90, "val": 30}
    for name in splits:
        group = plan.windows[plan.windows["split"] == name]
        assert plan.presence[name]["after"]["class_2"] == pytest.approx((group.class_2 > 0).mean())
        assert plan.presence[name]["after"]["class_2"] > plan.presence[name]["before"]["class_2"]


def test_balanced_windows_min_fraction_and_classes(scene: CoordinateScene) -> None:
    fractions = class_fractions(rare_class_scene(scene))
    chosen = balanced_windows(fractions, 200, seed=0, classes=[2])
    assert (chosen.class_2 > 0).all()
    strict = balanced_windows(fractions, 200, seed=0, min_fraction=0.03)
    assert (strict.class_2 > 0.03).mean() == pytest.approx(1 / 3, abs=0.05)


# --------------------------------------------------------------------------- spatial split


def test_spatial_split_no_shared_pixel_and_shares(caplog: pytest.LogCaptureFixture) -> None:
    grid = Grid(4096, 4096, GRID.transform, GRID.crs)
    size, block = 64, 256
    windows = grid_windows(grid, size, stride=32)
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        split = spatial_split(windows, patch_size=size, block=block, seed=0)
    names = ["train", "val", "test"]
    assert set(split.split) == set(names)
    # No pixel is covered by windows of two splits (a coverage raster per split).
    owner = np.full((grid.height, grid.width), -1)
    for label, name in enumerate(names):
        part = split[split.split == name]
        covered = coverage(part, size, grid.height, grid.width) > 0
        assert not (covered & (owner >= 0)).any(), name
        owner[covered] = label
    shares = split.split.value_counts(normalize=True)
    for name, want in zip(names, (0.8, 0.1, 0.1)):
        assert abs(shares[name] - want) <= 0.05, shares
    # Straddlers: every dropped window spans two blocks; every window inside one block is kept.
    dropped = split.attrs["straddling_dropped"]
    assert dropped == len(windows) - len(split) > 0
    one_block = ((windows.row_off // block) == ((windows.row_off + size - 1) // block)) & (
        (windows.col_off // block) == ((windows.col_off + size - 1) // block)
    )
    kept = windows.index.isin(split.index)
    assert kept[one_block.to_numpy()].all()
    assert not (~kept & one_block.to_numpy()).any()
    assert f"{dropped} windows straddling" in caplog.text
    pd.testing.assert_frame_equal(split, spatial_split(windows, patch_size=size, block=block, seed=0))
    assert not split.equals(spatial_split(windows, patch_size=size, block=block, seed=1))


def test_spatial_split_custom_shares() -> None:
    windows = random_windows(Grid(8192, 8192, GRID.transform, GRID.crs), 32, 20000, seed=2)
    split = spatial_split(windows, {"a": 0.5, "b": 0.5}, patch_size=32, block=512, seed=5)
    shares = split.split.value_counts(normalize=True)
    assert abs(shares["a"] - 0.5) <= 0.05 and abs(shares["b"] - 0.5) <= 0.05


# --------------------------------------------------------------------------- weights


def test_window_weights_formula() -> None:
    table = pd.DataFrame(
        {
            "row_off": [0, 0, 64, 64],
            "col_off": [0, 64, 0, 64],
            "valid": [1.0, 1.0, 0.5, 0.0],
            "class_0": [1.0, 0.9, 0.5, 0.0],
            "class_1": [0.0, 0.1, 0.0, 0.0],
        }
    )
    # Class frequencies over valid pixels: class 0 = 2.4 / 2.5, class 1 = 0.1 / 2.5.
    f0, f1 = 2.4 / 2.5, 0.1 / 2.5
    raw = np.array([1.0 / f0, 0.9 / f0 + 0.1 / f1, 0.5 / f0, 0.0])
    weights = window_weights(table)
    np.testing.assert_allclose(weights.weight, raw / raw.mean())
    assert weights.weight.mean() == pytest.approx(1.0) and weights.weight.iloc[3] == 0
    half = window_weights(table, power=0.5).weight
    raw_half = np.array([1.0 * f0**-0.5, 0.9 * f0**-0.5 + 0.1 * f1**-0.5, 0.5 * f0**-0.5, 0.0])
    np.testing.assert_allclose(half, raw_half / raw_half.mean())
    np.testing.assert_allclose(window_weights(table, power=0).weight, table.valid / table.valid.mean())


# --------------------------------------------------------------------------- bad input


FRACTIONS = pd.DataFrame(
    {"row_off": [0, 32], "col_off": [0, 0], "valid": [1.0, 1.0], "class_0": [1.0, 0.5], "class_1": [0.0, 0.5]}
)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: grid_windows(GRID, 0), ConfigError, "patch_size must be >= 1"),
        (lambda: grid_windows(GRID, 32, stride=0), ConfigError, "stride must be >= 1"),
        (lambda: grid_windows(GRID, 32, stride=-4), ConfigError, "stride must be >= 1"),
        (lambda: grid_windows(GRID, 32.5), OptionTypeError, "patch_size must be an integer"),
        (lambda: grid_windows(42, 32), OptionTypeError, "image must be a raster path or a crossgeo.Grid"),
        (lambda: grid_windows("/nonexistent/image.tif", 32), ConfigError, "image .* does not exist"),
        (lambda: random_windows(GRID, 32, 0, seed=0), ConfigError, "n must be >= 1"),
        (lambda: random_windows(GRID, 32, 5, seed=-1), ConfigError, "seed must be"),
        (lambda: random_windows(GRID, 32, 5, seed=1.5), OptionTypeError, "seed must be"),
        (lambda: random_windows(GRID, -1, 5, seed=0), ConfigError, "patch_size must be >= 1"),
        (lambda: balanced_windows(FRACTIONS, 0, seed=0), ConfigError, "n must be >= 1"),
        (
            lambda: balanced_windows(FRACTIONS[["row_off", "col_off"]], 5, seed=0),
            ConfigError,
            "fractions has no class columns",
        ),
        (
            lambda: balanced_windows(FRACTIONS.assign(class_1=[np.nan, 0.5]), 5, seed=0),
            ConfigError,
            r"fractions\['class_1'\] holds NaN",
        ),
        (
            lambda: balanced_windows(FRACTIONS.assign(row_off=[np.nan, 1.0]), 5, seed=0),
            ConfigError,
            r"fractions\['row_off'\] holds NaN",
        ),
        (lambda: balanced_windows(FRACTIONS, 5, seed=0, min_fraction=1.5), ConfigError, "min_fraction must be"),
        (lambda: balanced_windows(FRACTIONS, 5, seed=0, classes=[7]), ConfigError, "classes lists 7"),
        (
            lambda: balanced_windows(FRACTIONS.drop(columns="col_off"), 5, seed=0),
            ConfigError,
            "missing required columns",
        ),
        (
            lambda: spatial_split(FRACTIONS, {"a": 0.7, "b": 0.2}, patch_size=32, block=64, seed=0),
            ConfigError,
            "sum to 0.9",
        ),
        (
            lambda: spatial_split(FRACTIONS, {"a": 1.2, "b": -0.2}, patch_size=32, block=64, seed=0),
            ConfigError,
            r"fractions\['a'\]",
        ),
        (
            lambda: spatial_split(FRACTIONS, {"a": 0.5, "b": np.nan}, patch_size=32, block=64, seed=0),
            ConfigError,
            r"fractions\['b'\]",
        ),
        (
            lambda: spatial_split(FRACTIONS, patch_size=32, block=16, seed=0),
            ConfigError,
            "block .16. is smaller than patch_size",
        ),
        (lambda: spatial_split(FRACTIONS, patch_size=0, block=16, seed=0), ConfigError, "patch_size must be >= 1"),
        (
            lambda: spatial_split(FRACTIONS, [0.8, 0.2], patch_size=32, block=64, seed=0),
            OptionTypeError,
            "fractions must be a mapping",
        ),
        (
            lambda: window_weights(FRACTIONS[["row_off", "col_off", "valid"]]),
            ConfigError,
            "fractions has no class columns",
        ),
        (lambda: window_weights(FRACTIONS, power=-1), ConfigError, "power must be"),
        (
            lambda: window_weights(FRACTIONS.assign(class_0=[0.0, 0.0], class_1=[0.0, 0.0])),
            ConfigError,
            "no valid pixel",
        ),
        (lambda: window_weights(FRACTIONS.assign(class_0=[np.inf, 0.5])), ConfigError, "NaN or infinite"),
        (lambda: window_weights([1, 2]), OptionTypeError, "fractions must be a pandas.DataFrame"),
    ],
)
def test_bad_input_names_the_argument(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("layout", "n_classes", "fill", "band"),
    [
        ("grid", 5, 0, 32),  # every pixel valid: the last class is derived from the others
        ("grid", 5, 255, 32),  # ignore fill 255: classes read as uint16
        ("grid", 300, 0, 32),  # uint16 class mask with classes above 255
        ("random", 5, 0, 0),  # no row lattice: the bit-packed summed-area tables
        ("flush", 5, 0, 16),  # stride 48: the last row (416) flush with the edge makes the lattice finer
    ],
)
def test_class_fractions_exact_on_each_counting_path(
    scene: CoordinateScene, monkeypatch: pytest.MonkeyPatch, layout: str, n_classes: int, fill: int, band: int
) -> None:
    from crossgeo import planning

    rng = np.random.default_rng(1)
    dtype = np.uint16 if n_classes > 255 else np.uint8
    data = rng.integers(0, n_classes, (1, scene.size, scene.size)).astype(dtype)
    data[0, :, :7] = n_classes - 1  # the largest class occurs
    mask = scene.aligned_mask(data)
    if layout == "random":
        frame = random_windows(scene.image, 96, 40, seed=2)
    else:
        frame = grid_windows(scene.image, 96, stride=48 if layout == "flush" else 32)
    sampler = PatchSampler(scene.image, mask, frame, 96, n_classes=n_classes, mask_fill_value=fill)
    bands: list[int] = []
    original = planning._lattice_counts
    monkeypatch.setattr(
        planning,
        "_lattice_counts",
        lambda *a, **k: bands.append(a[5]) or original(*a, **k),  # type: ignore[func-returns-value]
    )
    result = assert_exact(sampler)
    assert set(bands) == ({band} if band else set())
    assert result[f"class_{n_classes - 1}"].gt(0).any()


def test_held_out_splits_are_never_oversampled(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    """Balancing repeats training windows of a rare class, never validation or test windows."""
    sampler = rare_class_scene(scene)
    config = {"image_path": scene.image, "mask_path": sampler.mask_path, "patch_size": 32, "n_classes": 3}
    splits = {"train": 0.5, "val": 0.25, "test": 0.25}
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        plan = plan_windows(config, stride=16, balanced=2000, splits=splits, block=128, seed=0)
    table = plan.windows
    for name in ("val", "test"):
        group = table[table.split == name]
        assert not group.duplicated(["row_off", "col_off"]).any()
        assert len(group) == plan.presence[name]["candidates"] < 500  # all of them, once
        assert f"balanced_windows (split '{name}'): {len(group)} window(s) instead of 500" in caplog.text
    train = table[table.split == "train"]
    assert len(train) == 1000 and train.duplicated(["row_off", "col_off"]).any()  # the rare class is oversampled
    # Fewer windows asked than candidates: distinct windows, the rest drawn once the class's own run out.
    frame = pd.DataFrame(
        {
            "row_off": np.arange(10),
            "col_off": 0,
            "class_0": 1.0,
            "class_1": [0.5, 0.5] + [0.0] * 8,
            "class_2": 0.0,
        }
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        chosen = balanced_windows(frame, 6, seed=0, oversample=False, split="val", class_names={2: "water"})
    assert len(chosen) == 6 and not chosen.duplicated().any() and (chosen.class_1 > 0).sum() == 2
    assert "balanced_windows (split 'val'): class_2 (water) is present in no candidate window" in caplog.text
    assert len(balanced_windows(frame, 6, seed=0)) == 6  # oversampling (the default) repeats class_1's two windows
