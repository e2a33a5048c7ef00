"""PatchDataset / MBTilesCropsGeoTifMaskDataset output: types, shapes, values vs the core."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_scene import CELL, COLOR_MAP, PATCH, WINDOWS, assert_window, expected_classes

from crossgeo import PatchSampler
from crossgeo.augment import to_model_inputs
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, PatchDataset


def test_output_types_shapes_dtypes(make_dataset):
    dataset = make_dataset()
    assert len(dataset) == len(WINDOWS)
    item = dataset[0]
    assert set(item) == {"image", "mask"}
    assert isinstance(item["image"], torch.Tensor) and isinstance(item["mask"], torch.Tensor)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, PATCH, PATCH)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (PATCH, PATCH)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def test_values_prove_the_window_and_match_the_core(make_dataset, scene):
    dataset = make_dataset()
    core = PatchSampler(
        scene.image_mbtiles, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP, selected_bands=[1, 2, 3]
    )
    for i, (row_off, col_off) in enumerate(WINDOWS):
        item = dataset[i]
        # The image decodes to exactly this window's pixel coordinates (uint8 / 255 scaling).
        assert_window(item["image"], row_off, col_off)
        # The VRT-mosaicked colour mask decodes to the known classes of those pixels.
        rows, cols = np.mgrid[row_off : row_off + PATCH, col_off : col_off + PATCH]
        np.testing.assert_array_equal(item["mask"].numpy(), expected_classes(rows, cols))
        # ... and is what the shared core function gives.
        image, mask = to_model_inputs(core[i], None)
        np.testing.assert_array_equal(item["image"].numpy(), image)
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
    # A window straddling the two VRT halves (cols 96..127 | 128..159) is seamless.
    assert WINDOWS[4] == (128, 128) and WINDOWS[7] == (160, 96)


def test_all_bands_of_the_mbtiles_and_the_geotiff_agree(scene):
    mbtiles = PatchDataset(
        PatchSampler(scene.image_mbtiles, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP)
    )
    geotiff = PatchDataset(PatchSampler(scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP))
    a, b = mbtiles[3]["image"], geotiff[3]["image"]
    assert a.shape == (4, PATCH, PATCH) and b.shape == (3, PATCH, PATCH)  # MBTiles reads RGBA
    torch.testing.assert_close(a[:3], b, rtol=0, atol=0)
    assert torch.all(a[3] == 1.0)


def test_return_metadata(make_dataset):
    dataset = make_dataset(return_metadata=True)
    for i, (row_off, col_off) in enumerate(WINDOWS):
        item = dataset[i]
        assert item["metadata"] == {"row_off": row_off, "col_off": col_off}
        assert type(item["metadata"]["row_off"]) is int and type(item["metadata"]["col_off"]) is int
        assert_window(item["image"], item["metadata"]["row_off"], item["metadata"]["col_off"])
    assert "metadata" not in make_dataset()[0]


def test_warped_single_band_mask_matches_the_geography(scene):
    """A lon/lat checkerboard mask in EPSG:4326 brought onto the Web Mercator image grid."""
    dataset = MBTilesCropsGeoTifMaskDataset(
        scene.image_tif, scene.mask_tif, scene.windows_csv, PATCH, n_classes=2, return_metadata=True
    )
    from rasterio.warp import transform as warp_transform

    from crossgeo.testing import lonlat_classes

    agree = []
    for i in range(len(dataset)):
        item = dataset[i]
        row_off, col_off = item["metadata"]["row_off"], item["metadata"]["col_off"]
        rows, cols = np.mgrid[row_off : row_off + PATCH, col_off : col_off + PATCH]
        xs, ys = scene.transform @ (cols + 0.5, rows + 0.5)
        lon, lat = warp_transform(scene.crs, "EPSG:4326", xs.ravel(), ys.ravel())
        truth = lonlat_classes(np.asarray(lon), np.asarray(lat), CELL, 2).reshape(PATCH, PATCH)
        agree.append(np.mean(item["mask"].numpy() == truth))
        assert set(np.unique(item["mask"].numpy())) <= {0, 1}
    # Nearest-neighbour at the mask's 0.0025 deg pixels: only pixels at cell edges may differ.
    assert np.mean(agree) > 0.95


def test_dataset_pickles_without_handles(make_dataset):
    dataset = make_dataset(return_metadata=True)
    first = dataset[2]
    clone = pickle.loads(pickle.dumps(dataset))
    again = clone[2]
    torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0)
    assert torch.equal(first["mask"], again["mask"])


def test_patch_dataset_rejects_bad_options(scene):
    sampler = PatchSampler(scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP)
    with pytest.raises(TypeError, match="return_metadata"):
        PatchDataset(sampler, return_metadata="yes")
    with pytest.raises(TypeError, match="seed"):
        PatchDataset(sampler, seed="42")
    with pytest.raises(ValueError, match="epoch must be >= 0"):  # a value out of range (was a TypeError)
        PatchDataset(sampler).set_epoch(-1)


def test_missing_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n"
        "    import crossgeo.torch\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install -c ci/requirements-torch.txt '.[torch]'" in out
