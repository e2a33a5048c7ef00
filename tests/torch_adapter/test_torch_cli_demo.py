"""`crossgeo demo --framework torch` trains, predicts the whole scene and draws it (needs torch).

Moved from the core suite, whose tox env has no torch (there it always skipped).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import rasterio
from PIL import Image
from testkit import CliRun

from crossgeo import PatchSampler
from crossgeo.cli import common
from crossgeo.cli import demo as demo_command


def test_demo_trains_with_torch(tmp_path: Path, cli: CliRun) -> None:
    code, out, err = cli("demo", "--framework", "torch", "--steps", "3", "--out", tmp_path / "d")
    assert code == 0, err
    assert "trained a tiny torch model for 3 steps" in out
    found = re.search(r"predicted the whole scene \(64 windows\) .*: pixel accuracy ([\d.]+), mean IoU ([\d.]+)", out)
    assert found, out
    assert 0 <= float(found.group(1)) <= 1 and 0 <= float(found.group(2)) <= 1
    config = tmp_path / "d" / "config.yaml"
    grid = PatchSampler(**common.split_options(common.load_config(config), str(config)).sampler).grid  # image.mbtiles
    with rasterio.open(tmp_path / "d" / "prediction.tif") as pred:
        assert (pred.crs, pred.transform, pred.shape) == (grid.crs, grid.transform, (grid.height, grid.width))
    picture = Image.open(tmp_path / "d" / "prediction.png")
    assert picture.width == 8 + 3 * (demo_command.PANEL + 8)
    assert "crossgeo evaluate prediction.tif config.yaml" in out


def test_demo_trains_without_albumentations(tmp_path: Path) -> None:
    """The demo's configs write `augmentation_list: []` where albumentations is absent (a `.[torch]` or
    `.[tensorflow]` install): training must not need it."""
    code = (
        "import sys; sys.modules['albumentations'] = None\n"
        "from crossgeo.cli import main\n"
        f"sys.exit(main(['demo', '--framework', 'torch', '--steps', '2', '--out', {str(tmp_path / 'd')!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trained a tiny torch model for 2 steps" in run.stdout, run.stdout
    assert "augmentation_list: []" in (tmp_path / "d" / "config.yaml").read_text()
