"""Helpers shared by the core, torch and tf suites (``tests/`` is on ``sys.path`` through its conftest).

The scenes themselves come from `crossgeo.testing.CoordinateScene`; the CLI runner is served by
the ``cli`` fixture (``tests/conftest.py``), typed here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from crossgeo import testing as T

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


# --------------------------------------------------------------------------- several sources (issue 24.1)
UTM = "EPSG:32632"
SOURCES_ORIGIN = (500000.0, 5000000.0)
SOURCES_HEIGHT, SOURCES_WIDTH = 200, 240
"""The 10 m reference grid of `write_sources_scene` (not a multiple of its 64-pixel patch)."""


def write_sources_scene(folder: Path, *, b20_rows: int = SOURCES_HEIGHT // 2) -> dict[str, Path]:
    """Two band files of one UTM scene and a ``crossgeo predict`` / ``evaluate`` configuration stacking them.

    ``B10.tif``: 10 m, uint16, 2 bands (row, col of the 10 m reference grid). ``B20.tif``: 20 m,
    uint16, 1 band (its own row, so on the reference grid it reads ``row // 2`` with nearest),
    ``b20_rows`` rows from the top (the default covers the whole grid; fewer cover only its top
    ``2 * b20_rows`` reference rows, which ``missing: fill`` allows).
    A 3-class mask on the reference grid (``(row // 8 + col // 8) % 3``), a windows table and
    ``config.yaml`` whose ``image_mbtiles_path`` is a mapping of relative paths (resolved next to
    the configuration), ``image_dtype: float32`` (the model sees the values as read) and
    ``n_classes: 3`` (one score per channel for an identity model).
    """
    import yaml

    left, top = SOURCES_ORIGIN
    b10 = T.write_raster(
        folder / "B10.tif",
        T.coordinate_bands(SOURCES_HEIGHT, SOURCES_WIDTH, "uint16")[:2],
        crs=UTM,
        transform=Affine(10, 0, left, 0, -10, top),
        blocksize=64,
    )
    b20 = T.write_raster(
        folder / "B20.tif",
        T.coordinate_bands(b20_rows, SOURCES_WIDTH // 2, "uint16")[:1],
        crs=UTM,
        transform=Affine(20, 0, left, 0, -20, top),
        blocksize=64,
    )
    rows, cols = np.mgrid[0:SOURCES_HEIGHT, 0:SOURCES_WIDTH]
    classes = ((rows // 8 + cols // 8) % 3).astype(np.uint8)[None]
    mask = T.write_raster(folder / "mask.tif", classes, crs=UTM, transform=Affine(10, 0, left, 0, -10, top))
    table = T.write_windows_table(folder / "windows.csv", [0, 100], [0, 150])
    options = {
        "image_mbtiles_path": {"B10": "B10.tif", "B20": {"path": "B20.tif", "resampling": "nearest"}},
        "mask_path": "mask.tif",
        "crops_path": "windows.csv",
        "patch_size": 64,
        "n_classes": 3,
        "image_dtype": "float32",
        "missing": "fill",
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"train_dataset": options}, sort_keys=False))
    return {"B10": b10, "B20": b20, "mask": mask, "windows": table, "config": config, "folder": folder}


def sources_truth(b20_rows: int = SOURCES_HEIGHT // 2) -> tuple[np.ndarray, np.ndarray]:
    """What an identity model sees on `write_sources_scene`'s reference grid: (3, H, W) float32, and where
    every source has data (B20 covers the top ``2 * b20_rows`` reference rows)."""
    rows, cols = np.mgrid[0:SOURCES_HEIGHT, 0:SOURCES_WIDTH]
    valid = rows < 2 * b20_rows
    stack = np.stack([rows, cols, np.where(valid, rows // 2, 0)]).astype(np.float32)
    return stack, valid


# --------------------------------------------------------------------------- time series (issue 24.2)
ZOOM, TILE_COL, TILE_ROW = 12, 2176, 1460
SIZE = 32
HEIGHT = WIDTH = 128
#: Dates of place "a" in catalogue order (not time order): its first row is the reference grid.
DATES_A = ("2021-03-05", "2021-01-10", "2021-06-20", "2021-02-14")
DATES_B = ("2021-05-01", "2021-04-02")
#: The date of place "a" written on a grid shifted by (rows, cols) whole pixels.
SHIFTED, SHIFT = "2021-06-20", (-8, -5)


def day_of_year(date: str) -> int:
    return int((np.datetime64(date, "D") - np.datetime64(date[:4] + "-01-01", "D")).astype(int)) + 1


def write_date(path: Path, transform: Affine, date: str, shift: tuple[int, int] = (0, 0)) -> Path:
    """4 uint16 bands: row, col, row + col on the reference grid (shifted grids too), then the day of year."""
    rows, cols = shift
    height, width = HEIGHT - 2 * rows, WIDTH - 2 * cols  # a shifted date still covers the whole reference grid
    coords = T.coordinate_bands(height, width, "uint16", row0=rows, col0=cols)
    day = np.full((1, height, width), day_of_year(date), np.uint16)
    return T.write_raster(
        path, np.concatenate([coords, day]), crs="EPSG:3857", transform=transform @ Affine.translation(cols, rows)
    )


class Series:
    """Place "a" at four dates (one on a shifted grid), place "b" at two dates, each with its mask and windows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows: list[dict[str, object]] = []
        self.windows = {"a": ([0, 32, 64, 96], [0, 48, 16, 90]), "b": ([10, 50], [20, 60])}
        for place, tile_col, dates in (("a", TILE_COL, DATES_A), ("b", TILE_COL + 2, DATES_B)):
            transform = T.web_mercator_transform(ZOOM, tile_col, TILE_ROW)
            rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
            classes = ((rows // 16 + cols // 16) % 2).astype(np.uint8)[None]
            mask = T.write_raster(folder / f"mask_{place}.tif", classes, crs="EPSG:3857", transform=transform)
            crops = T.write_windows_table(folder / f"windows_{place}.csv", *self.windows[place])
            for k, date in enumerate(dates):
                shift = SHIFT if (place, date) == ("a", SHIFTED) else (0, 0)
                image = write_date(folder / f"{place}_{date}.tif", transform, date, shift)
                row: dict[str, object] = {"image_path": str(image), "time": date, "place": place}
                if k == 0:  # the group's first row gives its mask and windows
                    row.update(mask_path=str(mask), crops_path=str(crops))
                self.rows.append(row)


def multi_source_dates(series: Series) -> list[dict[str, object]]:
    """`Series`' rows with every date as two band files (issue 24.4): ``coords`` (the date's row/col/row+col bands,
    the shifted date on its shifted grid; bands [2, 1] chosen) and ``day`` at twice the pixel size (1000 + the day
    of year): channels (col, row, 1000 + day) per date."""
    import rasterio

    rows = []
    for row in series.rows:
        path = Path(str(row["image_path"]))
        with rasterio.open(path) as src:
            coords = src.read([1, 2, 3])
            day = int(src.read(4)[0, 0])
            transform, crs = src.transform, src.crs
        coarse = np.full((1, coords.shape[1] // 2, coords.shape[2] // 2), 1000 + day, np.uint16)
        day_file = T.write_raster(
            path.with_name(path.stem + "_day.tif"), coarse, crs=crs, transform=transform @ Affine.scale(2)
        )
        coords_file = T.write_raster(path.with_name(path.stem + "_coords.tif"), coords, crs=crs, transform=transform)
        image = {"coords": {"path": str(coords_file), "bands": [2, 1]}, "day": str(day_file)}
        rows.append({**row, "image_path": image})
    return rows


STAC_PATCH = 16
STAC_WINDOWS = ((0, 0), (8, 40), (48, 48))


@contextlib.contextmanager
def served_stac_sampler(folder: Path) -> Any:
    """A `SceneSampler` over a static STAC catalogue served by a loopback HTTP server (while the block runs).

    Two items of `crossgeo.testing.write_stac_items` (COG assets ``coords`` and ``elev`` as the
    sources, ``labels`` as each scene's mask), read from the item collection's URL with
    `crossgeo.stac_scenes`; three windows per scene. The torch and tf suites train on it.
    """
    import importlib.util
    import sys

    from crossgeo import SceneSampler, stac_scenes
    from crossgeo import testing as T

    servers = sys.modules.get("servers")
    if servers is None:  # tests/core is on sys.path only when a core test was collected
        spec = importlib.util.spec_from_file_location("servers", Path(__file__).parent / "core" / "servers.py")
        assert spec is not None and spec.loader is not None
        servers = importlib.util.module_from_spec(spec)
        sys.modules["servers"] = servers
        spec.loader.exec_module(servers)
    with servers.running(servers.FileServer(folder)) as server:
        collection = T.write_stac_items(folder, 2, size=64, href_base=server.url)
        crops = T.write_windows_table(
            folder / "windows.csv", [r for r, _ in STAC_WINDOWS], [c for _, c in STAC_WINDOWS]
        )
        scenes = stac_scenes(
            f"{server.url}/{collection.name}", ["coords", "elev"], mask_path="labels", crops_path=crops
        )
        sampler = SceneSampler(scenes, STAC_PATCH, image_dtype="native", n_classes=2, max_open=1)
        try:
            yield sampler
        finally:
            sampler.close()


def stac_reference_epoch(sampler: Any, seed: int, *, channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """The framework-free definition of an epoch every adapter must give: ``to_model_inputs`` in ``epoch_order``."""
    import numpy as np

    from crossgeo.augment import to_model_inputs
    from crossgeo.loading import epoch_order

    pairs = [
        to_model_inputs(sampler[i], None, seed=seed, epoch=0, channels_last=channels_last)
        for i in epoch_order(len(sampler), seed, 0).tolist()
    ]
    return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])


STAC_EPOCH_SUMS = (380160.0, 768)
"""Sums of every image value and every mask class of a `served_stac_sampler` epoch, in every framework."""


def preview_title_shift(png: Path) -> int:
    """Pixels a preview sheet's tiles sit lower than `crossgeo.cli.preview.layout` without a title puts them:
    the title the PNG carries (its ``Title`` text) wrapped to the sheet's width, one ``TITLE_LINE`` a line past
    the first."""
    from PIL import Image

    from crossgeo.cli import preview

    picture = Image.open(png)
    lines = preview.title_lines(str(picture.info.get("Title", "")), picture.width)
    return max(0, len(lines) - 1) * preview.TITLE_LINE
