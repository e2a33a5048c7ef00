"""``crossgeo predict`` with Keras ``.keras`` files: the same output as `crossgeo.keras.predict_raster`, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import rasterio

pytest.importorskip("yaml")
from testkit import CliRun, write_predict_scene

from crossgeo.errors import ConfigError
from crossgeo.keras import load_model
from crossgeo.keras import predict_raster as keras_predict_raster


def conv_model() -> keras.Model:
    """Built-in layers only (safe_mode loads it): a 1x1 convolution with fixed weights, 3 bands -> 4 scores."""
    inputs = keras.Input((None, None, 3))
    layer = keras.layers.Conv2D(4, 1)
    model = keras.Model(inputs, layer(inputs))
    kernel = np.array([[1, 0, 0, -1], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32).reshape(1, 1, 3, 4)
    layer.set_weights([kernel, np.array([0, 0, 0, 0.9], np.float32)])
    return model


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    scene = write_predict_scene(tmp_path)
    model = tmp_path / "model.keras"
    conv_model().save(model)
    return {**scene, "model": model}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("extra", [[], ["--overlap", "32", "--tta", "flips"]])
def test_cli_equals_the_keras_wrapper(scene: dict[str, Path], extra: list[str], cli: CliRun) -> None:
    out = scene["folder"] / "cli.tif"
    code, stdout, err = cli("predict", scene["config"], "--model", scene["model"], "--out", out, *extra)
    assert code == 0, err
    assert "Keras model model.keras" in stdout
    options: dict[str, Any] = {"patch_size": 128, "progress": False, "n_classes": 4}
    options.update(overlap=32 if extra else 0, tta="flips" if extra else None)
    wrapper = keras_predict_raster(conv_model(), scene["image"], scene["folder"] / "w.tif", **options)
    np.testing.assert_array_equal(_read(out), _read(wrapper.path))
    assert len(np.unique(_read(out))) > 1


def test_lambda_layers_legacy_h5_and_torchscript_are_refused(scene: dict[str, Path], cli: CliRun) -> None:
    inputs = keras.Input((None, None, 3))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    unsafe.save(scene["folder"] / "lambda.keras")
    with pytest.raises(ConfigError, match="safely"):
        load_model(scene["folder"] / "lambda.keras")
    conv_model().save(scene["folder"] / "legacy.h5")
    cases = {
        scene["folder"] / "lambda.keras": "could not be loaded safely by Keras",
        scene["folder"] / "legacy.h5": "legacy Keras HDF5",
    }
    for path, words in cases.items():
        code, _, err = cli("predict", scene["config"], "--model", path, "--out", scene["folder"] / "p.tif")
        assert code == 1 and "--model" in err and words in err, err
    out = scene["folder"] / "p.tif"
    code, _, err = cli("predict", scene["config"], "--model", scene["model"], "--framework", "torch", "--out", out)
    assert code == 1 and "is a Keras model file, but --framework torch" in err
    assert not (scene["folder"] / "p.tif").exists()
