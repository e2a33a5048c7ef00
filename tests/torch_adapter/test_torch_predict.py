"""`crossgeo.torch.predict_raster`: eval mode, no_grad and numbers identical to the numpy core.

The weights-free pointwise model computes the same elementwise float32 operations as the
numpy model of ``tests/core/test_predict.py`` and ``tests/tf_adapter/test_keras_predict.py``,
so all three write identical files; each adapter test compares with the numpy core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from crossgeo import predict_raster
from crossgeo import testing as T
from crossgeo.errors import ConfigError, OptionError
from crossgeo.torch import predict_raster as torch_predict_raster


def numpy_pointwise(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


class Pointwise(torch.nn.Module):
    """The same scores in torch, behind a dropout that only eval mode turns off."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)
        self.grad_enabled: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled())
        x = self.dropout(x)
        return torch.stack([x[:, 0], x[:, 1], x[:, 2], torch.tensor(0.9, dtype=torch.float32) - x[:, 0]], dim=1)


class ScriptablePointwise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], x[:, 1], x[:, 2], torch.tensor(0.9, dtype=torch.float32) - x[:, 0]], dim=1)


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
def test_torch_wrapper_equals_the_numpy_core(tmp_path: Path, image: Path, output: str) -> None:
    model = Pointwise()
    model.train()
    options = {"patch_size": 128, "overlap": 32, "output": output, "progress": False}
    result = torch_predict_raster(model, image, tmp_path / "torch.tif", device="cpu", **options)
    reference = predict_raster(image, numpy_pointwise, tmp_path / "numpy.tif", **options)
    np.testing.assert_array_equal(_read(result.path), _read(reference.path))
    assert model.training and model.grad_enabled and not any(model.grad_enabled)


def test_torchscript_model_and_tta(tmp_path: Path, image: Path) -> None:
    scripted = torch.jit.script(ScriptablePointwise())
    torch.jit.save(scripted, tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    result = torch_predict_raster(loaded, image, tmp_path / "t.tif", patch_size=96, tta="d4", progress=False)
    reference = predict_raster(image, numpy_pointwise, tmp_path / "n.tif", patch_size=96, progress=False)
    np.testing.assert_array_equal(_read(result.path), _read(reference.path))


def test_torch_wrapper_errors_name_the_model(tmp_path: Path, image: Path) -> None:
    with pytest.raises(OptionError, match=r"model must be a torch\.nn\.Module"):
        torch_predict_raster(numpy_pointwise, image, tmp_path / "p.tif", patch_size=64)  # type: ignore[arg-type]

    class ChannelsLast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 3, 1)

    with pytest.raises(ConfigError, match=r"predict returned scores of shape \(8, 64, 64, 3\)"):
        torch_predict_raster(ChannelsLast(), image, tmp_path / "p.tif", patch_size=64, progress=False)
    assert not (tmp_path / "p.tif").exists()


class ScalesItsInputInPlace(torch.nn.Module):
    """Pointwise scores, then ``x.mul_`` on its input (as an in-place first layer does to ``torch.from_numpy``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.stack([x[:, 0], x[:, 1], x[:, 2], torch.tensor(0.9, dtype=torch.float32) - x[:, 0]], dim=1)
        x.mul_(0.25)
        return scores


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_a_model_that_writes_into_its_input_does_not_change_the_tta_result(
    image: Path, tmp_path: Path, tta: str
) -> None:
    """Issue 21.7: the batch reaches torch without a copy, so each TTA pass must get its own."""
    kw = {"patch_size": 128, "overlap": 32, "output": "scores", "tta": tta, "progress": False}
    truth = predict_raster(image, numpy_pointwise, tmp_path / "numpy.tif", **kw)
    got = torch_predict_raster(ScalesItsInputInPlace(), image, tmp_path / "torch.tif", **kw)
    with rasterio.open(truth.path) as a, rasterio.open(got.path) as b:
        np.testing.assert_array_equal(b.read(), a.read())
