"""tf.distribute input sharding, model.fit through make_dataset, and import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
from test_keras import tiny_model
from tf_scene import COLS, PATCH, ROWS, Scene, decode_window

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.loading import epoch_order
from crossgeo.tensorflow import make_dataset

HERE = Path(__file__).resolve().parent


def run_python(script: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mode", ["PER_REPLICA", "PER_WORKER"])
def test_mirrored_strategy_shards_windows_disjointly_and_completely(scene: Scene, mode: str) -> None:
    """2 logical CPU devices (configured before TF initialises, hence a fresh process).

    PER_REPLICA: one input pipeline per replica, each decoding only its own windows.
    PER_WORKER (TF's default): one pipeline per worker whose batches go to the replicas in turn.
    """
    script = textwrap.dedent(
        f"""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tf_scene import decode_window
        from crossgeo import PatchSampler
        from crossgeo.tensorflow import make_dataset

        image, mask, windows = {str(scene.image)!r}, {str(scene.mask)!r}, {str(scene.windows_csv)!r}
        sampler = PatchSampler(image, mask, windows, {PATCH}, n_classes=3)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        contexts = []

        def dataset_fn(ctx):
            contexts.append((ctx.num_input_pipelines, ctx.input_pipeline_id, ctx.num_replicas_in_sync))
            return make_dataset(sampler, batch_size=2, shuffle=True, seed=13, with_metadata=True, input_context=ctx)

        mode = tf.distribute.InputReplicationMode.{mode}
        options = tf.distribute.InputOptions(experimental_replication_mode=mode, experimental_fetch_to_device=False)
        dist = strategy.distribute_datasets_from_function(dataset_fn, options)
        epochs = []
        for _ in range(2):
            replicas = [[], []]
            for image, mask, meta in dist:
                images = strategy.experimental_local_results(image)
                metas = strategy.experimental_local_results(meta)
                for r in range(2):
                    for im, row, col, index in zip(images[r].numpy(), metas[r]["row_off"].numpy(),
                                                   metas[r]["col_off"].numpy(), metas[r]["index"].numpy()):
                        assert decode_window(im) == (row, col)
                        replicas[r].append(int(index))
            epochs.append(replicas)
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "contexts": contexts, "epochs": epochs}}))
        """
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    n = len(ROWS)
    if mode == "PER_REPLICA":
        assert sorted(result["contexts"]) == [[2, 0, 2], [2, 1, 2]]
    else:
        assert result["contexts"] == [[1, 0, 2]]
    for epoch, (first, second) in enumerate(result["epochs"]):
        assert not set(first) & set(second)  # disjoint
        assert sorted(first + second) == list(range(n))  # complete, no repeats
        order = epoch_order(n, 13, epoch).tolist()
        if mode == "PER_REPLICA":  # replica r takes every 2nd window of the epoch's order from r
            assert first == order[0::2] and second == order[1::2]
        else:  # batches of 2 alternate between the replicas
            assert first == [i for k, i in enumerate(order) if k // 2 % 2 == 0]
    assert result["epochs"][0][0] != result["epochs"][1][0]  # shards change per epoch


def fit_one_epoch(sampler: PatchSampler, n_classes: int, **kwargs) -> float:
    keras.utils.set_random_seed(0)
    dataset = make_dataset(sampler, batch_size=4, shuffle=True, seed=0, **kwargs)
    bands = dataset.element_spec[0].shape[-1]
    model = tiny_model(n_classes, bands=bands, size=sampler.patch_size)
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss)
    return float(loss)


@pytest.mark.parametrize("image", ["tif", "mbtiles"])
def test_fit_one_epoch_on_synthetic_scene(scene: Scene, image: str) -> None:
    if image == "tif":
        sampler = scene.sampler()
    else:
        sampler = PatchSampler(
            scene.mbtiles, scene.mask, scene.windows_csv, PATCH, selected_bands=[1, 2, 3], n_classes=3
        )
    flips = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]
    fit_one_epoch(sampler, 3, augmentation_list=flips)


def test_fit_counts_epochs(scene: Scene) -> None:
    """Each fit epoch is one pass: after 2 epochs the next pass is epoch 2's order."""
    sampler = scene.sampler()
    dataset = make_dataset(sampler, batch_size=4, shuffle=True, seed=8)
    model = tiny_model(3)
    model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    seen = [decode_window(im) for x, _ in dataset.as_numpy_iterator() for im in x]
    assert seen == [(ROWS[i], COLS[i]) for i in epoch_order(len(ROWS), 8, 2)]


def test_fit_one_epoch_on_real_geotiff(tmp_path: Path, real_data: Path) -> None:
    """Landsat RGB.byte.tif (UTM 18N) with the world land mask (EPSG:4326, warped)."""
    image = real_data / "RGB.byte.tif"
    with rasterio.open(image) as src:
        height, width = src.height, src.width
    rows, cols = np.meshgrid(np.arange(100, height - 100, 96), np.arange(100, width - 100, 96), indexing="ij")
    windows = T.write_windows_table(tmp_path / "windows.csv", rows.ravel()[:16], cols.ravel()[:16])
    sampler = PatchSampler(image, real_data / "world.byte.tif", windows, 64)
    fit_one_epoch(sampler, 2)


def test_fit_one_epoch_on_real_mbtiles(tmp_path: Path, real_data: Path) -> None:
    """plain_1.mbtiles (RGBA PNG tiles, Web Mercator) with the world land mask."""
    image = real_data / "plain_1.mbtiles"
    rows, cols = np.meshgrid(np.arange(600, 2400, 300), np.arange(200, 3800, 600), indexing="ij")
    windows = T.write_windows_table(tmp_path / "windows.csv", rows.ravel()[:16], cols.ravel()[:16])
    sampler = PatchSampler(image, real_data / "world.byte.tif", windows, 64, selected_bands=[1, 2, 3])
    masks = np.stack([y for _, y in make_dataset(sampler).as_numpy_iterator()])
    assert set(np.unique(masks)) == {0, 1}  # land and water both present
    fit_one_epoch(sampler, 2)


def test_import_hygiene() -> None:
    """``import crossgeo`` loads no framework; a missing TF names the pip extra."""
    done = run_python(
        "import sys, crossgeo, crossgeo.augment, crossgeo.config\n"
        "print(sorted(m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules))"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
    done = run_python(
        "import sys\nsys.modules['tensorflow'] = None\n"
        "try:\n    import crossgeo.tensorflow\nexcept ImportError as e:\n    print(e)"
    )
    assert "pip install '.[tensorflow]'" in done.stdout, done.stderr[-2000:]
