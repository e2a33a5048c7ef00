"""Several band files: one image stacked from band files against the same pixels in one multi-band file.

Writes (once per size, into ``cache``) a scene of 256 x 256 DEFLATE tiles in UTM 32N with three
uint8 bands (band 1 holds ``col % 256``, band 2 ``row % 256``, band 3 noise, so tiles cost what
imagery costs to inflate) as one 3-band file, as three single-band files on the same grid, and
band 3 again at twice the pixel size (a 20 m band beside 10 m ones), plus a class mask on the
grid. The same random windows of 256 are read through a `crossgeo.PatchSampler` built on

* ``one_file``: the 3-band file;
* ``band_files``: the three band files (``image_path=[b1, b2, b3]``, plain windowed reads);
* ``mixed_resolution``: bands 1 and 2 and the 20 m band 3, resampled onto the 10 m grid
  (nearest neighbour).

Rounds alternate the variants, each with a fresh sampler closed afterwards (every round starts
cold), GDAL_CACHEMAX as the caller set it. Reported: patches/s of every round, the medians, and
each variant's ratio to ``one_file``. The band files' patches are checked against the 3-band
file's (identical), so a fast wrong read cannot pass.

    python -m benchmarks.bands_bench [--size 4096] [--n 150] [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TILE = 256
PATCH = 256
VARIANTS = ("one_file", "band_files", "mixed_resolution")


def write_scene(folder: Path, size: int) -> dict[str, Path]:
    """The band files, the 3-band file and the mask (written once per size into ``folder``)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    folder = folder / f"bands-{size}-v1"
    paths = {name: folder / f"{name}.tif" for name in ("stack", "b1", "b2", "b3", "b3_20m", "mask")}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "driver": "GTiff",
        "crs": "EPSG:32632",
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
        "dtype": "uint8",
    }
    ten = {**base, "width": size, "height": size, "transform": Affine(10.0, 0, 500000, 0, -10.0, 5600000)}
    twenty = {**base, "width": size // 2, "height": size // 2, "transform": Affine(20.0, 0, 500000, 0, -20.0, 5600000)}
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (size, size), dtype=np.uint8)
    cols = np.arange(size)
    files = {
        "stack": rasterio.open(paths["stack"].with_suffix(".part"), "w", count=3, **ten),
        **{f"b{k}": rasterio.open(paths[f"b{k}"].with_suffix(".part"), "w", count=1, **ten) for k in (1, 2, 3)},
        "mask": rasterio.open(paths["mask"].with_suffix(".part"), "w", count=1, **ten),
    }
    try:
        for row0 in range(0, size, TILE):
            rows = np.arange(row0, row0 + TILE)[:, None]
            strip = np.empty((3, TILE, size), dtype=np.uint8)
            strip[0] = cols % 256
            strip[1] = np.broadcast_to(rows % 256, (TILE, size))
            strip[2] = noise[row0 : row0 + TILE]
            window = Window(0, row0, size, TILE)
            files["stack"].write(strip, window=window)
            for k in (1, 2, 3):
                files[f"b{k}"].write(strip[k - 1 : k], window=window)
            files["mask"].write((((rows // 97) + (cols // 89)) % 5).astype(np.uint8)[None], window=window)
    finally:
        for dst in files.values():
            dst.close()
    with rasterio.open(paths["b3_20m"].with_suffix(".part"), "w", count=1, **twenty) as dst:
        dst.write(noise[::2, ::2][None])
    for p in paths.values():
        p.with_suffix(".part").rename(p)
    return paths


def image_of(variant: str, paths: dict[str, Path]) -> Any:
    """The ``image_path`` argument of a variant."""
    if variant == "one_file":
        return str(paths["stack"])
    if variant == "band_files":
        return [str(paths[f"b{k}"]) for k in (1, 2, 3)]
    return {
        "b1": str(paths["b1"]),
        "b2": str(paths["b2"]),
        "b3": {"path": str(paths["b3_20m"]), "resampling": "nearest"},
    }


def read_round(variant: str, paths: dict[str, Path], windows: Any) -> float:
    """Patches/s reading every window once through a fresh sampler (closed afterwards: the next round is cold)."""
    from crossgeo import PatchSampler

    sampler = PatchSampler(image_of(variant, paths), str(paths["mask"]), windows, PATCH, n_classes=5)
    try:
        start = time.perf_counter()
        for i in range(len(sampler)):
            patch = sampler[i]
            if i == 0:  # the pixels prove where the patch came from
                assert (patch.image[0, 0] == (patch.col_off + np.arange(PATCH)) % 256).all()
                assert (patch.image[1, :, 0] == (patch.row_off + np.arange(PATCH)) % 256).all()
        return len(sampler) / (time.perf_counter() - start)
    finally:
        sampler.close()


def check_same_pixels(paths: dict[str, Path], windows: Any) -> None:
    """The band files give the 3-band file's patches exactly (first and last window)."""
    from crossgeo import PatchSampler

    one = PatchSampler(image_of("one_file", paths), str(paths["mask"]), windows, PATCH, n_classes=5)
    bands = PatchSampler(image_of("band_files", paths), str(paths["mask"]), windows, PATCH, n_classes=5)
    try:
        for i in (0, len(one) - 1):
            np.testing.assert_array_equal(one[i].image, bands[i].image)
            np.testing.assert_array_equal(one[i].mask, bands[i].mask)
    finally:
        one.close()
        bands.close()


def measure(size: int, n: int, rounds: int, cache: Path) -> dict[str, Any]:
    """Every variant's rounds and medians, and their ratios to ``one_file``."""
    from crossgeo import random_windows

    paths = write_scene(cache, size)
    windows = random_windows(str(paths["stack"]), PATCH, n, seed=0)
    check_same_pixels(paths, windows)
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            rates[variant].append(read_round(variant, paths, windows))
    medians = {v: statistics.median(r) for v, r in rates.items()}
    return {
        "size": size,
        "tile": TILE,
        "patch": PATCH,
        "windows": len(windows),
        "rounds": rounds,
        "variants": {
            v: {
                "patches_per_s": [round(r, 1) for r in rates[v]],
                "median": round(medians[v], 1),
                "vs_one_file": round(medians[v] / medians["one_file"], 2),
            }
            for v in VARIANTS
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=4096, help="scene side in pixels (default: %(default)s)")
    parser.add_argument("--n", type=int, default=150, help="windows per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "crossgeo-bands-bench")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.size, args.n, args.rounds, args.cache)))  # one line: python -m benchmarks reads it
    return 0


if __name__ == "__main__":
    sys.exit(main())
