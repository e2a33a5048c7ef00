"""A time-series SceneSampler through tf.data and Keras: (T, H, W, C), the dates torch draws.

The shared definition (tests/torch_adapter/test_torch_time_series.py holds torch to it): item
``i`` of epoch ``e`` is ``to_model_inputs(sampler[i], augmentation, seed=seed, epoch=e,
channels_last=True)``, ``time_selection="random"``'s draw included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from testkit import SIZE, Series

from crossgeo import SceneSampler
from crossgeo.augment import build_augmentation, to_model_inputs

AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomRotate90", "p": 1.0},
]


def _reference(sampler: SceneSampler, seed: int, epoch: int, augment: list | None) -> tuple[np.ndarray, np.ndarray]:
    augmentation = build_augmentation(augment) if augment else None
    pairs = [
        to_model_inputs(sampler[i], augmentation, seed=seed, epoch=epoch, channels_last=True)
        for i in range(len(sampler))
    ]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.mark.parametrize("augment", [None, AUGMENT])
def test_tf_data_and_keras_give_t_h_w_c_with_the_shared_draw(tmp_path: Path, augment: list | None) -> None:
    if augment:
        pytest.importorskip("albumentations")
    from crossgeo.keras import PatchPyDataset
    from crossgeo.tensorflow import make_dataset

    series = Series(tmp_path)
    sampler = SceneSampler(
        series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=3, time_selection="random"
    )
    draws = set()
    for epoch in range(3):
        images, masks = _reference(sampler, 11, epoch, augment)
        assert images.shape == (6, 3, SIZE, SIZE, 4) and images.dtype == np.float32
        draws.add(tuple(np.round(images[0, :, 0, 0, 3] * 65535).astype(int).tolist()) if not augment else epoch)
        dataset = make_dataset(sampler, batch_size=4, seed=11, augmentation_list=augment, epoch=epoch)
        got = list(dataset.as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in got]), masks)

        keras_data = PatchPyDataset(sampler, 4, seed=11, augmentation_list=augment, epoch=epoch)
        batches = [keras_data[b] for b in range(len(keras_data))]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), masks)
    assert len(draws) > 1


def test_tf_data_and_keras_batch_dates_of_several_band_files(tmp_path: Path) -> None:
    """Issue 24.4: each date two band files (10 m coordinates, 20 m day of year): (B, T, H, W, C) whose last
    channel is each date's own day of year, in tf.data and Keras alike."""
    from testkit import DATES_A, day_of_year, multi_source_dates

    from crossgeo.keras import PatchPyDataset
    from crossgeo.tensorflow import make_dataset

    sampler = SceneSampler(
        multi_source_dates(Series(tmp_path)), SIZE, image_dtype="uint16", image_resampling="nearest",
        group_by="place", time_steps=5,
    )  # fmt: skip
    images, _ = _reference(sampler, 3, 0, None)
    assert images.shape == (6, 5, SIZE, SIZE, 3)
    days = np.round(images[:4, :, :, :, 2] * 65535).astype(int)
    expected = [1000 + day_of_year(d) for d in sorted(DATES_A)] + [0]  # place a: 4 dates, then padding
    assert (days == np.array(expected)[None, :, None, None]).all()
    got = list(make_dataset(sampler, batch_size=4, seed=3).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
    keras_data = PatchPyDataset(sampler, 4, seed=3)
    np.testing.assert_array_equal(np.concatenate([keras_data[b][0] for b in range(len(keras_data))]), images)
