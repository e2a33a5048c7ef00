"""A Sentinel-2-like scene of 12 band files (issue #24's targets): crossgeo against a VRT stack and TorchGeo.

``python -m benchmarks.s2_bench [--size 5490] [--windows 1000] [--rounds 3] [--json PATH] [--peer-python PY]``

The scene (written once into the suite's scene cache, `benchmarks.run.DEFAULT_CACHE`):

* 12 uint16 band files named as Sentinel-2 L1C names them (``T32UNU_<date>_B02.tif``), each a
  tiled (``--blocksize``, 512 by default) DEFLATE GeoTIFF in UTM zone 32N: B02, B03, B04, B08 at
  10 m (``--size``\\ ² pixels, 5,490² = one tile), B05, B06, B07, B8A, B11, B12 at 20 m, B01, B09
  at 60 m; smooth fields plus noise, so DEFLATE compresses them roughly like real bands;
* ``stack.vrt``: the 12 bands on the 10 m grid, written by hand (no ``gdalbuildvrt``): each
  band a source rectangle of its file stretched onto the whole 10 m grid, GDAL resampling it
  with ``--resampling`` (what users build today instead of reading band files);
* ``mask_4326.tif``: classes in EPSG:4326 (a checkerboard in longitude/latitude);
* ``geo_4326.tif``: a source in EPSG:4326 encoding its own pixel (row, col), for the check below;
* ``windows.parquet``: ``--windows`` random windows of 256 on the 10 m grid (fixed seed).

Rows (each measurement in a fresh process, the three readers alternating round by round, median
of ``--rounds``; torch items: float32 image, int64 mask):

``crossgeo_bands``
    ``PatchDataset(PatchSampler({"B02": path, ...}, mask_4326, windows, 256))``: the 12 band
    files as a mapping, the 20 m and 60 m bands brought onto the 10 m grid with ``--resampling``;
``crossgeo_vrt``
    the same with ``image_path="stack.vrt"`` (one source, already on the 10 m grid);
``torchgeo``
    TorchGeo's ``Sentinel2`` (``separate_files=True``, ``res=10``, the same band order and
    resampling) intersected with a ``RasterDataset`` of the mask, queried with each window's bounds.

Cases: ``cold`` - a fresh process (empty GDAL block cache, ``--cachemax`` MiB) reads every
window once; ``warm`` - a fresh process with a ``--warm-cachemax`` MiB cache reads the first
``--warm-windows`` windows twice and the second pass is timed. Before timing, a process per
peer checks that it returns crossgeo's pixels on the first windows.

Correctness (in this process, on the benchmark windows; ``--check-windows``):

* ``other_crs``: ``geo_4326.tif`` stacked with nearest resampling, against the exact per-pixel
  answer (each reference pixel centre moved into EPSG:4326 with pyproj, then the source pixel
  holding it): the share of pixels where both agree (target >= 99.9 %);
* ``resolution``: B05 (20 m) and B01 (60 m), nearest and bilinear, against
  ``rasterio.warp.reproject`` of the whole band onto the 10 m grid, on pixels at least
  ``INTERIOR`` reference pixels inside the band's edge: nearest must be equal, bilinear within 1 DN.

The suite (``python -m benchmarks``) runs this module as its ``s2`` section and judges the
rows in `benchmarks.targets`; run alone it prints its own table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.scenes import read_manifest

SCENE_VERSION = 1
CRS = "EPSG:32632"
TILE_NAME, DATE = "32UNU", "20210615T103021"
ORIGIN = (600000.0, 5600040.0)
#: Band -> pixel size in metres, in the stacking order (10 m, then 20 m, then 60 m).
BANDS: dict[str, int] = {
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B08": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B8A": 20,
    "B11": 20,
    "B12": 20,
    "B01": 60,
    "B09": 60,
}
N_CLASSES = 5
CLASS_CELL = 0.002
"""Class checkerboard cell of the mask, degrees (~140 x 220 m)."""
MASK_RES_FACTOR = 1.3
"""The EPSG:4326 rasters' pixel is this many 10 m pixels wide (in longitude)."""
INTERIOR = 12
"""Reference pixels next to a band's edge left out of the reproject comparison (two 60 m pixels)."""
LIBRARIES = ("crossgeo_bands", "crossgeo_vrt", "torchgeo", "raw_bands")
"""The readers; ``raw_bands`` is the decode bound (plain reads of each band at its own resolution, no mask)."""
CASES = ("cold", "warm")
AGREEMENT_WINDOWS = 8
STRIP = 512


def band_file(folder: Path, band: str) -> Path:
    """The band's file, named as a Sentinel-2 L1C band (what TorchGeo's ``Sentinel2`` finds)."""
    return folder / f"T{TILE_NAME}_{DATE}_{band}.tif"


# ---------------------------------------------------------------------- the scene


def _band_strip(band_no: int, res: int, row0: int, height: int, width: int, rng: Any) -> Any:
    """uint16 reflectance-like values: smooth ground structure (in metres, so bands agree) plus noise."""
    import numpy as np

    y = (row0 + np.arange(height, dtype=np.float32)[:, None] + 0.5) * res
    x = (np.arange(width, dtype=np.float32)[None, :] + 0.5) * res
    base = 1500 + 400 * band_no + 600 * np.sin(y / 530.0) * np.cos(x / 710.0) + 300 * np.sin((x + y) / 2110.0)
    noise = rng.normal(0.0, 60.0, size=(height, width)).astype(np.float32)
    return np.clip(base + noise, 0, 10000).astype(np.uint16)


def _profile(
    width: int, height: int, count: int, transform: Any, crs: str, dtype: str, blocksize: int
) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
    }


def _lonlat_grid(size: int) -> tuple[Any, int, int]:
    """A transform, width and height in EPSG:4326 covering the 10 m scene with a margin."""
    from affine import Affine
    from rasterio.warp import transform_bounds

    left, top = ORIGIN
    right, bottom = left + 10 * size, top - 10 * size
    lon0, lat0, lon1, lat1 = transform_bounds(CRS, "EPSG:4326", left, bottom, right, top)
    res = MASK_RES_FACTOR * 10 / (111320.0 * math.cos(math.radians((lat0 + lat1) / 2)))
    margin = 8 * res
    lon0, lat0, lon1, lat1 = lon0 - margin, lat0 - margin, lon1 + margin, lat1 + margin
    width, height = math.ceil((lon1 - lon0) / res), math.ceil((lat1 - lat0) / res)
    return Affine(res, 0, lon0, 0, -res, lat1), width, height


def write_vrt_stack(path: Path, folder: Path, size: int, resampling: str) -> None:
    """The 12 bands on the 10 m grid as one VRT, written by hand: each band's whole file stretched onto the grid."""
    from affine import Affine
    from rasterio.crs import CRS as RioCRS

    bands = []
    for k, (band, res) in enumerate(BANDS.items(), start=1):
        side = size * 10 // res
        bands.append(
            f'  <VRTRasterBand dataType="UInt16" band="{k}">\n'
            f"    <Description>{band}</Description>\n"
            f'    <SimpleSource resampling="{resampling}">\n'
            f'      <SourceFilename relativeToVRT="1">{band_file(folder, band).name}</SourceFilename>\n'
            "      <SourceBand>1</SourceBand>\n"
            f'      <SrcRect xOff="0" yOff="0" xSize="{side}" ySize="{side}"/>\n'
            f'      <DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>\n'
            "    </SimpleSource>\n"
            "  </VRTRasterBand>\n"
        )
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    srs = RioCRS.from_user_input(CRS).to_wkt().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">\n'
        f"  <SRS>{srs}</SRS>\n"
        f"  <GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>\n"
        f"{''.join(bands)}</VRTDataset>\n"
    )


def generate(folder: Path, size: int, blocksize: int, log: Any = harness.log) -> None:
    """Write the band files, the EPSG:4326 mask and the EPSG:4326 coordinate source into ``folder``."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from crossgeo import testing as T

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for band_no, (band, res) in enumerate(BANDS.items()):
        side = size * 10 // res
        transform = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
        profile = _profile(side, side, 1, transform, CRS, "uint16", blocksize if side >= blocksize else 256)
        with rasterio.open(band_file(folder, band), "w", **profile) as dst:
            for row0 in range(0, side, STRIP):
                height = min(STRIP, side - row0)
                dst.write(
                    _band_strip(band_no, res, row0, height, side, rng)[None], window=Window(0, row0, side, height)
                )
    log(f"  12 band files written ({time.perf_counter() - started:.1f} s)")

    started = time.perf_counter()
    transform, width, height = _lonlat_grid(size)
    with (
        rasterio.open(
            folder / "mask_4326.tif", "w", **_profile(width, height, 1, transform, "EPSG:4326", "uint8", 256)
        ) as mask,
        rasterio.open(
            folder / "geo_4326.tif", "w", **_profile(width, height, 2, transform, "EPSG:4326", "uint16", 256)
        ) as geo,
    ):
        for row0 in range(0, height, STRIP):
            h = min(STRIP, height - row0)
            rows, cols = np.mgrid[row0 : row0 + h, 0:width]
            lon, lat = transform @ (cols + 0.5, rows + 0.5)
            window = Window(0, row0, width, h)
            mask.write(T.lonlat_classes(lon, lat, CLASS_CELL, N_CLASSES).astype(np.uint8)[None], window=window)
            geo.write(np.stack([rows, cols]).astype(np.uint16), window=window)
    log(f"  EPSG:4326 mask and coordinate source written ({width} x {height}, {time.perf_counter() - started:.1f} s)")


def write_windows(path: Path, n: int, size: int, patch_size: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng([24, 1])
    high = size - patch_size + 1
    rows, cols = rng.integers(0, high, n), rng.integers(0, high, n)
    pq.write_table(pa.table({"row_off": pa.array(rows, pa.int64()), "col_off": pa.array(cols, pa.int64())}), path)


def ensure_scene(cache: Path, size: int, blocksize: int, windows: int, patch_size: int, resampling: str) -> Path:
    """The scene folder for these parameters, written into ``cache`` unless it is already there."""
    import shutil

    folder = cache / f"s2-{size}-b{blocksize}-v{SCENE_VERSION}"
    manifest = folder / "manifest.json"
    want = {"version": SCENE_VERSION, "size": size, "blocksize": blocksize}
    have = read_manifest(manifest)
    files = [band_file(folder, b) for b in BANDS] + [folder / "mask_4326.tif", folder / "geo_4326.tif"]
    if have.get("scene") != want or not all(f.exists() for f in files):
        harness.log(f"Generating the Sentinel-2-like {size}^2 scene in {folder} (once) ...")
        if folder.exists():
            shutil.rmtree(folder)
        generate(folder, size, blocksize)
        have = {"scene": want}
    if have.get("windows") != [windows, patch_size] or not (folder / "windows.parquet").exists():
        write_windows(folder / "windows.parquet", windows, size, patch_size)
        have["windows"] = [windows, patch_size]
    if have.get("vrt") != resampling or not (folder / "stack.vrt").exists():
        write_vrt_stack(folder / "stack.vrt", folder, size, resampling)
        have["vrt"] = resampling
    manifest.write_text(json.dumps(have))
    return folder


# ---------------------------------------------------------------------- readers (children)


def _sources(folder: Path, resampling: str) -> dict[str, Any]:
    return {band: {"path": str(band_file(folder, band)), "resampling": resampling} for band in BANDS}


def _sampler(kind: str, folder: Path, windows: str, patch_size: int, resampling: str) -> Any:
    from crossgeo import PatchSampler

    image: Any = _sources(folder, resampling) if kind == "crossgeo_bands" else str(folder / "stack.vrt")
    return PatchSampler(
        image,
        str(folder / "mask_4326.tif"),
        windows,
        patch_size,
        image_dtype="uint16",
        image_resampling=resampling,
        n_classes=N_CLASSES,
    )


def _window_slices(patch_size: int, rows: Any, cols: Any) -> list[tuple[slice, slice]]:
    """TorchGeo queries (x and y slices, step = 10 m) of the pixel windows on the 10 m grid."""
    out = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        xmin, ymax = ORIGIN[0] + 10 * c, ORIGIN[1] - 10 * r
        out.append((slice(xmin, xmin + 10 * patch_size, 10), slice(ymax - 10 * patch_size, ymax, 10)))
    return out


def _torchgeo(folder: Path, resampling: str) -> Any:
    from rasterio.enums import Resampling
    from torchgeo.datasets import IntersectionDataset, RasterDataset, Sentinel2

    method = Resampling[resampling]

    class Bands(Sentinel2):
        @property
        def resampling(self) -> Resampling:
            return method

    class Mask(RasterDataset):
        is_image = False

    image = Bands(paths=str(folder), res=10, bands=list(BANDS))
    return IntersectionDataset(image, Mask(paths=[str(folder / "mask_4326.tif")]))


def _raw_bands(folder: Path, windows_file: str, patch_size: int) -> Any:
    """The decode bound: each band's pixels under each window read plainly at the band's own resolution.

    No resampling, no mask, no conversion: what any reader of these files must at least decode.
    """
    import rasterio
    from rasterio.windows import Window

    rows, cols = harness.window_offsets(windows_file)
    handles = [(rasterio.open(band_file(folder, band)), res // 10) for band, res in BANDS.items()]

    def read(r: int, c: int) -> list[Any]:
        return [
            src.read(
                1, window=Window(c // k, r // k, -(-(c + patch_size) // k) - c // k, -(-(r + patch_size) // k) - r // k)
            )
            for src, k in handles
        ]

    return lambda: (read(r, c) for r, c in zip(rows.tolist(), cols.tolist()))


def _items(library: str, args: argparse.Namespace) -> Any:
    """A function returning an iterator over ``library``'s items of the windows file."""
    folder = Path(args.scene)
    if library == "raw_bands":
        return _raw_bands(folder, args.windows_file, args.patch_size)
    if library == "torchgeo":
        rows, cols = harness.window_offsets(args.windows_file)
        queries = _window_slices(args.patch_size, rows, cols)
        dataset = _torchgeo(folder, args.resampling)
        return lambda: (dataset[q] for q in queries)
    sampler = _sampler(library, folder, args.windows_file, args.patch_size, args.resampling)
    try:
        from crossgeo.torch import PatchDataset
    except ImportError:
        dataset: Any = sampler
    else:
        dataset = PatchDataset(sampler)
    return lambda: (dataset[i] for i in range(len(dataset)))


def measure(library: str, case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One (library, case) in this fresh process (``args.cachemax`` already applied).

    Records wall-clock and CPU patches/s (CPU time of every thread of this process: steadier on
    a shared machine, blind to waiting for the disk).
    """
    started = time.perf_counter()
    try:
        import torch
    except ImportError:  # crossgeo's rows without torch: the sampler's patches (uint16 image, int64 mask)
        torch = None
    if torch is not None:
        torch.set_num_threads(1)
    items = _items(library, args)
    out: dict[str, Any] = {"setup_s": time.perf_counter() - started, "torch": torch is not None}
    for k in range(2 if case == "warm" else 1):
        start, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _item in items())
        elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        if k == 0 and case == "warm":
            out["first_pass_patches_per_s"] = count / elapsed
    out.update({"patches_per_s": count / elapsed, "cpu_patches_per_s": count / cpu_s, "seconds": elapsed})
    out["patches"] = count
    out["peak_rss_mb"] = harness.peak_rss_mb()
    from benchmarks.gdal import block_cache_used_bytes

    out["gdal_cache_used_mb"] = block_cache_used_bytes() / 2**20
    return out


def agreement(library: str, args: argparse.Namespace) -> dict[str, Any]:
    """``library``'s first windows against crossgeo reading the band files: images identical, masks agreeing."""
    import numpy as np

    folder = Path(args.scene)
    ours = _sampler("crossgeo_bands", folder, args.windows_file, args.patch_size, args.resampling)
    n = min(AGREEMENT_WINDOWS, len(ours))
    if library == "torchgeo":
        rows, cols = harness.window_offsets(args.windows_file)
        dataset = _torchgeo(folder, args.resampling)
        samples = [dataset[q] for q in _window_slices(args.patch_size, rows, cols)[:n]]
        theirs = [(s["image"].numpy(), s["mask"].numpy().squeeze()) for s in samples]
    else:
        other = _sampler(library, folder, args.windows_file, args.patch_size, args.resampling)
        theirs = [(p.image, p.mask) for p in (other[i] for i in range(n))]
    same, diff, agree = 0, 0.0, []
    for i, (image, labels) in enumerate(theirs):
        patch = ours[i]
        if image.shape == patch.image.shape:
            delta = np.abs(image.astype(np.float64) - patch.image.astype(np.float64))
            same += int(delta.max() == 0)
            diff = max(diff, float(delta.max()))
        agree.append(float((labels == patch.mask).mean()) if labels.shape == patch.mask.shape else 0.0)
    return {
        "windows_checked": n,
        "images_identical": same,
        "image_max_abs_diff": diff,
        "mask_agreement_mean": float(np.mean(agree)),
    }


# ---------------------------------------------------------------------- correctness (in the parent)


def check_other_crs(folder: Path, windows: str, patch_size: int, n: int) -> dict[str, Any]:
    """``geo_4326.tif`` stacked (nearest) against the exact per-pixel answer from pyproj."""
    import numpy as np
    import rasterio
    from pyproj import Transformer

    from crossgeo import PatchSampler

    with rasterio.open(folder / "geo_4326.tif") as src:
        geo_transform = src.transform
    sampler = PatchSampler(
        {"B02": str(band_file(folder, "B02")), "geo": {"path": str(folder / "geo_4326.tif"), "resampling": "nearest"}},
        str(folder / "mask_4326.tif"),
        windows,
        patch_size,
        image_dtype="uint16",
        n_classes=N_CLASSES,
    )
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    grid = sampler._plan.grid
    agree = total = 0
    started = time.perf_counter()
    n = min(n, len(sampler))
    for i in range(n):
        patch = sampler[i]
        r, c = patch.row_off, patch.col_off
        pr, pc = np.mgrid[r : r + patch_size, c : c + patch_size]
        x, y = grid.transform @ (pc + 0.5, pr + 0.5)
        lon, lat = to_lonlat.transform(x, y)
        scol, srow = ~geo_transform @ (np.asarray(lon), np.asarray(lat))
        hit = (patch.image[1] == np.floor(srow)) & (patch.image[2] == np.floor(scol))
        agree += int(np.count_nonzero(hit))
        total += hit.size
    view = sampler._plan.image[1].view
    sampler.close()
    share = agree / total if total else 0.0
    return {
        "windows": n,
        "pixels": total,
        "agreement": share,
        "view": view,
        "met": share >= 0.999,
        "seconds": time.perf_counter() - started,
    }


def check_resolution(folder: Path, windows: str, patch_size: int, n: int) -> dict[str, Any]:
    """B05 (20 m) and B01 (60 m) stacked, nearest and bilinear, against ``reproject`` of each whole band."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    from crossgeo import PatchSampler

    started = time.perf_counter()
    out: dict[str, Any] = {}
    names = ("B02", "B05", "B01")
    for resampling in ("nearest", "bilinear"):
        sampler = PatchSampler(
            {name: {"path": str(band_file(folder, name)), "resampling": resampling} for name in names},
            str(folder / "mask_4326.tif"),
            windows,
            patch_size,
            image_dtype="uint16",
            n_classes=N_CLASSES,
        )
        grid = sampler._plan.grid
        oracles = []
        for name in names[1:]:
            with rasterio.open(band_file(folder, name)) as src:
                full = np.zeros((grid.height, grid.width), np.uint16)
                reproject(
                    rasterio.band(src, 1),
                    full,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    resampling=Resampling[resampling],
                )
            oracles.append(full)
        count = min(n, len(sampler))
        equal, pixels, worst = 0, 0, 0
        for i in range(count):
            patch = sampler[i]
            r, c = patch.row_off, patch.col_off
            r0, c0 = max(r, INTERIOR), max(c, INTERIOR)
            r1, c1 = min(r + patch_size, grid.height - INTERIOR), min(c + patch_size, grid.width - INTERIOR)
            if r0 >= r1 or c0 >= c1:
                continue
            for channel, full in enumerate(oracles, start=1):
                ours = patch.image[channel, r0 - r : r1 - r, c0 - c : c1 - c].astype(np.int64)
                delta = np.abs(ours - full[r0:r1, c0:c1].astype(np.int64))
                equal += int(np.count_nonzero(delta == 0))
                pixels += delta.size
                worst = max(worst, int(delta.max()))
        views = [p.view for p in sampler._plan.image]
        sampler.close()
        allowed = 0 if resampling == "nearest" else 1
        out[resampling] = {
            "windows": count,
            "pixels": pixels,
            "equal_share": equal / pixels if pixels else 0.0,
            "max_abs_diff": worst,
            "views": views,
            "met": pixels > 0 and worst <= allowed,
        }
    out["seconds"] = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------- orchestration (parent)


def _child(args: argparse.Namespace, python: str, extra: list[str], cachemax: int, windows_file: str) -> dict[str, Any]:
    command = [
        *(python, "-m", "benchmarks.s2_bench", "--scene", args.scene_folder, "--patch-size", str(args.patch_size)),
        *("--resampling", args.resampling, "--cachemax", str(cachemax), "--windows-file", windows_file, *extra),
    ]
    return harness.run_json(command, 3600)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(run[key] for run in runs)
    out["rounds"] = runs
    return out


def _order(round_: int) -> list[str]:
    """The readers' order in round ``round_``: rotated by one each round, reversed every other."""
    names = list(LIBRARIES)
    shift = round_ % len(names)
    rotated = names[shift:] + names[:shift]
    return rotated if round_ % 2 == 0 else rotated[::-1]


def _has_torchgeo(python: str) -> bool:
    import subprocess

    probe = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('torchgeo') else 1)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write (once) the scene, then check correctness and measure every (reader, case)."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    folder = ensure_scene(args.cache, args.size, args.blocksize, args.windows, args.patch_size, args.resampling)
    args.scene_folder = str(folder)
    python = args.peer_python or sys.executable
    libraries = [lib for lib in LIBRARIES if lib != "torchgeo" or _has_torchgeo(python)]
    out: dict[str, Any] = {
        "scene": {
            "folder": str(folder),
            "size": args.size,
            "blocksize": args.blocksize,
            "bands": {band: f"{res} m" for band, res in BANDS.items()},
            "crs": CRS,
            "mask_crs": "EPSG:4326",
            "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".tif"),
        },
        "windows": args.windows,
        "warm_windows": min(args.warm_windows, args.windows),
        "patch_size": args.patch_size,
        "resampling": args.resampling,
        "rounds": args.rounds,
        "gdal_cachemax_mb": args.cachemax,
        "warm_gdal_cachemax_mb": args.warm_cachemax,
        "python": python,
        "statistic": "median of the rounds; the readers' order changes every round; every case in a fresh process",
        "missing": {} if "torchgeo" in libraries else {"torchgeo": f"torchgeo is not installed in {python}"},
        "agreement": {},
        "throughput": {},
    }
    if not args.skip_checks:
        from benchmarks.gdal import limit_block_cache

        limit_block_cache(args.cachemax)
        harness.log(f"s2: correctness on {min(args.check_windows, args.windows)} windows")
        windows = str(folder / "windows.parquet")
        out["correctness"] = {
            "other_crs": check_other_crs(folder, windows, args.patch_size, args.check_windows),
            "resolution": check_resolution(folder, windows, args.patch_size, args.check_windows),
        }
        harness.log(f"  {json.dumps(out['correctness'])}")
    table = pq.read_table(folder / "windows.parquet")
    with tempfile.TemporaryDirectory(prefix="crossgeo-s2-") as tmp:
        files = {"cold": str(Path(tmp) / "windows.parquet"), "warm": str(Path(tmp) / "windows-warm.parquet")}
        pq.write_table(table.slice(0, args.windows), files["cold"])
        pq.write_table(table.slice(0, out["warm_windows"]), files["warm"])
        for lib in [name for name in libraries if name in ("crossgeo_vrt", "torchgeo")]:
            result = _child(args, python, ["--agree", lib], args.cachemax, files["cold"])
            out["agreement"][lib] = result
            harness.log(f"s2: {lib} against crossgeo_bands on the first windows: {result}")
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.rounds):
            for case in CASES:
                for lib in [name for name in _order(round_) if name in libraries]:
                    cachemax = args.warm_cachemax if case == "warm" else args.cachemax
                    result = _child(args, python, ["--measure", lib, case], cachemax, files[case])
                    runs.setdefault(f"{lib}_{case}", []).append(result)
                    harness.log(
                        f"  s2 round {round_ + 1}/{args.rounds} {case:4s} {lib:15s} {result['patches_per_s']:7.1f} "
                        f"patches/s ({time.perf_counter() - started:.0f} s)"
                    )
    out["throughput"] = {key: _medians(values) for key, values in runs.items()}
    out["seconds"] = time.perf_counter() - started
    return out


ROWS = [
    ("crossgeo_bands", "crossgeo, 12 band files as a mapping"),
    ("crossgeo_vrt", "crossgeo, hand-built VRT stack at 10 m"),
    ("torchgeo", "TorchGeo Sentinel2 (separate_files)"),
    ("raw_bands", "decode bound: plain reads of the 12 bands"),
]


def format_table(result: dict[str, Any]) -> str:
    """The rows (patches/s, cold and warm), the ratios and the correctness checks, as text."""
    t = result["throughput"]
    scene = result["scene"]
    lines = [
        f"Sentinel-2-like scene: 12 band files (4 x 10 m, 6 x 20 m, 2 x 60 m), {scene['size']}^2 at 10 m, "
        f"{scene['blocksize']} blocks, mask in EPSG:4326; {result['windows']} windows of {result['patch_size']} "
        f"(warm: {result['warm_windows']}), {result['resampling']}; median of {result['rounds']} rounds; "
        f"GDAL_CACHEMAX {result['gdal_cachemax_mb']} MiB (warm {result['warm_gdal_cachemax_mb']} MiB)",
        f"{'patches/s (CPU: per CPU second of the process)':46s} {'cold':>9s} {'warm':>9s} {'cold CPU':>9s} "
        f"{'warm CPU':>9s}",
    ]

    def pps(name: str, case: str, field: str = "patches_per_s") -> float | None:
        node = t.get(f"{name}_{case}")
        return None if node is None or node.get(field) is None else float(node[field])

    def fmt(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    cpu = "cpu_patches_per_s"
    for name, label in ROWS:
        values = [pps(name, "cold"), pps(name, "warm"), pps(name, "cold", cpu), pps(name, "warm", cpu)]
        lines.append(f"{label:46s} " + " ".join(f"{fmt(v):>9s}" for v in values))
    for other, label, target in (
        ("crossgeo_vrt", "VRT stack", 1.0),
        ("torchgeo", "TorchGeo", 3.0),
        ("raw_bands", "decode bound", 0.0),
    ):
        ratios = []
        for field in ("patches_per_s", cpu):
            for case in CASES:
                ours, theirs = pps("crossgeo_bands", case, field), pps(other, case, field)
                ratios.append(None if ours is None or not theirs else ours / theirs)
        goal = f"(>= {target:g}x)" if target else "(report)"
        lines.append(
            f"{'crossgeo band files / ' + label + ' ' + goal:46s} " + " ".join(f"{fmt(v, 2):>9s}" for v in ratios)
        )
    for lib, a in result.get("agreement", {}).items():
        lines.append(
            f"same pixels as crossgeo_bands, {lib}: images identical {a['images_identical']}/{a['windows_checked']} "
            f"(max |diff| {a['image_max_abs_diff']:g}), mask agreement {a['mask_agreement_mean']:.4f}"
        )
    checks = result.get("correctness")
    if checks:
        o = checks["other_crs"]
        lines.append(
            f"EPSG:4326 source, nearest, vs exact per-pixel answer: {o['agreement']:.5f} of {o['pixels']:,} pixels "
            f"({o['view']} view; >= 0.999: {'met' if o['met'] else 'MISSED'})"
        )
        for method, limit in (("nearest", "equal"), ("bilinear", "within 1 DN")):
            r = checks["resolution"][method]
            lines.append(
                f"20 m / 60 m bands, {method}, vs whole-band reproject (interior): {r['equal_share']:.5f} equal, "
                f"max |diff| {r['max_abs_diff']} ({limit}: {'met' if r['met'] else 'MISSED'})"
            )
    for lib, why in result.get("missing", {}).items():
        lines.append(f"skipped {lib}: {why}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    from benchmarks.run import DEFAULT_CACHE

    p = argparse.ArgumentParser(prog="python -m benchmarks.s2_bench", description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"scene cache folder (default {DEFAULT_CACHE})")
    p.add_argument("--size", type=int, default=5490, help="side of the 10 m grid in pixels (default 5490: one tile)")
    p.add_argument("--blocksize", type=int, default=512, help="GeoTIFF tile side of the band files (default 512)")
    p.add_argument("--windows", type=int, default=1000, help="windows of 256 read per cold case (default 1000)")
    p.add_argument("--warm-windows", type=int, default=200, help="windows read twice in the warm case (default 200)")
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="rounds per case, the readers' order changing; median counts")
    p.add_argument("--resampling", default="nearest", choices=("nearest", "bilinear"), help="every reader's resampling")
    p.add_argument("--cachemax", type=int, default=64, help="GDAL block cache of the cold case, MiB (default 64)")
    p.add_argument("--warm-cachemax", type=int, default=1024, help="GDAL block cache of the warm case, MiB")
    p.add_argument("--check-windows", type=int, default=1000, help="windows of the correctness checks")
    p.add_argument("--skip-checks", action="store_true", help="measure speed only")
    p.add_argument("--peer-python", help="python of an env with TorchGeo and crossgeo's deps (default: this one)")
    p.add_argument("--json", type=Path, help="write the results as JSON to this file")
    p.add_argument("--smoke", action="store_true", help="a tiny run: 1,024^2 scene, 16 windows, 1 round")
    p.add_argument("--emit-json", action="store_true", help="the table on stderr, the JSON on stdout (the suite)")
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--windows-file", help=argparse.SUPPRESS)
    p.add_argument("--measure", nargs=2, metavar=("LIBRARY", "CASE"), help=argparse.SUPPRESS)
    p.add_argument("--agree", choices=LIBRARIES[1:3], help=argparse.SUPPRESS)
    return p


def smoke(args: argparse.Namespace) -> None:
    """Shrink ``args`` to a tiny run."""
    args.size, args.windows, args.warm_windows, args.rounds, args.check_windows = 1080, 16, 8, 1, 16


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.measure or args.agree:
        from benchmarks.gdal import limit_block_cache

        limit_block_cache(args.cachemax)
        if args.agree:
            return harness.emit(agreement(args.agree, args))
        library, case = args.measure
        if library not in LIBRARIES or case not in CASES:
            raise SystemExit(f"--measure: library in {LIBRARIES}, case in {CASES}")
        return harness.emit(measure(library, case, args))
    if args.smoke:
        smoke(args)
    result = run(args)
    print(format_table(result), file=sys.stderr if args.emit_json else sys.stdout, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return harness.emit(result) if args.emit_json else 0


if __name__ == "__main__":
    raise SystemExit(main())
