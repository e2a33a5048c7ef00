"""augmentation_list forms, ToTensorV2 and errors, through the torch datasets."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2
from omegaconf import OmegaConf
from torch_scene import PATCH, WINDOWS, assert_window, expected_classes

from crossgeo.errors import ConfigError

FLIP = {"_target_": "albumentations.HorizontalFlip", "p": 1.0}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
NORMALIZE = {"_target_": "albumentations.Normalize", "mean": MEAN, "std": STD}


def _assert_flipped(item, row_off, col_off):
    assert_window(item["image"], row_off, col_off, flipped=True)
    rows, cols = np.mgrid[row_off : row_off + PATCH, col_off : col_off + PATCH]
    np.testing.assert_array_equal(item["mask"].numpy(), expected_classes(rows, cols)[:, ::-1])


@pytest.mark.parametrize(
    "augmentation_list",
    [
        pytest.param([FLIP], id="target-dict"),
        pytest.param(
            [
                {
                    "_target_": "albumentations.OneOf",
                    "p": 1.0,
                    "transforms": [FLIP, {**FLIP, "_target_": "albumentations.HorizontalFlip"}],
                }
            ],
            id="nested-OneOf",
        ),
        pytest.param(OmegaConf.create([FLIP]), id="omegaconf-list"),
        pytest.param([OmegaConf.create(FLIP)], id="omegaconf-entry"),
        pytest.param([A.HorizontalFlip(p=1.0)], id="transform-object"),
        pytest.param(A.Compose([A.HorizontalFlip(p=1.0)]), id="ready-compose"),
        pytest.param([FLIP, {"_target_": "albumentations.pytorch.ToTensorV2"}], id="with-ToTensorV2-dict"),
        pytest.param([A.HorizontalFlip(p=1.0), ToTensorV2()], id="with-ToTensorV2-object"),
    ],
)
def test_augmentation_list_forms_flip_image_and_mask_together(make_dataset, augmentation_list):
    dataset = make_dataset(augmentation_list=augmentation_list)
    for i in (0, 4):
        item = dataset[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, PATCH, PATCH)
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (PATCH, PATCH)
        _assert_flipped(item, *WINDOWS[i])


@pytest.mark.parametrize("empty", [None, [], OmegaConf.create([])])
def test_empty_augmentation_list_is_no_augmentation(make_dataset, empty):
    dataset = make_dataset(augmentation_list=empty)
    assert dataset.augmentation is None
    reference = make_dataset()
    for i in range(len(dataset)):
        torch.testing.assert_close(dataset[i]["image"], reference[i]["image"], rtol=0, atol=0)
        assert torch.equal(dataset[i]["mask"], reference[i]["mask"])


@pytest.mark.parametrize("to_tensor", [False, True])
def test_normalize_output_is_float32_chw_with_or_without_totensorv2(make_dataset, to_tensor):
    entries = [NORMALIZE, {"_target_": "albumentations.pytorch.ToTensorV2"}] if to_tensor else [NORMALIZE]
    dataset = make_dataset(augmentation_list=entries)
    plain = make_dataset()
    item, raw = dataset[1], plain[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, PATCH, PATCH)
    # Normalize divides by 255 itself, then standardises: no double scaling.
    expected = (raw["image"] - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(item["image"], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(item["mask"], raw["mask"])


def test_bad_entry_names_position_and_target(make_dataset):
    with pytest.raises(ConfigError, match=r"entry 1.*albumentations\.HorizontalFlipp"):
        make_dataset(augmentation_list=[FLIP, {"_target_": "albumentations.HorizontalFlipp", "p": 0.5}])
    with pytest.raises(ConfigError, match=r"entry 0.*albumentations\.HorizontalFlip"):
        make_dataset(augmentation_list=[{"_target_": "albumentations.HorizontalFlip", "q": 0.5}])
    with pytest.raises(ConfigError, match=r"entry 2.*not allowed"):
        make_dataset(augmentation_list=[FLIP, FLIP, {"_target_": "os.system", "command": "true"}])
    with pytest.raises(ConfigError, match=r"entry 1"):
        make_dataset(augmentation_list=[FLIP, "HorizontalFlip"])
