"""Small real rasters for the tf.data / Keras adapter tests, written on demand.

The images encode their own pixel coordinates (``crossgeo.testing.coordinate_bands``), so
a test decodes every element back to the window it came from; masks are a known function
of the pixel position (aligned GeoTIFF) or of lon/lat (EPSG:4326, warped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pytest

from crossgeo import PatchSampler
from crossgeo import testing as T

#: A Web Mercator tile (near lon 11.25, lat 45.8) at zoom 12: the scenes sit on its pixel grid.
ZOOM, TILE_COL, TILE_ROW = 12, 2176, 1460
PATCH = 32
#: Windows on a 256 x 256 scene: some overlap, one reaches past the right/bottom edge.
ROWS = [0, 0, 16, 64, 100, 128, 200, 224, 240, 33, 77, 5]
COLS = [0, 64, 16, 128, 7, 200, 40, 224, 240, 190, 99, 150]


def mask_classes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Ground truth of the aligned mask: a 3-class function of the pixel position."""
    return ((rows // 8 + cols // 8) % 3).astype(np.int64)


class Scene:
    """A 256 x 256 coordinate-encoding scene as GeoTIFF and MBTiles, masks and windows."""

    size = 256

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.transform = T.web_mercator_transform(ZOOM, TILE_COL, TILE_ROW)
        self.crs = "EPSG:3857"
        self.tif = T.write_raster(
            folder / "image.tif",
            T.coordinate_bands(self.size, self.size, "uint8"),
            crs=self.crs,
            transform=self.transform,
        )
        rows, cols = np.mgrid[0 : self.size, 0 : self.size]
        self.mask = T.write_raster(
            folder / "mask.tif", mask_classes(rows, cols).astype(np.uint8)[None], crs=self.crs, transform=self.transform
        )
        self.windows = T.write_windows_table(folder / "windows.csv", ROWS, COLS)
        self._mbtiles: Path | None = None

    @property
    def mbtiles(self) -> Path:
        if self._mbtiles is None:
            self._mbtiles = T.write_mbtiles(self.tif, self.folder / "image.mbtiles")
        return self._mbtiles

    def lonlat_mask(self) -> Path:
        """A 4-class lon/lat checkerboard in EPSG:4326 around the scene (warped on read)."""
        from rasterio.transform import array_bounds
        from rasterio.warp import transform_bounds

        path = self.folder / "mask4326.tif"
        if not path.exists():
            bounds = array_bounds(self.size, self.size, self.transform)  # left, bottom, right, top
            w, s, e, n = transform_bounds(self.crs, "EPSG:4326", *bounds)
            T.write_lonlat_mask(path, (w - 0.01, s - 0.01, e + 0.01, n + 0.01), 0.0002, cell=0.01, n_classes=4)
        return path

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A ``train_dataset`` mapping of the original keys for the GeoTIFF scene."""
        config: dict[str, Any] = {
            "_target_": "crossgeo.torch.MBTilesCropsGeoTifMaskDataset",
            "image_mbtiles_path": str(self.tif),
            "mask_path": str(self.mask),
            "crops_path": str(self.windows),
            "patch_size": PATCH,
            "n_classes": 3,
        }
        config.update(overrides)
        return config

    def sampler(self, **overrides: Any) -> PatchSampler:
        kwargs: dict[str, Any] = {"n_classes": 3}
        kwargs.update(overrides)
        return PatchSampler(self.tif, self.mask, self.windows, PATCH, **kwargs)


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="session")
def sampler(scene: Scene) -> PatchSampler:
    return scene.sampler()


def decode_window(image_hwc: np.ndarray) -> tuple[int, int]:
    """(row_off, col_off) of an unaugmented (H, W, C) float image of the coordinate scene.

    Also checks that every pixel is where the window puts it (inside the raster).
    """
    raw = np.rint(np.moveaxis(image_hwc, -1, 0) * 255).astype(np.uint8)
    rows, cols = T.decode_coordinates(raw[:3])
    row_off, col_off = int(rows[0, 0]), int(cols[0, 0])
    size = image_hwc.shape[0]
    inside = min(size, Scene.size - row_off), min(size, Scene.size - col_off)
    expected_rows, expected_cols = np.mgrid[row_off : row_off + inside[0], col_off : col_off + inside[1]]
    np.testing.assert_array_equal(rows[: inside[0], : inside[1]], expected_rows)
    np.testing.assert_array_equal(cols[: inside[0], : inside[1]], expected_cols)
    return row_off, col_off


def window_mask(row_off: int, col_off: int, size: int = PATCH) -> np.ndarray:
    """The aligned mask's expected classes on a window (0 outside the raster)."""
    rows, cols = np.mgrid[row_off : row_off + size, col_off : col_off + size]
    expected = mask_classes(rows, cols)
    expected[(rows >= Scene.size) | (cols >= Scene.size)] = 0
    return expected
