"""make_dataloader: data_loader options, worker seeding and handles, reproducible augmentation."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler
from torch_scene import COLOR_MAP, GDAL_CHECKED, PATCH, WINDOWS, ProbeDataset, assert_window, gdal_options_now

from crossgeo.augment import to_model_inputs
from crossgeo.loading import epoch_order
from crossgeo.torch import PatchDataLoader, make_dataloader

AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.VerticalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]
FULL_CONFIG = {
    "shuffle": True,
    "num_workers": 2,
    "pin_memory": False,
    "drop_last": True,
    "prefetch_factor": 3,
    "persistent_workers": True,
    "batch_size": 3,
}


def _batches(loader):
    return [{k: v for k, v in batch.items()} for batch in loader]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
        assert torch.equal(x["mask"], y["mask"])
        assert torch.equal(x["metadata"]["row_off"], y["metadata"]["row_off"])
        assert torch.equal(x["metadata"]["col_off"], y["metadata"]["col_off"])


def _expected(dataset, index, epoch):
    """The model inputs the core function gives for window ``index`` in ``epoch``."""
    return to_model_inputs(dataset.sampler[index], dataset.augmentation, seed=dataset.seed, epoch=epoch)


def test_data_loader_options_are_honoured(make_dataset):
    dataset = make_dataset(data_loader=FULL_CONFIG)
    loader = make_dataloader(dataset)
    assert isinstance(loader, PatchDataLoader)
    assert loader.batch_size == 3 and loader.num_workers == 2 and loader.drop_last is True
    assert loader.prefetch_factor == 3 and loader.persistent_workers is True and loader.pin_memory is False
    assert isinstance(loader.sampler, RandomSampler)
    assert len(loader) == len(WINDOWS) // 3


def test_overrides_win_and_worker_only_options_drop_without_workers(make_dataset):
    dataset = make_dataset(data_loader=FULL_CONFIG, return_metadata=True)
    loader = make_dataloader(dataset, num_workers=0, shuffle=False, batch_size=4, drop_last=False)
    assert loader.num_workers == 0 and loader.prefetch_factor is None and loader.persistent_workers is False
    assert isinstance(loader.sampler, SequentialSampler) and loader.batch_size == 4
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 3, PATCH, PATCH)] * 2
    rows = torch.cat([b["metadata"]["row_off"] for b in batches]).tolist()
    cols = torch.cat([b["metadata"]["col_off"] for b in batches]).tolist()
    assert list(zip(rows, cols)) == WINDOWS
    for batch in batches:
        for image, r, c in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
            assert_window(image, int(r), int(c))
    # A sampler of one's own replaces the configured shuffle (DataLoader forbids both).
    custom = make_dataloader(dataset, sampler=SequentialSampler(dataset), num_workers=0)
    assert isinstance(custom.sampler, SequentialSampler)


def test_unknown_loader_options_are_rejected_with_a_suggestion(make_dataset):
    from crossgeo.options import IgnoredOptionWarning

    with pytest.warns(IgnoredOptionWarning, match="Did you mean 'num_workers'"):  # the drop-in, like the original
        assert make_dataset(data_loader={"num_worker": 2}).data_loader == {}
    with pytest.raises(TypeError, match="Did you mean 'batch_size'"):
        make_dataloader(make_dataset(), batchsize=2)


def test_workers_match_single_process_and_epochs_differ(make_dataset):
    """Same seed and order: identical batches with 0 and 2 workers; epoch 1 differs from epoch 0."""
    config = {"shuffle": True, "batch_size": 2}
    serial = make_dataset(augmentation_list=AUGMENT, seed=11, return_metadata=True, data_loader=config)
    parallel = make_dataset(augmentation_list=AUGMENT, seed=11, return_metadata=True, data_loader=config)
    loader0 = make_dataloader(serial, num_workers=0)
    loader2 = make_dataloader(parallel, num_workers=2)
    epoch0 = _batches(loader0)
    _assert_same_batches(epoch0, _batches(loader2))
    # The seeded shuffle is the core's epoch order: the same as the tf.data and Keras adapters'.
    order = [(int(r), int(c)) for b in epoch0 for r, c in zip(b["metadata"]["row_off"], b["metadata"]["col_off"])]
    assert order == [WINDOWS[i] for i in epoch_order(len(WINDOWS), 11, 0)]
    # Each sample is exactly the core function's output for (seed, epoch 0, index).
    for batch in epoch0:
        for image, mask, r, c in zip(
            batch["image"], batch["mask"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]
        ):
            expected_image, expected_mask = _expected(serial, WINDOWS.index((int(r), int(c))), 0)
            np.testing.assert_array_equal(image.numpy(), expected_image)
            np.testing.assert_array_equal(mask.numpy(), expected_mask)
    # The second pass advances the epoch by itself: new order and new augmentations, still equal
    # across worker counts.
    epoch1 = _batches(loader0)
    assert serial.epoch == 1
    order1 = [(int(r), int(c)) for b in epoch1 for r, c in zip(b["metadata"]["row_off"], b["metadata"]["col_off"])]
    assert order1 == [WINDOWS[i] for i in epoch_order(len(WINDOWS), 11, 1)] != order
    _assert_same_batches(epoch1, _batches(loader2))
    assert parallel.epoch == 1
    by_window = {}
    for epoch, batches in ((0, epoch0), (1, epoch1)):
        for b in batches:
            for image, r, c in zip(b["image"], b["metadata"]["row_off"], b["metadata"]["col_off"]):
                by_window.setdefault((int(r), int(c)), {})[epoch] = image
    assert any(not torch.equal(v[0], v[1]) for v in by_window.values())
    # An explicit set_epoch wins, and epoch e is the same whichever loader produced it.
    replay = make_dataset(augmentation_list=AUGMENT, seed=11, return_metadata=True, data_loader=config)
    replay.set_epoch(1)
    replay_images = {}
    for b in make_dataloader(replay, num_workers=0, shuffle=False):
        for image, r, c in zip(b["image"], b["metadata"]["row_off"], b["metadata"]["col_off"]):
            replay_images[(int(r), int(c))] = image
    for window, images in by_window.items():
        torch.testing.assert_close(replay_images[window], images[1], rtol=0, atol=0)


def test_start_pass_keeps_an_explicit_epoch_else_follows_or_advances(make_dataset):
    dataset = make_dataset()
    assert dataset.start_pass() == 0  # a first pass stays at epoch 0
    assert dataset.start_pass(advance=True) == 1
    dataset.set_epoch(5)
    assert dataset.start_pass(follow=2, advance=True) == 5  # set_epoch wins once ...
    assert dataset.start_pass(follow=2, advance=True) == 2  # ... then a followed epoch ...
    assert dataset.start_pass(advance=True) == 3  # ... or one more


def test_set_epoch_reaches_persistent_workers(make_dataset):
    config = {"batch_size": 4, "num_workers": 2, "persistent_workers": True, "shuffle": False}
    dataset = make_dataset(augmentation_list=AUGMENT, seed=5, return_metadata=True, data_loader=config)
    loader = make_dataloader(dataset)
    for epoch in (3, 0, 7):
        dataset.set_epoch(epoch)
        for batch in loader:
            for image, r, c in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
                expected, _ = _expected(dataset, WINDOWS.index((int(r), int(c))), epoch)
                np.testing.assert_array_equal(image.numpy(), expected)


def test_workers_never_use_the_parents_handles_and_unseeded_workers_differ(make_dataset):
    dataset = make_dataset(augmentation_list=AUGMENT, return_metadata=True)
    probe = ProbeDataset(dataset)
    probe[0]  # the parent opens its handles before the workers fork
    parent = os.getpid()
    assert len(dataset.sampler._readers) == dataset.sampler._readers.created == 1
    loader = make_dataloader(probe, num_workers=2, batch_size=1, shuffle=False)
    worker_pids, aug_seeds = set(), {}
    for batch in loader:
        pid = int(batch["pid"])
        assert pid != parent
        # The only handles a worker holds are those it opened itself.
        assert int(batch["readers_held"]) == int(batch["readers_opened"]) == 1
        worker_pids.add(pid)
        aug_seeds.setdefault(pid, set()).add(int(batch["aug_seed"]))
    assert len(worker_pids) == 2
    # Unseeded (seed=None) pipelines were reseeded per worker, differently.
    seeds = [s for pid_seeds in aug_seeds.values() for s in pid_seeds]
    assert -1 not in seeds and len(set(seeds)) == 2
    # The parent's own handles still work.
    assert_window(to_model_inputs(dataset.sampler[1])[0], *WINDOWS[1])


def test_every_worker_reads_under_crossgeo_gdal_options(make_dataset, monkeypatch):
    """Workers forked afresh every epoch each read under crossgeo's GDAL options, not the parent's."""
    import rasterio

    from crossgeo.io import GDAL_OPTIONS

    for key in GDAL_CHECKED:
        monkeypatch.delenv(key, raising=False)
    dataset = make_dataset(return_metadata=True)
    probe = ProbeDataset(dataset)
    probe[0]  # the parent enters crossgeo's Env, then sets its own (process-wide) values over it
    crossgeo_options = ",".join(f"{key}={GDAL_OPTIONS[key]}" for key in GDAL_CHECKED)
    loader = make_dataloader(probe, num_workers=2, batch_size=2, shuffle=False, multiprocessing_context="fork")
    worker_pids = set()
    with rasterio.Env(GDAL_HTTP_MAX_RETRY=1, GDAL_DISABLE_READDIR_ON_OPEN="FALSE", VSI_CACHE=False):
        foreign = gdal_options_now()
        assert foreign != crossgeo_options
        for _ in range(2):
            for batch in loader:
                assert batch["gdal"] == [crossgeo_options] * len(batch["gdal"])
                for image, r, c in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
                    assert_window(image, int(r), int(c))
                worker_pids.update(int(p) for p in batch["pid"])
        assert gdal_options_now() == foreign
    assert len(worker_pids) == 4  # two workers per epoch, each checked


def test_spawned_persistent_worker_follows_set_epoch(make_dataset):
    """With the spawn start method the dataset is pickled; the epoch stays shared."""
    config = {"batch_size": 8, "num_workers": 1, "persistent_workers": True, "multiprocessing_context": "spawn"}
    dataset = make_dataset(augmentation_list=AUGMENT, seed=2, return_metadata=True, data_loader=config)
    loader = make_dataloader(dataset)
    for epoch in (4, 1):
        dataset.set_epoch(epoch)
        (batch,) = list(loader)
        for image, r, c in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
            expected, _ = _expected(dataset, WINDOWS.index((int(r), int(c))), epoch)
            np.testing.assert_array_equal(image.numpy(), expected)


def test_empty_window_sets_build_and_concatenate_but_refuse_to_iterate(scene: Any, tmp_path: Any) -> None:
    """An empty scene is a length-0 dataset (ConcatDataset over many scenes still builds); iterating nothing fails."""
    from torch.utils.data import ConcatDataset

    from crossgeo import PatchSampler
    from crossgeo.torch import PatchDataset

    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("row_off,col_off\n")
    empty = PatchDataset(PatchSampler(scene.image_tif, scene.mask_vrt, empty_csv, PATCH, color_map=COLOR_MAP))
    full = PatchDataset(PatchSampler(scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP))
    assert len(empty) == 0
    both = ConcatDataset([empty, full])
    assert len(both) == len(WINDOWS)
    assert len(list(make_dataloader(both, batch_size=2))) == (len(WINDOWS) + 1) // 2
    with pytest.raises(ValueError, match=r"make_dataloader: there are no windows to iterate .*empty.csv"):
        next(iter(make_dataloader(empty, batch_size=2)))


def test_an_empty_dataset_is_named_with_the_image_bounds_not_torchs_num_samples(
    make_dataset: Any, tmp_path: Any
) -> None:
    """Windows that all fall outside the image leave an empty dataset (a warning, as in the original);
    make_dataloader refuses it with crossgeo's message instead of torch's "num_samples=0"."""
    from crossgeo import testing as T
    from crossgeo.errors import WindowError

    windows = T.write_windows_table(tmp_path / "none.csv", [], [])
    dataset = make_dataset(crops_path=windows)
    assert len(dataset) == 0
    with pytest.raises(
        WindowError, match=r"no valid windows in .*none\.csv.*covers \(.*\) \(left, bottom, right, top\) in EPSG:3857"
    ):
        make_dataloader(dataset, shuffle=True)
