"""tf.data and Keras follow the framework-free loader plan (`crossgeo.loading.plan_loader`).

A plan built from the same configuration, with no framework, predicts each adapter's window
order per epoch (shuffled, weighted, sharded), its batch count and its compact mask type;
tests/torch_adapter/test_torch_loading.py checks the torch adapter against the same plan.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tf_scene import COLS, ROWS, Scene, decode_window

from crossgeo.keras import PatchPyDataset
from crossgeo.loading import plan_loader
from crossgeo.tensorflow import make_dataset


def test_tf_data_follows_the_plan_of_its_mapping(scene: Scene) -> None:
    config = scene.config(seed=4, data_loader={"batch_size": 5, "shuffle": True, "drop_last": True})
    plan = plan_loader(config, where="plan")
    dataset = make_dataset(config, with_metadata=True)
    assert int(dataset.cardinality()) == plan.batches() == len(ROWS) // 5
    for epoch in range(2):
        seen = [i for _, _, meta in dataset.as_numpy_iterator() for i in meta["index"].tolist()]
        assert seen == plan.order(epoch)[: plan.batches() * 5].tolist(), f"epoch {epoch}"
    images, masks = next(iter(make_dataset(config, compact=True).take(1)))
    assert images.dtype == tf.float32 and masks.dtype == tf.int64
    assert plan.mask_type == np.dtype(np.uint8)  # what the compact map hands over for 3 classes


def test_tf_data_shards_are_the_plans(scene: Scene) -> None:
    sampler = scene.sampler()
    weights = [float(i % 4) for i in range(len(ROWS))]
    plan = plan_loader(sampler, where="plan", seed=6, weights=weights)
    for rank in range(3):
        context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=rank)
        dataset = make_dataset(sampler, seed=6, weights=weights, input_context=context, with_metadata=True)
        seen = [int(meta["index"]) for _, _, meta in dataset.as_numpy_iterator()]
        assert seen == plan.order(0, rank=rank, replicas=3).tolist()


def test_keras_follows_the_plan(scene: Scene) -> None:
    sampler = scene.sampler()
    plan = plan_loader(sampler, where="plan", seed=12, shuffle=True, batch_size=4)
    keras_data = PatchPyDataset(sampler, batch_size=4, seed=12, shuffle=True)
    assert len(keras_data) == plan.batches()
    for epoch in range(2):
        windows = [decode_window(im) for k in range(len(keras_data)) for im in keras_data[k][0]]
        assert windows == [(ROWS[i], COLS[i]) for i in plan.order(epoch)], f"epoch {epoch}"
        keras_data.on_epoch_begin()
        keras_data.on_epoch_end()
    assert keras_data.plan.mask_type == plan.mask_type and keras_data.plan.decode_type() == plan.decode_type()
