"""A STAC catalogue served over HTTP trains an epoch in tf.data and Keras with the framework-free numbers.

tests/torch_adapter/test_torch_stac.py holds torch to the same definition and sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pystac")

from testkit import STAC_EPOCH_SUMS, served_stac_sampler, stac_reference_epoch


def _model() -> object:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 4)), keras.layers.Conv2D(2, 1)])
    model.compile(
        optimizer=keras.optimizers.SGD(1e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_stac_catalogue_trains_one_epoch_in_tf_data_and_keras_with_the_reference_numbers(tmp_path: Path) -> None:
    from crossgeo.keras import PatchPyDataset
    from crossgeo.tensorflow import make_dataset

    with served_stac_sampler(tmp_path) as sampler:
        images, masks = stac_reference_epoch(sampler, 5, channels_last=True)
        assert (float(images.astype(np.float64).sum()), int(masks.sum())) == STAC_EPOCH_SUMS

        dataset = make_dataset(sampler, batch_size=4, shuffle=True, seed=5, epoch=0)
        got = list(dataset.as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in got]), masks)
        history = _model().fit(dataset, epochs=1, shuffle=False, verbose=0)  # type: ignore[attr-defined]
        assert np.isfinite(history.history["loss"][0])

        keras_data = PatchPyDataset(sampler, 4, shuffle=True, seed=5)
        batches = [keras_data[b] for b in range(len(keras_data))]
        np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), masks)
        history = _model().fit(keras_data, epochs=1, verbose=0)  # type: ignore[attr-defined]
        assert np.isfinite(history.history["loss"][0])
