"""The tf.data / Keras suite's scene (imported by its conftest and tests), built on `crossgeo.testing.CoordinateScene`.

A 256 x 256 coordinate-encoding image (GeoTIFF, MBTiles on demand), an aligned 3-class mask
whose class is a known function of the pixel position, a lon/lat checkerboard (EPSG:4326,
warped) and windows of which some overlap and one reaches past the right/bottom edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.testing import CoordinateScene

PATCH = 32
#: Windows on a 256 x 256 scene: some overlap, one reaches past the right/bottom edge.
ROWS = [0, 0, 16, 64, 100, 128, 200, 224, 240, 33, 77, 5]
COLS = [0, 64, 16, 128, 7, 200, 40, 224, 240, 190, 99, 150]
SIZE = 256


def mask_classes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Ground truth of the aligned mask: a 3-class function of the pixel position."""
    return ((rows // 8 + cols // 8) % 3).astype(np.int64)


class Scene(CoordinateScene):
    """The coordinate scene with its aligned class mask (``mask``) and windows table (``windows_csv``)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, SIZE)
        rows, cols = np.mgrid[0:SIZE, 0:SIZE]
        self.mask = self.aligned_mask(mask_classes(rows, cols).astype(np.uint8)[None], "mask.tif")
        self.windows_csv = self.windows(ROWS, COLS)

    def lonlat_mask(self, name: str = "mask4326.tif", **options: Any) -> Path:  # type: ignore[override]
        """The 4-class lon/lat checkerboard around the scene (warped on read); written once."""
        path = self.path(name)
        if not path.exists():
            path = super().lonlat_mask(name, **{"margin": 0.01, "resolution": 0.0002, **options})
        return path

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A ``train_dataset`` mapping of the original keys for the GeoTIFF scene."""
        config: dict[str, Any] = {
            "_target_": "crossgeo.torch.MBTilesCropsGeoTifMaskDataset",
            "image_mbtiles_path": str(self.image),
            "mask_path": str(self.mask),
            "crops_path": str(self.windows_csv),
            "patch_size": PATCH,
            "n_classes": 3,
        }
        config.update(overrides)
        return config

    def sampler(self, **overrides: Any) -> PatchSampler:
        kwargs: dict[str, Any] = {"n_classes": 3}
        kwargs.update(overrides)
        return PatchSampler(self.image, self.mask, self.windows_csv, PATCH, **kwargs)


def decode_window(image_hwc: np.ndarray) -> tuple[int, int]:
    """(row_off, col_off) of an unaugmented (H, W, C) float image of the coordinate scene.

    Also checks that every pixel is where the window puts it (inside the raster).
    """
    raw = np.rint(np.moveaxis(image_hwc, -1, 0) * 255).astype(np.uint8)
    rows, cols = T.decode_coordinates(raw[:3])
    row_off, col_off = int(rows[0, 0]), int(cols[0, 0])
    size = image_hwc.shape[0]
    inside = min(size, SIZE - row_off), min(size, SIZE - col_off)
    expected_rows, expected_cols = T.window_coordinates(row_off, col_off, size)
    np.testing.assert_array_equal(rows[: inside[0], : inside[1]], expected_rows[: inside[0], : inside[1]])
    np.testing.assert_array_equal(cols[: inside[0], : inside[1]], expected_cols[: inside[0], : inside[1]])
    return row_off, col_off


def window_mask(row_off: int, col_off: int, size: int = PATCH) -> np.ndarray:
    """The aligned mask's expected classes on a window (0 outside the raster)."""
    rows, cols = T.window_coordinates(row_off, col_off, size)
    expected = mask_classes(rows, cols)
    expected[(rows >= SIZE) | (cols >= SIZE)] = 0
    return expected
