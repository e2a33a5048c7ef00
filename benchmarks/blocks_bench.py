"""Decode less (issue #26.3): windows on the image's blocks against free windows, patches/s in one run.

Writes a scene of 256 x 256 DEFLATE tiles (``--size`` pixels square, default 8192; RGB uint8
whose bands 1 and 2 hold ``col % 256`` and ``row % 256`` and band 3 noise, so tiles cost
what real imagery costs to inflate, plus a tiled class mask on the same grid), makes windows
of 256 pixels with `crossgeo.random_windows` (the same ``n`` and seed) and
`crossgeo.grid_windows` (stride 192, i.e. overlapping; aligned: stride 256) with and without
``align="blocks"``, and reads every window's image and mask through a `crossgeo.PatchSampler`.
Grid windows are read twice: ``n`` of them in a random order (as a shuffling loader reads
them) and the first ``n`` in row-major order, where neighbours share tiles that GDAL's block
cache still holds, so alignment matters little there.

Rounds alternate unaligned / aligned, each with a fresh sampler closed afterwards (its
handles and their cached blocks go with it, so every round starts cold), under
``GDAL_CACHEMAX`` 64 MB (unless the environment sets it: ``python -m benchmarks`` passes its
own). Reported: patches/s per round, the median per variant, the ratio
aligned / unaligned and the blocks each variant decodes (`crossgeo.grid.decode_amplification`).
Every patch's bands 1-2 are checked against its offsets, so a fast wrong read cannot pass.

    python -m benchmarks.blocks_bench [--size 8192] [--n 150] [--rounds 5] [--cache DIR] [--json FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("GDAL_CACHEMAX", "64")  # before GDAL sizes its block cache (first read)

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.windows import Window

from crossgeo import PatchSampler, grid_windows, random_windows
from crossgeo.grid import BlockLayout, decode_amplification

TILE = 256
PATCH = 256
GRID_STRIDE = 192
"""The grid variant's stride without ``align`` (overlapping, so its windows straddle tiles)."""


def write_scene(folder: Path, size: int) -> tuple[Path, Path]:
    """The tiled image and mask (written once per size into ``folder``), row strips at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = folder / f"blocks_image_{size}.tif", folder / f"blocks_mask_{size}.tif"
    if image.exists() and mask.exists():
        return image, mask
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "crs": "EPSG:32632",
        "transform": Affine(1.0, 0, 500000, 0, -1.0, 5600000),
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        "compress": "deflate",
    }
    rng = np.random.default_rng(0)
    with (
        rasterio.open(image.with_suffix(".part.tif"), "w", count=3, dtype="uint8", **profile) as img,
        rasterio.open(mask.with_suffix(".part.tif"), "w", count=1, dtype="uint8", **profile) as msk,
    ):
        cols = np.arange(size)
        for row0 in range(0, size, TILE):
            rows = np.arange(row0, row0 + TILE)[:, None]
            strip = np.empty((3, TILE, size), dtype=np.uint8)
            strip[0] = cols % 256
            strip[1] = np.broadcast_to(rows % 256, (TILE, size))
            strip[2] = rng.integers(0, 256, (TILE, size), dtype=np.uint8)
            window = Window(0, row0, size, TILE)
            img.write(strip, window=window)
            msk.write((((rows // 97) + (cols // 89)) % 5).astype(np.uint8)[None], window=window)
    image.with_suffix(".part.tif").rename(image)
    mask.with_suffix(".part.tif").rename(mask)
    return image, mask


def shuffled(windows: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` windows of a table in a seeded random order, as a shuffling loader reads them."""
    order = np.random.default_rng(1).permutation(len(windows))[:n]
    return windows.iloc[order].reset_index(drop=True)


def read_round(image: Path, mask: Path, windows: pd.DataFrame) -> float:
    """Patches/s reading every window once through a fresh sampler (closed afterwards: the next round is cold)."""
    sampler = PatchSampler(str(image), str(mask), windows[["row_off", "col_off"]], PATCH, n_classes=5)
    try:
        start = time.perf_counter()
        for i in range(len(sampler)):
            patch = sampler[i]
            if i == 0 or i == len(sampler) - 1:  # the pixels prove where the patch came from
                assert (patch.image[0, 0] == (patch.col_off + np.arange(PATCH)) % 256).all()
                assert (patch.image[1, :, 0] == (patch.row_off + np.arange(PATCH)) % 256).all()
        return len(sampler) / (time.perf_counter() - start)
    finally:
        sampler.close()


def measure(size: int, n: int, rounds: int, cache: Path) -> dict[str, Any]:
    """Every variant's rounds and medians, and the aligned / unaligned ratios."""
    image, mask = write_scene(cache, size)
    aligned_grid = grid_windows(image, PATCH, stride=GRID_STRIDE, align="blocks")
    variants = {
        "random": (
            random_windows(image, PATCH, n, seed=0),
            random_windows(image, PATCH, n, seed=0, align="blocks"),
        ),
        "grid, shuffled": (shuffled(grid_windows(image, PATCH, stride=GRID_STRIDE), n), shuffled(aligned_grid, n)),
        "grid, row-major": (grid_windows(image, PATCH, stride=GRID_STRIDE).iloc[:n], aligned_grid.iloc[:n]),
    }
    layout = BlockLayout(TILE, TILE)
    cachemax = int(os.environ["GDAL_CACHEMAX"])
    result: dict[str, Any] = {"size": size, "tile": TILE, "patch": PATCH, "gdal_cachemax_mb": cachemax, "variants": {}}
    for name, (free, aligned) in variants.items():
        rates: dict[str, list[float]] = {"unaligned": [], "aligned": []}
        for _ in range(rounds):
            rates["unaligned"].append(read_round(image, mask, free))
            rates["aligned"].append(read_round(image, mask, aligned))
        entry: dict[str, Any] = {}
        for label, frame in (("unaligned", free), ("aligned", aligned)):
            blocks = decode_amplification(frame.row_off, frame.col_off, PATCH, layout, size, size)
            entry[label] = {
                "windows": len(frame),
                "patches_per_s": [round(r, 1) for r in rates[label]],
                "median": round(statistics.median(rates[label]), 1),
                "blocks_per_patch": round(blocks.mean_blocks, 3),
                "amplification": round(blocks.amplification, 3),
            }
        entry["ratio"] = round(entry["aligned"]["median"] / entry["unaligned"]["median"], 2)
        result["variants"][name] = entry
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"{result['size']} x {result['size']} RGB scene, {result['tile']} x {result['tile']} DEFLATE tiles, "
        f"patches of {result['patch']}, GDAL_CACHEMAX {result['gdal_cachemax_mb']} MB, fresh sampler per round",
        f"{'windows':<16} {'variant':<10} {'n':>5} {'blocks/patch':>13} {'median patches/s':>17}  rounds",
    ]
    for name, entry in result["variants"].items():
        for label in ("unaligned", "aligned"):
            row = entry[label]
            rounds = " ".join(f"{r:.0f}" for r in row["patches_per_s"])
            lines.append(
                f"{name:<16} {label:<10} {row['windows']:>5} {row['blocks_per_patch']:>13.2f} {row['median']:>17.1f}  "
                f"{rounds}"
            )
        lines.append(f"{name:<16} aligned / unaligned: {entry['ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=8192, help="scene side in pixels (default: %(default)s)")
    parser.add_argument("--n", type=int, default=150, help="windows per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "crossgeo-blocks-bench")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--emit", action="store_true", help="print the JSON as the last line (python -m benchmarks)")
    args = parser.parse_args(argv)
    result = measure(args.size, args.n, args.rounds, args.cache)
    print(format_result(result))
    if args.emit:
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
