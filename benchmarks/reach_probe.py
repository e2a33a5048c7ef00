"""A mask much larger than the image: the part under it kept (`crossgeo.io.reached_part`) or, as before, all of it.

``python -m benchmarks.reach_probe [--repeat 3 --rounds 3 --windows 1000]`` writes once (in the benchmark
cache) a lon/lat mask ``--repeat`` times the benchmark scene's ``mask_4326.tif`` on each side, its pixels
repeated (3: 234 MB of uint8, more than crossgeo keeps, `crossgeo.io.MASK_CACHE_BYTES`; 2: 104 MB, kept),
then starts one fresh process per (case, round), the cases alternating: ``part`` (crossgeo as it is: the
~25 MB under the UTM image kept) and ``whole`` (`reached_part` off, as before: the whole mask kept when it
fits, else a plain read of it per window). Each reads the first ``--windows`` windows of ``image_utm.tif``
as a DataLoader worker does (one thread, no window kept, GDAL's block cache at
`crossgeo.io.WORKER_BLOCK_CACHE`) and reports CPU ms per patch, the growth of its anonymous memory and a
digest of the masks (both cases must agree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness

SCENE = Path.home() / ".cache/crossgeo-bench/scene-8192-v2"


def large_mask(repeat: int) -> Path:
    """``mask_4326.tif`` repeated ``repeat`` x ``repeat`` times, the original's pixels in place (written once)."""
    path = SCENE.parent / f"mask-4326-{repeat}x{repeat}.tif"
    if path.exists():
        return path
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(SCENE / "mask_4326.tif") as src:
        data, profile, t = src.read(), src.profile, src.transform
    height, width = data.shape[1:]
    before = (repeat - 1) // 2  # copies left of and above the original
    wider = Affine(t.a, 0, t.c - before * width * t.a, 0, t.e, t.f - before * height * t.e)
    profile.update(width=repeat * width, height=repeat * height, transform=wider)
    partial = path.with_suffix(".partial.tif")
    with rasterio.open(partial, "w", **profile) as dst:
        for row in range(repeat):
            for col in range(repeat):
                dst.write(data, window=Window(col * width, row * height, width, height))
    partial.rename(path)
    return path


def child(case: str, mask: Path, windows: int) -> dict[str, object]:
    import crossgeo.io
    from crossgeo import PatchSampler

    crossgeo.io.source_pool.enabled = False  # as in a DataLoader worker
    crossgeo.io.mask_blocks.keep_windows = False
    if case == "whole":
        crossgeo.io.reached_part = lambda raster, grid: None  # type: ignore[assignment]
    sampler = PatchSampler(SCENE / "image_utm.tif", mask, SCENE / "windows.parquet", 256, n_classes=10)
    plan = sampler._plan.mask
    assert plan is not None and plan.view == "table", "the mask is not read through the table view"
    digest, start_kib = hashlib.sha256(), harness.status_kib("self", ("RssAnon",))["RssAnon"]
    cpu = time.process_time()
    for index in range(windows):
        digest.update(sampler[index].mask.tobytes())
    return {
        "cpu_ms_per_patch": (time.process_time() - cpu) * 1e3 / windows,
        "anon_growth_mb": (harness.status_kib("self", ("RssAnon",))["RssAnon"] - start_kib) / 1024,
        "kept": plan.lookup_whole,
        "part": plan.whole_window,
        "digest": digest.hexdigest()[:16],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, choices=(2, 3), help="the mask's side / the scene mask's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--child", choices=("part", "whole"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, large_mask(args.repeat), args.windows)))
        return 0
    from crossgeo.io import WORKER_BLOCK_CACHE

    large_mask(args.repeat)
    env = {**os.environ, "GDAL_CACHEMAX": str(WORKER_BLOCK_CACHE // 2**20)}  # MB, before GDAL reads it
    runs: dict[str, list[dict[str, object]]] = {"part": [], "whole": []}
    for round_ in range(args.rounds):
        for case in ("part", "whole") if round_ % 2 == 0 else ("whole", "part"):
            command = [sys.executable, "-m", "benchmarks.reach_probe", "--child", case, "--repeat", str(args.repeat)]
            command += ["--windows", str(args.windows)]
            result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
            runs[case].append(result)
            print(f"round {round_ + 1} {case}: {json.dumps(result)}", file=sys.stderr)
    summary: dict[str, object] = {"identical_masks": len({r["digest"] for rs in runs.values() for r in rs}) == 1}
    for key in ("cpu_ms_per_patch", "anon_growth_mb"):
        part, whole = (statistics.median(float(r[key]) for r in runs[case]) for case in ("part", "whole"))  # type: ignore[arg-type]
        summary[key] = {"part": round(part, 2), "whole": round(whole, 2), "whole/part": round(whole / part, 2)}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
