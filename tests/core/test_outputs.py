"""Outputs appear whole or not at all, and never replace an input (security issue 21, items 5, 8 and 9).

Full disks are real: a 256 KiB tmpfs mounted for the test (root only; the tests that need
it skip with the reason elsewhere), filled to the last byte before the command runs. A
killed run is a real ``kill -9`` of a subprocess writing a prediction.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytest.importorskip("yaml")
pytest.importorskip("PIL")

import yaml
from testkit import CliRun

from crossgeo import testing as T
from crossgeo.cli import main
from crossgeo.errors import ConfigError, CrossgeoError, WriteError
from crossgeo.files import atomic_output, partial_pattern, remove_stale
from crossgeo.io import _has_zstd
from crossgeo.predict import predict_raster
from crossgeo.testing import CoordinateScene

ROOT = Path(__file__).resolve().parents[2]
TRANSFORM = T.web_mercator_transform(12, 2176, 1460)


def two_scores(x: np.ndarray) -> np.ndarray:
    """Two score bands from the first image band (a numpy model)."""
    return np.stack([x[:, 0], np.float32(1) - x[:, 0]], axis=1)


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration over a 512 x 512 coordinate image, a lon/lat class mask and a 4 x 4 window grid."""
    scene = CoordinateScene(tmp_path, 512)
    rows, cols = np.meshgrid(np.arange(0, 512, 128), np.arange(0, 512, 128), indexing="ij")
    options = {
        "_target_": "anything.Dataset",
        "image_path": str(scene.image),
        "mask_path": str(scene.lonlat_mask()),
        "crops_path": str(scene.windows(rows.ravel(), cols.ravel())),
        "patch_size": 128,
        "n_classes": 4,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"train_dataset": options}))
    return path


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on its own 256 KiB tmpfs (skipped where this process may not mount one)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a 256 KiB tmpfs (not root here)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 256 KiB tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Take every free byte of ``folder``'s file system with a filler file."""
    with open(folder / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    assert os.statvfs(folder).f_bavail == 0


# ---------------------------------------------------------------------- full disks (issue 21.5, 21.9)


def test_windows_out_on_a_full_disk_keeps_the_previous_table(config: Path, full_disk: Path, cli: CliRun) -> None:
    out = full_disk / "windows.parquet"
    code, _, err = cli("windows", config, "--grid", "128", "--out", out)
    assert code == 0, err
    previous = out.read_bytes()
    fill(full_disk)
    code, _, err = cli("windows", config, "--grid", "8", "--out", out)  # 3600 windows: a bigger table
    assert code == 1
    assert out.read_bytes() == previous
    assert partials(full_disk) == []
    assert f"--out '{out}': disk full (no space left on device" in err


def test_stats_json_on_a_full_disk_keeps_the_previous_file(config: Path, full_disk: Path, cli: CliRun) -> None:
    document = yaml.safe_load(config.read_text())
    document["train_dataset"]["n_classes"] = 40  # a row per declared class: more JSON than the old file's page
    config.write_text(yaml.safe_dump(document))
    out = full_disk / "stats.json"
    out.write_text('{"previous": true}\n')
    fill(full_disk)
    code, _, err = cli("stats", config, "--json", out)
    assert out.read_text() == '{"previous": true}\n'
    assert partials(full_disk) == []
    assert code == 1
    assert f"--json '{out}': disk full" in err and "the previous file, if any, is unchanged" in err


def test_preview_png_on_a_full_disk_keeps_the_previous_picture(config: Path, full_disk: Path, cli: CliRun) -> None:
    out = full_disk / "preview.png"
    out.write_bytes(b"previous picture")
    fill(full_disk)
    code, _, err = cli("preview", config, "-n", "4", "--out", out)
    assert out.read_bytes() == b"previous picture"
    assert partials(full_disk) == []
    assert code == 1
    assert f"--out '{out}': disk full" in err


def test_evaluate_json_on_a_full_disk_keeps_the_previous_metrics(
    config: Path, tmp_path: Path, full_disk: Path, cli: CliRun
) -> None:
    document = yaml.safe_load(config.read_text())
    document["train_dataset"]["n_classes"] = 40  # a record per class: more JSON than the old file's page
    config.write_text(yaml.safe_dump(document))
    image = document["train_dataset"]["image_path"]
    prediction = predict_raster(
        image,
        lambda x: np.repeat(x[:, :1], 4, axis=1) * np.arange(4, dtype=np.float32)[:, None, None],
        tmp_path / "prediction.tif",
        patch_size=128,
        progress=False,
    )
    out = full_disk / "metrics.json"
    out.write_text('{"previous": true}\n')
    fill(full_disk)
    code, _, err = cli("evaluate", prediction.path, config, "--json", out)
    assert out.read_text() == '{"previous": true}\n'
    assert partials(full_disk) == []
    assert code == 1
    assert f"--json '{out}': disk full" in err


def test_prediction_on_a_full_disk_says_disk_full_and_keeps_the_previous_file(tmp_path: Path, full_disk: Path) -> None:
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(512, 512, "uint8"), crs="EPSG:3857", transform=TRANSFORM
    )
    out = full_disk / "prediction.tif"
    out.write_bytes(b"previous prediction")
    fill(full_disk)
    with pytest.raises(WriteError, match=r"out_path '.*prediction.tif': disk full \(no space left on device") as caught:
        predict_raster(image, two_scores, out, patch_size=128, output="scores", overwrite=True, progress=False)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, CrossgeoError)
    assert "Write failed" not in str(caught.value).split("(", 1)[0]  # the cause comes after what happened
    assert out.read_bytes() == b"previous prediction"
    assert partials(full_disk) == []


def test_a_failed_rename_names_the_file_and_leaves_no_temporary(config: Path, tmp_path: Path, cli: CliRun) -> None:
    """Without a full disk: the output name is a folder, so the write succeeds and the rename fails."""
    out = tmp_path / "stats.json"
    out.mkdir()
    (out / "keep.txt").write_text("kept")
    code, _, err = cli("stats", config, "--json", out)
    assert code == 1
    assert f"--json '{out}' could not be written" in err
    assert (out / "keep.txt").read_text() == "kept"
    assert partials(tmp_path) == []


# ---------------------------------------------------------------------- temporaries of killed runs


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_the_next_write_removes_only_stale_temporaries_of_its_own_target(
    config: Path, tmp_path: Path, cli: CliRun
) -> None:
    out = tmp_path / "stats.json"
    dead, old = _dead_pid(), time.time() - 3600
    stale = tmp_path / f".stats.json.partial-{dead}-0123abcd.json"
    kept = {
        "running process": tmp_path / ".stats.json.partial-1-0123abcd.json",
        "after this process started": tmp_path / f".stats.json.partial-{dead}-4567cdef.json",
        "another target": tmp_path / f".other.json.partial-{dead}-0123abcd.json",
        "not the pattern": tmp_path / ".stats.json.partial-notes.json",
        "the user's file": tmp_path / "stats.json.partial-1-0123abcd.json",
    }
    for path in [stale, *kept.values()]:
        path.write_text("{}")
        if path != kept["after this process started"]:
            os.utime(path, (old, old))
    code, _, err = cli("stats", config, "--json", out)
    assert code == 0, err
    assert not stale.exists()
    assert [name for name, path in kept.items() if not path.exists()] == []
    assert list(partial_pattern(out).pattern) and partial_pattern(out).fullmatch(stale.name)
    assert remove_stale(out) == []  # nothing left to remove


def test_kill_9_mid_prediction_never_leaves_a_partial_file_under_the_final_name(tmp_path: Path) -> None:
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(2048, 2048, "uint8"), crs="EPSG:3857", transform=TRANSFORM
    )
    out = tmp_path / "out" / "prediction.tif"
    out.parent.mkdir()
    out.write_bytes(b"previous prediction")
    script = (
        "import sys, time, numpy as np\n"
        "from crossgeo.predict import predict_raster\n"
        "delay = float(sys.argv[3])\n"
        "def model(x):\n"
        "    time.sleep(delay)\n"
        "    return np.stack([x[:, 0], np.float32(1) - x[:, 0]], axis=1)\n"
        "predict_raster(sys.argv[1], model, sys.argv[2], patch_size=128, batch_size=4, output='scores',\n"
        "               overwrite=True, progress=False)\n"
    )
    env = {**os.environ, "GDAL_CACHEMAX": "1"}  # 1 MB of block cache: tiles reach the file as strips finish
    writer = subprocess.Popen([sys.executable, "-c", script, str(image), str(out), "0.1"], cwd=ROOT, env=env)
    deadline = time.time() + 120
    try:
        while True:  # until the temporary holds tiles beyond its header: strips are being written
            names = partials(out.parent)
            if names and (out.parent / names[0]).stat().st_size > 20_000:
                break
            assert writer.poll() is None and time.time() < deadline, "the prediction ended before it was killed"
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert out.read_bytes() == b"previous prediction"
    assert len(partials(out.parent)) == 1  # what the killed run left
    done = subprocess.run(
        [sys.executable, "-c", script, str(image), str(out), "0"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert partials(out.parent) == []  # the next run removed it
    with rasterio.open(out) as src:
        got = src.read(1)
        truth = T.coordinate_bands(2048, 2048, "uint8")[0].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(got, truth)


def test_atomic_output_turns_an_os_error_into_a_write_error_and_passes_others(tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    out.write_text("previous")
    with pytest.raises(WriteError, match=r"--out '.*table.csv' could not be written \(.*\[Errno 21\]"):
        with atomic_output(out, option="--out") as temp:
            temp.write_text("half")
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
    with pytest.raises(KeyError):
        with atomic_output(out, option="--out") as temp:
            temp.write_text("half")
            raise KeyError("not a write")
    assert out.read_text() == "previous" and partials(tmp_path) == []
    with atomic_output(out, option="--out") as temp:
        temp.write_text("new")
    assert out.read_text() == "new" and partials(tmp_path) == []


# ---------------------------------------------------------------------- inputs are never outputs (issue 21.8)


def test_predict_refuses_to_write_over_its_own_image(tmp_path: Path) -> None:
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(256, 256, "uint8"), crs="EPSG:3857", transform=TRANSFORM
    )
    before = image.read_bytes()
    os.link(image, tmp_path / "hardlink.tif")
    (tmp_path / "symlink.tif").symlink_to(image)
    for out in (image, tmp_path / "hardlink.tif", tmp_path / "symlink.tif", tmp_path / "." / "image.tif"):
        with pytest.raises(ConfigError, match=r"out_path '.*' is the image_path '.*image.tif', an input of this run"):
            predict_raster(image, two_scores, out, patch_size=128, overwrite=True, progress=False)
    assert image.read_bytes() == before


@pytest.mark.parametrize("target", ["image_path", "mask_path", "configuration"])
def test_predict_command_refuses_an_out_that_is_an_input(config: Path, target: str, cli: CliRun) -> None:
    options = yaml.safe_load(config.read_text())["train_dataset"]
    path = config if target == "configuration" else Path(options[target])
    before = path.read_bytes()
    code, _, err = cli("predict", config, "--model", config.parent / "model.pt", "--out", path, "--overwrite")
    assert code == 1
    assert f"--out '{path}' is the {target} '{path}', an input of this run" in err
    assert "refused (with or without overwrite)" in err
    assert path.read_bytes() == before


def test_stats_and_preview_refuse_to_write_over_the_configuration(config: Path, cli: CliRun) -> None:
    before = config.read_bytes()
    assert "--json" in cli("stats", config, "--json", config)[2]
    assert "--out" in cli("preview", config, "--out", config)[2]
    assert config.read_bytes() == before


# ---------------------------------------------------------------------- compression (issue 21.9)


def test_predictions_default_to_deflate_and_zstd_on_request(tmp_path: Path) -> None:
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(512, 512, "uint8"), crs="EPSG:3857", transform=TRANSFORM
    )
    result = predict_raster(image, two_scores, tmp_path / "default.tif", patch_size=128, progress=False)
    with rasterio.open(result.path) as src:
        assert src.compression.value == "DEFLATE"
    cog = predict_raster(image, two_scores, tmp_path / "cog.tif", patch_size=128, cog=True, progress=False)
    with rasterio.open(cog.path) as src:
        assert src.compression.value == "DEFLATE" and src.overviews(1)
    with pytest.raises(ConfigError, match=r"compress 'lzw' is not one of 'deflate', 'zstd'"):
        predict_raster(image, two_scores, tmp_path / "lzw.tif", patch_size=128, compress="lzw")
    if not _has_zstd():
        pytest.skip("this GDAL has no ZSTD")
    zstd = predict_raster(image, two_scores, tmp_path / "zstd.tif", patch_size=128, compress="zstd", progress=False)
    with rasterio.open(zstd.path) as src, rasterio.open(result.path) as deflate:
        assert src.compression.value == "ZSTD"
        np.testing.assert_array_equal(src.read(), deflate.read())
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--compress {deflate,zstd}" in help_text.getvalue()


# ---------------------------------------------------------------------- TTA and models that write into their input


def test_tta_passes_a_model_its_own_copy_of_the_batch(tmp_path: Path) -> None:
    """A model that scales its input in place (as ``ReLU(inplace=True)`` on a shared tensor) changes nothing."""
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(300, 260, "uint8"), crs="EPSG:3857", transform=TRANSFORM
    )
    seen: list[float] = []

    def writes_into_its_input(x: np.ndarray) -> np.ndarray:
        seen.append(float(x.max()))
        scores = two_scores(x)
        x *= np.float32(0.25)
        return scores

    for tta in ("flips", "d4"):
        plain = predict_raster(
            image,
            two_scores,
            tmp_path / f"{tta}.tif",
            patch_size=128,
            overlap=32,
            output="scores",
            tta=tta,
            progress=False,
        )
        mutating = predict_raster(
            image,
            writes_into_its_input,
            tmp_path / f"{tta}-m.tif",
            patch_size=128,
            overlap=32,
            output="scores",
            tta=tta,
            progress=False,
        )
        with rasterio.open(plain.path) as a, rasterio.open(mutating.path) as b:
            np.testing.assert_array_equal(b.read(), a.read())
    assert min(seen) > 0.5  # every pass saw the image's values, not a scaled copy
