"""Weighted sampling in tf.data and Keras: the shared seeded draw of `crossgeo.loading.epoch_order`.

tests/torch_adapter/test_torch_weighted.py checks the torch DataLoader against the same
function with the same rule for the weights, seed and epochs, so all three adapters draw
the same windows in the same order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tf_scene import COLS, PATCH, ROWS, Scene, decode_window

from crossgeo import ConfigError, PatchSampler
from crossgeo.keras import PatchPyDataset
from crossgeo.loading import epoch_order
from crossgeo.tensorflow import make_dataset

#: One weight per window (two never drawn): the rule of the torch test.
WEIGHTS = [float(i % 4) for i in range(len(ROWS))]
SEED = 11


def test_tf_data_and_keras_follow_the_shared_draw(scene: Scene) -> None:
    sampler = scene.sampler()
    dataset = make_dataset(sampler, batch_size=5, seed=SEED, weights=WEIGHTS, with_metadata=True)
    keras_data = PatchPyDataset(sampler, batch_size=5, seed=SEED, weights=WEIGHTS)
    assert len(keras_data) == 3 and int(dataset.cardinality()) == 3
    for epoch in range(3):
        expected = epoch_order(len(ROWS), SEED, epoch, weights=WEIGHTS)
        seen = []
        for images, _, meta in dataset.as_numpy_iterator():
            seen.extend(meta["index"].tolist())
            assert [decode_window(im) for im in images] == list(zip(meta["row_off"], meta["col_off"]))
        assert seen == expected.tolist(), f"tf.data epoch {epoch}"
        windows = [decode_window(im) for k in range(len(keras_data)) for im in keras_data[k][0]]
        assert windows == [(ROWS[i], COLS[i]) for i in expected], f"Keras epoch {epoch}"
        keras_data.on_epoch_begin()
        keras_data.on_epoch_end()
    assert not set(expected.tolist()) & {i for i, w in enumerate(WEIGHTS) if w == 0}


def test_weight_column_and_bad_weights(scene: Scene) -> None:
    path = scene.folder / "weighted.csv"
    pd.DataFrame({"row_off": ROWS, "col_off": COLS, "weight": WEIGHTS}).to_csv(path, index=False)
    sampler = PatchSampler(scene.image, scene.mask, path, PATCH, n_classes=3)
    expected = epoch_order(len(ROWS), SEED, 0, weights=WEIGHTS).tolist()
    dataset = make_dataset(sampler, seed=SEED, weights="weight", with_metadata=True)
    assert [int(m["index"]) for _, _, m in dataset.as_numpy_iterator()] == expected
    keras_data = PatchPyDataset(sampler, batch_size=len(ROWS), seed=SEED, weights="weight")
    assert keras_data.order.tolist() == expected
    for bad, match in (
        ([1.0, 2.0], "weights has 2 values"),
        ([0.0] * len(ROWS), "all zero"),
        ([np.nan] * len(ROWS), "NaN"),
        ([-1.0] * len(ROWS), "negative"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_dataset(sampler, seed=SEED, weights=bad)
        with pytest.raises(ConfigError, match=match):
            PatchPyDataset(sampler, batch_size=2, seed=SEED, weights=bad)
