"""Read failures are loud whatever the application does with Python logging.

GDAL's MBTiles driver decodes a damaged PNG tile into blank pixels and reports success; only
the CE_Failure it signals on the way tells crossgeo the read failed. These tests configure
logging the ways applications do (in a fresh process each, as logging is process-wide) and
check that every window touching the damaged tile still raises `ReadError`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crossgeo import testing as T

ROOT = Path(__file__).resolve().parents[2]

_READ_ALL = """
import json, logging, logging.config, sys
setup = sys.argv[4]
if setup == "disable":
    logging.disable(logging.CRITICAL)
elif setup == "dictconfig":
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True, "root": {"level": "WARNING"}})
elif setup == "rasterio-error":
    logging.getLogger("rasterio").setLevel(logging.ERROR)
elif setup == "rasterio-err-silenced":
    logging.getLogger("rasterio._err").disabled = True
    logging.getLogger("rasterio._err").propagate = False
import rasterio  # the application imports rasterio (and configures logging) before crossgeo
if setup == "dictconfig-after-import":
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True, "root": {"level": "WARNING"}})
from crossgeo import PatchSampler, ReadError
sampler = PatchSampler(sys.argv[1], sys.argv[2], sys.argv[3], 64, n_classes=2, selected_bands=[1, 2, 3])
if setup == "dictconfig-after-first-read":
    sampler[0]
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True, "root": {"level": "WARNING"}})
outcomes = []
for i in range(len(sampler)):
    try:
        patch = sampler[i]
        outcomes.append(["ok", int(patch.image.astype("int64").sum())])
    except ReadError as error:
        outcomes.append(["ReadError", str(error)])
    except Exception as error:
        outcomes.append([type(error).__name__, str(error)])
print(json.dumps({"outcomes": outcomes, "rows": sampler.row_off.tolist(), "cols": sampler.col_off.tolist()}))
"""

SETUPS = [
    "none",
    "disable",
    "dictconfig",
    "dictconfig-after-import",
    "dictconfig-after-first-read",
    "rasterio-error",
    "rasterio-err-silenced",
]


def read_all(files: tuple[Path, Path, Path], setup: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _READ_ALL, *map(str, files), setup],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return T.write_damaged_mbtiles_scene(tmp_path_factory.mktemp("damaged"))


@pytest.mark.parametrize("setup", SETUPS)
def test_a_damaged_tile_raises_however_logging_is_configured(damaged: tuple[Path, Path, Path], setup: str) -> None:
    mbtiles = damaged[0]
    result = read_all(damaged, setup)
    outcomes = result["outcomes"]
    failed = [i for i, (kind, _) in enumerate(outcomes) if kind != "ok"]
    # A quarter of the 32 windows touch the damaged tile (`write_damaged_mbtiles_scene`).
    assert len(outcomes) == 32 and len(failed) == 8, outcomes
    for i in failed:
        kind, message = outcomes[i]
        assert kind == "ReadError", outcomes[i]
        r, c = result["rows"][i], result["cols"][i]
        assert f"image {mbtiles} failed for the window row_off={r}, col_off={c}" in message
    # The windows that do not touch the damaged tile read their real (non-blank) pixels.
    assert all(outcomes[i][1] > 0 for i in range(32) if i not in failed)


def test_the_trap_leaves_rasterio_log_records_as_they_were(
    damaged: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An application that logs rasterio at INFO still sees GDAL's failure records (once each)."""
    import logging

    from crossgeo import PatchSampler, ReadError

    sampler = PatchSampler(*map(str, damaged), 64, n_classes=2, selected_bands=[1, 2, 3])
    bad = next(i for i in range(len(sampler)) if sampler.row_off[i] >= 256 and sampler.col_off[i] < 256)
    with caplog.at_level(logging.INFO, logger="rasterio._err"), pytest.raises(ReadError):
        sampler[bad]
    records = [r for r in caplog.records if r.name == "rasterio._err" and "GDAL signalled an error" in r.getMessage()]
    assert records and all(r.levelno == logging.INFO for r in records)
