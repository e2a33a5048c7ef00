"""The torch adapter's config paths refuse non-transform ``_target_`` names; native images stay unscaled."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch_scene import COLOR_MAP, PATCH, decode_window

from crossgeo import ConfigError, PatchSampler
from crossgeo.augment import ALLOWED_TRANSFORMS_ENV, to_model_inputs
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, PatchDataset, make_dataloader


def _config(scene: types.SimpleNamespace, **extra: Any) -> dict[str, Any]:
    return {
        "_target_": "crossgeo.torch.MBTilesCropsGeoTifMaskDataset",
        "image_mbtiles_path": scene.image_tif,
        "mask_path": scene.mask_vrt,
        "crops_path": scene.windows_csv,
        "patch_size": PATCH,
        "color_map": COLOR_MAP,
        **extra,
    }


def _cause(error: BaseException) -> BaseException:
    """Hydra wraps a constructor's exception in its InstantiationException."""
    while not isinstance(error, ConfigError) and error.__cause__ is not None:
        error = error.__cause__
    return error


def test_drop_in_refuses_os_system(scene: types.SimpleNamespace, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = _config(scene, augmentation_list=[{"_target_": "albumentations.os.system", "command": f"touch {marker}"}])
    config.pop("_target_")
    with pytest.raises(ConfigError, match=r"_target_ 'albumentations\.os\.system' is not allowed"):
        MBTilesCropsGeoTifMaskDataset(**config)
    assert not marker.exists()


def test_hydra_non_recursive_refuses_os_remove_nested_in_one_of(scene: types.SimpleNamespace, tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    nested = {
        "_target_": "albumentations.OneOf",
        "transforms": [{"_target_": "albumentations.os.remove", "path": str(victim)}],
    }
    cfg = OmegaConf.create(_config(scene, augmentation_list=[nested]))
    with pytest.raises(Exception) as info:
        hydra.utils.instantiate(cfg, _recursive_=False)
    error = _cause(info.value)
    assert isinstance(error, ConfigError) and "'albumentations.os.remove' is not allowed" in str(error)
    assert victim.read_text() == "keep me"


def test_allowed_targets_from_hydra_is_an_error(scene: types.SimpleNamespace) -> None:
    cfg = OmegaConf.create(_config(scene, allowed_targets=["os"]))
    with pytest.raises(Exception) as info:
        hydra.utils.instantiate(cfg, _recursive_=False)
    error = _cause(info.value)
    assert isinstance(error, ConfigError) and "allowed_targets cannot be set" in str(error)
    assert ALLOWED_TRANSFORMS_ENV in str(error)


USER_MODULE = """
import albumentations as A
import numpy as np


class ShiftRows(A.DualTransform):
    def __init__(self, rows=1, p=1.0):
        super().__init__(p=p)
        self.rows = rows

    def apply(self, img, **params):
        return np.roll(img, self.rows, axis=0)

    def apply_to_mask(self, mask, **params):
        return np.roll(mask, self.rows, axis=0)
"""


def test_user_transform_through_hydra_with_the_environment_variable(
    scene: types.SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cg_torch_user_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ALLOWED_TRANSFORMS_ENV, raising=False)
    cfg = OmegaConf.create(_config(scene, augmentation_list=[{"_target_": f"{name}.ShiftRows", "rows": 3}]))
    with pytest.raises(Exception) as info:
        hydra.utils.instantiate(cfg, _recursive_=False)
    assert isinstance(_cause(info.value), ConfigError)

    monkeypatch.setenv(ALLOWED_TRANSFORMS_ENV, name)
    dataset = hydra.utils.instantiate(cfg, _recursive_=False)
    plain = MBTilesCropsGeoTifMaskDataset(**{k: v for k, v in _config(scene).items() if k != "_target_"})
    torch.testing.assert_close(dataset[0]["image"], torch.roll(plain[0]["image"], 3, dims=1), rtol=0, atol=0)
    torch.testing.assert_close(dataset[0]["mask"], torch.roll(plain[0]["mask"], 3, dims=0), rtol=0, atol=0)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("augmentation", [None, [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]])
def test_native_uint8_images_reach_the_model_as_read(
    scene: types.SimpleNamespace, compact: bool, augmentation: Any
) -> None:
    sampler = PatchSampler(
        scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP, image_dtype="native"
    )
    assert sampler.image_dtype == np.uint8 and not sampler.unit_scale
    dataset = PatchDataset(sampler, augmentation_list=augmentation, seed=4, compact=compact)
    loader = make_dataloader(dataset, batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.float32 and float(batch["image"].max()) > 1
    for k in range(4):
        expected, mask = to_model_inputs(sampler[k], dataset.augmentation, seed=4, epoch=dataset.epoch)
        np.testing.assert_array_equal(batch["image"][k].numpy(), expected)
        np.testing.assert_array_equal(batch["mask"][k].numpy(), mask)
    if augmentation is None:
        np.testing.assert_array_equal(batch["image"][0].numpy(), sampler[0].image.astype(np.float32))


def test_unseeded_workers_draw_each_transform_independently(scene: types.SimpleNamespace) -> None:
    """worker_init_fn reseeds an unseeded pipeline per worker: its flips must still be independent."""
    sampler = PatchSampler(scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP)
    dataset = PatchDataset(
        sampler,
        augmentation_list=[{"_target_": "albumentations.HorizontalFlip"}, {"_target_": "albumentations.VerticalFlip"}],
        return_metadata=True,
    )
    loader = make_dataloader(dataset, batch_size=len(sampler), num_workers=1, persistent_workers=False)
    counts = [0, 0, 0, 0]
    for _ in range(25):  # a new worker, so a new worker seed, every pass
        batch = next(iter(loader))
        for image, row_off, col_off in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
            rows, cols = decode_window(image)
            horizontal, vertical = (
                int(cols[0, 0]) == int(col_off) + PATCH - 1,
                int(rows[0, 0]) == int(row_off) + PATCH - 1,
            )
            counts[horizontal + 2 * vertical] += 1
    expected = sum(counts) / 4
    chi_square = sum((c - expected) ** 2 / expected for c in counts)
    assert sum(counts) == 200 and chi_square < 16.27, counts  # 3 degrees of freedom, p = 0.001
