"""`crossgeo demo --framework tensorflow` trains through make_dataset (needs TensorFlow)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from crossgeo.cli import main


def test_demo_trains_with_tensorflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--framework", "tensorflow", "--steps", "3", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    found = re.search(r"trained a tiny tensorflow model for 3 steps: loss ([\d.]+) -> ([\d.]+)", out)
    assert found, out
    assert all(math.isfinite(float(v)) for v in found.groups())
    assert (tmp_path / "demo" / "config.yaml").exists() and (tmp_path / "demo" / "preview.png").exists()
    found = re.search(r"predicted the whole scene \(64 windows\) .*: pixel accuracy ([\d.]+), mean IoU ([\d.]+)", out)
    assert found, out
    assert all(0 <= float(v) <= 1 for v in found.groups())
    assert (tmp_path / "demo" / "prediction.tif").exists() and (tmp_path / "demo" / "prediction.png").exists()
