"""A chip store in the torch adapter: the live sampler's batches, seeded augmentation and weights included (#25)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch_scene import PATCH, WINDOWS, assert_window

from crossgeo.torch import PatchDataset, make_dataloader

pytest.importorskip("zarr", minversion="3")

from crossgeo.chips import ChipSampler, write_chips

AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]
WEIGHTS = [float(i % 4) for i in range(len(WINDOWS))]


@pytest.fixture(scope="module")
def stores(scene: types.SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from torch_scene import COLOR_MAP

    from crossgeo.torch import MBTilesCropsGeoTifMaskDataset

    live = MBTilesCropsGeoTifMaskDataset(
        image_mbtiles_path=scene.image_mbtiles,
        mask_path=scene.mask_vrt,
        crops_path=scene.windows_csv,
        patch_size=PATCH,
        color_map=COLOR_MAP,
        selected_bands=[1, 2, 3],
    ).sampler
    folder = tmp_path_factory.mktemp("chips")
    return {
        "zarr": write_chips(live, folder / "zarr", shard_size=3, progress=False),
        "webdataset": write_chips(live, folder / "wds", shard_size=3, format="webdataset", progress=False),
    }


def _batches(loader: Any) -> list[dict[str, Any]]:
    return [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()} for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("compact", [False, True])
def test_loader_from_chips_equals_the_live_loader(
    make_dataset: Any, stores: dict[str, Path], num_workers: int, compact: bool
) -> None:
    live = make_dataset(augmentation_list=AUGMENT, seed=5, data_loader={"batch_size": 3, "shuffle": True})
    chips = PatchDataset(ChipSampler(stores["zarr"]), augmentation_list=AUGMENT, seed=5, compact=compact)
    chips.data_loader = live.data_loader  # type: ignore[attr-defined]
    live_loader = make_dataloader(live, num_workers=num_workers)
    chip_loader = make_dataloader(chips, num_workers=num_workers)
    for epoch in range(2):
        got, want = _batches(chip_loader), _batches(live_loader)
        assert len(got) == len(want) == 3, epoch
        for a, b in zip(got, want):
            assert a["image"].dtype == b["image"].dtype == torch.float32
            torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
            torch.testing.assert_close(a["mask"], b["mask"], rtol=0, atol=0)


def test_weighted_draw_from_chips_equals_the_live_one(make_dataset: Any, stores: dict[str, Path]) -> None:
    live = make_dataset(seed=3, return_metadata=True, data_loader={"batch_size": 4})
    chips = PatchDataset(ChipSampler(stores["zarr"]), seed=3, return_metadata=True)
    chips.data_loader = live.data_loader  # type: ignore[attr-defined]
    got = _batches(make_dataloader(chips, weights=WEIGHTS))
    want = _batches(make_dataloader(live, weights=WEIGHTS))
    for a, b in zip(got, want):
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        assert a["metadata"]["row_off"].tolist() == b["metadata"]["row_off"].tolist()
        for image, row, col in zip(a["image"], a["metadata"]["row_off"], a["metadata"]["col_off"]):
            assert_window(image, int(row), int(col))


def test_one_epoch_from_webdataset_shards(stores: dict[str, Path]) -> None:
    webdataset = pytest.importorskip("webdataset")
    from crossgeo.augment import scale_image

    urls = [str(p) for p in sorted(stores["webdataset"].glob("chips-*.tar"))]
    dataset = (
        webdataset.WebDataset(urls, shardshuffle=False)
        .decode()
        .to_tuple("image.npy", "mask.npy", "json")
        .map_tuple(
            lambda image: torch.from_numpy(scale_image(image)),
            lambda mask: torch.from_numpy(mask.astype(np.int64)),
            lambda meta: meta,
        )
    )
    model = torch.nn.Conv2d(3, 4, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    for image, mask, meta in torch.utils.data.DataLoader(dataset, batch_size=4):
        loss = torch.nn.functional.cross_entropy(model(image), mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        assert torch.isfinite(loss)
        for one, row, col in zip(image, meta["row_off"], meta["col_off"]):
            assert_window(one, int(row), int(col))
            seen.append((int(row), int(col)))
    assert seen == [tuple(w) for w in WINDOWS]


def test_drop_in_dataset_reads_chips_path(make_dataset: Any, stores: dict[str, Path]) -> None:
    """The original's configuration plus ``chips_path``: the same items, served from the store."""
    from crossgeo.chips import ChipStoreError

    live = make_dataset(augmentation_list=AUGMENT, seed=2)
    chips = make_dataset(augmentation_list=AUGMENT, seed=2, chips_path=str(stores["zarr"]))
    assert isinstance(chips.sampler, ChipSampler)
    for i in range(len(live)):
        torch.testing.assert_close(chips[i]["image"], live[i]["image"], rtol=0, atol=0)
        torch.testing.assert_close(chips[i]["mask"], live[i]["mask"], rtol=0, atol=0)
    with pytest.raises(ChipStoreError, match=r"patch_size is 64 but the chip store .* patch_size 32"):
        make_dataset(chips_path=str(stores["zarr"]), patch_size=64)


def test_hydra_instantiates_the_drop_in_with_chips_path(stores: dict[str, Path], scene: types.SimpleNamespace) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "_target_": "crossgeo.torch.MBTilesCropsGeoTifMaskDataset",
            "image_mbtiles_path": str(scene.image_mbtiles),
            "mask_path": str(scene.mask_vrt),
            "crops_path": str(scene.windows_csv),
            "patch_size": PATCH,
            "chips_path": str(stores["zarr"]),
        }
    )
    dataset = instantiate(config)
    assert isinstance(dataset.sampler, ChipSampler) and len(dataset) == len(WINDOWS)
    for i, (row, col) in enumerate(WINDOWS):
        assert_window(dataset[i]["image"], row, col)
