"""SceneSampler through torch: the drop-in's ``scenes`` key, DataLoader workers within the open-file bound."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.augment import build_augmentation, to_model_inputs
from crossgeo.loading import epoch_order
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, PatchDataset, make_dataloader

PATCH = 32
WINDOWS = ((0, 0), (40, 50), (96, 96))
FD = Path("/proc/self/fd")


def _open_files() -> tuple[int, int]:
    """(descriptors other than the DataLoader's IPC, of them raster files) open in this process.

    The DataLoader's pipes, sockets and shared-memory segments of batches in flight (``/dev/shm``)
    depend on workers and prefetching, not on the data, so they are left out.
    """
    targets = []
    for name in os.listdir(FD):
        try:
            targets.append(os.readlink(FD / name))
        except OSError:  # the listing's own descriptor, already closed
            continue
    files = [t for t in targets if not t.startswith(("pipe:", "socket:", "/dev/shm/", "anon_inode:"))]
    return len(files), sum(t.endswith(".tif") for t in files)


class FdProbe(Dataset[dict[str, Any]]):
    """Each item also says how many files its worker process has open while reading it."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        item["fds"], item["rasters"] = _open_files()
        return item


def _peak_fds(tmp_path: Path, max_open: int, n_scenes: int) -> tuple[int, int, int]:
    """Over a shuffled epoch in 2 workers: the largest rise of open files above the count before
    construction, the most raster files open at once in a worker, and the window count."""
    scenes, mask = T.write_scene_catalogue(tmp_path, n_scenes, windows=WINDOWS)
    before, _ = _open_files()
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, max_open=max_open, n_classes=4)
    dataset = FdProbe(PatchDataset(sampler, seed=3))
    loader = make_dataloader(dataset, batch_size=4, shuffle=True, num_workers=2)
    batches = list(loader)
    peak = max(int(batch["fds"].max()) for batch in batches)
    rasters = max(int(batch["rasters"].max()) for batch in batches)
    return peak - before, rasters, sum(len(batch["fds"]) for batch in batches)


@pytest.mark.skipif(not FD.exists(), reason="needs /proc/self/fd")
def test_open_files_per_worker_stay_within_max_open(tmp_path: Path) -> None:
    rise, rasters, n = _peak_fds(tmp_path / "bounded", max_open=3, n_scenes=60)
    assert n == 60 * len(WINDOWS)
    assert rise <= 3 * 2 + 16  # max_open x (image + mask) + 16
    assert rasters <= 3 * 2
    # The same epoch with no effective bound holds far more files open: the bound is what kept it low.
    rise, rasters, _ = _peak_fds(tmp_path / "unbounded", max_open=1000, n_scenes=60)
    assert rise > 3 * 2 + 16 and rasters > 3 * 2


def test_drop_in_takes_a_scenes_key_and_matches_the_sampler(tmp_path: Path) -> None:
    scenes, mask = T.write_scene_catalogue(tmp_path, 5, windows=WINDOWS)
    dataset = MBTilesCropsGeoTifMaskDataset(
        scenes=scenes,
        mask_path=str(mask),
        patch_size=PATCH,
        n_classes=4,
        max_open=2,
        seed=1,
        data_loader={"batch_size": 5, "shuffle": True, "num_workers": 2},
    )
    assert isinstance(dataset.sampler, SceneSampler) and dataset.sampler.max_open == 2
    reference = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4)
    batches = list(make_dataloader(dataset))
    images = torch.cat([batch["image"] for batch in batches])
    masks = torch.cat([batch["mask"] for batch in batches])
    order = epoch_order(len(reference), 1, 0).tolist()
    assert len(order) == len(images) == 15
    for k, i in enumerate(order):
        image, mask_ = to_model_inputs(reference[i], None, seed=1, epoch=0)
        np.testing.assert_array_equal(images[k].numpy(), image)
        np.testing.assert_array_equal(masks[k].numpy(), mask_)


AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]


def test_torch_numbers_equal_the_framework_free_reference(tmp_path: Path) -> None:
    """The definition tf.data and Keras are held to as well (tests/tf_adapter/test_tf_scenes.py)."""
    pytest.importorskip("albumentations")
    scenes, mask = T.write_scene_catalogue(tmp_path, 7, windows=WINDOWS)
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, max_open=2)
    dataset = PatchDataset(sampler, augmentation_list=AUGMENT, seed=11)
    loader = make_dataloader(dataset, batch_size=4, shuffle=True, num_workers=2)
    images = torch.cat([batch["image"] for batch in loader]).numpy()
    augmentation = build_augmentation(AUGMENT)
    order = epoch_order(len(sampler), 11, 0).tolist()
    assert len(images) == len(order) == 21
    scenes_seen = set()
    for k, i in enumerate(order):
        patch = sampler[i]
        scenes_seen.add(patch.scene)
        image, _ = to_model_inputs(patch, augmentation, seed=11, epoch=0)
        np.testing.assert_array_equal(images[k], image)
    assert scenes_seen == set(range(7))
    checksum = float(np.float64(images.astype(np.float64).sum()))
    assert checksum > 0
