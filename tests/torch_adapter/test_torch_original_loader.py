"""The drop-in under the original's Lightning usage: a plain DataLoader, ``seed=cfg.seed``, no ``set_epoch``.

The original `MBTilesCropsGeoTifMaskDataset`'s Lightning model (pytorch_segmentation_models_trainer
1.4.0) builds ``DataLoader(dataset, shuffle=True, generator=Generator().manual_seed(cfg.seed),
worker_init_fn=...)`` after ``seed_everything(cfg.seed)`` and never calls ``set_epoch``; these tests
build the same loader (``torch.manual_seed`` standing in for ``seed_everything``).
"""

from __future__ import annotations

import itertools
import random
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from torch_scene import PATCH, assert_window

from crossgeo.augment import to_model_inputs
from crossgeo.errors import ConfigError
from crossgeo.options import IgnoredOptionWarning
from crossgeo.sampler import PatchSampler
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, make_dataloader

#: One flip: a window's patch repeats between two epochs with probability 1/2 by chance. (Two flips give
#: 1/4 once the transforms of a seeded pipeline draw independently: tests/original checks that end to end.)
FLIPS = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]
#: An 8 x 8 grid of windows over the 256 x 256 scene: 64 windows.
GRID = [(r, c) for r in range(0, 256, PATCH) for c in range(0, 256, PATCH)]
SEED = 2024


@pytest.fixture(scope="module")
def grid_csv(scene: types.SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "grid.csv"
    weights = [1.0 + (i % 4) for i in range(len(GRID))]
    pd.DataFrame({"row_off": [r for r, _ in GRID], "col_off": [c for _, c in GRID], "weight": weights}).to_csv(
        path, index=False
    )
    return path


def _dataset(scene: types.SimpleNamespace, crops: Any, **options: Any) -> MBTilesCropsGeoTifMaskDataset:
    config = {"augmentation_list": FLIPS, "seed": SEED, "return_metadata": True, **options}
    return MBTilesCropsGeoTifMaskDataset(scene.image_tif, scene.mask_tif, crops, PATCH, **config)


def _worker_init_fn(worker_id: int) -> None:
    """The original's ``_worker_init_fn``: numpy and random from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _original_loader(dataset: Any, num_workers: int, persistent: bool = False) -> DataLoader[Any]:
    """``Model.train_dataloader`` of the original (seeded generator, no set_epoch)."""
    return DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=persistent,
        worker_init_fn=_worker_init_fn,
        generator=torch.Generator().manual_seed(SEED),
    )


def _epochs(dataset: Any, num_workers: int = 0, persistent: bool = False, epochs: int = 4) -> list[dict]:
    """Per epoch: window (row_off, col_off) -> its image, as a trainer's loop sees them."""
    torch.manual_seed(SEED)  # seed_everything(cfg.seed)
    loader = _original_loader(dataset, num_workers, persistent)
    passes = []
    for _ in range(epochs):
        seen: dict[tuple[int, int], torch.Tensor] = {}
        for batch in loader:
            meta = batch["metadata"]
            for image, r, c in zip(batch["image"], meta["row_off"], meta["col_off"]):
                seen[(int(r), int(c))] = image
        passes.append(seen)
    return passes


def _repeat_rate(passes: list[dict]) -> float:
    same = total = 0
    for before, after in itertools.pairwise(passes):
        for window in before.keys() & after.keys():
            total += 1
            same += bool(torch.equal(before[window], after[window]))
    return same / total


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for window in x:
            torch.testing.assert_close(x[window], y[window], rtol=0, atol=0)


def test_augmentation_changes_per_epoch_without_set_epoch(scene, grid_csv):
    """Issue #22 item 1: with a flip a window repeats its patch between epochs about 1 time in 2, not always."""
    passes = _epochs(_dataset(scene, grid_csv))
    rate = _repeat_rate(passes)
    assert 0.35 <= rate <= 0.65, rate  # 64 windows x 3 epoch pairs (sd 0.036); chance is 0.5
    for seen in passes:  # every patch is still its window's pixels, flipped or not
        for (r, c), image in seen.items():
            flips = [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]
            assert any(_is_window(f, r, c) for f in flips)


def _is_window(image: torch.Tensor, r: int, c: int) -> bool:
    try:
        assert_window(image, r, c)
    except AssertionError:
        return False
    return True


def test_same_numbers_for_0_workers_workers_and_persistent_workers_and_reruns(scene, grid_csv):
    """Reproducible under a fixed seed, and the same whether 0, 2 or 2 persistent workers serve the items."""
    serial = _epochs(_dataset(scene, grid_csv), epochs=3)
    _assert_same(serial, _epochs(_dataset(scene, grid_csv), epochs=3))
    _assert_same(serial, _epochs(_dataset(scene, grid_csv), num_workers=2, epochs=3))
    _assert_same(serial, _epochs(_dataset(scene, grid_csv), num_workers=2, persistent=True, epochs=3))


def test_set_epoch_still_fixes_the_pass(scene, grid_csv):
    dataset = _dataset(scene, grid_csv, return_metadata=False)
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, grid_csv, PATCH)
    dataset.set_epoch(5)
    for _ in range(2):  # a set epoch does not advance by visits
        for i in (0, 9):
            image, mask = to_model_inputs(sampler.get(i), dataset.augmentation, seed=SEED, epoch=5)
            np.testing.assert_array_equal(dataset[i]["image"].numpy(), image)
            np.testing.assert_array_equal(dataset[i]["mask"].numpy(), mask)
    # make_dataloader's loader keeps driving the epoch: pass 0, 1, ... as before.
    loader = make_dataloader(_dataset(scene, grid_csv), batch_size=64, shuffle=False)
    first, second = next(iter(loader)), next(iter(loader))
    image, _ = to_model_inputs(sampler.get(3), dataset.augmentation, seed=SEED, epoch=1)
    np.testing.assert_array_equal(second["image"][3].numpy(), image)
    assert not torch.equal(first["image"], second["image"])


def test_samples_per_epoch_is_the_epoch_length_and_walks_through_the_windows(scene, grid_csv):
    """Issue #22 item 3: ``samples_per_epoch`` sets ``len``; pass k serves windows (j + k*S) % N."""
    short = _dataset(scene, grid_csv, samples_per_epoch=24, augmentation_list=None)
    assert len(short) == 24 and short.n_windows == 64
    served = []
    for _ in range(3):
        items = [short[j]["metadata"] for j in range(24)]  # each read is a visit: one per item per pass
        served += [(meta["row_off"], meta["col_off"]) for meta in items]
    assert served[:64] == GRID  # three short epochs: every window once, in order, then around again
    assert served[64:] == GRID[:8]
    long = _dataset(scene, grid_csv, samples_per_epoch=128)
    assert len(long) == 128
    a, b = long[5], long[5 + 64]  # the same window twice in one epoch: two draws, two augmentations
    assert a["metadata"] == b["metadata"]
    sampler = PatchSampler(scene.image_tif, scene.mask_tif, grid_csv, PATCH)
    for draw, item in enumerate((a, b)):
        image, _ = to_model_inputs(sampler.get(5), long.augmentation, seed=SEED, epoch=draw)
        np.testing.assert_array_equal(item["image"].numpy(), image)
    assert len(_dataset(scene, grid_csv, samples_per_epoch=0)) == 64  # <= 0: automatic, as in the original
    with pytest.raises(TypeError, match="samples_per_epoch must be an integer"):
        _dataset(scene, grid_csv, samples_per_epoch="many")


def test_the_original_pipeline_keys_are_accepted(scene, grid_csv):
    """Keys the original's config dataclass and Lightning model put in a dataset config."""
    gpu = [{"_target_": "kornia.augmentation.RandomHorizontalFlip", "p": 0.5}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these warns
        dataset = _dataset(
            scene,
            grid_csv,
            gpu_augmentation_list=gpu,
            samples_per_epoch=0,
            image_resampling="bilinear",
            crops_layer=None,
            window_index_cache=None,
            n_classes=2,
            data_loader={
                "shuffle": True,
                "num_workers": 0,
                "pin_memory": False,
                "drop_last": True,
                "prefetch_factor": 2,
                "persistent_workers": False,
                "multiprocessing_context": None,
                "batch_size": 4,
                "weighted_sampler": False,
                "weighted_sampler_num_samples": 64,
                "weighted_sampler_replacement": True,
            },
        )
    assert dataset.gpu_augmentation_list == gpu
    assert len(make_dataloader(dataset)) == 16
    for key, value in (("grid_mode", True), ("input_csv_path", "x.csv")):
        with pytest.warns(IgnoredOptionWarning, match=f"ignores {key}="):
            _dataset(scene, grid_csv, **{key: value})


def test_unknown_keys_warn_with_the_closest_known_key_and_samplers_stay_strict(scene, grid_csv):
    """#23 parity: the original takes ``**kwargs``; the drop-in warns, PatchSampler still raises."""
    with pytest.warns(IgnoredOptionWarning, match="colour_map=.*Did you mean 'color_map'"):
        dataset = _dataset(scene, grid_csv, colour_map=[[255, 0, 0, 1]])
    assert len(dataset) == 64
    with pytest.warns(IgnoredOptionWarning, match="data_loader.num_worker=2.*Did you mean 'num_workers'"):
        dataset = _dataset(scene, grid_csv, data_loader={"num_worker": 2, "batch_size": 4})
    assert dataset.data_loader == {"batch_size": 4}
    with pytest.raises(TypeError, match="Did you mean 'patch_size'"):
        PatchSampler(scene.image_tif, scene.mask_tif, grid_csv, patchsize=PATCH)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="Did you mean 'num_workers'"):
        make_dataloader(dataset, num_worker=2)
    with pytest.raises(TypeError, match="seed must be an integer"):  # known keys keep their checks
        _dataset(scene, grid_csv, seed="x")


def test_weighted_sampler_uses_the_windows_weights(scene, grid_csv):
    """``data_loader.weighted_sampler``: crossgeo's loader draws by the ``weight`` column; ``df`` gives the
    original's model its ``sampler_weight`` column for its own ``WeightedRandomSampler``."""
    dataset = _dataset(scene, grid_csv, data_loader={"weighted_sampler": True, "batch_size": 8})
    expected = [1.0 + (i % 4) for i in range(64)]
    assert dataset.df["sampler_weight"].tolist() == expected
    assert list(zip(dataset.df["row_off"], dataset.df["col_off"])) == GRID
    loader = make_dataloader(dataset)
    assert type(loader.sampler).__name__ == "EpochOrderSampler"
    assert loader.sampler.weights.tolist() == pytest.approx(expected)  # type: ignore[attr-defined]
    # The original's Model._make_weighted_sampler, verbatim in substance.
    df = dataset.df
    sampler = WeightedRandomSampler(torch.tensor(df["sampler_weight"].to_numpy(), dtype=torch.double), len(df))
    assert len(list(sampler)) == 64
    with pytest.warns(IgnoredOptionWarning, match="weighted_sampler_num_samples=10"):
        options = {"weighted_sampler": True, "weighted_sampler_num_samples": 10}
        make_dataloader(_dataset(scene, grid_csv, data_loader=options))
    with pytest.raises(ConfigError, match="no 'weight'"):
        _dataset(scene, scene.windows_csv, data_loader={"weighted_sampler": True})
    with pytest.raises(ConfigError, match="samples_per_epoch"):
        _dataset(scene, grid_csv, samples_per_epoch=10, data_loader={"weighted_sampler": True})
