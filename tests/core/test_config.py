"""Mappings of the original `MBTilesCropsGeoTifMaskDataset` keys: aliases, unknown keys, required keys."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from crossgeo import OptionError
from crossgeo.config import sampler_from_config, split_config
from crossgeo.testing import CoordinateScene


def test_seed_keys_build_a_sampler(scene: CoordinateScene) -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "somewhere.MBTilesCropsGeoTifMaskDataset",
            "image_mbtiles_path": str(scene.image),
            "mask_path": str(scene.lonlat_mask()),
            "crops_path": str(scene.windows([3], [4])),
            "patch_size": 32,
            "n_classes": 4,
            "augmentation_list": [],
            "data_loader": {"shuffle": True, "num_workers": 2},
            "return_metadata": True,
        }
    )
    sampler, rest = sampler_from_config(cfg)
    assert sampler.patch_size == 32 and sampler[0].row_off == 3
    assert rest == {
        "augmentation_list": [],
        "data_loader": {"shuffle": True, "num_workers": 2},
        "return_metadata": True,
    }


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(
        OptionError, match=r"Unknown option 'colour_map' in the configuration. Did you mean 'color_map'"
    ):
        split_config({"image_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1, "colour_map": []})


def test_missing_required_keys() -> None:
    with pytest.raises(OptionError, match=r"missing the required option.*image_mbtiles_path, patch_size"):
        split_config({"mask_path": "b", "crops_path": "c"})
    with pytest.raises(OptionError, match="must be a mapping"):
        split_config(["a"])
