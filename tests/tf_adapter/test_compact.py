"""Compact transfer in tf.data and Keras: narrow map outputs, converted once per batch, bit-identical.

In tf.data it is the default (nothing visible changes); these tests hold both paths to the
same numbers on real rasters in every pipeline shape: batched, unbatched, drop_remainder,
metadata, tf.distribute shards, weighted draws and a skipped unreadable window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import tensorflow as tf
from tf_scene import COLS, PATCH, ROWS, Scene, decode_window, window_mask

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.keras import PatchPyDataset
from crossgeo.loading import epoch_order
from crossgeo.tensorflow import make_dataset

FLIP_AND_SOMETIMES_NORMALIZE = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.Normalize", "p": 0.5},
]


def _flat(dataset: tf.data.Dataset) -> list[list[np.ndarray]]:
    """Every element as its flattened numpy parts (image, mask, then metadata in key order)."""
    return [[np.asarray(part) for part in tf.nest.flatten(element)] for element in dataset]


def _assert_same_elements(compact: tf.data.Dataset, plain: tf.data.Dataset) -> list[list[np.ndarray]]:
    """Same element spec and, part by part, the same dtypes, shapes and values (bit for bit)."""
    assert compact.element_spec == plain.element_spec
    assert int(compact.cardinality()) == int(plain.cardinality())
    got, want = _flat(compact), _flat(plain)
    assert len(got) == len(want) == int(plain.cardinality()) > 0
    for element, expected in zip(got, want):
        assert len(element) == len(expected)
        for part, part0 in zip(element, expected):
            assert part.dtype == part0.dtype and part.shape == part0.shape
            np.testing.assert_array_equal(part, part0)
    return got


def _plus_300(mask: np.ndarray, **_: Any) -> np.ndarray:
    return mask.astype(np.int32) + 300


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
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), scene.windows_csv, PATCH, n_classes=4)
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
    compact = PatchPyDataset(sampler, 3, **options)
    assert compact.compact  # the default
    plain = PatchPyDataset(sampler, 3, compact=False, **options)
    _assert_same([compact[i] for i in range(len(compact))], [plain[i] for i in range(len(plain))])


def test_tf_default_is_compact_and_equals_float(sampler: PatchSampler) -> None:
    """The default pipeline narrows in the map (an out-of-range mask value shows it) and equals compact=False."""
    assert make_dataset(sampler).element_spec == make_dataset(sampler, compact=False).element_spec
    _assert_same_elements(make_dataset(sampler, batch_size=4), make_dataset(sampler, batch_size=4, compact=False))
    # An augmentation writing 300 into the mask: the narrow (uint8) mask cannot hold it ...
    beyond = [A.Lambda(mask=_plus_300)]
    with pytest.raises(tf.errors.OpError, match="do not fit the compact mask type uint8"):
        list(make_dataset(sampler, batch_size=4, augmentation_list=beyond))
    # ... compact=False hands the int64 mask over unchanged.
    masks = [mask for _, mask in make_dataset(sampler, batch_size=4, augmentation_list=beyond, compact=False)]
    for i, mask in enumerate(np.concatenate(masks)):
        np.testing.assert_array_equal(mask, window_mask(ROWS[i], COLS[i]) + 300)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"batch_size": 5},
        {"batch_size": 5, "drop_remainder": True},
        {"batch_size": 4, "channels_last": False},
        {"with_metadata": True, "shuffle": True, "seed": 2},
        {"batch_size": 5, "with_metadata": True, "shuffle": True, "seed": 2, "epoch": 3},
        {
            "batch_size": 5,
            "drop_remainder": True,
            "with_metadata": True,
            "seed": 6,
            "weights": np.arange(len(ROWS)) % 3,
        },
        {"batch_size": 3, "with_metadata": True, "augmentation_list": FLIP_AND_SOMETIMES_NORMALIZE, "seed": 4},
    ],
    ids=[
        "single",
        "batched",
        "drop-remainder",
        "channels-first",
        "single-metadata",
        "metadata",
        "weighted",
        "augmented",
    ],
)
def test_tf_compact_equals_float_in_every_pipeline_shape(sampler: PatchSampler, options: dict[str, Any]) -> None:
    got = _assert_same_elements(make_dataset(sampler, **options), make_dataset(sampler, compact=False, **options))
    if options.get("augmentation_list") or not options.get("channels_last", True):
        return
    # The windows themselves: images decode to their window, masks are the window's classes.
    for element in got:
        images = element[0] if element[0].ndim == 4 else element[0][None]
        masks = element[1] if element[1].ndim == 3 else element[1][None]
        offsets = [decode_window(image) for image in images]
        for (row, col), mask in zip(offsets, masks):
            np.testing.assert_array_equal(mask, window_mask(row, col))
        if options.get("with_metadata"):  # flattened metadata: col_off, index, row_off
            col_off, index, row_off = (np.atleast_1d(part) for part in element[2:])
            assert offsets == list(zip(row_off.tolist(), col_off.tolist()))
            assert offsets == [(ROWS[i], COLS[i]) for i in index]
    if options.get("with_metadata") and "weights" not in options:
        order = np.concatenate([np.atleast_1d(element[3]) for element in got])
        expected = epoch_order(len(ROWS), options["seed"], options.get("epoch", 0))
        np.testing.assert_array_equal(order, expected)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_tf_compact_equals_float_on_input_context_shards(sampler: PatchSampler, batch_size: int | None) -> None:
    indices = []
    for pipeline in range(3):
        context = tf.distribute.InputContext(3, pipeline, 3)
        options: dict[str, Any] = {"batch_size": batch_size, "shuffle": True, "seed": 8, "with_metadata": True}
        got = _assert_same_elements(
            make_dataset(sampler, input_context=context, **options),
            make_dataset(sampler, input_context=context, compact=False, **options),
        )
        shard = np.concatenate([np.atleast_1d(element[3]) for element in got])
        np.testing.assert_array_equal(shard, epoch_order(len(ROWS), 8, 0)[pipeline::3])
        indices.extend(shard.tolist())
    assert sorted(indices) == list(range(len(ROWS)))


@pytest.mark.parametrize("batch_size", [None, 5])
def test_tf_compact_equals_float_with_a_skipped_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, batch_size: int | None
) -> None:
    """A damaged MBTiles tile under on_read_error="skip": same replacements, same numbers, one tally per epoch."""
    mbtiles, mask, windows = T.write_damaged_mbtiles_scene(tmp_path)
    results = {}
    for compact in (True, False):
        sampler = PatchSampler(mbtiles, mask, windows, 64, selected_bands=[1, 2, 3], on_read_error="skip")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="crossgeo"):
            dataset = make_dataset(sampler, batch_size=batch_size, with_metadata=True, compact=compact)
            results[compact] = _flat(dataset)
        assert sampler.skipped == len(sampler.unreadable) > 0
        tallies = [r.getMessage() for r in caplog.records if "came from a replacement window" in r.getMessage()]
        assert len(tallies) == 1 and f"epoch 0: {sampler.skipped} sample(s) came from a replacement" in tallies[0]
    assert len(results[True]) == len(results[False]) > 0
    for element, expected in zip(results[True], results[False]):
        for part, part0 in zip(element, expected):
            assert part.dtype == part0.dtype
            np.testing.assert_array_equal(part, part0)


def test_compact_must_be_a_bool(sampler: PatchSampler) -> None:
    with pytest.raises(TypeError, match="compact must be true or false"):
        make_dataset(sampler, compact=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="compact must be true or false"):
        PatchPyDataset(sampler, 2, compact="no")  # type: ignore[arg-type]
