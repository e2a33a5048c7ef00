"""The spec's two YAML examples through hydra.utils.instantiate, with only _target_ (and paths) changed."""

from __future__ import annotations

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from torch_scene import COLOR_MAP, WINDOWS

from crossgeo.torch import EpochOrderSampler, MBTilesCropsGeoTifMaskDataset, make_dataloader

TARGET = "crossgeo.torch.MBTilesCropsGeoTifMaskDataset"

# Verbatim from spec/mbtiles-crops-dataset.md but for _target_ and the /data paths.
CSV_VRT_EXAMPLE = """
train_dataset:
  _target_: pytorch_segmentation_models_trainer.dataset_loader.mbtiles_crops_dataset.MBTilesCropsGeoTifMaskDataset
  image_mbtiles_path: /data/imagery.mbtiles
  mask_path: /data/masks/mask.vrt
  crops_path: /data/crops/windows.csv
  patch_size: 256
  color_map:
    - [255, 0, 0, 1]
    - [0, 255, 0, 2]
    - [0, 0, 255, 3]
  augmentation_list:
    - _target_: albumentations.HorizontalFlip
      p: 0.5
    - _target_: albumentations.Normalize
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]
    - _target_: albumentations.pytorch.ToTensorV2
  data_loader:
    shuffle: true
    num_workers: 8
"""

VECTOR_TIF_EXAMPLE = """
train_dataset:
  _target_: pytorch_segmentation_models_trainer.dataset_loader.mbtiles_crops_dataset.MBTilesCropsGeoTifMaskDataset
  image_mbtiles_path: /data/imagery.mbtiles
  mask_path: /data/masks/mask.tif
  crops_path: /data/crops/regions.gpkg
  crops_layer: training_windows
  patch_size: 256
  n_classes: 2
  augmentation_list:
    - _target_: albumentations.HorizontalFlip
      p: 0.5
    - _target_: albumentations.pytorch.ToTensorV2
  data_loader:
    shuffle: true
    num_workers: 8
"""


def _config(text, scene):
    text = text.replace(
        "pytorch_segmentation_models_trainer.dataset_loader.mbtiles_crops_dataset.MBTilesCropsGeoTifMaskDataset", TARGET
    )
    for placeholder, path in (
        ("/data/imagery.mbtiles", scene.image_mbtiles),
        ("/data/masks/mask.vrt", scene.mask_vrt),
        ("/data/masks/mask.tif", scene.mask_tif),
        ("/data/crops/windows.csv", scene.windows_csv),
        ("/data/crops/regions.gpkg", scene.regions_gpkg),
    ):
        text = text.replace(placeholder, path)
    return OmegaConf.create(text)


def _train_one_step(loader, n_classes):
    batch = next(iter(loader))
    image, mask = batch["image"], batch["mask"]
    assert image.dtype == torch.float32 and image.ndim == 4 and mask.dtype == torch.int64 and mask.ndim == 3
    torch.manual_seed(0)
    model = torch.nn.Conv2d(image.shape[1], n_classes, kernel_size=3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(image), mask)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("seed", [None, 1234])
def test_csv_windows_vrt_mask_example(scene, seed):
    cfg = _config(CSV_VRT_EXAMPLE, scene)
    extra = {} if seed is None else {"seed": seed}
    dataset = hydra.utils.instantiate(cfg.train_dataset, _recursive_=False, **extra)
    assert type(dataset) is MBTilesCropsGeoTifMaskDataset
    assert dataset.seed == seed and dataset.sampler.color_map == COLOR_MAP
    assert type(dataset.data_loader) is dict and dataset.data_loader == {"shuffle": True, "num_workers": 8}
    assert len(dataset) == len(WINDOWS)
    item = dataset[0]
    # MBTiles reads RGBA; Normalize made it float, ToTensorV2 was not needed for CHW float32.
    assert item["image"].shape == (4, 256, 256) and item["image"].dtype == torch.float32
    assert set(torch.unique(item["mask"]).tolist()) <= {0, 1, 2, 3}
    loader = make_dataloader(dataset, num_workers=0, batch_size=2)  # 8 workers are too many for CI
    shuffler = EpochOrderSampler if seed is not None else torch.utils.data.RandomSampler
    assert loader.batch_size == 2 and isinstance(loader.sampler, shuffler)
    _train_one_step(loader, n_classes=4)


@pytest.mark.parametrize("seed", [None, 99])
def test_vector_windows_single_band_mask_example(scene, seed):
    cfg = _config(VECTOR_TIF_EXAMPLE, scene)
    extra = {} if seed is None else {"seed": seed}
    dataset = hydra.utils.instantiate(cfg.train_dataset, _recursive_=False, **extra)
    assert type(dataset) is MBTilesCropsGeoTifMaskDataset and dataset.seed == seed
    assert dataset.sampler.crops_layer == "training_windows"
    assert len(dataset) == len(WINDOWS)  # one window per GeoPackage point
    item = dataset[0]
    assert item["image"].shape == (4, 256, 256) and item["image"].dtype == torch.float32
    assert set(torch.unique(item["mask"]).tolist()) == {0, 1}  # the lon/lat checkerboard, binarised
    _train_one_step(make_dataloader(dataset, num_workers=0, batch_size=2), n_classes=2)


def test_seeded_instantiation_is_reproducible(scene):
    cfg = _config(CSV_VRT_EXAMPLE, scene)
    a = hydra.utils.instantiate(cfg.train_dataset, _recursive_=False, seed=7)
    b = hydra.utils.instantiate(cfg.train_dataset, _recursive_=False, seed=7)
    for i in (0, 5):
        torch.testing.assert_close(a[i]["image"], b[i]["image"], rtol=0, atol=0)


def test_unknown_key_warns_with_a_suggestion_like_the_originals_kwargs(scene):
    """The original takes ``**kwargs``; the drop-in too, with an IgnoredOptionWarning naming the closest key."""
    from crossgeo.options import IgnoredOptionWarning

    cfg = _config(CSV_VRT_EXAMPLE, scene)
    cfg.train_dataset.image_dtpye = "uint8"
    with pytest.warns(IgnoredOptionWarning, match="Did you mean 'image_dtype'"):
        dataset = hydra.utils.instantiate(cfg.train_dataset, _recursive_=False)
    assert len(dataset) > 0

    options = OmegaConf.to_container(_config(CSV_VRT_EXAMPLE, scene).train_dataset)
    options.pop("_target_")
    with pytest.warns(IgnoredOptionWarning, match="Did you mean 'return_metadata'"):
        MBTilesCropsGeoTifMaskDataset(**options, return_metadate=True)
    with pytest.warns(IgnoredOptionWarning, match="Did you mean 'num_workers'"):
        MBTilesCropsGeoTifMaskDataset(**{**options, "data_loader": {"num_worker": 2}})
    misspelt = {**{k: v for k, v in options.items() if k != "patch_size"}, "patchsize": 32}
    with pytest.raises(TypeError, match=r"missing the required option.s. patch_size"):  # still an error
        with pytest.warns(IgnoredOptionWarning, match="Did you mean 'patch_size'"):
            MBTilesCropsGeoTifMaskDataset(**misspelt)


def test_extra_sampler_options_pass_through(scene):
    dataset = MBTilesCropsGeoTifMaskDataset(
        scene.image_tif, scene.mask_tif, scene.windows_csv, 32, n_classes=2, mask_fill_value=255, augmentation_list=[]
    )
    assert dataset.sampler.mask_fill_value == 255 and dataset.augmentation is None
