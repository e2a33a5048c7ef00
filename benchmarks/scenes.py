"""The benchmark scenes, written once into a cache folder and reused.

One Web Mercator grid (zoom 17, whole tiles, so GDAL can write it as MBTiles) carries:

* ``image_deflate.tif`` - RGB uint8, 256 x 256 tiles, DEFLATE;
* ``image_jpeg.tif`` - the same pixels, JPEG (YCbCr) tiles;
* ``image.mbtiles`` - the same pixels as MBTiles (PNG tiles, read back as RGBA);
* ``mask.tif`` - single-band uint8 classes on the identical grid;
* ``mask_4326.tif`` - the same class field in EPSG:4326 at another resolution, covering both grids;
* ``mask_rgb.tif`` - the classes colour-coded as RGB on the identical grid;
* ``image_utm.tif`` / ``mask_utm.tif`` - the same image pixels and the class field on a UTM zone 32N
  grid of the same size over the same place (``UTM_RES`` m pixels): the peer tables' scene (issue #26
  measures on a UTM scene, where an EPSG:4326 mask does not separate into rows and columns);
* ``windows.parquet`` - random ``patch_size`` windows (fixed seed), ``row_off``/``col_off``.

The classes are a function of longitude/latitude (a checkerboard of small cells), so the
aligned and the EPSG:4326 mask describe the same ground truth. The image is smooth
structure plus noise, so DEFLATE/PNG/JPEG compress it roughly like real imagery.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

#: Bumped when anything about the generated files changes (forces regeneration).
SCENE_VERSION = 2
ZOOM = 17
#: Tile (col, row) at zoom 17 of the scene's top-left corner (near lon 10.0, lat 50.0).
TILE_COL, TILE_ROW = 69176, 44714
TILE = 256
WEB_MERCATOR_HALF = 20037508.342789244
EARTH_RADIUS = 6378137.0
N_CLASSES = 5
#: Class checkerboard cell in degrees (~70-110 m on the ground; ~60-90 image pixels).
CELL = 0.001
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200)]
#: ``color_map`` entries for ``mask_rgb.tif``.
COLOR_MAP = [[r, g, b, c] for c, (r, g, b) in enumerate(PALETTE)]
STRIP = 512
UTM_CRS = "EPSG:32632"
#: Pixel size of the UTM grid in metres (the Web Mercator grid's ~1.19 m are ~0.77 m on the ground at 50 deg N).
UTM_RES = 0.75

FILES = (
    "image_deflate.tif",
    "image_jpeg.tif",
    "image.mbtiles",
    "mask.tif",
    "mask_4326.tif",
    "mask_rgb.tif",
    "image_utm.tif",
    "mask_utm.tif",
    "windows.parquet",
)


def image_transform() -> Affine:
    res = 2 * WEB_MERCATOR_HALF / (TILE * 2**ZOOM)
    return Affine(
        res, 0, -WEB_MERCATOR_HALF + TILE_COL * TILE * res, 0, -res, WEB_MERCATOR_HALF - TILE_ROW * TILE * res
    )


def utm_transform(size: int) -> Affine:
    """The UTM grid of ``size`` pixels centred on the Web Mercator scene's centre, origin on whole metres."""
    from rasterio.warp import transform as warp_transform

    half = image_transform() * (size / 2, size / 2)
    (x,), (y,) = warp_transform("EPSG:3857", UTM_CRS, [half[0]], [half[1]])
    left, top = round(x - size * UTM_RES / 2), round(y + size * UTM_RES / 2)
    return Affine(UTM_RES, 0, left, 0, -UTM_RES, top)


def mercator_to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.degrees(x / EARTH_RADIUS)
    lat = np.degrees(np.arctan(np.sinh(y / EARTH_RADIUS)))
    return lon, lat


def classes_at(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Ground-truth class of a lon/lat point (uint8, 0..N_CLASSES-1)."""
    return ((np.floor(lon / CELL) + 2 * np.floor(lat / CELL)) % N_CLASSES).astype(np.uint8)


def _image_strip(row0: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.arange(row0, row0 + height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    base = 96 + 40 * np.sin(rows / 53.0) * np.cos(cols / 71.0) + 25 * np.sin((rows + cols) / 211.0)
    out = np.empty((3, height, width), dtype=np.uint8)
    for band, shift in enumerate((0.0, 17.0, -23.0)):
        noise = rng.normal(0.0, 5.0, size=(height, width)).astype(np.float32)
        out[band] = np.clip(base + shift + noise, 0, 255).astype(np.uint8)
    return out


def _classes_strip(transform: Affine, row0: int, height: int, width: int, crs: str) -> np.ndarray:
    rows, cols = np.mgrid[row0 : row0 + height, 0:width].astype(np.float64)
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    if crs == "EPSG:3857":
        xs, ys = mercator_to_lonlat(xs, ys)
    elif crs != "EPSG:4326":
        from rasterio.warp import transform as warp_transform

        lon, lat = warp_transform(crs, "EPSG:4326", xs.ravel(), ys.ravel())
        xs, ys = np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(ys.shape)
    return classes_at(xs, ys)


def _profile(width: int, height: int, count: int, transform: Affine, crs: str, **options: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
    }
    profile.update(options)
    return profile


def generate(folder: Path, size: int, n_windows: int, patch_size: int, seed: int = 0, log: Any = print) -> None:
    """Write every scene file into ``folder`` (existing files are overwritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    transform = image_transform()
    crs = "EPSG:3857"
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    deflate = folder / "image_deflate.tif"
    jpeg = folder / "image_jpeg.tif"
    utm = utm_transform(size)
    with (
        rasterio.open(deflate, "w", **_profile(size, size, 3, transform, crs, photometric="RGB")) as dst_d,
        rasterio.open(
            jpeg, "w", **_profile(size, size, 3, transform, crs, compress="jpeg", photometric="YCBCR", jpeg_quality=85)
        ) as dst_j,
        rasterio.open(folder / "mask.tif", "w", **_profile(size, size, 1, transform, crs)) as dst_m,
        rasterio.open(
            folder / "mask_rgb.tif", "w", **_profile(size, size, 3, transform, crs, photometric="RGB")
        ) as dst_c,
        rasterio.open(
            folder / "image_utm.tif", "w", **_profile(size, size, 3, utm, UTM_CRS, photometric="RGB")
        ) as dst_u,
        rasterio.open(folder / "mask_utm.tif", "w", **_profile(size, size, 1, utm, UTM_CRS)) as dst_mu,
    ):
        palette = np.asarray(PALETTE, dtype=np.uint8)
        for row0 in range(0, size, STRIP):
            height = min(STRIP, size - row0)
            window = Window(0, row0, size, height)
            strip = _image_strip(row0, height, size, rng)
            dst_d.write(strip, window=window)
            dst_j.write(strip, window=window)
            classes = _classes_strip(transform, row0, height, size, crs)
            dst_m.write(classes[None], window=window)
            dst_c.write(palette[classes].transpose(2, 0, 1), window=window)
            dst_u.write(strip, window=window)
            dst_mu.write(_classes_strip(utm, row0, height, size, UTM_CRS)[None], window=window)
    log(f"  image/mask GeoTIFFs written ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    mbtiles = folder / "image.mbtiles"
    if mbtiles.exists():
        mbtiles.unlink()
    rasterio.shutil.copy(str(deflate), str(mbtiles), driver="MBTiles", TILE_FORMAT="PNG")
    log(f"  MBTiles written ({time.perf_counter() - t0:.1f} s)")

    # The same classes in EPSG:4326, a little larger than both grids, 1.3x the image's pixel size in longitude.
    t0 = time.perf_counter()
    boxes = []
    for path in (deflate, folder / "image_utm.tif"):
        with rasterio.open(path) as src:
            boxes.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    res = 1.3 * math.degrees(transform.a / EARTH_RADIUS)
    margin = 8 * res
    left, bottom, right, top = left - margin, bottom - margin, right + margin, top + margin
    width, height = math.ceil((right - left) / res), math.ceil((top - bottom) / res)
    t4326 = Affine(res, 0, left, 0, -res, top)
    with rasterio.open(folder / "mask_4326.tif", "w", **_profile(width, height, 1, t4326, "EPSG:4326")) as dst:
        for row0 in range(0, height, STRIP):
            h = min(STRIP, height - row0)
            dst.write(_classes_strip(t4326, row0, h, width, "EPSG:4326")[None], window=Window(0, row0, width, h))
    log(f"  EPSG:4326 mask written ({width} x {height}, {time.perf_counter() - t0:.1f} s)")

    write_windows(folder / "windows.parquet", n_windows, size, patch_size, seed)


def write_windows(path: Path, n: int, size: int, patch_size: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 1])
    high = size - patch_size + 1
    table = pa.table(
        {
            "row_off": pa.array(rng.integers(0, high, n), pa.int64()),
            "col_off": pa.array(rng.integers(0, high, n), pa.int64()),
        }
    )
    pq.write_table(table, path)


class Scene:
    """Paths of one generated scene."""

    def __init__(self, folder: Path, size: int, patch_size: int, n_windows: int) -> None:
        self.folder = folder
        self.size = size
        self.patch_size = patch_size
        self.n_windows = n_windows

    def __getattr__(self, name: str) -> str:
        for file in FILES:
            if file.split(".")[0] == name:
                return str(self.folder / file)
        raise AttributeError(name)

    def describe(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "size": self.size,
            "patch_size": self.patch_size,
            "windows": self.n_windows,
            "bytes": {f: (self.folder / f).stat().st_size for f in FILES},
        }


def read_manifest(manifest: Path) -> dict[str, Any]:
    """A cached scene's manifest (what was generated, with which parameters); {} when absent or unreadable."""
    try:
        return dict(json.loads(manifest.read_text()))
    except (OSError, ValueError):
        return {}


def ensure_scene(cache: Path, size: int, n_windows: int, patch_size: int, seed: int = 0, log: Any = print) -> Scene:
    """The scene for these parameters, generated into ``cache`` unless it is already there."""
    folder = cache / f"scene-{size}-v{SCENE_VERSION}"
    manifest = folder / "manifest.json"
    want = {"version": SCENE_VERSION, "size": size, "seed": seed}
    have = read_manifest(manifest)
    complete = all((folder / f).exists() for f in FILES)
    if have.get("scene") != want or not complete:
        log(f"Generating the {size} x {size} scene in {folder} (once) ...")
        if folder.exists():
            shutil.rmtree(folder)
        generate(folder, size, n_windows, patch_size, seed, log=log)
        have = {"scene": want, "windows": [n_windows, patch_size]}
        manifest.write_text(json.dumps(have))
    elif have.get("windows") != [n_windows, patch_size]:
        write_windows(folder / "windows.parquet", n_windows, size, patch_size, seed)
        have["windows"] = [n_windows, patch_size]
        manifest.write_text(json.dumps(have))
    return Scene(folder, size, patch_size, n_windows)
