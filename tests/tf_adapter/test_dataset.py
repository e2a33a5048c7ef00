"""crossgeo.tensorflow.make_dataset: values, layout, batching, order, parity with the core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import tensorflow as tf
from rasterio.env import get_gdal_config
from tf_scene import COLS, PATCH, ROWS, Scene, decode_window, window_mask

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.augment import build_augmentation, to_model_inputs
from crossgeo.errors import ConfigError, OptionError
from crossgeo.loading import epoch_order
from crossgeo.tensorflow import make_dataset

GDAL_CHECKED = ("GDAL_HTTP_MAX_RETRY", "GDAL_DISABLE_READDIR_ON_OPEN", "VSI_CACHE")
"""GDAL options crossgeo sets (crossgeo.io.GDAL_OPTIONS) that rasterio reads back unchanged."""

AUGMENTATIONS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomRotate90", "p": 0.5},
    {"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0},
    {"_target_": "albumentations.Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    {"_target_": "albumentations.pytorch.ToTensorV2"},
]


def elements(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.asarray(t) for t in tf.nest.flatten(e)) for e in dataset.as_numpy_iterator()]


def core(
    sampler: PatchSampler, index: int, augmentation_list=None, seed=None, epoch=0
) -> tuple[np.ndarray, np.ndarray]:
    """The shared core function the torch adapter calls: (C, H, W) float32 and (H, W) int64."""
    augmentation = build_augmentation(augmentation_list)
    return to_model_inputs(sampler[index], augmentation, seed=seed, epoch=epoch, channels_last=False)


def test_elements_are_the_windows_in_order(sampler: PatchSampler) -> None:
    dataset = make_dataset(sampler)
    assert dataset.element_spec == (
        tf.TensorSpec((PATCH, PATCH, 3), tf.float32),
        tf.TensorSpec((PATCH, PATCH), tf.int64),
    )
    assert int(dataset.cardinality()) == len(ROWS)
    got = elements(dataset)
    assert len(got) == len(ROWS)
    for i, (image, mask) in enumerate(got):
        assert image.dtype == np.float32 and mask.dtype == np.int64
        assert decode_window(image) == (ROWS[i], COLS[i])
        np.testing.assert_array_equal(mask, window_mask(ROWS[i], COLS[i]))
        chw, core_mask = core(sampler, i)
        np.testing.assert_array_equal(image, chw.transpose(1, 2, 0))
        np.testing.assert_array_equal(mask, core_mask)
    # The window reaching past the right/bottom edge is filled with 0 outside.
    edge = ROWS.index(240)
    assert np.all(got[edge][0][16:, :, :] == 0) and np.all(got[edge][0][:, 16:, :] == 0)


def test_channels_first(sampler: PatchSampler) -> None:
    dataset = make_dataset(sampler, channels_last=False, batch_size=4)
    assert dataset.element_spec[0] == tf.TensorSpec((None, 3, PATCH, PATCH), tf.float32)
    images = np.concatenate([x for x, _ in dataset.as_numpy_iterator()])
    for i, image in enumerate(images):
        np.testing.assert_array_equal(image, core(sampler, i)[0])
        assert decode_window(image.transpose(1, 2, 0)) == (ROWS[i], COLS[i])


@pytest.mark.parametrize("batch_size", [None, 5])
def test_with_metadata(sampler: PatchSampler, batch_size: int | None) -> None:
    dataset = make_dataset(sampler, with_metadata=True, batch_size=batch_size, shuffle=True, seed=1)
    spec = dataset.element_spec[2]
    assert set(spec) == {"row_off", "col_off", "index"}
    assert all(s.dtype == tf.int64 for s in spec.values())
    seen = []
    for image, _, meta in dataset.as_numpy_iterator():
        images = image if batch_size else image[None]
        rows, cols, index = (np.atleast_1d(meta[k]) for k in ("row_off", "col_off", "index"))
        for k in range(len(images)):
            assert decode_window(images[k]) == (rows[k], cols[k]) == (ROWS[index[k]], COLS[index[k]])
        seen.extend(index.tolist())
    assert seen == epoch_order(len(ROWS), 1, 0).tolist()


def test_batch_and_drop_remainder(sampler: PatchSampler) -> None:
    dataset = make_dataset(sampler, batch_size=5)
    assert [len(x) for x, _ in dataset.as_numpy_iterator()] == [5, 5, 2]
    assert int(dataset.cardinality()) == 3
    dropped = make_dataset(sampler, batch_size=5, drop_remainder=True)
    assert dropped.element_spec[0].shape == (5, PATCH, PATCH, 3)
    assert dropped.element_spec[1].shape == (5, PATCH, PATCH)
    batches = list(dropped.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [5, 5] and int(dropped.cardinality()) == 2
    assert [decode_window(im) for im in batches[1][0]] == list(zip(ROWS[5:10], COLS[5:10]))


def test_mapping_source(scene: Scene) -> None:
    config = scene.config(
        seed=7,
        return_metadata=True,
        augmentation_list=[],
        data_loader={"shuffle": True, "batch_size": 4, "num_workers": 8, "pin_memory": True},
    )
    dataset = make_dataset(config)
    assert dataset.element_spec[0].shape == (None, PATCH, PATCH, 3)
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 4]
    order = np.concatenate([b[2]["index"] for b in batches])
    np.testing.assert_array_equal(order, epoch_order(len(ROWS), 7, 0))
    for image, _, meta in batches:
        assert [decode_window(im) for im in image] == list(zip(meta["row_off"], meta["col_off"]))


def test_mapping_errors(scene: Scene) -> None:
    with pytest.raises(TypeError, match=r"patch_sise.*Did you mean 'patch_size'"):
        make_dataset({**scene.config(), "patch_sise": 3})
    with pytest.raises(OptionError, match=r"data_loader.*Did you mean 'shuffle'"):
        make_dataset(scene.config(data_loader={"shufle": True}))
    with pytest.raises(OptionError, match=r"PatchSampler, SceneSampler, ChipSampler or a mapping"):
        make_dataset("image.tif")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a seed"):
        make_dataset(scene.config(), shuffle=True, input_context=tf.distribute.InputContext(2, 0, 2))


def test_seeded_shuffle_is_reproducible_and_reshuffles_each_pass(sampler: PatchSampler) -> None:
    def order(dataset: tf.data.Dataset) -> list[int]:
        return [int(m["index"]) for _, _, m in dataset.as_numpy_iterator()]

    n = len(ROWS)
    first = make_dataset(sampler, shuffle=True, seed=11, with_metadata=True)
    second = make_dataset(sampler, shuffle=True, seed=11, with_metadata=True)
    epochs = [order(first) for _ in range(3)]
    assert epochs == [order(second) for _ in range(3)]
    assert epochs == [epoch_order(n, 11, e).tolist() for e in range(3)]
    assert epochs[0] != epochs[1] and all(sorted(e) == list(range(n)) for e in epochs)
    assert order(make_dataset(sampler, shuffle=True, seed=12, with_metadata=True)) != epochs[0]
    # A fixed epoch repeats; a tf.Variable is read when each pass starts.
    fixed = make_dataset(sampler, shuffle=True, seed=11, epoch=2, with_metadata=True)
    assert order(fixed) == order(fixed) == epochs[2]
    variable = tf.Variable(1, dtype=tf.int64)
    driven = make_dataset(sampler, shuffle=True, seed=11, epoch=variable, with_metadata=True)
    assert order(driven) == epochs[1]
    variable.assign(0)
    assert order(driven) == epochs[0]
    # Unseeded: still a permutation every pass.
    unseeded = make_dataset(sampler, shuffle=True, with_metadata=True)
    assert sorted(order(unseeded)) == sorted(order(unseeded)) == list(range(n))


@pytest.mark.parametrize("augmentation_list", [None, AUGMENTATIONS], ids=["plain", "augmented"])
def test_parity_with_core(sampler: PatchSampler, augmentation_list) -> None:
    """tf (H, W, C) == the core's (C, H, W) - what the torch adapter returns - transposed, bit for bit."""
    dataset = make_dataset(sampler, shuffle=True, seed=5, augmentation_list=augmentation_list, with_metadata=True)
    changed = 0
    for epoch in (0, 1):
        for image, mask, meta in dataset.as_numpy_iterator():
            index = int(meta["index"])
            chw, core_mask = core(sampler, index, augmentation_list, seed=5, epoch=epoch)
            assert image.dtype == chw.dtype == np.float32 and mask.dtype == core_mask.dtype == np.int64
            np.testing.assert_array_equal(image, chw.transpose(1, 2, 0))
            np.testing.assert_array_equal(mask, core_mask)
            _, plain_mask = core(sampler, index)
            changed += not np.array_equal(mask, plain_mask)
            if augmentation_list is None:
                assert decode_window(image) == (ROWS[index], COLS[index])
    if augmentation_list is not None:
        assert changed > 0  # the flips/rotations really ran
        # ...and they differ between epochs for some windows.
        e0 = make_dataset(sampler, seed=5, augmentation_list=augmentation_list, epoch=0)
        e1 = make_dataset(sampler, seed=5, augmentation_list=augmentation_list, epoch=1)
        assert any(not np.array_equal(a[0], b[0]) for a, b in zip(e0.as_numpy_iterator(), e1.as_numpy_iterator()))


def test_parallel_calls_equal_serial(scene: Scene, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 240, 64), rng.integers(0, 240, 64)
    windows = T.write_windows_table(tmp_path / "many.csv", rows, cols)
    sampler = PatchSampler(scene.image, scene.lonlat_mask(), windows, PATCH)
    kwargs = {"shuffle": True, "seed": 3, "augmentation_list": AUGMENTATIONS, "batch_size": 8, "with_metadata": True}
    serial = elements(make_dataset(sampler, num_parallel_calls=1, **kwargs))
    parallel = elements(make_dataset(sampler, num_parallel_calls=4, **kwargs))
    autotune = elements(make_dataset(sampler, **kwargs))
    assert len(serial) == len(parallel) == len(autotune) == 8
    for a, b, c in zip(serial, parallel, autotune):
        for x, y, z in zip(a, b, c):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x, z)
    # Several threads opened their own handles.
    assert len(sampler._readers) > 1


def test_warped_mask_and_mbtiles_image(scene: Scene) -> None:
    """A 4326 mask warped onto an MBTiles (RGBA, PNG tiles) image: tf == core, windows decode."""
    sampler = PatchSampler(
        scene.mbtiles, scene.lonlat_mask(), scene.windows_csv, PATCH, selected_bands=[1, 2, 3], n_classes=4
    )
    assert not sampler.aligned
    for i, (image, mask) in enumerate(make_dataset(sampler).as_numpy_iterator()):
        assert decode_window(image) == (ROWS[i], COLS[i])
        chw, core_mask = core(sampler, i)
        np.testing.assert_array_equal(image, chw.transpose(1, 2, 0))
        np.testing.assert_array_equal(mask, core_mask)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}


def test_augmentation_changing_the_shape_is_static(sampler: PatchSampler) -> None:
    crop = [{"_target_": "albumentations.CenterCrop", "height": 16, "width": 24}]
    dataset = make_dataset(sampler, augmentation_list=crop, batch_size=3)
    assert dataset.element_spec[0].shape == (None, 16, 24, 3)
    x, y = next(dataset.as_numpy_iterator())
    assert x.shape == (3, 16, 24, 3) and y.shape == (3, 16, 24)
    np.testing.assert_array_equal(x[1], core(sampler, 1, crop)[0].transpose(1, 2, 0))


class GdalProbeSampler(PatchSampler):
    """Records, for every patch read, the GDAL options in force in the reading thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    def get(self, index: int, **kwargs: Any) -> Any:  # the loaders read through get (sampler[i] too)
        patch = super().get(index, **kwargs)
        self.seen.append({key: get_gdal_config(key) for key in GDAL_CHECKED})
        return patch


def test_numpy_function_threads_read_under_crossgeo_options_with_bounded_opens(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tf.data's numpy_function runs on rotating threads: no reopen per patch, crossgeo's GDAL options in each."""
    import crossgeo.io

    for key in GDAL_CHECKED:
        monkeypatch.delenv(key, raising=False)
    opened: list[str] = []
    real_open = crossgeo.io.open_raster
    monkeypatch.setattr(
        crossgeo.io,
        "open_raster",
        lambda path, option, **kwargs: opened.append(path) or real_open(path, option, **kwargs),
    )
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 224, 96), rng.integers(0, 224, 96)
    windows = T.write_windows_table(tmp_path / "many.csv", rows, cols)
    sampler = GdalProbeSampler(scene.image, scene.mask, windows, PATCH, n_classes=3)
    expected = {key: crossgeo.io.GDAL_OPTIONS[key] for key in GDAL_CHECKED}
    # Process-wide values (rasterio's main-thread options are global) that a thread without
    # crossgeo's own Env would read instead.
    with rasterio.Env(GDAL_HTTP_MAX_RETRY=1, GDAL_DISABLE_READDIR_ON_OPEN="FALSE", VSI_CACHE=False):
        assert get_gdal_config("GDAL_HTTP_MAX_RETRY") == 1
        got = [elements(make_dataset(sampler, num_parallel_calls=4, with_metadata=True)) for _ in range(3)]
    for epoch in got:
        # Flattened metadata comes in key order: col_off, index, row_off.
        assert [(int(e[4]), int(e[2])) for e in epoch] == list(zip(rows.tolist(), cols.tolist()))
        for image, mask, col_off, _, row_off in epoch:
            assert decode_window(image) == (int(row_off), int(col_off))
            np.testing.assert_array_equal(mask, window_mask(int(row_off), int(col_off)))
    assert len(sampler.seen) == 3 * 96 and all(options == expected for options in sampler.seen)
    # Two rasters per reader; readers bounded by the threads reading at once, not by patches.
    # (Each numpy_function call runs on a fresh Python thread state: a plain threading.local
    # cache would open 2 * 3 * 96 rasters here.)
    assert len(opened) == 2 * sampler._readers.created <= 2 * 8


def test_an_empty_window_set_is_refused_by_tf_data_and_keras(scene: Scene, tmp_path: Path) -> None:
    from crossgeo.keras import PatchPyDataset

    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("row_off,col_off\n")
    empty = PatchSampler(scene.image, scene.mask, empty_csv, PATCH, n_classes=3)
    assert len(empty) == 0
    with pytest.raises(ValueError, match=r"make_dataset: there are no windows to iterate .*empty.csv"):
        make_dataset(empty, batch_size=2)
    with pytest.raises(ValueError, match=r"PatchPyDataset: there are no windows to iterate .*empty.csv"):
        PatchPyDataset(empty, batch_size=2)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_the_maps_threads_share_the_tiles_of_the_windows_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drop_remainder: bool
) -> None:
    """An image of 32^2 tiles: as the batches come the sampler is told each pass's next `PLAN_ITEMS` windows, in
    the pass's order (a fixed ``epoch`` read twice is planned twice, a dropped last batch included); the batches
    equal those of a sampler that ignores plans, and the map's threads share the decoded tiles (each decoded
    about once)."""
    import crossgeo.loading

    monkeypatch.setattr(crossgeo.loading, "PLAN_ITEMS", 12)
    image, mask, windows = T.write_tiled_scene(tmp_path, 160, 30, 40, 3, seed=4)
    plain = PatchSampler(image, mask, windows, 40, n_classes=3)
    plain.plan_reads = lambda positions, readers: None  # type: ignore[method-assign]
    told = PatchSampler(image, mask, windows, 40, n_classes=3)
    planned: list[list[int]] = []
    plan_reads = told.plan_reads
    monkeypatch.setattr(told, "plan_reads", lambda positions, readers: (planned.append(positions),
                                                                        plan_reads(positions, readers)))  # fmt: skip
    options: dict[str, Any] = {"batch_size": 4, "shuffle": True, "seed": 7, "epoch": 2, "num_parallel_calls": 1}
    options["drop_remainder"] = drop_remainder
    plain_passes, told_passes = make_dataset(plain, **options), make_dataset(told, **options)
    want = [[b.numpy() for b in batch] for _ in range(2) for batch in plain_passes]
    got = [[b.numpy() for b in batch] for _ in range(2) for batch in told_passes]  # one dataset, two passes
    assert len(got) == len(want) == (14 if drop_remainder else 16)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    order = epoch_order(30, 7, 2).tolist()
    # Batches of 4: the one from window 12 reaches past the first plan (0-11), the one from 24 past the second.
    assert planned == [order[start : start + 12] for _ in range(2) for start in (0, 12, 24)]
    store = told._kept.get(0)
    assert store is not None and 0 < store.decoded <= 1.5 * 25  # 25 tiles, ~240 windows' reads of 4-9 tiles
