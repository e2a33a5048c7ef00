"""Model files and tiled prediction with a torch model: `load_model` (``torch.export`` programs checked
before loading, TorchScript) and `predict_raster` over `crossgeo.predict.predict_raster`."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossgeo.errors import ConfigError, OptionError
from crossgeo.models import is_exported_program

__all__ = ["load_model", "predict_raster"]


def load_model(path: Any, *, device: str | torch.device = "cpu", option: str = "model_path") -> Any:
    """A ``torch.export`` program (``.pt2``) or a TorchScript file, loaded onto ``device``.

    Model files are code. A ``torch.export.save`` archive is checked first
    (`crossgeo.models.check_exported_program`: no pickled payloads, torch operators only,
    size-only guards; its sample inputs must load with torch's restricted ``weights_only``
    unpickler), then loaded from the checked bytes with ``torch.export.load``; the model is
    its ``.module()``. TorchScript loads with ``torch.jit.load`` (its own loader runs no
    arbitrary pickled objects). A ``torch.save`` file or a Keras file is refused by
    `crossgeo.models.model_file_framework` with the way to export a loadable file.
    """
    from crossgeo.models import model_file_framework

    framework = model_file_framework(path, option=option)
    if framework != "torch":
        raise ConfigError(
            f"{option} {str(path)!r} is a {framework.capitalize()} model file, not a torch one; load it with "
            f"crossgeo.{framework}.load_model, or export the torch model with torch.export.save (.pt2)."
        )
    data = Path(path).read_bytes()  # checked and loaded from the same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        exported = is_exported_program(archive.namelist())
        if exported:
            _check_exported_archive(archive, f"{option} {str(path)!r}")
    if exported:
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as error:
            raise ConfigError(f"{option} {str(path)!r} could not be loaded by torch.export.load: {error}") from error
        return program.module().to(torch.device(device))
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript in favour of torch.export
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=Warning)
            return torch.jit.load(str(path), map_location=torch.device(device))
    except RuntimeError as error:
        raise ConfigError(f"{option} {str(path)!r} could not be loaded by torch.jit.load: {error}") from error


def _check_exported_archive(archive: zipfile.ZipFile, where: str) -> None:
    """`check_exported_program`, and sample inputs that torch's restricted unpickler loads (else
    ``torch.export.load`` would retry them with ``weights_only=False``)."""
    from crossgeo.models import check_exported_program

    check_exported_program(archive, where=where)
    for name in archive.namelist():
        if name.split("/")[1:3] == ["data", "sample_inputs"] and not name.endswith("/"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception as error:
                raise ConfigError(
                    f"{where} is a torch.export program whose sample inputs ({name}) are not plain tensors "
                    f"(torch's weights_only loader refuses them: {type(error).__name__}); export it with "
                    "plain tensor example inputs."
                ) from error


def predict_raster(
    model: torch.nn.Module, image_path: Any, out_path: Any, *, device: str | torch.device = "cpu", **kw: Any
) -> Any:
    """`crossgeo.predict.predict_raster` with a torch model (e.g. a ``torch.jit.load``-ed one).

    The model is moved to ``device`` and put in eval mode (restored to train mode after
    if it was training); each float32 (N, C, H, W) batch goes to ``device``, runs under
    ``torch.no_grad()``, and its (N, K, H, W) output comes back as float32 numpy. Reading
    runs ahead of the model in a background thread. ``kw`` are `predict_raster`'s options
    (``patch_size`` is required). Returns its `crossgeo.predict.Prediction`.
    """
    from crossgeo.predict import predict_raster as predict_tiles

    if not isinstance(model, torch.nn.Module):
        raise OptionError(f"model must be a torch.nn.Module (or a TorchScript module), got {type(model).__name__}.")
    target = torch.device(device)
    training: bool | None = model.training
    model.to(target)
    try:
        model.eval()
    except NotImplementedError:  # a torch.export module: its mode was fixed when it was exported
        training = None

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            scores = model(torch.from_numpy(batch).to(target))
        if not isinstance(scores, torch.Tensor):
            raise OptionError(
                f"model returned {type(scores).__name__}; predict_raster needs a tensor of scores (N, K, H, W)."
            )
        return scores.detach().to("cpu", torch.float32).numpy()

    try:
        return predict_tiles(image_path, run, out_path, **kw)
    finally:
        if training is not None:
            model.train(training)
