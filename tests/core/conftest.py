"""The core suite's scene: a coordinate-encoding image written on demand (`crossgeo.testing.CoordinateScene`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossgeo.testing import CoordinateScene

SIZE = 512
"""The core scene's side in pixels (the torch and tf suites use 256)."""


@pytest.fixture
def scene(tmp_path: Path) -> CoordinateScene:
    return CoordinateScene(tmp_path, SIZE)
