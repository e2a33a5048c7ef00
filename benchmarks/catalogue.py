"""Many scenes (issue 13): a catalogue of GeoTIFF scenes with one warped mask mosaic, written once and reused.

Layout (UTM 32N, 2 m pixels): ``tiles`` x ``tiles // 2`` scenes of ``size`` x ``size`` are first
written as one raster (``big.tif``) and cut into ``tile-XX.tif`` files, so one `PatchSampler`
on ``big.tif`` reads exactly the pixels of the scenes cut from it. The catalogue of
``n_scenes`` scenes lays scenes side by side on a grid; scene ``k`` holds the pixels of tile
``k % tiles`` on its own transform (a byte copy with new georeferencing). ``mask4326.tif`` is
one class mosaic in EPSG:4326 over the whole region (warped onto every scene's grid).
``points.gpkg`` has ``windows`` points per scene, well inside it (the shared crops).

Cases, all on one shuffled order of the same windows, timed in interleaved slices:

* ``construction_s`` - `SceneSampler` over the whole catalogue (inspects every scene);
* ``scenes_max_open`` vs ``open_per_item`` - reads through the catalogue with ``max_open=32``
  against the original's approach (open image and mask and build the mask VRT per sample);
* ``scenes_blocks`` - the catalogue (``max_open=32``) in the order a shuffled epoch of
  ``order="scene-blocks"`` visits (``block_scenes=8``: scenes shuffled, windows shuffled within
  blocks of 8 scenes), its first ``reads`` windows: randomness traded for locality (issue 26.4);
* ``scenes_small`` vs ``single`` - a catalogue of the tiles (<= 32 scenes) against one
  `PatchSampler` on ``big.tif`` reading the same windows.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

from benchmarks.scenes import _profile

CATALOGUE_VERSION = 2
CRS = "EPSG:32632"
PIXEL = 2.0
ORIGIN = (500000.0, 5540000.0)
MASK_RES = 0.0001
N_CLASSES = 5


def _image(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.arange(size, dtype=np.float32)[:, None]
    cols = np.arange(size, dtype=np.float32)[None, :]
    base = 96 + 40 * np.sin(rows / 53.0 + seed) * np.cos(cols / 71.0) + 25 * np.sin((rows + cols) / 211.0)
    out = np.empty((3, size, size), dtype=np.uint8)
    for band, shift in enumerate((0.0, 17.0, -23.0)):
        out[band] = np.clip(base + shift + rng.normal(0.0, 5.0, size=(size, size)), 0, 255).astype(np.uint8)
    return out


def _scene_transform(k: int, columns: int, size: int) -> Affine:
    row, col = divmod(k, columns)
    return Affine(PIXEL, 0, ORIGIN[0] + col * size * PIXEL, 0, -PIXEL, ORIGIN[1] - row * size * PIXEL)


class Catalogue:
    """Paths and sizes of a generated catalogue."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "catalogue.json").read_text())
        self.folder = folder
        self.size: int = meta["size"]
        self.n_scenes: int = meta["n_scenes"]
        self.tiles: int = meta["tiles"]
        self.patch_size: int = meta["patch_size"]
        self.windows: int = meta["windows"]
        self.scenes = folder / "scenes.parquet"
        self.tile_scenes = folder / "tiles.parquet"
        self.big = folder / "big.tif"
        self.mask = folder / "mask4326.tif"
        self.points = folder / "points.gpkg"
        self.tile_windows = folder / "tile-windows.parquet"

    def describe(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "scenes": self.n_scenes,
            "size": self.size,
            "tiles": self.tiles,
            "windows_per_scene": self.windows,
            "patch_size": self.patch_size,
        }


def ensure_catalogue(
    cache: Path, n_scenes: int, size: int, windows: int, patch_size: int, tiles: int = 32, log: Any = print
) -> Catalogue:
    """The catalogue in ``cache`` (generated on first use)."""
    folder = cache / f"catalogue-{n_scenes}x{size}-{windows}-{patch_size}-v{CATALOGUE_VERSION}"
    if (folder / "catalogue.json").exists():
        return Catalogue(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    log(f"writing a catalogue of {n_scenes} scenes of {size}^2 into {folder} (once)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One raster of tiles x tiles/2 scenes, cut into tile files.
    tile_cols, tile_rows = tiles // 2 if tiles > 1 else 1, 2 if tiles > 1 else 1
    big_transform = Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1])
    with rasterio.open(
        folder / "big.tif", "w", **_profile(size * tile_cols, size * tile_rows, 3, big_transform, CRS)
    ) as big:
        for t in range(tiles):
            r, c = divmod(t, tile_cols)
            big.write(_image(size, t), window=rasterio.windows.Window(c * size, r * size, size, size))
    from crossgeo.testing import write_scene_cut

    for t in range(tiles):
        r, c = divmod(t, tile_cols)
        write_scene_cut(folder / "big.tif", folder / f"tile-{t:02d}.tif", r * size, c * size, size, size)
    # The catalogue: byte copies of the tiles with their own transform on a grid.
    columns = math.ceil(math.sqrt(n_scenes * 1.6))
    scenes_dir = folder / "scenes"
    scenes_dir.mkdir()
    names = []
    for k in range(n_scenes):
        name = f"scenes/s{k:05d}.tif"
        shutil.copyfile(folder / f"tile-{k % tiles:02d}.tif", folder / name)
        with rasterio.open(folder / name, "r+") as dst:
            dst.transform = _scene_transform(k, columns, size)
        names.append(name)
    pq.write_table(pa.table({"image_path": names}), folder / "scenes.parquet")
    tile_table = {
        "image_path": [f"tile-{t:02d}.tif" for t in range(tiles)],
        "crops_path": ["tile-windows.parquet"] * tiles,
    }
    pq.write_table(pa.table(tile_table), folder / "tiles.parquet")
    # The tiles' windows: ``windows`` random offsets, the same in every tile (as pixel offsets).
    offsets = np.random.default_rng(9).integers(0, size - patch_size + 1, (windows, 2))
    pq.write_table(pa.table({"row_off": offsets[:, 0], "col_off": offsets[:, 1]}), folder / "tile-windows.parquet")
    # The mask mosaic in EPSG:4326 over the catalogue's and the big raster's region.
    rows_used = math.ceil(n_scenes / columns)
    right = ORIGIN[0] + max(columns, tile_cols) * size * PIXEL
    bottom = ORIGIN[1] - max(rows_used, tile_rows) * size * PIXEL
    west, south, east, north = transform_bounds(CRS, "EPSG:4326", ORIGIN[0], bottom, right, ORIGIN[1])
    west, south, east, north = west - 0.01, south - 0.01, east + 0.01, north + 0.01
    width, height = math.ceil((east - west) / MASK_RES), math.ceil((north - south) / MASK_RES)
    mask_transform = Affine(MASK_RES, 0, west, 0, -MASK_RES, north)
    with rasterio.open(folder / "mask4326.tif", "w", **_profile(width, height, 1, mask_transform, "EPSG:4326")) as dst:
        cols = np.arange(width)
        for row0 in range(0, height, 512):
            h = min(512, height - row0)
            rows = np.arange(row0, row0 + h)[:, None]
            classes = ((cols[None, :] // 40 + 2 * (rows // 40)) % N_CLASSES).astype(np.uint8)
            dst.write(classes[None], window=rasterio.windows.Window(0, row0, width, h))
    # Shared crops: ``windows`` points per catalogue scene, whose windows lie well inside it.
    import geopandas as gpd

    rng = np.random.default_rng(5)
    margin = patch_size // 2 + 2
    xs, ys = [], []
    for k in range(n_scenes):
        r = rng.integers(margin, size - margin, windows) + 0.5
        c = rng.integers(margin, size - margin, windows) + 0.5
        x, y = _scene_transform(k, columns, size) @ (c, r)
        xs.extend(np.asarray(x).tolist())
        ys.extend(np.asarray(y).tolist())
    frame = gpd.GeoDataFrame({"id": np.arange(len(xs))}, geometry=gpd.points_from_xy(xs, ys), crs=CRS)
    frame.to_file(folder / "points.gpkg", engine="pyogrio")
    (folder / "catalogue.json").write_text(
        json.dumps({"size": size, "n_scenes": n_scenes, "tiles": tiles, "patch_size": patch_size, "windows": windows})
    )
    log(f"  catalogue written in {time.perf_counter() - started:.1f} s")
    return Catalogue(folder)


def _time(read: Any, items: list[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        read(*item)
    return time.perf_counter() - start


def _small_cases(catalogue: Catalogue, size: int) -> dict[str, tuple[Any, list[Any]]]:
    """<= 32 scenes: the tiles as a catalogue against one sampler on the raster they were cut from."""
    from crossgeo import PatchSampler, SceneSampler

    tiles = SceneSampler(catalogue.tile_scenes, size, mask_path=catalogue.mask)
    tile_order = np.random.default_rng(4).permutation(len(tiles))
    tile_cols = catalogue.tiles // 2 if catalogue.tiles > 1 else 1
    big_rows, big_cols = [], []
    for i in tile_order:
        r, c = divmod(int(tiles.scene[i]), tile_cols)
        big_rows.append(int(tiles.row_off[i]) + r * catalogue.size)
        big_cols.append(int(tiles.col_off[i]) + c * catalogue.size)
    single = PatchSampler(catalogue.big, catalogue.mask, np.stack([big_rows, big_cols], axis=1), size)
    for a, b in ((0, 0), (len(tile_order) // 2, len(tile_order) // 2)):  # the same pixels, or the case is void
        np.testing.assert_array_equal(tiles[int(tile_order[a])].image, single[b].image)
        np.testing.assert_array_equal(tiles[int(tile_order[a])].mask, single[b].mask)

    return {
        "scenes_small": (tiles.__getitem__, [(int(i),) for i in tile_order]),
        "single": (single.__getitem__, [(k,) for k in range(len(single))]),
    }


def run(
    catalogue: Catalogue, reads: int, repeat: int, log: Any = print, *, block_scenes: int = 8, small: bool = True
) -> dict[str, Any]:
    """Construction time and patches/s of the catalogue cases (best of ``repeat`` interleaved rounds).

    ``small``: also the <= 32 scenes cases (``scenes_small`` vs ``single``).
    """
    import pickle

    from benchmarks import baselines as B
    from crossgeo import SceneSampler
    from crossgeo.loading import plan_loader

    size = catalogue.patch_size
    start, cpu = time.perf_counter(), time.process_time()
    sampler = SceneSampler(catalogue.scenes, size, mask_path=catalogue.mask, crops_path=catalogue.points, max_open=32)
    construction, construction_cpu = time.perf_counter() - start, time.process_time() - cpu
    log(
        f"  SceneSampler over {catalogue.n_scenes} scenes: {len(sampler)} windows, built in {construction:.2f} s "
        f"({construction_cpu:.2f} s CPU)"
    )
    order = np.random.default_rng(3).permutation(len(sampler))[:reads]
    paths = [str(s.image_path) for s in sampler.catalogue]
    items = [(int(i),) for i in order]
    per_item = [(paths[int(sampler.scene[i])], int(sampler.row_off[i]), int(sampler.col_off[i])) for i in order]
    # The same catalogue with order="scene-blocks" (a copy, as a DataLoader worker gets, so its open
    # scenes are its own); its order is the loader plan's, as every adapter visits it.
    blocks = pickle.loads(pickle.dumps(sampler))
    blocks.order, blocks.block_scenes = "scene-blocks", block_scenes
    blocks_order = plan_loader(blocks, where="benchmark", shuffle=True, seed=3).order(0)[:reads]
    opening: dict[str, Any] = {}

    def open_per_item(path: str, row_off: int, col_off: int) -> Any:
        read = opening.get(path)
        if read is None:
            read = opening[path] = B.open_per_item(path, str(catalogue.mask), size, [1, 2, 3])[0]
        return read(row_off, col_off)

    cases: dict[str, tuple[Any, list[Any]]] = {
        "scenes_max_open": (lambda i: sampler[i], items),
        "scenes_blocks": (lambda i: blocks[i], [(int(i),) for i in blocks_order]),
        "open_per_item": (open_per_item, per_item),
    }
    closers: list[Any] = [sampler.close, blocks.close]
    if small:
        cases.update(_small_cases(catalogue, size))
        closers += [case.__self__.close for case, _ in list(cases.values())[3:]]  # type: ignore[attr-defined]
    # Interleaved in small slices, so load changes on a shared machine hit every case alike.
    slices = 20
    best: dict[str, float] = {}
    for round_ in range(repeat):
        for close in closers:
            close()
        spent = dict.fromkeys(cases, 0.0)
        for k in range(slices):
            for name, (read, work) in cases.items():
                step = math.ceil(len(work) / slices)
                spent[name] += _time(read, work[k * step : (k + 1) * step])
        for name, (_, work) in cases.items():
            best[name] = min(best.get(name, math.inf), spent[name] / len(work))
            log(f"  round {round_ + 1}/{repeat} {name:20s} {len(work) / spent[name]:8.1f} patches/s")
    return {
        "catalogue": catalogue.describe(),
        "windows": len(sampler),
        "reads": len(items),
        "construction_s": construction,
        "construction_cpu_s": construction_cpu,
        "max_open": sampler.max_open,
        "block_scenes": block_scenes,
        "scenes_per_read": {
            "scenes_max_open": len({int(sampler.scene[i]) for (i,) in items}) / len(items),
            "scenes_blocks": len({int(sampler.scene[i]) for i in blocks_order}) / len(blocks_order),
        },
        "open_scenes_after": len(sampler.open_scenes),
        "throughput": {name: {"patches_per_s": 1 / seconds} for name, seconds in best.items()},
    }


def main() -> None:
    """A standalone run of the 1,000-scene cases: ``python -m benchmarks.catalogue --reads 400 --repeat 3``."""
    import argparse

    from benchmarks.gdal import limit_block_cache
    from benchmarks.run import DEFAULT_CACHE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--scene-size", type=int, default=1024)
    parser.add_argument("--scene-windows", type=int, default=10)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--block-scenes", type=int, default=8)
    parser.add_argument("--gdal-cachemax", type=int, default=8, help="GDAL block cache in MiB (as run.py's)")
    parser.add_argument("--small", action="store_true", help="also the <= 32 scenes cases")
    args = parser.parse_args()
    limit_block_cache(args.gdal_cachemax)
    patch = min(args.patch_size, args.scene_size // 2)
    folder = ensure_catalogue(args.cache, args.scenes, args.scene_size, args.scene_windows, patch)
    result = run(folder, args.reads, args.repeat, block_scenes=args.block_scenes, small=args.small)
    speeds = {name: case["patches_per_s"] for name, case in result["throughput"].items()}
    print(json.dumps(result, indent=1))
    for name in ("scenes_max_open", "scenes_blocks"):
        print(f"{name}: {speeds[name] / speeds['open_per_item']:.2f}x open_per_item")


if __name__ == "__main__":
    main()
