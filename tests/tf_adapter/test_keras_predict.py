"""`crossgeo.keras.predict_raster`: channels last in and out, inference mode, numbers identical to the core.

The weights-free pointwise model computes the same elementwise float32 operations as the
numpy model of ``tests/core/test_predict.py`` and the torch model of
``tests/torch_adapter/test_torch_predict.py``; each adapter test compares with the numpy core.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio

from crossgeo import predict_raster
from crossgeo import testing as T
from crossgeo.errors import ConfigError
from crossgeo.keras import predict_raster as keras_predict_raster


def numpy_pointwise(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


class Pointwise(keras.layers.Layer):
    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return keras.ops.stack([r, g, b, keras.ops.convert_to_tensor(0.9, "float32") - r], axis=-1)


def pointwise_model() -> keras.Model:
    """(N, H, W, 3) -> (N, H, W, 4), behind a dropout that only inference mode turns off."""
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, Pointwise()(keras.layers.Dropout(0.5)(inputs)))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return T.write_raster(
        tmp_path / "image.tif",
        T.coordinate_bands(300, 420, "uint8"),
        crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 2176, 1460),
    )


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("output", ["class", "scores"])
def test_keras_wrapper_equals_the_numpy_core(tmp_path: Path, image: Path, output: str) -> None:
    options = {"patch_size": 128, "overlap": 32, "output": output, "progress": False}
    result = keras_predict_raster(pointwise_model(), image, tmp_path / "keras.tif", **options)
    reference = predict_raster(image, numpy_pointwise, tmp_path / "numpy.tif", **options)
    np.testing.assert_array_equal(_read(result.path), _read(reference.path))


def test_saved_keras_model_and_tta(tmp_path: Path, image: Path) -> None:
    model = pointwise_model()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", custom_objects={"Pointwise": Pointwise}, safe_mode=True)
    result = keras_predict_raster(loaded, image, tmp_path / "k.tif", patch_size=96, tta="flips", progress=False)
    reference = predict_raster(image, numpy_pointwise, tmp_path / "n.tif", patch_size=96, progress=False)
    np.testing.assert_array_equal(_read(result.path), _read(reference.path))


def test_keras_wrapper_checks_the_output_rank(tmp_path: Path, image: Path) -> None:
    inputs = keras.Input((None, None, 3))
    flat = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ConfigError, match=r"model returned scores of shape \(8, 3\).*\(N, H, W, K\)"):
        keras_predict_raster(flat, image, tmp_path / "p.tif", patch_size=64, progress=False)
    assert not (tmp_path / "p.tif").exists()
