"""A T = 6 time series against six single-date samplers on the same windows (issue #24.2's target: >= 0.9x).

``python -m benchmarks.series_bench [--size 2048] [--windows 200] [--rounds 5] [--smoke]``

One place is written at six dates (4-band uint16 DEFLATE GeoTIFFs, the same grid; one date
shifted by whole pixels so it takes the plain-window path with an offset), with a mask on the
grid. Each round reads every window once through the time series (``SceneSampler`` with
``group_by``: one (6, 4, H, W) patch and one mask read per window) and once through six
single-date ``PatchSampler``s in sequence (six patches, six mask reads); the two alternate, so
GDAL's block cache and the OS page cache favour neither. The ratio is windows/s of the series
over windows/s of the six samplers (median over rounds); a patch of the series holds the six
single-date patches' images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from affine import Affine

SHIFTED, SHIFT = 3, 4
"""The date written on a grid starting SHIFT pixels up and left of the others'."""
DATES = ("2021-01-10", "2021-02-14", "2021-03-05", "2021-04-02", "2021-05-01", "2021-06-20")


def write_series(folder: Path, size: int, windows: int, patch: int) -> tuple[list[dict[str, object]], Path, Path]:
    from crossgeo import testing as T

    transform = T.web_mercator_transform(12, 2176, 1460)
    rows: list[dict[str, object]] = []
    for k, date in enumerate(DATES):
        shift = SHIFT if k == SHIFTED else 0  # one date on a grid shifted by whole pixels
        coords = T.coordinate_bands(size + 2 * shift, size + 2 * shift, "uint16", row0=-shift, col0=-shift)
        day = np.full((1, *coords.shape[1:]), k + 1, np.uint16)
        image = T.write_raster(
            folder / f"date{k}.tif",
            np.concatenate([coords, day]),
            crs="EPSG:3857",
            transform=transform @ Affine.translation(-shift, -shift),
        )
        rows.append({"image_path": str(image), "time": date, "place": "a"})
    r, c = np.mgrid[0:size, 0:size]
    mask = T.write_raster(
        folder / "mask.tif", ((r // 64 + c // 64) % 4).astype(np.uint8)[None], crs="EPSG:3857", transform=transform
    )
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, size - patch, size=(2, windows))
    crops = T.write_windows_table(folder / "windows.csv", offsets[0].tolist(), offsets[1].tolist())
    rows[0].update(mask_path=str(mask), crops_path=str(crops))
    return rows, mask, crops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="raster side in pixels")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gdal-cachemax", type=int, default=64, help="GDAL block cache, MiB")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (no target)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.windows, args.patch, args.rounds = 256, 8, 64, 2
    os.environ["GDAL_CACHEMAX"] = str(args.gdal_cachemax)

    from crossgeo import PatchSampler, SceneSampler

    with tempfile.TemporaryDirectory(prefix="crossgeo-series-") as tmp:
        folder = Path(tmp)
        rows, mask, crops = write_series(folder, args.size, args.windows, args.patch)
        series = SceneSampler(rows, args.patch, image_dtype="uint16", group_by="place")
        singles = [PatchSampler(row["image_path"], mask, crops, args.patch, image_dtype="uint16") for row in rows]
        n = len(series)
        # The same numbers either way (the shifted date too).
        for i in (0, n - 1):
            patch = series[i]
            for t, single in enumerate(singles):
                shift = SHIFT if t == SHIFTED else 0  # that date's own grid starts SHIFT pixels earlier
                expected = single.read(patch.row_off + shift, patch.col_off + shift).image
                np.testing.assert_array_equal(patch.image[t], expected)
            np.testing.assert_array_equal(patch.mask, singles[0][i].mask)

        def run_series() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                series[i]
            return n / (time.perf_counter() - start), n / (time.process_time() - cpu)

        def run_singles() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                for single in singles:
                    single[i]
            return n / (time.perf_counter() - start), n / (time.process_time() - cpu)

        run_series(), run_singles()  # warm-up: open handles, page cache
        walls, cpus, a, b = [], [], [], []
        for k in range(args.rounds):
            first, second = (run_series, run_singles) if k % 2 == 0 else (run_singles, run_series)
            x, y = first(), second()
            s, m = (x, y) if first is run_series else (y, x)
            a.append(s[0])
            b.append(m[0])
            walls.append(s[0] / m[0])
            cpus.append(s[1] / m[1])
        print(f"windows: {n}, patch {args.patch}, raster {args.size}^2, 6 dates x 4 bands uint16, rounds {args.rounds}")
        print(f"time series T=6 (SceneSampler group_by): {np.median(a):8.1f} windows/s")
        print(f"six single-date PatchSamplers:            {np.median(b):8.1f} windows/s")
        print(
            f"ratio, wall time (median of rounds): {np.median(walls):.2f}x (target >= 0.9x); "
            f"rounds: {[round(r, 2) for r in walls]}"
        )
        print(
            f"ratio, CPU time of this process (median; steadier on a shared machine): {np.median(cpus):.2f}x; "
            f"rounds: {[round(r, 2) for r in cpus]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
