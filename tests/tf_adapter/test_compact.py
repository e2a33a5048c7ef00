"""Compact transfer in tf.data and Keras: narrow map outputs, converted once per batch, bit-identical."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from conftest import PATCH, Scene, decode_window

from crossgeo import PatchSampler
from crossgeo.keras import PatchPyDataset
from crossgeo.tensorflow import make_dataset

FLIP_AND_SOMETIMES_NORMALIZE = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.Normalize", "p": 0.5},
]


def _numpy(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.asarray(part) for part in element[:2]) for element in dataset]


def _assert_same(compact: list[tuple[np.ndarray, ...]], plain: list[tuple[np.ndarray, ...]]) -> None:
    assert len(compact) == len(plain) > 0
    for (image, mask), (image0, mask0) in zip(compact, plain):
        assert image.dtype == np.float32 and mask.dtype == np.int64
        np.testing.assert_array_equal(image, image0)  # bit-identical (no NaN here)
        np.testing.assert_array_equal(mask, mask0)


@pytest.mark.parametrize("augmentation_list", [None, FLIP_AND_SOMETIMES_NORMALIZE])
def test_tf_compact_equals_float(scene: Scene, augmentation_list: Any) -> None:
    sampler = PatchSampler(scene.tif, scene.lonlat_mask(), scene.windows, PATCH, n_classes=4)
    options: dict[str, Any] = {"batch_size": 3, "seed": 3, "shuffle": True, "epoch": 1}
    options["augmentation_list"] = augmentation_list
    compact = _numpy(make_dataset(sampler, compact=True, **options))
    _assert_same(compact, _numpy(make_dataset(sampler, **options)))
    if augmentation_list is None:
        element = make_dataset(sampler, compact=True, batch_size=2)
        assert element.element_spec[0].dtype == tf.float32 and element.element_spec[1].dtype == tf.int64
        image, _ = next(iter(make_dataset(sampler, compact=True)))
        assert decode_window(np.asarray(image)) == (int(sampler.row_off[0]), int(sampler.col_off[0]))


def test_tf_compact_unbatched_and_with_metadata(scene: Scene, sampler: PatchSampler) -> None:
    compact = list(make_dataset(sampler, compact=True, with_metadata=True))
    plain = list(make_dataset(sampler, with_metadata=True))
    for (image, mask, meta), (image0, mask0, meta0) in zip(compact, plain, strict=True):
        np.testing.assert_array_equal(image.numpy(), image0.numpy())
        np.testing.assert_array_equal(mask.numpy(), mask0.numpy())
        assert int(meta["row_off"]) == int(meta0["row_off"])


@pytest.mark.parametrize("augmentation_list", [None, FLIP_AND_SOMETIMES_NORMALIZE])
def test_keras_compact_equals_float(scene: Scene, sampler: PatchSampler, augmentation_list: Any) -> None:
    options: dict[str, Any] = {"shuffle": True, "seed": 9, "augmentation_list": augmentation_list}
    compact = PatchPyDataset(sampler, 3, compact=True, **options)
    plain = PatchPyDataset(sampler, 3, **options)
    _assert_same([compact[i] for i in range(len(compact))], [plain[i] for i in range(len(plain))])


def test_compact_must_be_a_bool(sampler: PatchSampler) -> None:
    with pytest.raises(TypeError, match="compact must be true or false"):
        make_dataset(sampler, compact=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="compact must be true or false"):
        PatchPyDataset(sampler, 2, compact="no")  # type: ignore[arg-type]
