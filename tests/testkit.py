"""Helpers shared by the core, torch and tf suites (``tests/`` is on ``sys.path`` through its conftest).

The scenes themselves come from `crossgeo.testing.CoordinateScene`; the CLI runner is served by
the ``cli`` fixture (``tests/conftest.py``), typed here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CliRun = Callable[..., tuple[int, str, str]]
"""The ``cli`` fixture: ``cli("validate", config)`` -> (exit status, stdout, stderr)."""


def run_cli(*argv: Any) -> tuple[int, str, str]:
    """``crossgeo ARGV`` in-process (each argument ``str``-ed): (exit status, stdout, stderr)."""
    from crossgeo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def write_predict_scene(
    folder: Path,
    *,
    classes: np.ndarray | None = None,
    windows: tuple[list[int], list[int]] = ([0, 100], [0, 200]),
    **top_level: Any,
) -> dict[str, Path]:
    """The ``crossgeo predict`` / ``evaluate`` scene of the core, torch and Keras CLI tests.

    A 300 x 420 uint8 coordinate image (not a multiple of the 128-pixel patch), a 4-class mask on
    its grid (``classes``, (300, 420); default ``(row + col) % 4``), a windows table and
    ``config.yaml`` (``train_dataset`` plus ``top_level`` keys such as ``class_names``).
    """
    import numpy as np
    import yaml

    from crossgeo import testing as T

    transform = T.web_mercator_transform(12, 2176, 1460)
    image = T.write_raster(
        folder / "image.tif", T.coordinate_bands(300, 420, "uint8"), crs="EPSG:3857", transform=transform
    )
    if classes is None:
        classes = np.indices((300, 420)).sum(0) % 4
    mask = T.write_raster(folder / "mask.tif", classes.astype(np.uint8)[None], crs="EPSG:3857", transform=transform)
    table = T.write_windows_table(folder / "windows.csv", *windows)
    options = {
        "image_mbtiles_path": str(image),
        "mask_path": str(mask),
        "crops_path": str(table),
        "patch_size": 128,
        "n_classes": 4,
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"train_dataset": options, **top_level}))
    return {"image": image, "mask": mask, "config": config, "folder": folder}
