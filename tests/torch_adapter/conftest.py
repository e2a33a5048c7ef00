"""Fixtures for the torch adapter tests; the rasters are written by ``torch_scene``."""

from __future__ import annotations

import os
import types
from typing import Any

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from torch_scene import COLOR_MAP, PATCH, build_scene


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    return build_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture
def make_dataset(scene: types.SimpleNamespace) -> Any:
    """Factory: the MBTiles image + VRT colour mask + CSV windows dataset, with options."""
    from crossgeo.torch import MBTilesCropsGeoTifMaskDataset

    def make(**options: Any) -> MBTilesCropsGeoTifMaskDataset:
        config: dict[str, Any] = {
            "image_mbtiles_path": scene.image_mbtiles,
            "mask_path": scene.mask_vrt,
            "crops_path": scene.windows_csv,
            "patch_size": PATCH,
            "color_map": COLOR_MAP,
            "selected_bands": [1, 2, 3],
        }
        config.update(options)
        return MBTilesCropsGeoTifMaskDataset(**config)

    return make
