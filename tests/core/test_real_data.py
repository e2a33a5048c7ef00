"""Acceptance tests on real third-party rasters (../shared/data/real; skipped when absent).

Expected figures come from that folder's README (measured independently of crossgeo).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import Window

from crossgeo import PatchSampler
from crossgeo import testing as T


def test_mbtiles_image_with_4326_land_mask_and_city_windows(real_data: Path) -> None:
    """plain_3.mbtiles (EPSG:3857, RGBA PNG tiles) x world.byte.tif (EPSG:4326) x cities."""
    sampler = PatchSampler(
        real_data / "plain_3.mbtiles",
        real_data / "world.byte.tif",
        real_data / "naturalearth_cities.shp",
        256,
        selected_bands=[1, 2, 3],
    )
    report = sampler.index.report
    # README: 51 of the 243 cities fall inside plain_3; the others are dropped, not clamped.
    assert (len(sampler), report.kept, report.outside_dropped) == (51, 51, 192)
    assert not sampler.aligned
    agreement, centre_land = [], []
    with rasterio.open(real_data / "plain_3.mbtiles") as src:
        for i in range(len(sampler)):
            patch = sampler[i]
            direct = src.read([1, 2, 3], window=Window(patch.col_off, patch.row_off, 256, 256))
            np.testing.assert_array_equal(patch.image, direct)
            land_on_map = patch.image[0] < 250  # README: land ~237 grey, water 254-255 white
            agreement.append(np.mean(land_on_map == (patch.mask == 1)))
            centre_land.append(patch.mask[128, 128] == 1)
    # README: "map pixel < 250" agrees with "mask == 1" on 97.2 % of plain_3.
    assert np.mean(agreement) >= 0.93, np.mean(agreement)
    assert np.mean(centre_land) >= 0.85  # capital cities lie on land


def test_world_mbtiles_with_antimeridian_bounds(real_data: Path) -> None:
    """plain_1.mbtiles reaches slightly past +/-180 degrees; overlap maths must not break."""
    sampler = PatchSampler(
        real_data / "plain_1.mbtiles",
        real_data / "world.byte.tif",
        real_data / "naturalearth_cities.shp",
        128,
        selected_bands=[1, 2, 3],
    )
    assert len(sampler) == 243 and sampler.index.report.outside_dropped == 0
    assert 0.6 < sampler.mask_coverage < 0.95
    agreement = [np.mean((p.image[0] < 250) == (p.mask == 1)) for p in (sampler[i] for i in range(0, 243, 3))]
    assert np.mean(agreement) >= 0.95


def test_geotiff_image_with_box_window_and_land_mask(real_data: Path) -> None:
    """RGB.byte.tif (UTM 18N, nodata 0) x world.byte.tif, window from box.shp (same CRS)."""
    sampler = PatchSampler(real_data / "RGB.byte.tif", real_data / "world.byte.tif", real_data / "box.shp", 256)
    with rasterio.open(real_data / "RGB.byte.tif") as src:
        left, bottom, right, top = gpd.read_file(real_data / "box.shp").total_bounds
        col, row = ~src.transform @ ((left + right) / 2, (bottom + top) / 2)
        expected = (int(np.floor(row - 128 + 0.5)), int(np.floor(col - 128 + 0.5)))
        assert (int(sampler.row_off[0]), int(sampler.col_off[0])) == expected
        patch = sampler[0]
        np.testing.assert_array_equal(patch.image, src.read(window=Window(expected[1], expected[0], 256, 256)))
    valid = (patch.image != 0).any(axis=0)
    land, water = valid & (patch.mask == 1), valid & (patch.mask == 0)
    assert land.sum() > 1000 and water.sum() > 1000
    # README: land is brighter than water (mean R 74.9 vs 35.0 over the scene).
    assert patch.image[0][land].mean() > patch.image[0][water].mean() + 20


def test_geotiff_window_past_the_edge_is_filled_with_nodata(real_data: Path, tmp_path: Path) -> None:
    windows = T.write_windows_table(tmp_path / "w.csv", [-100, 600], [700, -50])
    sampler = PatchSampler(real_data / "RGB.byte.tif", real_data / "world.byte.tif", windows, 256)
    with rasterio.open(real_data / "RGB.byte.tif") as src:
        height, width = src.shape
        for i in range(2):
            patch = sampler[i]
            r0, c0 = patch.row_off, patch.col_off
            assert patch.image.shape == (3, 256, 256)
            rows, cols = np.mgrid[r0 : r0 + 256, c0 : c0 + 256]
            outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
            assert (patch.image[:, outside] == 0).all() and (patch.mask[outside] == 0).all()
            rs, cs = max(r0, 0), max(c0, 0)
            direct = src.read(window=Window(cs, rs, min(c0 + 256, width) - cs, min(r0 + 256, height) - rs))
            np.testing.assert_array_equal(
                patch.image[:, rs - r0 : rs - r0 + direct.shape[1], cs - c0 : cs - c0 + direct.shape[2]], direct
            )
