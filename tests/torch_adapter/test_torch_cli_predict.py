"""``crossgeo predict`` with TorchScript files: the same output as `crossgeo.torch.predict_raster`, refusals."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

pytest.importorskip("yaml")
import yaml
from testkit import CliRun, write_predict_scene

from crossgeo import predict_raster
from crossgeo.errors import ConfigError
from crossgeo.torch import load_model
from crossgeo.torch import predict_raster as torch_predict_raster


class Pointwise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], x[:, 1], x[:, 2], torch.tensor(0.9, dtype=torch.float32) - x[:, 0]], dim=1)


def numpy_pointwise(x: np.ndarray) -> np.ndarray:
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    scene = write_predict_scene(tmp_path)
    model = tmp_path / "model.pt"
    torch.jit.script(Pointwise()).save(str(model))
    return {**scene, "model": model}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("extra", [[], ["--overlap", "32", "--tta", "flips"], ["--output", "scores", "--cog"]])
def test_cli_equals_the_torch_wrapper_and_the_numpy_core(scene: dict[str, Path], extra: list[str], cli: CliRun) -> None:
    out = scene["folder"] / "cli.tif"
    code, stdout, err = cli("predict", scene["config"], "--model", scene["model"], "--out", out, *extra)
    assert code == 0, err
    assert "wrote" in stdout and "torch (torch.export or TorchScript)" in stdout
    options: dict[str, Any] = {"patch_size": 128, "progress": False, "n_classes": 4}
    options.update(
        overlap=int(extra[1]) if "--overlap" in extra else 0,
        tta="flips" if "--tta" in extra else None,
        output="scores" if "--output" in extra else "class",
        cog="--cog" in extra,
    )
    wrapper = torch_predict_raster(load_model(scene["model"]), scene["image"], scene["folder"] / "w.tif", **options)
    core = predict_raster(scene["image"], numpy_pointwise, scene["folder"] / "n.tif", **options)
    np.testing.assert_array_equal(_read(out), _read(wrapper.path))
    np.testing.assert_array_equal(_read(out), _read(core.path))
    code, _, err = cli("predict", scene["config"], "--model", scene["model"], "--out", out, *extra)
    assert code == 1 and "already exists; pass --overwrite" in err
    code, _, err = cli("predict", scene["config"], "--model", scene["model"], "--out", out, "--overwrite", *extra)
    assert code == 0, err


def test_a_model_with_the_wrong_number_of_classes_is_named(scene: dict[str, Path], cli: CliRun) -> None:
    options = yaml.safe_load(scene["config"].read_text())
    options["train_dataset"]["n_classes"] = 6
    config = scene["folder"] / "six.yaml"
    config.write_text(yaml.safe_dump(options))
    code, _, err = cli("predict", config, "--model", scene["model"], "--out", scene["folder"] / "p.tif")
    assert code == 1 and "4 score bands but n_classes is 6" in err
    assert not (scene["folder"] / "p.tif").exists()


def test_torch_save_files_are_refused_without_unpickling(scene: dict[str, Path], cli: CliRun) -> None:
    whole, weights = scene["folder"] / "whole.pt", scene["folder"] / "weights.pt"
    torch.save(Pointwise(), whole)
    torch.save(torch.nn.Conv2d(3, 4, 1).state_dict(), weights)
    for path in (whole, weights):
        with pytest.raises(ConfigError, match=r"torch\.save file"):
            load_model(path)
        code, _, err = cli("predict", scene["config"], "--model", path, "--out", scene["folder"] / "p.tif")
        assert code == 1 and "--model" in err and "torch.jit.script(model).save" in err


def test_a_full_disk_says_so_naming_out_and_keeps_the_previous_prediction(
    scene: dict[str, Path], tmp_path: Path, cli: CliRun
) -> None:
    """Issue 21.9: on a real full file system (a 256 KiB tmpfs; root only), not GDAL's bare "Write failed"."""
    import os
    import shutil
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a 256 KiB tmpfs (not root here)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 256 KiB tmpfs here: {done.stderr.decode().strip()}")
    try:
        out = folder / "prediction.tif"
        out.write_bytes(b"previous prediction")
        with open(folder / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        code, _, err = cli(
            "predict", scene["config"], "--model", scene["model"], "--out", out, "--overwrite", "--output", "scores"
        )
        assert out.read_bytes() == b"previous prediction"
        assert [p.name for p in folder.iterdir() if ".partial-" in p.name] == []
        assert code == 1
        assert f"crossgeo predict: error: --out '{out}': disk full (no space left on device" in err
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _export(path: Path) -> Path:
    dim = torch.export.Dim.DYNAMIC
    example = (torch.rand(2, 3, 64, 64),)
    program = torch.export.export(Pointwise().eval(), example, dynamic_shapes=({0: dim, 2: dim, 3: dim},))
    torch.export.save(program, str(path))
    return path


def test_torch_export_programs_predict_without_unpickling(
    scene: dict[str, Path], cli: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch.export program (.pt2) predicts like the model; loading it unpickles nothing beyond
    torch's restricted weights_only loader (checked in torch 2.13: pickle.loads/Unpickler never run)."""
    model = _export(scene["folder"] / "model.pt2")
    out = scene["folder"] / "exported.tif"
    code, stdout, err = cli("predict", scene["config"], "--model", model, "--out", out, "--overlap", "32")
    assert "torch (torch.export or TorchScript)" in stdout
    assert code == 0, err
    core = predict_raster(scene["image"], numpy_pointwise, scene["folder"] / "n.tif", patch_size=128, overlap=32)
    np.testing.assert_array_equal(_read(out), _read(core.path))
    calls: list[str] = []
    loads, unpickler, load = pickle.loads, pickle.Unpickler, torch.load

    class Spy(unpickler):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            calls.append("pickle.Unpickler")
            super().__init__(*args, **kw)

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: (calls.append("pickle.loads"), loads(*a, **k))[1])
    monkeypatch.setattr(pickle, "Unpickler", Spy)
    monkeypatch.setattr(
        torch, "load", lambda *a, **k: (calls.append(f"weights_only={k.get('weights_only')}"), load(*a, **k))[1]
    )
    loaded = load_model(model)
    assert calls and set(calls) == {"weights_only=True"}, calls
    x = torch.rand(1, 3, 40, 56)
    np.testing.assert_allclose(loaded(x).numpy(), numpy_pointwise(x.numpy()), rtol=1e-6)


def _rewrite(source: Path, target: Path, edit: Any) -> Path:
    """A copy of a .pt2 archive with ``edit(name, bytes) -> bytes`` applied to each member."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, edit(name, src.read(name)))
    return target


def _json_edit(suffix: str, change: Any) -> Any:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith(suffix):
            return data
        value = json.loads(data)
        change(value)
        return json.dumps(value).encode()

    return edit


def test_torch_export_programs_that_would_unpickle_or_run_code_are_refused(scene: dict[str, Path], cli: CliRun) -> None:
    model = _export(scene["folder"] / "model.pt2")
    folder = scene["folder"]

    def pickled_weights(value: Any) -> None:
        next(iter(value["config"].values()))["use_pickle"] = True

    def os_call(value: Any) -> None:
        value["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    def guard(value: Any) -> None:
        value["guards_code"] = ["__import__('os').system('echo crossgeo') == 0"]

    weights_config = "_weights_config.json"
    if not any(
        n.endswith(weights_config) and json.loads(zipfile.ZipFile(model).read(n))["config"]
        for n in zipfile.ZipFile(model).namelist()
    ):
        weights_config = "_constants_config.json"  # Pointwise's 0.9 may be stored as a constant
    cases = {
        "pickled.pt2": (_json_edit(weights_config, pickled_weights), "as a pickled object"),
        "call.pt2": (
            _json_edit("models/model.json", os_call),
            "calls 'torch.os.system', which is not a torch operator",
        ),
        "guard.pt2": (_json_edit("models/model.json", guard), "more than a comparison of input sizes"),
    }
    for name, (edit, message) in cases.items():
        bad = _rewrite(model, folder / name, edit)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_model(bad)
        code, _, err = cli("predict", scene["config"], "--model", bad, "--out", folder / "p.tif")
        assert code == 1 and "--model" in err and message in err and "torch.export.save" in err
    inputs = io.BytesIO()
    torch.save((Path("not-a-tensor"),), inputs)
    bad = _rewrite(model, folder / "inputs.pt2", lambda n, d: inputs.getvalue() if "/sample_inputs/" in n else d)
    with pytest.raises(ConfigError, match="sample inputs"):
        load_model(bad)
    assert not (folder / "p.tif").exists()


class Identity(torch.nn.Module):
    """One score per channel: the input itself, so the written scores are what the model saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def test_predict_and_evaluate_a_config_whose_image_is_a_mapping_of_band_files(tmp_path: Path, cli: CliRun) -> None:
    """Issue 24.1: 10 m and 20 m band files stacked (relative paths next to the config); the torch model gets the
    stack as the sampler gives it and the output is on the 10 m reference grid."""
    from testkit import sources_truth, write_sources_scene

    scene = write_sources_scene(tmp_path, b20_rows=70)
    model = tmp_path / "identity.pt"
    torch.jit.script(Identity()).save(str(model))
    out = tmp_path / "scores.tif"
    code, stdout, err = cli("predict", scene["config"], "--model", model, "--out", out, "--output", "scores")
    assert code == 0, err
    assert "the sources B10, B20" in stdout and f"{60 * 240} pixel(s) without image data" in stdout
    truth, valid = sources_truth(70)
    with rasterio.open(out) as pred, rasterio.open(scene["B10"]) as ref:
        assert (pred.crs, pred.transform, pred.shape) == (ref.crs, ref.transform, ref.shape)
        scores = pred.read()
    np.testing.assert_allclose(scores[:, valid], truth[:, valid], rtol=1e-6)
    assert np.isnan(scores[:, ~valid]).all()
    # The torch wrapper with the same sources writes the same numbers.
    sources = {"B10": scene["B10"], "B20": {"path": scene["B20"], "resampling": "nearest"}}
    wrapper = torch_predict_raster(
        Identity(), sources, tmp_path / "w.tif", patch_size=64, image_dtype="float32", output="scores", progress=False
    )
    np.testing.assert_array_equal(_read(wrapper.path), scores)
    # Classes, then evaluate with the configuration's mask.
    classes = tmp_path / "classes.tif"
    code, _, err = cli("predict", scene["config"], "--model", model, "--out", classes)
    assert code == 0, err
    code, stdout, err = cli("evaluate", classes, scene["config"], "--json", tmp_path / "m.json")
    assert code == 0, err
    rows, cols = np.mgrid[0:200, 0:240]
    reference = (rows // 8 + cols // 8) % 3
    predicted = np.argmax(truth, axis=0)
    expected = np.bincount(reference[valid] * 3 + predicted[valid], minlength=9).reshape(3, 3)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["confusion"] == expected.tolist()
    assert metrics["ignored"]["prediction_nodata"] == int((~valid).sum())
