"""crossgeo.keras.PatchPyDataset: a Keras 3 PyDataset with the core's numbers."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
from tf_scene import COLS, PATCH, ROWS, Scene, decode_window, window_mask

import crossgeo.keras
from crossgeo import PatchSampler
from crossgeo.augment import build_augmentation, to_model_inputs
from crossgeo.keras import PatchPyDataset
from crossgeo.loading import epoch_order
from crossgeo.tensorflow import make_dataset

AUGMENTATIONS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0},
]


def test_is_a_pydataset_with_worker_options(sampler: PatchSampler) -> None:
    dataset = PatchPyDataset(sampler, 4, workers=3, use_multiprocessing=True, max_queue_size=5)
    assert isinstance(dataset, keras.utils.PyDataset)
    assert (dataset.workers, dataset.use_multiprocessing, dataset.max_queue_size) == (3, True, 5)


def test_batches_are_the_windows(sampler: PatchSampler) -> None:
    dataset = PatchPyDataset(sampler, 5)
    assert len(dataset) == 3 and dataset.num_batches == 3
    seen = 0
    for b in range(len(dataset)):
        x, y = dataset[b]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (PATCH, PATCH, 3) and y.shape[1:] == (PATCH, PATCH)
        for image, mask in zip(x, y):
            assert decode_window(image) == (ROWS[seen], COLS[seen])
            np.testing.assert_array_equal(mask, window_mask(ROWS[seen], COLS[seen]))
            core_image, core_mask = to_model_inputs(sampler[seen], channels_last=True)
            np.testing.assert_array_equal(image, core_image)
            np.testing.assert_array_equal(mask, core_mask)
            seen += 1
    assert seen == len(ROWS)
    assert len(dataset[-1][0]) == 2
    with pytest.raises(IndexError):
        dataset[3]
    assert len(PatchPyDataset(sampler, 5, drop_remainder=True)) == 2


def test_on_epoch_end_reshuffles_reproducibly(sampler: PatchSampler) -> None:
    def order(dataset: PatchPyDataset) -> list[tuple[int, int]]:
        return [decode_window(im) for b in range(len(dataset)) for im in dataset[b][0]]

    a, b = PatchPyDataset(sampler, 4, shuffle=True, seed=9), PatchPyDataset(sampler, 4, shuffle=True, seed=9)
    epochs = []
    for epoch in range(3):
        expected = [(ROWS[i], COLS[i]) for i in epoch_order(len(ROWS), 9, epoch)]
        assert order(a) == order(b) == expected
        epochs.append(expected)
        for dataset in (a, b):
            dataset.on_epoch_begin()  # what Keras calls around each epoch
            dataset.on_epoch_end()
    assert epochs[0] != epochs[1]


def test_only_an_epoch_begun_is_ended(sampler: PatchSampler) -> None:
    """The calls Keras makes (fit, then evaluate): an on_epoch_end without on_epoch_begin is no epoch."""
    dataset = PatchPyDataset(sampler, 4, shuffle=True, seed=9)
    dataset.on_epoch_end()  # fit starting (EpochIterator.reset)
    seen = []
    for _ in range(2):
        dataset.on_epoch_begin()
        seen.append(dataset.epoch)
        dataset.on_epoch_end()
    dataset.on_epoch_end()  # evaluate starting, from a function not named reset
    assert seen == [0, 1] and dataset.epoch == 2
    dataset.set_epoch(7)
    dataset.on_epoch_end()
    assert dataset.epoch == 7


@pytest.mark.parametrize("augmentation_list", [None, AUGMENTATIONS], ids=["plain", "augmented"])
def test_same_numbers_as_make_dataset_and_core(sampler: PatchSampler, augmentation_list) -> None:
    keras_dataset = PatchPyDataset(sampler, 4, shuffle=True, seed=21, augmentation_list=augmentation_list, workers=2)
    tf_dataset = make_dataset(sampler, batch_size=4, shuffle=True, seed=21, augmentation_list=augmentation_list)
    augmentation = build_augmentation(augmentation_list)
    for epoch in (0, 1):
        tf_batches = list(tf_dataset.as_numpy_iterator())
        order = epoch_order(len(ROWS), 21, epoch)
        for b, (tf_x, tf_y) in enumerate(tf_batches):
            x, y = keras_dataset[b]
            np.testing.assert_array_equal(x, tf_x)
            np.testing.assert_array_equal(y, tf_y)
            for k, index in enumerate(order[4 * b : 4 * b + 4]):
                chw, mask = to_model_inputs(sampler[int(index)], augmentation, seed=21, epoch=epoch)
                np.testing.assert_array_equal(x[k], chw.transpose(1, 2, 0))
                np.testing.assert_array_equal(y[k], mask)
        keras_dataset.on_epoch_begin()
        keras_dataset.on_epoch_end()


def test_mapping_source_and_pickle(scene: Scene) -> None:
    dataset = PatchPyDataset(scene.config(seed=4, data_loader={"batch_size": 6, "shuffle": True, "num_workers": 2}))
    assert (dataset.batch_size, dataset.shuffle, dataset.seed, len(dataset)) == (6, True, 4, 2)
    x, y = dataset[1]
    copy = pickle.loads(pickle.dumps(dataset))  # what use_multiprocessing with spawn needs
    np.testing.assert_array_equal(copy[1][0], x)
    np.testing.assert_array_equal(copy[1][1], y)
    with pytest.raises(TypeError, match="batch_size"):
        PatchPyDataset(scene.config())


def test_fit_on_tensorflow_backend(sampler: PatchSampler) -> None:
    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(0)
    served: list[tuple[int, int]] = []

    class Recording(PatchPyDataset):
        def __getitem__(self, index: int):  # type: ignore[override]
            served.append((self.epoch, int(index)))
            return super().__getitem__(index)

    dataset = Recording(sampler, 4, shuffle=True, seed=1, augmentation_list=AUGMENTATIONS, workers=2)
    model = tiny_model(3)
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    # Keras' extra on_epoch_end when fit starts is ignored: fit trains on epochs 0 and 1.
    assert dataset.epoch == 2
    trained = served[-6:]  # the first calls are Keras probing the batch signature
    assert sorted(trained) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert {epoch for epoch, _ in served} == {0, 1}


def tiny_model(n_classes: int, bands: int = 3, size: int = PATCH) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((size, size, bands)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(n_classes, 1),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_keras_module_imports_no_tensorflow() -> None:
    tree = ast.parse(Path(crossgeo.keras.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] in {"tensorflow", "torch", "jax"} for name in imported)
    assert not any(name.startswith("crossgeo.tensorflow") for name in imported)
