"""tf.data and Keras visit a catalogue's ``order="scene-blocks"`` exactly as the framework-free loader plan orders it
(tests/torch_adapter/test_torch_scene_order.py holds torch to the same plan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.augment import to_model_inputs
from crossgeo.errors import ConfigError
from crossgeo.keras import PatchPyDataset
from crossgeo.loading import epoch_order, plan_loader
from crossgeo.tensorflow import make_dataset

PATCH = 32
WINDOWS = ((0, 0), (40, 50), (96, 96))


def _sampler(tmp_path: Path) -> SceneSampler:
    scenes, mask = T.write_scene_catalogue(tmp_path, 6, windows=WINDOWS)
    return SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, max_open=2, order="scene-blocks", block_scenes=2)


def test_tf_data_and_keras_visit_the_plans_scene_blocks(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path)
    plan = plan_loader(sampler, where="plan", shuffle=True, seed=7)
    dataset = make_dataset(sampler, seed=7, shuffle=True, batch_size=4, with_metadata=True)
    keras_data = PatchPyDataset(sampler, batch_size=4, seed=7, shuffle=True)
    for epoch in range(2):
        order = plan.order(epoch)
        np.testing.assert_array_equal(order, epoch_order(len(sampler), 7, epoch, blocks=(sampler.scene, 2)))
        seen = [i for _, _, meta in dataset.as_numpy_iterator() for i in meta["index"].tolist()]
        assert seen == order.tolist(), f"tf.data, epoch {epoch}"
        expected = np.stack(
            [to_model_inputs(sampler[int(i)], None, seed=7, epoch=epoch, channels_last=True)[0] for i in order]
        )
        images = np.concatenate([keras_data[k][0] for k in range(len(keras_data))])
        np.testing.assert_array_equal(images, expected, err_msg=f"Keras, epoch {epoch}")
        keras_data.on_epoch_begin()
        keras_data.on_epoch_end()
    for rank in range(2):  # shards: every replicas-th window of the same order
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=rank)
        sharded = make_dataset(sampler, seed=7, shuffle=True, input_context=context, with_metadata=True)
        seen = [int(meta["index"]) for _, _, meta in sharded.as_numpy_iterator()]
        assert seen == plan.order(0, rank=rank, replicas=2).tolist()


def test_scene_blocks_with_weights_is_refused(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path)
    with pytest.raises(ConfigError, match="scene-blocks"):
        make_dataset(sampler, seed=1, weights=np.ones(len(sampler)))
    with pytest.raises(ConfigError, match="scene-blocks"):
        PatchPyDataset(sampler, batch_size=2, seed=1, weights=np.ones(len(sampler)))
