"""The bad-input catalogue: every option and input file kind, wrong in a realistic way.

Each case states the exception type and a pattern the message must match: it names the
file or option at fault and says what to do. Everything is caught at construction
(except a corrupt tile, which can only show when it is read).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Point

from crossgeo import (
    CatalogueError,
    ClassRangeError,
    ConfigError,
    MissingAssetError,
    OptionError,
    PatchSampler,
    RasterError,
    ReadError,
    SceneSampler,
    WindowError,
    stac_scenes,
)
from crossgeo import testing as T
from crossgeo.augment import build_augmentation
from crossgeo.catalogue import read_catalogue
from crossgeo.cli.common import load_config
from crossgeo.config import split_config
from crossgeo.errors import LayerNotFoundError, NoOverlapError, OptionTypeError
from crossgeo.grid import Grid
from crossgeo.planning import grid_windows, random_windows
from crossgeo.predict import predict_raster
from crossgeo.testing import PALETTE, CoordinateScene

SIZE = 64


class Files:
    """One scene plus a gallery of broken inputs next to it (built once for the module)."""

    def __init__(self, folder: Path) -> None:
        self.scene = CoordinateScene(folder, 512)
        s = self.scene
        self.folder = folder
        self.mask = s.lonlat_mask()
        self.rgb_mask = s.lonlat_mask("rgb.tif", palette=PALETTE)
        self.windows = s.windows([0, 100], [0, 100])
        self.uint16 = T.write_raster(
            folder / "u16.tif", np.full((3, 64, 64), 300, np.uint16), crs=s.crs, transform=s.transform
        )
        self.float = T.write_raster(
            folder / "f32.tif", np.full((3, 64, 64), 0.5, np.float32), crs=s.crs, transform=s.transform
        )
        self.uint32 = T.write_raster(
            folder / "u32.tif", np.full((3, 64, 64), 16777217, np.uint32), crs=s.crs, transform=s.transform
        )
        self.float64 = T.write_raster(
            folder / "f64.tif", np.full((3, 64, 64), 1e-50, np.float64), crs=s.crs, transform=s.transform
        )
        self.class_400 = T.write_raster(
            folder / "c400.tif", np.full((1, 512, 512), 400, np.uint16), crs=s.crs, transform=s.transform
        )
        self.text_tif = folder / "text.tif"
        self.text_tif.write_text("this is not a GeoTIFF")
        self.truncated = folder / "truncated.tif"
        self.truncated.write_bytes(s.image.read_bytes()[:200])
        self.vrt_missing = folder / "missing.vrt"
        self.vrt_missing.write_text(
            f'<VRTDataset rasterXSize="512" rasterYSize="512"><SRS>EPSG:3857</SRS>'
            f"<GeoTransform>{', '.join(map(str, s.transform.to_gdal()))}</GeoTransform>"
            '<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">gone.tif'
            "</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
        )
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">{s.image}'
            f"</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
            for b in (1, 2, 3)
        )
        self.huge_vrt = folder / "huge.vrt"  # 16000 x 16000 pixels, the scene in its top-left corner
        self.huge_vrt.write_text(
            f'<VRTDataset rasterXSize="16000" rasterYSize="16000"><SRS>EPSG:3857</SRS>'
            f"<GeoTransform>{', '.join(map(str, s.transform.to_gdal()))}</GeoTransform>{bands}</VRTDataset>"
        )
        self.far_mask = T.write_lonlat_mask(folder / "far.tif", (-80, 10, -79, 11), 0.01, cell=0.1, n_classes=2)
        left, bottom, right, top = s.lonlat_bounds
        self.part_mask = T.write_lonlat_mask(
            folder / "part.tif", (left, bottom, left + (right - left) / 3, top), 0.0003, cell=0.01, n_classes=2
        )
        self.no_crs_mask = T.write_raster(
            folder / "nocrs.tif", np.ones((1, 64, 64), np.uint8), crs=None, transform=Affine(1, 0, 0, 0, -1, 64)
        )
        self.two_band = T.write_raster(
            folder / "two.tif", np.zeros((2, 64, 64), np.uint8), crs=s.crs, transform=s.transform @ Affine.scale(8)
        )
        for name, text in {
            "strings.csv": "row_off,col_off\n1,2\nabc,4\n",
            "nan.csv": "row_off,col_off\n1,2\n,4\n",
            "floats.csv": "row_off,col_off\n1,2.5\n",
            "columns.csv": "row,col\n1,2\n",
            "outside.csv": "row_off,col_off\n0,0\n5000,5000\n-64,0\n",
            "empty.csv": "row_off,col_off\n",
            "dupes.csv": "row_off,col_off\n1,1\n1,1\n2,2\n",
            "y_x.csv": "y,x\n1,1\n",
        }.items():
            (folder / name).write_text(text)
        empty = gpd.GeoDataFrame({"id": []}, geometry=[], crs="EPSG:4326")
        empty.to_file(folder / "empty.gpkg", layer="windows")
        gpd.GeoDataFrame({"id": [0]}, geometry=[Point(11.3, 45.75)], crs="EPSG:4326").to_file(
            folder / "layers.gpkg", layer="a"
        )
        with pytest.warns(UserWarning):
            gpd.GeoDataFrame({"id": [0]}, geometry=[Point(11.3, 45.75)]).to_file(folder / "nocrs.shp")
        self.mbtiles = T.write_mbtiles(s.image, folder / "image.mbtiles")
        with sqlite3.connect(self.mbtiles) as db:
            db.execute("UPDATE tiles SET tile_data = ? WHERE zoom_level = 12", (b"\x89PNG\r\n\x1a\nbroken",))

    def path(self, name: str) -> Path:
        return self.folder / name


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("bad"))


def _scores(x: np.ndarray) -> np.ndarray:
    """A numpy model for the prediction cases: two score bands from the first image band."""
    return np.stack([x[:, 0], 1 - x[:, 0]], axis=1)


def config_file(files: Files, name: str, text: str) -> Path:
    """A YAML configuration file next to the gallery."""
    path = files.path(name)
    path.write_text(text)
    return path


LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    + ["image_path: *a9", ""]
)
"""A 'billion laughs' YAML file (10**9 strings once expanded) of under 1 KB."""


def sampler(files: Files, **kwargs: Any) -> PatchSampler:
    args = {"image_path": files.scene.image, "mask_path": files.mask, "crops_path": files.windows, "patch_size": SIZE}
    args.update(kwargs)
    return PatchSampler(**args)


def foreign_csv(files: Files) -> Path:
    """A user's table that is not a window-index cache (no crossgeo record, other columns)."""
    path = files.path("labels.csv")
    path.write_text("name,value\na,1\n")
    return path


def uint64_parquet(files: Files) -> Path:
    """Offsets stored as uint64, one above 2**63 (numpy's int64 cast would wrap it negative)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = files.path("u64.parquet")
    pq.write_table(
        pa.table({"row_off": pa.array([0, 2**63 + 5], pa.uint64()), "col_off": pa.array([0, 0], pa.uint64())}), path
    )
    return path


def overflow_csv(files: Files) -> Path:
    path = files.path("overflow.csv")
    path.write_text("row_off,col_off\n0,0\n0,9223372036854775808\n")
    return path


# --- chip stores (issue 25): cases that need zarr skip without it (the tox core env has it)


def _chip_store(files: Files, name: str, **kwargs: Any) -> Path:
    from crossgeo.chips import write_chips

    if kwargs.get("format", "zarr") == "zarr":
        pytest.importorskip("zarr", minversion="3")
    return write_chips(sampler(files), files.path(name), progress=False, **kwargs)


def chips_twice(files: Files) -> Any:
    _chip_store(files, "chips-twice", format="webdataset")
    return _chip_store(files, "chips-twice", format="webdataset")


def chips_over_a_folder(files: Files) -> Any:
    folder = files.path("my-folder")
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("mine")
    return _chip_store(files, "my-folder", format="webdataset", overwrite=True)


def chips_of_a_newer_version(files: Files) -> Any:
    import json

    from crossgeo.chips import read_manifest

    folder = files.path("chips-v99")
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "crossgeo-chips", "format_version": 99}))
    return read_manifest(folder)


def chips_unknown_split(files: Files) -> Any:
    from crossgeo.chips import ChipSampler

    crops = T.write_windows_table(files.path("split-windows.csv"), [0, 100], [0, 100], split=["train", "val"])
    pytest.importorskip("zarr", minversion="3")
    from crossgeo.chips import write_chips

    store = write_chips(sampler(files, crops_path=crops), files.path("chips-split"), progress=False)
    return ChipSampler(store, split="test")


def chips_damaged(files: Files) -> Any:
    from crossgeo.chips import ChipSampler

    store = _chip_store(files, "chips-damaged")
    shard = store / "mask" / "c" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:-8] + bytes(8))
    return ChipSampler(store)[0]


def chips_on_ray_without_ray(files: Files) -> Any:
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here; the missing-ray case runs in the core env")
    return _chip_store(files, "chips-ray", format="webdataset", engine="ray")


def chips_path_other_patch_size(files: Files) -> Any:
    from crossgeo.config import build_sampler

    store = _chip_store(files, "chips-config")
    return build_sampler({"chips_path": str(store), "patch_size": SIZE * 2})


def time_series(
    files: Files,
    times: tuple[str, ...] = ("2021-01-10", "2021-02-14", "2021-03-05"),
    *,
    masks: bool = False,
    images: dict[int, str] | None = None,
    sources: bool = False,
    **options: Any,
) -> Any:
    """A SceneSampler over one place (group "a") at ``times``: a copy of the scene's image per date.

    ``masks``: the second row names another mask; ``images``: date -> a `Files` raster replacing that date's
    image; ``sources``: each date two sources (``rgb``, ``red``), except the second date (``rgb`` only).
    """
    import shutil

    from crossgeo import SceneSampler

    rows: list[dict[str, Any]] = []
    for k, when in enumerate(times):
        image = files.path(f"date{k}.tif")
        if not image.exists():
            shutil.copy(files.scene.image, image)
        path: Any = str(getattr(files, (images or {}).get(k, ""), image))
        if sources:
            path = {"rgb": path, "red": {"path": path, "bands": [1]}} if k != 1 else {"rgb": path}
        rows.append({"image_path": path, "time": when, "place": "a"})
    rows[0].update(mask_path=str(files.mask), crops_path=str(files.windows))
    if masks:
        rows[1].update(mask_path=str(files.rgb_mask))
    return SceneSampler(rows, SIZE, **{"group_by": "place", **options})


def _uint64(files: Files) -> Path:
    """A uint64 raster on the scene's grid (no float holds every 64-bit integer)."""
    path = files.path("u64.tif")
    if not path.exists():
        s = files.scene
        T.write_raster(path, np.full((1, 64, 64), 2**60, np.uint64), crs=s.crs, transform=s.transform)
    return path


def scene_blocks(files: Files, *, weights: bool = False, **options: Any) -> Any:
    """A one-scene SceneSampler with ``options`` (``order``, ``block_scenes``); ``weights``: a shuffled weighted plan of it."""
    from crossgeo import SceneSampler
    from crossgeo.loading import plan_loader

    row = {"image_path": str(files.scene.image), "mask_path": str(files.mask), "crops_path": str(files.windows)}
    sampler = SceneSampler([row], SIZE, **options)
    if weights:
        return plan_loader(sampler, where="make_dataset", shuffle=True, seed=1, weights=np.ones(len(sampler)))
    return sampler


# (id, build(files), exception, message pattern): the pattern names the option/file and the fix.
CASES: list[tuple[str, Callable[[Files], Any], type[Exception], str]] = [
    # --- options: types and ranges
    ("patch_size zero", lambda f: sampler(f, patch_size=0), ConfigError, r"patch_size must be >= 1, got 0"),
    ("patch_size negative", lambda f: sampler(f, patch_size=-256), ConfigError, r"patch_size must be >= 1"),
    (
        "patch_size string",
        lambda f: sampler(f, patch_size="256"),
        OptionTypeError,
        r"patch_size must be an integer, got str",
    ),
    ("patch_size float", lambda f: sampler(f, patch_size=25.6), OptionTypeError, r"patch_size must be an integer"),
    ("n_classes zero", lambda f: sampler(f, n_classes=0), ConfigError, r"n_classes must be >= 1"),
    ("n_classes string", lambda f: sampler(f, n_classes="two"), OptionTypeError, r"n_classes must be an integer"),
    (
        "selected_bands zero",
        lambda f: sampler(f, selected_bands=[0]),
        ConfigError,
        r"selected_bands \[0\] asks for band 0 .*image.tif has 3 band\(s\); bands are numbered 1..3",
    ),
    (
        "selected_bands too high",
        lambda f: sampler(f, selected_bands=[1, 2, 4]),
        ConfigError,
        r"asks for band 4 .*numbered 1..3",
    ),
    (
        "selected_bands string",
        lambda f: sampler(f, selected_bands="1,2,3"),
        OptionTypeError,
        r"selected_bands must be a non-empty list of 1-based band numbers",
    ),
    (
        "selected_bands floats",
        lambda f: sampler(f, selected_bands=[1.0]),
        OptionTypeError,
        r"selected_bands entries must be integers \(1-based\)",
    ),
    (
        "image_dtype unknown",
        lambda f: sampler(f, image_dtype="int8"),
        ConfigError,
        r"image_dtype 'int8' is not one of 'uint8', 'uint16', 'float32', 'native'",
    ),
    (
        "image_dtype lossy uint16",
        lambda f: sampler(f, image_path=f.uint16),
        ConfigError,
        r"image_dtype 'uint8' would lose values of .*u16.tif .*use image_dtype: 'uint16' or 'native'",
    ),
    (
        "image_dtype lossy float",
        lambda f: sampler(f, image_path=f.float, image_dtype="uint16"),
        ConfigError,
        r"f32.tif .*use image_dtype: 'float32'",
    ),
    (
        "image_resampling unknown",
        lambda f: sampler(f, image_resampling="bilinar"),
        ConfigError,
        r"image_resampling 'bilinar' is not a rasterio resampling method; choose one of nearest, bilinear, cubic",
    ),
    (
        "image_resampling number",
        lambda f: sampler(f, image_resampling=1),
        ConfigError,
        r"image_resampling 1 is not .*choose one of",
    ),
    ("crops_layer type", lambda f: sampler(f, crops_layer=1), OptionTypeError, r"crops_layer must be a string or null"),
    (
        "col_off_key empty",
        lambda f: sampler(f, col_off_key=""),
        ConfigError,
        r"col_off_key must be a non-empty column name",
    ),
    (
        "row_off_key None",
        lambda f: sampler(f, row_off_key=None),
        OptionTypeError,
        r"row_off_key must be a non-empty column name",
    ),
    (
        "window_index_cache suffix",
        lambda f: sampler(f, window_index_cache=f.path("cache.json")),
        ConfigError,
        r"window_index_cache '.*cache.json' must end in .csv or .parquet",
    ),
    (
        "window_index_cache is crops_path",
        lambda f: sampler(f, window_index_cache=f.windows),
        ConfigError,
        r"window_index_cache .*windows.csv is the crops_path .*windows.csv: .*must never be an input.*Point "
        r"window_index_cache at a new file",
    ),
    (
        "window_index_cache not crossgeo's",
        lambda f: sampler(f, window_index_cache=foreign_csv(f)),
        ConfigError,
        r"window_index_cache .*labels.csv is not a window-index cache crossgeo wrote \(it has no crossgeo record.*"
        r"only overwrites or deletes its own caches\. Point window_index_cache at a new file",
    ),
    (
        "Parquet uint64 offset beyond int64",
        lambda f: sampler(f, crops_path=uint64_parquet(f)),
        WindowError,
        r"u64.parquet: column 'row_off' \(row_off_key\) is 9223372036854775813, beyond the int64 range .* data row 2",
    ),
    (
        "CSV offset overflowing int64",
        lambda f: sampler(f, crops_path=overflow_csv(f)),
        WindowError,
        r"overflow.csv: column 'col_off' \(col_off_key\) is 9223372036854775808, beyond the int64 range .* data row 2",
    ),
    (
        "target_crs unknown",
        lambda f: sampler(f, target_crs="EPSG:999999"),
        ConfigError,
        r"target_crs 'EPSG:999999' is not a CRS rasterio understands.*e.g. 'EPSG:3857'",
    ),
    (
        "target_resolution negative",
        lambda f: sampler(f, target_resolution=-10),
        ConfigError,
        r"target_resolution must be a positive number or \[x, y\] pair",
    ),
    (
        "target_resolution triple",
        lambda f: sampler(f, target_resolution=[1, 2, 3]),
        ConfigError,
        r"target_resolution must be",
    ),
    (
        "mask_fill_value negative",
        lambda f: sampler(f, mask_fill_value=-1),
        ConfigError,
        r"mask_fill_value must be >= 0",
    ),
    (
        "on_read_error unknown",
        lambda f: sampler(f, on_read_error="ignore"),
        ConfigError,
        r"on_read_error 'ignore' is not one of 'raise', 'skip'",
    ),
    (
        "unknown option",
        lambda f: sampler(f, colour_map=[]),
        TypeError,
        r"Unknown option 'colour_map' in PatchSampler. Did you mean 'color_map'",
    ),
    (
        "unknown config key",
        lambda f: split_config(
            {"image_mbtiles_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1, "n_clases": 2}
        ),
        OptionError,
        r"Unknown option 'n_clases' .*Did you mean 'n_classes'",
    ),
    (
        "allow-list in a config file",
        lambda f: split_config(
            {"image_mbtiles_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1, "allowed_targets": ["os"]}
        ),
        ConfigError,
        r"allowed_targets cannot be set in the configuration: a shared configuration file must not widen .*"
        r"CROSSGEO_ALLOWED_TRANSFORMS=mypkg.transforms .*or allowed_targets=\[...\] in code",
    ),
    (
        "read_threads negative",
        lambda f: split_config(
            {"image_mbtiles_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1, "read_threads": -2}
        ),
        ConfigError,
        r"read_threads must be >= 0, got -2",
    ),
    (
        "read_threads not a count",
        lambda f: split_config(
            {"image_mbtiles_path": "a", "mask_path": "b", "crops_path": "c", "patch_size": 1, "read_threads": "2"}
        ),
        OptionTypeError,
        r"read_threads must be an integer, got str",
    ),
    (
        "missing config key",
        lambda f: split_config({"mask_path": "b", "crops_path": "c", "patch_size": 1}),
        OptionError,
        r"missing the required option\(s\) image_mbtiles_path",
    ),
    # --- files
    (
        "image missing",
        lambda f: sampler(f, image_path=f.path("nope.tif")),
        ConfigError,
        r"image_path '.*nope.tif' does not exist. Check the path",
    ),
    (
        "image is a folder",
        lambda f: sampler(f, image_path=f.scene.folder),
        ReadError,
        r"image_path '.*' is a folder, not a raster file; give the path of one raster file in it \(it holds .*\.tif",
    ),
    (
        "mask missing",
        lambda f: sampler(f, mask_path=f.path("nope.vrt")),
        ConfigError,
        r"mask_path '.*nope.vrt' does not exist",
    ),
    (
        "crops missing",
        lambda f: sampler(f, crops_path=f.path("nope.csv")),
        ConfigError,
        r"crops_path '.*nope.csv' does not exist",
    ),
    (
        "image path type",
        lambda f: sampler(f, image_path=42),
        OptionTypeError,
        r"image_path must be a path \(str or os.PathLike\), got int",
    ),
    (
        "text file named .tif",
        lambda f: sampler(f, image_path=f.text_tif),
        ReadError,
        r"image_path '.*text.tif' cannot be opened as a raster: .*Check the path and that the file is a complete GeoTIFF",
    ),
    (
        "truncated GeoTIFF mask",
        lambda f: sampler(f, mask_path=f.truncated),
        ReadError,
        r"mask_path '.*truncated.tif' cannot be opened as a raster",
    ),
    (
        "VRT with a missing source",
        lambda f: sampler(f, mask_path=f.vrt_missing),
        RasterError,
        r"mask_path '.*missing.vrt' refers to file\(s\) that do not exist: .*gone.tif. Fix the paths in the VRT",
    ),
    (
        "mask does not overlap",
        lambda f: sampler(f, mask_path=f.far_mask),
        NoOverlapError,
        r"The mask .*far.tif does not overlap the image .*image.tif: in the image CRS the image bounds are \(.*\) and the mask bounds are \(.*\).*Check that both files carry the right CRS",
    ),
    (
        "mask without CRS",
        lambda f: sampler(f, mask_path=f.no_crs_mask),
        RasterError,
        r"nocrs.tif has no CRS, so the mask cannot be aligned with the image; give both rasters a CRS",
    ),
    # --- colour maps and mask bands
    (
        "multi-band mask without color_map",
        lambda f: sampler(f, mask_path=f.rgb_mask),
        RasterError,
        r"The mask .*rgb.tif has 3 bands but no color_map was given; a multi-band .* needs color_map",
    ),
    (
        "color_map on a single-band mask",
        lambda f: sampler(f, color_map=[[255, 0, 0, 1]]),
        RasterError,
        r"color_map is set but the mask .*mask4326.tif has 1 band\(s\).*Remove color_map",
    ),
    ("two-band mask", lambda f: sampler(f, mask_path=f.two_band), RasterError, r"two.tif has 2 bands but no color_map"),
    (
        "color_map entry too short",
        lambda f: sampler(f, mask_path=f.rgb_mask, color_map=[[255, 0, 0]]),
        ConfigError,
        r"color_map entry 0 is \[255, 0, 0\]; each entry must be \[R, G, B, class\]",
    ),
    (
        "color_map RGB out of range",
        lambda f: sampler(f, mask_path=f.rgb_mask, color_map=[[300, 0, 0, 1]]),
        ConfigError,
        r"color_map entry 0 is \[300, 0, 0, 1\]; R, G and B must be within 0-255",
    ),
    (
        "color_map colour twice",
        lambda f: sampler(f, mask_path=f.rgb_mask, color_map=[[255, 0, 0, 1], [255, 0, 0, 2]]),
        ConfigError,
        r"color_map maps colour \[255, 0, 0\] to class 1 \(entry 0\) and to class 2 \(entry 1\); keep one entry per colour",
    ),
    (
        "color_map not a list",
        lambda f: sampler(f, mask_path=f.rgb_mask, color_map="red"),
        ConfigError,
        r"color_map must be a non-empty list of \[R, G, B, class\] entries.*Example",
    ),
    (
        "color_map strings",
        lambda f: sampler(f, mask_path=f.rgb_mask, color_map=[["255", 0, 0, 1]]),
        ConfigError,
        r"color_map entry 0 .*must be integers",
    ),
    # --- window tables
    (
        "CSV with text",
        lambda f: sampler(f, crops_path=f.path("strings.csv")),
        WindowError,
        r"strings.csv: column 'row_off' \(row_off_key\) is 'abc', not a number in data row 2; .*Fix or remove that row",
    ),
    (
        "CSV with NaN",
        lambda f: sampler(f, crops_path=f.path("nan.csv")),
        WindowError,
        r"nan.csv: column 'row_off' \(row_off_key\) is empty/NaN in data row 2",
    ),
    (
        "CSV with fractions",
        lambda f: sampler(f, crops_path=f.path("floats.csv")),
        WindowError,
        r"floats.csv: column 'col_off' \(col_off_key\) is 2.5, not a whole number in data row 1",
    ),
    (
        "CSV missing columns",
        lambda f: sampler(f, crops_path=f.path("columns.csv")),
        WindowError,
        r"columns.csv: missing required columns \['row_off', 'col_off'\] \(found \['row', 'col'\]\). Name the columns with row_off_key / col_off_key",
    ),
    (
        "CSV keys wrong",
        lambda f: sampler(f, crops_path=f.path("y_x.csv"), row_off_key="y"),
        WindowError,
        r"missing required columns \['col_off'\]",
    ),
    (
        "windows entirely outside",
        lambda f: sampler(f, crops_path=f.path("outside.csv")),
        WindowError,
        r"outside.csv: 2 window\(s\) lie entirely outside the image \(512 rows x 512 cols, patch_size 64\): row 2 \(row_off=5000, col_off=5000\), row 3 \(row_off=-64, col_off=0\). Remove them or fix their offsets",
    ),
    # --- vector windows
    (
        "unknown layer",
        lambda f: sampler(f, crops_path=f.path("layers.gpkg"), crops_layer="b"),
        LayerNotFoundError,
        r"layers.gpkg: no layer 'b' \(crops_layer\); the layers are \['a'\]",
    ),
    (
        "vector without CRS",
        lambda f: sampler(f, crops_path=f.path("nocrs.shp")),
        WindowError,
        r"nocrs.shp has no CRS; .*Write a .prj",
    ),
    # --- rasters users really have (issue 16)
    (
        "image_dtype float32 on uint32",
        lambda f: sampler(f, image_path=f.uint32, image_dtype="float32"),
        ConfigError,
        r"image_dtype 'float32' would lose values of .*u32.tif \(its data is uint32; float32 holds integers exactly "
        r"only up to 2\*\*24.*use image_dtype: 'native'",
    ),
    (
        "image_dtype float32 on float64",
        lambda f: sampler(f, image_path=f.float64, image_dtype="float32"),
        ConfigError,
        r"f64.tif \(its data is float64; .*use image_dtype: 'native'",
    ),
    (
        "image_dtype uint16 on uint32",
        lambda f: sampler(f, image_path=f.uint32, image_dtype="uint16"),
        ConfigError,
        r"image_dtype 'uint16' would lose values of .*u32.tif .*uint16 cannot hold every uint32 value.*'native'",
    ),
    (
        "out_of_range unknown",
        lambda f: sampler(f, out_of_range="clip"),
        ConfigError,
        r"out_of_range 'clip' is not one of 'error', 'fill'",
    ),
    (
        "ignore_invalid_image string",
        lambda f: sampler(f, ignore_invalid_image="yes"),
        OptionTypeError,
        r"ignore_invalid_image must be true or false, got 'yes'",
    ),
    (
        "mask class >= n_classes (read)",
        lambda f: sampler(f, mask_path=f.class_400, n_classes=300)[0],
        ClassRangeError,
        r"c400.tif holds class value\(s\) 400 outside 0..299 \(n_classes 300\) in the window row_off=0, col_off=0 "
        r"\(patch_size 64, 4096 pixel\(s\)\). Raise n_classes, fix the mask, or set out_of_range: fill",
    ),
    # --- configuration files and limits (issue 21)
    (
        "config oc.env without --allow-env",
        lambda f: load_config(config_file(f, "env.yaml", "image_path: 'https://example.com/${oc.env:TOKEN}/a.tif'")),
        ConfigError,
        r"env.yaml: image_path is 'https://example.com/\$\{oc.env:TOKEN\}/a.tif', a resolver interpolation .* "
        r"only when you pass --allow-env",
    ),
    (
        "config billion laughs",
        lambda f: load_config(config_file(f, "laughs.yaml", LAUGHS)),
        ConfigError,
        r"laughs.yaml: YAML aliases \(\*name\) expand this configuration to more than 100,000 extra values",
    ),
    (
        "config duplicate key",
        lambda f: load_config(config_file(f, "dup.yaml", "image_path: a.tif\npatch_size: 64\npatch_size: 128\n")),
        ConfigError,
        r"dup.yaml line 3: the key 'patch_size' is given twice \(first on line 2\); .* Keep one of them",
    ),
    (
        "color_map string",
        lambda f: sampler(f, color_map="red"),
        ConfigError,
        r"color_map must be a non-empty list of \[R, G, B, class\] entries, got str: 'red'",
    ),
    (
        "patch_size far larger than the image",
        lambda f: sampler(f, patch_size=100_000),
        ConfigError,
        r"patch_size 100000 is larger than the image .*image.tif \(512 x 512 pixels\), .* one patch would take "
        r"111.8 GiB .* Use a smaller patch_size \(at most the image's 512 pixels\)",
    ),
    (
        "patch_size over 2 GiB",
        lambda f: sampler(f, image_path=f.huge_vrt, patch_size=15_000),
        ConfigError,
        r"patch_size 15000 on the image .*huge.vrt \(16000 x 16000 pixels, 3 band\(s\) of uint8\): one patch would "
        r"take 2.5 GiB .* Use a smaller patch_size \(at most 13377\)",
    ),
    # --- augmentation lists from shared configs
    (
        "_target_ os.system",
        lambda f: build_augmentation([{"_target_": "os.system", "command": "echo pwned"}]),
        ConfigError,
        r"augmentation_list entry 0 \(os.system\): _target_ 'os.system' is not allowed: crossgeo only instantiates "
        r"transform classes of albumentations. .*allowed_targets=\[...\] in code or set CROSSGEO_ALLOWED_TRANSFORMS",
    ),
    (
        "_target_ builtins.eval",
        lambda f: build_augmentation(
            [{"_target_": "albumentations.OneOf", "transforms": [{"_target_": "builtins.eval", "source": "1"}]}]
        ),
        ConfigError,
        r"_target_ 'builtins.eval' is not allowed",
    ),
    (
        "_target_ albumentations.os.system",
        lambda f: build_augmentation([{"_target_": "albumentations.os.system", "command": "echo pwned"}]),
        ConfigError,
        r"augmentation_list entry 0 \(albumentations.os.system\): _target_ 'albumentations.os.system' is not "
        r"allowed: albumentations.os is the module 'os'. A configuration may only name albumentations transform classes",
    ),
    (
        "_target_ a function",
        lambda f: build_augmentation([{"_target_": "albumentations.core.serialization.from_dict"}]),
        ConfigError,
        r"_target_ 'albumentations.core.serialization.from_dict' is not allowed: it is the callable "
        r"albumentations.core.serialization.from_dict, not an albumentations transform class",
    ),
    (
        "_target_ albumentations.Lambda",
        lambda f: build_augmentation([{"_target_": "albumentations.Lambda"}]),
        ConfigError,
        r"_target_ 'albumentations.Lambda' is not allowed: Lambda runs arbitrary callables",
    ),
    (
        "_target_ typo",
        lambda f: build_augmentation([{"_target_": "albumentations.HorizontalFlipp"}]),
        ConfigError,
        r"entry 0 .*'albumentations.HorizontalFlipp' cannot be imported; check the spelling",
    ),
    (
        "transform argument typo",
        lambda f: build_augmentation([{"_target_": "albumentations.HorizontalFlip", "prob": 0.5}]),
        ConfigError,
        r"entry 0 \(albumentations.HorizontalFlip\).*prob.*check the argument names",
    ),
    # --- outputs (issue 21)
    (
        "prediction over its own image",
        lambda f: predict_raster(f.scene.image, _scores, f.scene.image, patch_size=SIZE, overwrite=True),
        ConfigError,
        r"out_path '.*image.tif' is the image_path '.*image.tif', an input of this run: writing there would "
        r"replace it, so it is refused \(with or without overwrite\). Give out_path another file",
    ),
    (
        "prediction compress unknown",
        lambda f: predict_raster(f.scene.image, _scores, f.path("p.tif"), patch_size=SIZE, compress="lzw"),
        ConfigError,
        r"compress 'lzw' is not one of 'deflate', 'zstd'",
    ),
    # --- several image sources (image_path a list or a mapping)
    ("image sources none", lambda f: sampler(f, image_path={}), ConfigError, r"image_path lists no image source"),
    (
        "image source name twice",
        lambda f: sampler(f, image_path=[{"path": f.scene.image, "name": "a"}, {"path": f.uint16, "name": "a"}]),
        ConfigError,
        r"image_path: the source name 'a' is given twice; give every source its own name",
    ),
    (
        "image source unknown key",
        lambda f: sampler(f, image_path={"rgb": {"path": f.scene.image, "band": [1]}}),
        OptionError,
        r"source 'rgb' has unknown key\(s\) \['band'\]; a source takes path, bands",
    ),
    (
        "reference names no source",
        lambda f: sampler(f, image_path=[f.scene.image, f.uint16], reference="B99"),
        ConfigError,
        r"reference 'B99' names no source of image_path; the sources are \['image', 'u16'\]",
    ),
    (
        "image source band too high",
        lambda f: sampler(f, image_path={"rgb": {"path": f.scene.image, "bands": [4]}}),
        ConfigError,
        r"image_path source 'rgb' \(.*image.tif\): bands \[4\] asks for band 4 .*numbered 1..3",
    ),
    (
        "image source without CRS",
        lambda f: sampler(f, image_path=[f.scene.image, f.no_crs_mask]),
        RasterError,
        r"image_path source 'nocrs' .*nocrs.tif has no CRS.*give the file a CRS",
    ),
    (
        "image source outside the reference grid",
        lambda f: sampler(f, image_path=[f.scene.image, f.far_mask]),
        RasterError,
        r"image_path source 'far' .*far.tif does not overlap the reference grid",
    ),
    (
        "image sources lossy dtype",
        lambda f: sampler(f, image_path=[f.scene.image, f.uint16]),
        ConfigError,
        r"image_dtype 'uint8' would lose values of the sources image \(uint8\), u16 \(uint16\) .*'uint16' or 'native'",
    ),
    (
        "image sources with selected_bands",
        lambda f: sampler(f, image_path=[f.scene.image, f.uint16], selected_bands=[1]),
        ConfigError,
        r"selected_bands applies to one image; image_path lists several sources: give each source its bands",
    ),
    ("missing unknown", lambda f: sampler(f, missing="drop"), ConfigError, r"missing 'drop' is not one of 'error'"),
    (
        "image source missing from windows",
        lambda f: sampler(f, image_path=[f.scene.image, f.uint16], image_dtype="uint16"),
        RasterError,
        r"image source 'u16' \(.*u16.tif\) has no pixel in 1 of 2 window\(s\).*Set missing: fill",
    ),
    # --- several sources: their options, a prediction of them, time-series dates of them (issue 24)
    (
        "reference with one image path",
        lambda f: sampler(f, reference="B04"),
        ConfigError,
        r"reference 'B04' names a source, but image_path is one path; remove reference, or give image_path a list",
    ),
    (
        "image source without path",
        lambda f: sampler(f, image_path={"rgb": {"bands": [1]}}),
        ConfigError,
        r"image_path: source 'rgb' has no 'path'; give the raster file of that source",
    ),
    (
        "image source of a wrong type",
        lambda f: sampler(f, image_path={"rgb": 3}),
        OptionTypeError,
        r"image_path: each source is a path or a mapping with 'path' \(and optional bands, .*got int: 3",
    ),
    (
        "image source nodata not a number",
        lambda f: sampler(f, image_path={"rgb": {"path": f.scene.image, "nodata": "none"}}),
        OptionTypeError,
        r"image_path source 'rgb': nodata must be a number, got str: 'none'",
    ),
    (
        "image sources 64-bit integers and floats",
        lambda f: sampler(f, image_path=[f.float, _uint64(f)], image_dtype="native"),
        RasterError,
        r"image_path: no dtype holds every source's values \(f32 \(float32\), .*u64 \(uint64\)\): 64-bit integers do "
        r"not fit a float. Give those sources scale/offset",
    ),
    (
        "image source scale with an integer image_dtype",
        lambda f: sampler(f, image_path={"rgb": f.scene.image, "u16": {"path": f.uint16, "scale": 0.1}}),
        ConfigError,
        r"image_path: a source with scale/offset makes the image float32, but image_dtype is 'uint8'; use "
        r"image_dtype: float32",
    ),
    (
        "prediction sources with selected_bands",
        lambda f: predict_raster(
            [f.scene.image, f.uint16], _scores, f.path("p.tif"), patch_size=SIZE, selected_bands=[1]
        ),
        ConfigError,
        r"selected_bands applies to one image; image_path lists several sources: give each source its bands",
    ),
    (
        "prediction reference names no source",
        lambda f: predict_raster([f.scene.image, f.uint16], _scores, f.path("p.tif"), patch_size=SIZE, reference="x"),
        ConfigError,
        r"reference 'x' names no source of image_path; the sources are \['image', 'u16'\]",
    ),
    (
        "time series row without a time",
        lambda f: time_series(f, ("2021-01-10", "")),
        CatalogueError,
        r"scene 1 \(.*date1.tif\) has no 'time' value; a time series dates every row: add a 'time' column",
    ),
    (
        "time series reference no date of a group",
        lambda f: time_series(f, reference="2020-01-01"),
        CatalogueError,
        r"reference '2020-01-01' is no date of group 'a' .*give a date every group has, or leave reference unset",
    ),
    (
        "time series rows disagree on the mask",
        lambda f: time_series(f, masks=True),
        CatalogueError,
        r"group 'a' .*: scene 1 sets mask_path/crops_path .* a group has one mask and one set of windows",
    ),
    (
        "time series dates with other bands",
        lambda f: time_series(f, images={1: "class_400"}, image_dtype="native"),
        CatalogueError,
        r"the dates of a time series must have the same bands, but they read different band counts.*set "
        r"selected_bands to bands every date has",
    ),
    (
        "time series dates list other sources",
        lambda f: time_series(f, sources=True),
        CatalogueError,
        r"every date must list the same sources in the same order .* 2021-01-10 lists \['rgb', 'red'\] and "
        r"2021-02-14 lists \['rgb'\]; give every row of the group the same source names",
    ),
    (
        "time series sources with selected_bands",
        lambda f: time_series(f, sources=True, selected_bands=[1]),
        CatalogueError,
        r"selected_bands applies to one image per date; the dates of group 'a' .* list several sources",
    ),
    # --- windows on the image's blocks (issue 26)
    (
        "align patch_size misfits the blocks",
        lambda f: grid_windows(f.scene.image, 100, align="blocks"),
        ConfigError,
        r"grid_windows: align=\"blocks\" but patch_size 100 is smaller than the image's 256 x 256 blocks "
        r"\(.*image.tif\) and does not divide them.*Use patch_size 64 or 128 .*retile the image",
    ),
    (
        "align on a Grid",
        lambda f: random_windows(Grid(512, 512, f.scene.transform, f.scene.crs), 64, 4, seed=0, align="blocks"),
        ConfigError,
        r"random_windows: align=\"blocks\" needs the image path .* a crossgeo.Grid has no blocks",
    ),
    (
        "align unknown",
        lambda f: grid_windows(f.scene.image, 256, align="tiles"),
        OptionError,
        r"grid_windows: align must be None or 'blocks', got 'tiles'",
    ),
    # --- chip stores (issue 25)
    (
        "chips store exists",
        chips_twice,
        ConfigError,
        r"chips-twice already exists and is not empty. Pass overwrite=True to replace it, resume=True to finish",
    ),
    (
        "chips overwrite a folder that is not a store",
        chips_over_a_folder,
        ConfigError,
        r"my-folder is not a chip store \(no layout.json or manifest.json\); crossgeo only replaces its own",
    ),
    (
        "chips format version unknown",
        chips_of_a_newer_version,
        ConfigError,
        r"chips-v99 was written in chip-store format version 99; this crossgeo reads version 1",
    ),
    (
        "chips split unknown",
        chips_unknown_split,
        ConfigError,
        r"split='test' but the chip store .*chips-split holds the splits \['train', 'val'\]",
    ),
    (
        "chips shard damaged",
        chips_damaged,
        ReadError,
        r"shard 0 file .*mask/c/0/0/0 does not match its sha256 .*resume=True",
    ),
    (
        "chips engine ray without ray",
        chips_on_ray_without_ray,
        ImportError,
        r"crossgeo.ray needs Ray, which is not installed. In a clone of crossgeo install it with: pip install '.\[ray\]'",
    ),
    (
        "chips shard_size zero",
        lambda f: _chip_store(f, "chips-zero", format="webdataset", shard_size=0),
        ConfigError,
        r"shard_size must be an integer >= 1",
    ),
    (
        "chips_path other patch_size",
        chips_path_other_patch_size,
        ConfigError,
        r"patch_size is 128 but the chip store .*chips-config \(chips_path\) was written with patch_size 64",
    ),
    # --- time series (group_by)
    (
        "time not a date",
        lambda f: time_series(f, ("2021-01-10", "2021-13-45")),
        CatalogueError,
        r"scene 1 \(.*date1.tif\): the 'time' value '2021-13-45' is not a date .*write it as an ISO date",
    ),
    (
        "time series longer than time_steps",
        lambda f: time_series(f, time_steps=2),
        CatalogueError,
        r"group 'a' \(place; rows 0, 1, 2\) has 3 dates but time_steps is 2 and time_selection is 'all'; raise "
        r"time_steps to 3, or set time_selection: latest",
    ),
    (
        "time series date twice",
        lambda f: time_series(f, ("2021-01-10", "2021-01-10")),
        CatalogueError,
        r"group 'a' .* has two rows at time 2021-01-10.*remove the duplicate row",
    ),
    (
        "group_by column missing",
        lambda f: time_series(f, group_by="plac"),
        ConfigError,
        r"group_by='plac' but the catalogue has no 'plac' column .*Did you mean 'place'\?",
    ),
    (
        "time_selection unknown",
        lambda f: time_series(f, time_selection="newest"),
        ConfigError,
        r"time_selection must be one of 'all', 'latest', 'random', got 'newest'",
    ),
    (
        "time_steps without group_by",
        lambda f: time_series(f, group_by=None, time_steps=3),
        ConfigError,
        r"time_steps / time_selection apply to a time series: set group_by=",
    ),
    # --- a catalogue's reading order (order, block_scenes)
    (
        "order unknown",
        lambda f: scene_blocks(f, order="blocks"),
        ConfigError,
        r"order 'blocks' is not one of 'random', 'scene-blocks'",
    ),
    ("block_scenes zero", lambda f: scene_blocks(f, block_scenes=0), ConfigError, r"block_scenes must be >= 1, got 0"),
    (
        "scene-blocks with weights",
        lambda f: scene_blocks(f, order="scene-blocks", weights=True),
        ConfigError,
        r'order="scene-blocks" cannot be combined with weights.*use order="random" with weights, or drop weights',
    ),
    # --- STAC items and catalogue cells with several sources
    (
        "stac item lacks an asset",
        lambda f: _stac_scenes([_stac_item("s1", coords="a.tif"), _stac_item("s2", elev="b.tif")], ["coords"]),
        MissingAssetError,
        r"1 of 2 STAC item\(s\) lack a listed asset: item 's2' lacks asset\(s\) \['coords'\] \(it has \['elev'\]\)"
        r".*List only asset keys every item has",
    ),
    (
        "stac asset href unopenable",
        lambda f: SceneSampler(
            _stac_scenes([_stac_item("s1", elev=str(f.path("gone.tif")))], ["elev"], crops_path=f.windows),
            SIZE,
            mask_path=f.mask,
        ),
        CatalogueError,
        r"scene 0 \(id 's1'\), elev=.*gone.tif: image_path source 'elev' '.*gone.tif' does not exist",
    ),
    (
        "stac group_by property missing",
        lambda f: _stac_scenes([_stac_item("s1", coords="a.tif")], ["coords"], group_by="s2:mgrs_tile"),
        ConfigError,
        r"group_by 's2:mgrs_tile': item 's1' has no such property.*Name a property every item has",
    ),
    (
        "stac items of a wrong type",
        lambda f: _stac_scenes(42, ["coords"]),
        OptionError,
        r"items must be a pystac ItemCollection, a list of pystac Items or item dicts, a path/URL",
    ),
    (
        "catalogue sources cell not JSON",
        lambda f: read_catalogue(_text(f.path("cells.csv"), 'image_path\n"[""a.tif"", ]"\n')),
        CatalogueError,
        r"scene 0 \(line 2 of .*cells.csv\): image_path holds a list/mapping of sources as JSON that cannot be parsed",
    ),
]


def _stac_item(item_id: str, **assets: str) -> dict[str, Any]:
    """A STAC item dict with the given asset hrefs (nothing else is needed to list its assets)."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": None,
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "links": [],
        "assets": {key: {"href": href} for key, href in assets.items()},
    }


def _stac_scenes(items: Any, assets: list[str], **options: Any) -> Any:
    pytest.importorskip("pystac")  # the stac extra (installed in every tox env)
    return stac_scenes(items, assets, **options)


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("build", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(files: Files, build: Callable[[Files], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build(files)


def test_the_catalogue_is_large() -> None:
    assert len(CASES) >= 40


def test_low_coverage_is_a_warning_with_the_percentage(files: Files) -> None:
    with pytest.warns(
        UserWarning, match=r"The mask .*part.tif covers only 3\d\.\d% of the image .*uncovered pixels get class 0"
    ):
        sampler(files, mask_path=files.part_mask)


def test_duplicate_windows_are_allowed_and_logged(files: Files, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        assert len(sampler(files, crops_path=files.path("dupes.csv"))) == 3
    assert "duplicates 1" in caplog.text


def test_corrupt_mbtiles_tile_fails_the_read_naming_file_and_window(files: Files) -> None:
    broken = sampler(files, image_path=files.mbtiles, selected_bands=[1, 2, 3])
    with pytest.raises(
        ReadError,
        match=r"Reading the image .*image.mbtiles failed for the window row_off=0, col_off=0 \(patch_size 64\): .*(libpng|tile)",
    ):
        broken[0]
