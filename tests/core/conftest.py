"""Factories that write small real rasters and window files on demand (rio-tiler style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds

from crossgeo import testing as T

#: Zoom and tile of the synthetic Web Mercator scene (near lon 11.25, lat 45.8).
ZOOM, TILE_COL, TILE_ROW = 12, 2176, 1460
#: Class checkerboard cell (degrees) and classes of the lon/lat mask.
CELL, N_CLASSES = 0.01, 4
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


class Scene:
    """Paths of a coordinate-encoding image and masks that are known functions of lon/lat."""

    def __init__(self, folder: Path, size: int = 512, dtype: str = "uint8") -> None:
        self.folder = folder
        self.size = size
        self.transform = T.web_mercator_transform(ZOOM, TILE_COL, TILE_ROW)
        self.crs = "EPSG:3857"
        self.image = T.write_raster(
            folder / "image.tif", T.coordinate_bands(size, size, dtype), crs=self.crs, transform=self.transform
        )
        with rasterio.open(self.image) as src:
            self.lonlat_bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)

    def path(self, name: str) -> Path:
        return self.folder / name

    def lonlat_mask(
        self, name: str = "mask4326.tif", *, margin: float = 0.05, resolution: float = 0.0003, **kw: Any
    ) -> Path:
        left, bottom, right, top = self.lonlat_bounds
        bounds = (left - margin, bottom - margin, right + margin, top + margin)
        kw.setdefault("cell", CELL)
        kw.setdefault("n_classes", N_CLASSES)
        return T.write_lonlat_mask(self.folder / name, bounds, resolution, **kw)

    def aligned_mask(self, data: np.ndarray, name: str = "aligned.tif", *, pad: int = 0, **kw: Any) -> Path:
        """A mask on the image grid itself, optionally ``pad`` pixels larger on every side."""
        from affine import Affine

        transform = self.transform @ Affine.translation(-pad, -pad)
        return T.write_raster(self.folder / name, data, crs=self.crs, transform=transform, **kw)

    def windows(self, rows: Any, cols: Any, name: str = "windows.csv") -> Path:
        return T.write_windows_table(self.folder / name, rows, cols)


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    return Scene(tmp_path)


def coordinate_truth(row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[row_off : row_off + size, col_off : col_off + size]
    return rows, cols
