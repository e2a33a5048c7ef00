"""A chip store in tf.data and Keras: the live sampler's elements, seeded augmentation and weights included (#25)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tf_scene import ROWS, Scene

from crossgeo.keras import PatchPyDataset
from crossgeo.tensorflow import make_dataset

pytest.importorskip("zarr", minversion="3")

from crossgeo.chips import ChipSampler, write_chips

AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
]
WEIGHTS = [float(i % 4) for i in range(len(ROWS))]


def test_tf_data_and_keras_from_chips_equal_the_live_ones(scene: Scene, tmp_path: Path) -> None:
    live = scene.sampler()
    chips = ChipSampler(write_chips(live, tmp_path / "chips", shard_size=4, progress=False))
    for options in ({"augmentation_list": AUGMENT}, {"weights": WEIGHTS}):
        a = make_dataset(chips, batch_size=4, shuffle=True, seed=9, **options)
        b = make_dataset(live, batch_size=4, shuffle=True, seed=9, **options)
        for epoch in range(2):
            for (xa, ya), (xb, yb) in zip(a.as_numpy_iterator(), b.as_numpy_iterator(), strict=True):
                np.testing.assert_array_equal(xa, xb, err_msg=f"tf.data epoch {epoch} {options}")
                np.testing.assert_array_equal(ya, yb)
        ka = PatchPyDataset(chips, batch_size=4, shuffle=True, seed=9, **options)
        kb = PatchPyDataset(live, batch_size=4, shuffle=True, seed=9, **options)
        for k in range(len(kb)):
            np.testing.assert_array_equal(ka[k][0], kb[k][0], err_msg=f"Keras batch {k} {options}")
            np.testing.assert_array_equal(ka[k][1], kb[k][1])
