"""Read-path measurements of issue #26: warped mask block cache, read-ahead pool, predict vs read.

``python -m benchmarks.perf_bench [--size 8192] [--windows 1000] [--rounds 3] [--cases a,b]``

Every measurement runs in a fresh process (cold handles and caches, as a training job starts),
rounds alternate the cases (so a busy machine slows all of them alike), and the median of the
rounds is reported with the ratios the issue sets targets for. GDAL_CACHEMAX is 64 MiB unless
the environment sets it. The scene is `benchmarks.scenes`' (generated once into the cache folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(os.environ.get("CROSSGEO_BENCH_CACHE", Path.home() / ".cache" / "crossgeo-bench"))

CASES: dict[str, dict[str, Any]] = {
    # name: mask file, extra environment, how the windows are read
    "aligned": {"mask": "mask", "env": {}, "how": "direct"},
    "warped_window": {"mask": "mask_4326", "env": {"CROSSGEO_MASK_CACHE_BYTES": "0"}, "how": "direct"},
    "warped_blocks": {"mask": "mask_4326", "env": {}, "how": "direct"},
    "warped_blocks_readahead": {"mask": "mask_4326", "env": {}, "how": "readahead"},
    "aligned_readahead": {"mask": "mask", "env": {}, "how": "readahead"},
    "image_read": {"mask": None, "env": {}, "how": "image"},
    "predict": {"mask": None, "env": {}, "how": "predict"},
    "predict_1thread": {"mask": None, "env": {"PERF_READ_THREADS": "0"}, "how": "predict"},
    "warped_blocks_warm": {"mask": "mask_4326", "env": {}, "how": "warm"},
    "raw_warped_full_vrt_warm": {"mask": "mask_4326", "env": {}, "how": "raw_warm"},
}
RATIOS = [
    ("warped_blocks", "warped_window", "block cache vs per-window warp"),
    ("warped_blocks_readahead", "warped_blocks", "read-ahead (2 threads) vs sequential, warped"),
    ("aligned_readahead", "aligned", "read-ahead (2 threads) vs sequential, aligned"),
    ("predict", "image_read", "predict_raster vs reading the same windows"),
    ("predict", "predict_1thread", "predict_raster, read pool of 2 vs one reader"),
    ("warped_blocks_warm", "raw_warped_full_vrt_warm", "warm blocks vs a raw whole-grid WarpedVRT, warm (both 64 MiB)"),
    ("warped_blocks_warm", "aligned", "warm blocks vs aligned (cold)"),
]


def run_case(name: str, size: int, n_windows: int, patch_size: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process: patches (or windows) per second."""
    from benchmarks.scenes import N_CLASSES, ensure_scene
    from crossgeo import PatchSampler

    scene = ensure_scene(CACHE, size, n_windows, patch_size, log=lambda *_: None)
    case = CASES[name]
    if case["how"] in ("image", "predict"):
        return _image_case(case["how"], scene.image_deflate, size, patch_size)
    mask = getattr(scene, case["mask"])
    sampler = PatchSampler(scene.image_deflate, mask, scene.windows, patch_size, n_classes=N_CLASSES)
    positions = list(range(len(sampler)))
    start = time.perf_counter()
    if case["how"] in ("warm", "raw_warm"):
        return _warm_case(case["how"], scene.image_deflate, mask, sampler)
    if case["how"] == "readahead":
        from crossgeo.readahead import ReadAhead

        for _ in ReadAhead(lambda i: sampler.get(i, mask_dtype=np.uint8), positions, threads=2):
            pass
    else:
        for i in positions:
            sampler.get(i, mask_dtype=np.uint8)
    seconds = time.perf_counter() - start
    return {"per_s": len(positions) / seconds, "view": sampler.mask_view}


def _warm_case(how: str, image: str, mask: str, sampler: Any) -> dict[str, Any]:
    """The second pass over the windows: crossgeo's blocks, or a raw whole-grid WarpedVRT with a large GDAL cache."""
    pairs = list(zip(sampler.row_off.tolist(), sampler.col_off.tolist()))
    if how == "warm":
        read = lambda r, c: sampler.read(r, c, mask_dtype=np.uint8)  # noqa: E731
    else:
        import rasterio
        from rasterio.vrt import WarpedVRT
        from rasterio.windows import Window

        src, msk = rasterio.open(image), rasterio.open(mask)
        vrt = WarpedVRT(msk, crs=src.crs, transform=src.transform, width=src.width, height=src.height, add_alpha=True)

        def read(r: int, c: int) -> Any:
            window = Window(c, r, sampler.patch_size, sampler.patch_size)
            return src.read((1, 2, 3), window=window, boundless=False), vrt.read(window=window)

    for r, c in pairs:
        read(r, c)
    start = time.perf_counter()
    for r, c in pairs:
        read(r, c)
    return {"per_s": len(pairs) / (time.perf_counter() - start)}


def _image_case(how: str, image: str, size: int, patch_size: int) -> dict[str, Any]:
    """``predict_raster`` over the whole image with a trivial model, vs reading the same windows (``"image"``)."""
    import tempfile

    from crossgeo.grid import axis_offsets
    from crossgeo.inspection import inspect_image, read_plan
    from crossgeo.io import RasterReader
    from crossgeo.predict import predict_raster

    offsets = axis_offsets(size, patch_size, patch_size)
    windows = [(int(r), int(c)) for r in offsets for c in offsets]
    start = time.perf_counter()
    if how == "image":
        reader = RasterReader(read_plan(inspect_image(image), None, patch_size))
        for r, c in windows:
            reader.read_image(r, c)
        reader.close()
    else:
        with tempfile.TemporaryDirectory() as folder:
            threads = int(os.environ.get("PERF_READ_THREADS", "2"))
            predict_raster(
                image,
                lambda x: x[:, :2],
                Path(folder) / "out.tif",
                patch_size=patch_size,
                batch_size=16,
                progress=False,
                read_threads=threads,
            )
    return {"per_s": len(windows) / (time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="aligned,warped_window,warped_blocks")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args.size, args.windows, args.patch_size)))
        return
    names = args.cases.split(",")
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:
            env = {**os.environ, "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "64"), **CASES[name]["env"]}
            env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
            command = [sys.executable, "-m", "benchmarks.perf_bench", "--one", name, "--size", str(args.size)]
            command += ["--windows", str(args.windows), "--patch-size", str(args.patch_size)]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[name].append(result["per_s"])
            print(f"round {round_ + 1} {name:28s} {result['per_s']:8.1f}/s {result.get('view', '')}", flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print("\nmedians (per second):")
    for name, value in medians.items():
        print(f"  {name:28s} {value:8.1f}")
    for a, b, what in RATIOS:
        if a in medians and b in medians:
            print(f"  {what}: {medians[a] / medians[b]:.2f}x")


if __name__ == "__main__":
    main()
