"""Shared pytest setup: framework test folders and the real-data location.

``tests/torch_adapter``, ``tests/tf_adapter`` and ``tests/ray_adapter`` need their framework (the folders are not
named after the frameworks: with ``tests/`` on ``sys.path`` a folder ``torch`` would pass
for a namespace package ``torch`` where torch is not installed). In the tox env that
promises a framework (``CROSSGEO_REQUIRE``), a missing one fails at import; in a plain
``pytest`` run without it, those folders are not collected (and say so).
"""

from __future__ import annotations

import importlib.util
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_required = {name.strip() for name in os.environ.get("CROSSGEO_REQUIRE", "").split(",") if name.strip()}
collect_ignore: list[str] = []
for folder, module in (("torch_adapter", "torch"), ("tf_adapter", "tensorflow"), ("ray_adapter", "ray")):
    if module not in _required and importlib.util.find_spec(module) is None:
        collect_ignore.append(folder)


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from testkit import CliRun, run_cli  # noqa: E402

#: The documentation's example runner and generators (docs/scripts) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))

#: The real third-party rasters shipped beside the repository (read-only), or CROSSGEO_REAL_DATA.
REAL_DATA = Path(
    os.environ.get("CROSSGEO_REAL_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data/real"
)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; tests using it skip when it is absent (a fresh clone without ../shared)."""
    if not (REAL_DATA / "world.byte.tif").exists():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def cli() -> CliRun:
    """Runs ``crossgeo ARGV`` in-process: ``code, out, err = cli("validate", config)``."""
    return run_cli
