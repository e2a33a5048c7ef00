"""Warm-cache I/O cases in their own process (``GDAL_CACHEMAX`` must be set before the first read).

``python -m benchmarks.warm --scene DIR --size N --windows N --cachemax 512`` prints JSON: the
aligned and warped cases of `benchmarks.io_bench` on the first ``--warm-windows`` windows,
read ``1 + --warm-passes`` times: the first pass fills the block cache, the fastest later pass
counts. Cases compared in a ratio run as a group with their passes interleaved (raw and crossgeo
aligned; the raw whole-grid VRT and crossgeo warped), so a burst of load from a neighbour on the
shared machine hits both sides of a ratio alike; ``--warm-windows`` must keep a group's blocks
within ``--cachemax`` (150 windows of 256 on the 8192^2 scene: about 350 MiB of 512).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import harness

WARM_GROUPS = (("raw_aligned", "core_aligned"), ("raw_warped_full_vrt", "core_warped"), ("raw_warped_window_vrt",))


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.warm", cachemax=512)
    parser.add_argument("--warm-windows", type=int, default=150)
    parser.add_argument("--warm-passes", type=int, default=5, help="warm passes after the cold one; the best counts")
    args = parser.parse_args(argv)
    from benchmarks.gdal import limit_block_cache

    cache = limit_block_cache(args.cachemax)
    from benchmarks import io_bench
    from crossgeo.io import ensure_gdal_env

    ensure_gdal_env()
    scene = harness.scene(args)
    rows, cols = harness.window_offsets(scene.windows, args.warm_windows)
    pairs, n = list(zip(rows.tolist(), cols.tolist())), len(rows)
    out: dict[str, Any] = {"windows": n, "gdal_cachemax_bytes": cache}
    factories = dict(io_bench.cases(scene))
    for group in WARM_GROUPS:
        readers = {name: factories[name]() for name in group}
        passes: dict[str, list[float]] = {name: [] for name in group}
        for _ in range(1 + max(1, args.warm_passes)):
            for name, (read, _close) in readers.items():
                start = time.perf_counter()
                for r, c in pairs:
                    read(r, c)
                passes[name].append(time.perf_counter() - start)
        for name, (_read, close) in readers.items():
            close()
            warm = min(passes[name][1:])
            out[name] = {"patches_per_s": n / warm, "cold_patches_per_s": n / passes[name][0]}
            harness.log(f"warm {name}: {n / warm:.1f} p/s (first pass {n / passes[name][0]:.1f})")
    return harness.emit(out)


if __name__ == "__main__":
    raise SystemExit(main())
