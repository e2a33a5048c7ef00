"""SceneSampler through tf.data and Keras: the same numbers as torch, from the one shared definition.

The definition is the framework-free one ``tests/torch_adapter/test_torch_scenes.py`` holds torch
to: element ``k`` of epoch ``e`` is ``to_model_inputs(sampler[epoch_order(n, seed, e)[k]], ...)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.augment import build_augmentation, to_model_inputs
from crossgeo.loading import epoch_order

PATCH = 32
WINDOWS = ((0, 0), (40, 50), (96, 96))
AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]


def _reference(sampler: SceneSampler, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray, set[int]]:
    augmentation = build_augmentation(AUGMENT)
    images, masks, scenes = [], [], set()
    for i in epoch_order(len(sampler), seed, epoch).tolist():
        patch = sampler[i]
        scenes.add(patch.scene)
        image, mask = to_model_inputs(patch, augmentation, seed=seed, epoch=epoch, channels_last=True)
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks), scenes


def test_tf_data_and_keras_iterate_a_catalogue_with_identical_numbers(tmp_path: Path) -> None:
    pytest.importorskip("albumentations")
    from crossgeo.keras import PatchPyDataset
    from crossgeo.tensorflow import make_dataset

    scenes, mask = T.write_scene_catalogue(tmp_path, 7, windows=WINDOWS)
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, max_open=2)
    images, masks, seen = _reference(sampler, 11, 0)
    assert len(images) == 21 and seen == set(range(7))

    dataset = make_dataset(sampler, batch_size=4, shuffle=True, seed=11, augmentation_list=AUGMENT, epoch=0)
    got = list(dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), masks)

    keras_data = PatchPyDataset(sampler, 4, shuffle=True, seed=11, augmentation_list=AUGMENT)
    batches = [keras_data[b] for b in range(len(keras_data))]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), masks)
    assert len(sampler.open_scenes) <= 2


def test_make_dataset_takes_a_scenes_mapping(tmp_path: Path) -> None:
    from crossgeo.tensorflow import make_dataset

    scenes, mask = T.write_scene_catalogue(tmp_path, 4, windows=WINDOWS)
    config = {"scenes": scenes, "mask_path": str(mask), "patch_size": PATCH, "n_classes": 4, "max_open": 1}
    got = list(make_dataset(config, with_metadata=True).as_numpy_iterator())
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4)
    assert len(got) == len(sampler) == 12
    for k, (image, mask_, meta) in enumerate(got):
        patch = sampler[k]
        assert (meta["row_off"], meta["col_off"]) == (patch.row_off, patch.col_off)
        np.testing.assert_array_equal(mask_, patch.mask)
        np.testing.assert_array_equal(image, np.moveaxis(patch.image, 0, -1).astype(np.float32) / 255)
