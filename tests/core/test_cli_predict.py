"""``crossgeo predict``, ``crossgeo evaluate`` and ``crossgeo preview --prediction`` without a framework.

Model files of every kind the command refuses are checked here (the refusal needs no
framework); loading real TorchScript / Keras files is tested in tests/torch_adapter and
tests/tf_adapter. Predictions for evaluate/preview are written by the numpy core.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

pytest.importorskip("yaml")
pytest.importorskip("PIL")
pytest.importorskip("tqdm")

import yaml
from PIL import Image
from testkit import CliRun, write_predict_scene

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.cli import common, main, preview
from crossgeo.cli.evaluate import format_metrics
from crossgeo.errors import ConfigError, RasterError
from crossgeo.evaluation import evaluate, read_classes
from crossgeo.models import model_file_framework
from crossgeo.predict import predict_raster

CLASS_NAMES = ["background", "water", "forest", "building"]


def pointwise(x: np.ndarray) -> np.ndarray:
    """Four scores per pixel from its own bands (the numpy model of tests/core/test_predict.py)."""
    return np.stack([x[:, 0], x[:, 1], x[:, 2], np.float32(0.9) - x[:, 0]], axis=1)


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A 300 x 420 RGB image (not a multiple of the patch), a 4-class mask on its grid, windows, a config."""
    rows, cols = np.indices((300, 420))
    classes = (rows // 37 + cols // 53) % 4
    return write_predict_scene(
        tmp_path, classes=classes, windows=([0, 64, 172], [0, 200, 292]), class_names=CLASS_NAMES
    )


def numpy_prediction(scene: dict[str, Path], name: str = "pred.tif", **kw: Any) -> Path:
    result = predict_raster(scene["image"], pointwise, scene["folder"] / name, patch_size=128, progress=False, **kw)
    return Path(result.path)


# --------------------------------------------------------------------------- help and parsing


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_help_has_an_example_and_no_literal_percent(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"crossgeo {command} " in text and "%" not in text.replace("%)", "")


def test_predict_help_says_model_files_load_only_through_safe_paths(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Model files are code" in text and "torch.jit.load" in text and "safe_mode=True" in text
    assert "never by unpickling arbitrary objects" in text
    for option in ("--model", "--out", "--overlap", "--tta", "--cog", "--output", "--batch-size", "--overwrite"):
        assert option in text


# --------------------------------------------------------------------------- model files refused


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    return path


def test_model_file_framework_reads_the_file(tmp_path: Path) -> None:
    torchscript = _zip(tmp_path / "m.pt", ["m/data.pkl", "m/code/__torch__/m.py", "m/constants.pkl", "m/version"])
    keras_file = _zip(tmp_path / "m.keras", ["metadata.json", "config.json", "model.weights.h5"])
    assert model_file_framework(torchscript) == "torch" and model_file_framework(keras_file) == "keras"
    refused = {
        "pickled.pt": (["p/data.pkl", "p/version", "p/data/0"], "torch.save file"),
        "model.zip": (["metadata.json", "config.json"], "without the .keras suffix"),
        "other.zip": (["readme.txt"], "neither a torch.export or TorchScript file nor a Keras .keras file"),
    }
    for name, (entries, words) in refused.items():
        with pytest.raises(ConfigError, match=words):
            model_file_framework(_zip(tmp_path / name, entries), option="--model")
    (tmp_path / "legacy.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    (tmp_path / "old.pt").write_bytes(b"\x80\x02" + bytes(100))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x04" + bytes(100))
    with pytest.raises(ConfigError, match=r"legacy Keras HDF5.*model\.save\('model\.keras'\)"):
        model_file_framework(tmp_path / "legacy.h5")
    with pytest.raises(ConfigError, match=r"pickle.*does not unpickle.*torch\.jit\.script"):
        model_file_framework(tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="neither"):
        model_file_framework(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match=r"--model .*missing\.pt' does not exist"):
        model_file_framework(tmp_path / "missing.pt", option="--model")


def test_predict_refuses_bad_model_files_with_one_line_naming_model(
    tmp_path: Path, scene: dict[str, Path], cli: CliRun
) -> None:
    pickled = _zip(tmp_path / "pickled.pt", ["p/data.pkl", "p/version", "p/data/0"])
    torchscript = _zip(tmp_path / "script.pt", ["m/code/__torch__/m.py", "m/constants.pkl", "m/data.pkl"])
    cases = [
        (["--model", tmp_path / "missing.pt"], "does not exist"),
        (["--model", pickled], "torch.save file"),
        (
            ["--model", torchscript, "--framework", "keras"],
            "is a torch (torch.export or TorchScript) model file, but --framework keras",
        ),
    ]
    for extra, words in cases:
        code, out, err = cli("predict", scene["config"], "--out", tmp_path / "p.tif", *extra)
        assert code == 1 and out == "", err
        assert err.startswith("crossgeo predict: error: --model") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "p.tif").exists()


def test_predict_names_the_missing_framework_or_the_broken_file(
    tmp_path: Path, scene: dict[str, Path], cli: CliRun
) -> None:
    torchscript = _zip(tmp_path / "script.pt", ["m/code/__torch__/m.py", "m/constants.pkl", "m/data.pkl"])
    code, _, err = cli("predict", scene["config"], "--model", torchscript, "--out", tmp_path / "p.tif")
    assert code == 1
    if importlib.util.find_spec("torch") is None:
        assert "torch cannot be imported here; install it: pip install 'crossgeo[torch]'" in err
    else:  # a zip that only looks like TorchScript
        assert "could not be loaded by torch.jit.load" in err
    assert not (tmp_path / "p.tif").exists()


def test_predict_refuses_an_existing_output_before_loading_the_model(
    tmp_path: Path, scene: dict[str, Path], cli: CliRun
) -> None:
    out = tmp_path / "exists.tif"
    out.write_bytes(b"keep me")
    code, _, err = cli("predict", scene["config"], "--model", tmp_path / "missing.pt", "--out", out)
    assert code == 1 and "--out" in err and "already exists; pass --overwrite to replace it" in err
    assert out.read_bytes() == b"keep me"


# --------------------------------------------------------------------------- evaluate


def test_evaluate_prints_the_table_and_writes_the_library_numbers(
    tmp_path: Path, scene: dict[str, Path], cli: CliRun
) -> None:
    prediction = numpy_prediction(scene, overlap=32)
    out_json = tmp_path / "metrics.json"
    code, out, err = cli("evaluate", prediction, scene["config"], "--json", out_json)
    assert code == 0, err
    expected = evaluate(prediction, scene["mask"], n_classes=4)
    names = dict(enumerate(CLASS_NAMES))
    assert format_metrics(expected, names) in out
    for c, name in names.items():
        assert f"  {c} {name} " in out
    data = json.loads(out_json.read_text())
    assert data["confusion"] == expected.confusion.tolist()
    assert data["pixels"] == expected.pixels == 300 * 420
    assert data["accuracy"] == pytest.approx(expected.accuracy, abs=1e-6)
    assert data["mean_iou"] == pytest.approx(expected.mean_iou, abs=1e-6)
    for c, record in enumerate(data["classes"]):
        assert record["name"] == CLASS_NAMES[c]
        assert record["reference_pixels"] == int(expected.confusion[c].sum())
        for key in ("iou", "f1", "precision", "recall"):
            value = getattr(expected, key)[c]
            assert (record[key] is None) if np.isnan(value) else record[key] == pytest.approx(value, abs=1e-6)
    # A direct count: the reference is the mask file itself (same grid), the prediction the file written.
    with rasterio.open(prediction) as p, rasterio.open(scene["mask"]) as m:
        direct = np.bincount(m.read(1).astype(np.int64).ravel() * 4 + p.read(1).ravel(), minlength=16)
    assert data["confusion"] == direct.reshape(4, 4).tolist()


def test_evaluate_mask_option_and_a_mask_that_does_not_overlap(
    tmp_path: Path, scene: dict[str, Path], cli: CliRun
) -> None:
    prediction = numpy_prediction(scene)
    code, out, _ = cli("evaluate", prediction, scene["config"], "--mask", scene["mask"])
    assert code == 0 and f"against {scene['mask'].name}" in out
    far_transform = T.web_mercator_transform(12, 100, 100)
    far = T.write_raster(tmp_path / "far.tif", np.ones((1, 50, 50), np.uint8), crs="EPSG:3857", transform=far_transform)
    code, _, err = cli("evaluate", prediction, scene["config"], "--mask", far)
    assert code == 1 and "do not overlap" in err


def test_evaluate_ignores_the_configured_ignore_value(tmp_path: Path, scene: dict[str, Path], cli: CliRun) -> None:
    """A mask_fill_value that is not a class (an ignore index painted into the mask) is not counted."""
    with rasterio.open(scene["mask"]) as src:
        classes, profile = src.read(), src.profile
    classes[:, :10] = 255
    with rasterio.open(tmp_path / "mask255.tif", "w", **profile) as dst:
        dst.write(classes)
    options = yaml.safe_load(scene["config"].read_text())
    options["train_dataset"].update(mask_path=str(tmp_path / "mask255.tif"), mask_fill_value=255)
    config = tmp_path / "ignore.yaml"
    config.write_text(yaml.safe_dump(options))
    out_json = tmp_path / "m.json"
    code, out, err = cli("evaluate", numpy_prediction(scene), config, "--json", out_json)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["ignored"]["ignore_value"] == 10 * 420 and data["pixels"] == 290 * 420
    assert "ignore value 4,200" in out


# --------------------------------------------------------------------------- preview --prediction


def test_preview_draws_the_prediction_next_to_the_mask(tmp_path: Path, scene: dict[str, Path], cli: CliRun) -> None:
    prediction = numpy_prediction(scene, overlap=16)
    png = tmp_path / "compare.png"
    code, out, err = cli("preview", scene["config"], "--prediction", prediction, "--alpha", 1, "--out", png)
    assert code == 0, err
    sampler = PatchSampler(**common.split_options(common.load_config(scene["config"]), "c").sampler)
    indices = preview.choose_windows(len(sampler), 16, 0)
    patches = [sampler[i] for i in indices]
    key = preview.legend(sampler, [p.mask for p in patches], [~p.mask_valid for p in patches], None)
    geometry = preview.sheet_layout(len(indices), 128, key, panels=2)
    sheet = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
    assert sheet.shape[:2] == (geometry.height, geometry.width)
    colours = common.class_colours(sampler, [0, 1, 2, 3])
    with rasterio.open(prediction) as src:
        predicted = src.read(1)
    checked = set()
    for (x, y), patch in zip(geometry.tiles, patches):
        picture = patch.image.transpose(1, 2, 0).astype(np.int64)
        window = predicted[patch.row_off : patch.row_off + 128, patch.col_off : patch.col_off + 128]
        for offset, classes in ((0, patch.mask), (128 + preview.PANEL_GAP, window)):
            shown = sheet[y : y + 128, x + offset : x + offset + 128]
            np.testing.assert_array_equal(shown[classes == 0], picture[classes == 0])
            for cls in (1, 2, 3):
                assert (shown[classes == cls] == colours[cls]).all()
                checked.add((offset, cls)) if (classes == cls).any() else None
    assert {c for o, c in checked if o == 0} == {1, 2, 3} and len({c for o, c in checked if o}) >= 2
    assert "wrote" in out


def test_read_classes_refuses_a_prediction_on_another_grid(tmp_path: Path, scene: dict[str, Path], cli: CliRun) -> None:
    other = T.write_raster(
        tmp_path / "other.tif", T.coordinate_bands(300, 420, "uint8"), crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 2177, 1460),
    )  # fmt: skip
    prediction = predict_raster(other, pointwise, tmp_path / "other-pred.tif", patch_size=128, progress=False).path
    sampler = PatchSampler(**common.split_options(common.load_config(scene["config"]), "c").sampler)
    with pytest.raises(RasterError, match="not on the image's grid"):
        read_classes(prediction, sampler.grid, [(0, 0)], 128)
    code, _, err = cli("preview", scene["config"], "--prediction", prediction, "--out", tmp_path / "x.png")
    assert code == 1 and "--prediction" in err and "not on the image's grid" in err


def test_read_classes_gives_classes_and_nodata_as_written(tmp_path: Path, scene: dict[str, Path]) -> None:
    prediction = numpy_prediction(scene)
    sampler = PatchSampler(**common.split_options(common.load_config(scene["config"]), "c").sampler)
    with rasterio.open(prediction) as src:
        written = src.read(1)
    (classes, valid), (edge, edge_valid) = read_classes(prediction, sampler.grid, [(64, 200), (200, 350)], 128)
    np.testing.assert_array_equal(classes, written[64:192, 200:328])
    assert valid.all() and classes.dtype == np.int64
    np.testing.assert_array_equal(edge[:100, :70], written[200:300, 350:420])
    assert edge_valid[:100, :70].all() and not edge_valid[100:].any() and not edge_valid[:, 70:].any()


def test_evaluate_legend_says_why_a_value_is_undefined() -> None:
    """A class in the reference that is never predicted has no precision: the legend must not call it
    a class in neither."""
    from crossgeo.evaluation import Evaluation

    confusion = np.array([[5, 0, 0], [3, 0, 0], [0, 0, 0]])  # class 1 never predicted, class 2 in neither
    text = format_metrics(Evaluation.from_confusion(confusion, {}))
    assert "precision of a class never predicted" in text and "IoU and F1 of a class in neither" in text
