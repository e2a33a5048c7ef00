"""tf.data throughput: make_dataset (serial / AUTOTUNE) vs a from_generator pipeline.

Usage::

    python benchmarks/tf_pipeline.py [--size 4096] [--windows 240] [--patch 256] [--batch 8]

Writes a DEFLATE-compressed tiled (256 x 256) RGB GeoTIFF of ``size`` x ``size`` pixels with
noisy content (so blocks really cost decompression) and an aligned class mask, then
measures patches/s on the *same* windows in two scenarios, each in a fresh process so
GDAL's block cache size is set before GDAL starts:

* **cold** - ``GDAL_CACHEMAX`` = 8 MB and windows spread over the whole raster: nearly every
  read misses GDAL's block cache and decompresses blocks (rasterio releases the GIL then,
  so parallel map calls overlap).
* **warm** - ``GDAL_CACHEMAX`` = 1024 MB and windows inside a 1024 x 1024 corner, read once
  before timing: every block is a cache hit, so the per-call Python/``numpy_function``
  overhead dominates.

Pipelines (batch ``--batch``, prefetch AUTOTUNE, all through crossgeo.augment.to_model_inputs):
``make_dataset(num_parallel_calls=1)``, ``make_dataset(num_parallel_calls=AUTOTUNE)``,
``tf.data.Dataset.from_generator`` over the same sampler, and (when torch and
crossgeo.torch are importable) a torch DataLoader with 2 workers, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIOS = {"cold": {"GDAL_CACHEMAX": "8"}, "warm": {"GDAL_CACHEMAX": "1024"}}


def write_scene(folder: Path, size: int) -> tuple[Path, Path]:
    import numpy as np

    from crossgeo import testing as T

    transform = T.web_mercator_transform(12, 2176, 1460)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size, 0:size]
    base = T.coordinate_bands(size, size, "uint8")
    noise = rng.integers(0, 24, (3, size, size), dtype=np.uint8)
    image = T.write_raster(folder / "image.tif", base + noise, crs="EPSG:3857", transform=transform, blocksize=256)
    classes = ((rows // 64 + cols // 64) % 3).astype(np.uint8)[None]
    mask = T.write_raster(folder / "mask.tif", classes, crs="EPSG:3857", transform=transform, blocksize=256)
    return image, mask


def windows(folder: Path, scenario: str, size: int, count: int, patch: int) -> Path:
    import numpy as np

    from crossgeo import testing as T

    rng = np.random.default_rng(1)
    extent = size if scenario == "cold" else min(size, 1024)
    rows = rng.integers(0, extent - patch, count)
    cols = rng.integers(0, extent - patch, count)
    return T.write_windows_table(folder / f"windows_{scenario}.csv", rows, cols)


def one_pass(iterate: Any, n: int) -> float:
    """patches/s of one full pass (a fresh iterator)."""
    start = time.perf_counter()
    seen = 0
    for batch in iterate():
        seen += len(batch[0])
    elapsed = time.perf_counter() - start
    assert seen == n, (seen, n)
    return n / elapsed


def run_scenario(folder: Path, scenario: str, patch: int, batch: int, repeats: int) -> dict[str, float]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from crossgeo import PatchSampler
    from crossgeo.augment import to_model_inputs
    from crossgeo.tensorflow import make_dataset

    sampler = PatchSampler(
        folder / "image.tif", folder / "mask.tif", folder / f"windows_{scenario}.csv", patch, n_classes=3
    )
    n = len(sampler)
    if scenario == "warm":
        for i in range(n):  # fill GDAL's block cache
            sampler[i]
    results: dict[str, float] = {}

    def generator() -> Any:
        for i in range(n):
            yield to_model_inputs(sampler[i], channels_last=True)

    signature = (
        tf.TensorSpec((patch, patch, 3), tf.float32),
        tf.TensorSpec((patch, patch), tf.int64),
    )
    pipelines = {
        "make_dataset(num_parallel_calls=1)": lambda: make_dataset(sampler, batch_size=batch, num_parallel_calls=1),
        "make_dataset(AUTOTUNE)": lambda: make_dataset(sampler, batch_size=batch),
        "from_generator": lambda: (
            tf.data.Dataset.from_generator(generator, output_signature=signature)
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        ),
    }
    passes: dict[str, Any] = {}
    for name, build in pipelines.items():
        dataset = build()
        for _ in dataset.take(1):  # trace functions / start threads before timing
            pass
        passes[name] = lambda d=dataset: d.as_numpy_iterator()
    try:
        import torch  # noqa: F401

        from crossgeo.torch import PatchDataset, make_dataloader
    except ImportError:
        pass
    else:
        loader = make_dataloader(PatchDataset(sampler), batch_size=batch, num_workers=2, persistent_workers=True)
        for _ in loader:  # start the workers
            break
        passes["torch DataLoader(num_workers=2)"] = lambda: ((b["image"], b["mask"]) for b in loader)
    # Round-robin over the pipelines, best pass of each: load from other processes on the
    # machine then hurts every pipeline alike rather than whichever happened to run.
    for _ in range(repeats):
        for name, iterate in passes.items():
            results[name] = max(results.get(name, 0.0), one_pass(iterate, n))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="raster width and height (pixels)")
    parser.add_argument("--windows", type=int, default=240, help="windows per scenario")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline (best is kept)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.scenario:  # child process: one scenario, JSON on the last line
        print(json.dumps(run_scenario(args.folder, args.scenario, args.patch, args.batch, args.repeats)))
        return

    with tempfile.TemporaryDirectory(prefix="crossgeo-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        write_scene(folder, args.size)
        took = time.perf_counter() - start
        print(f"scene: {args.size} x {args.size} x 3 uint8, DEFLATE, 256 x 256 tiles (written in {took:.0f} s)")
        print(f"{args.windows} windows of {args.patch} px, batch {args.batch}, best of {args.repeats} passes, ", end="")
        print(f"{os.cpu_count()} CPUs")
        for scenario, env in SCENARIOS.items():
            windows(folder, scenario, args.size, args.windows, args.patch)
            command = [sys.executable, __file__, "--scenario", scenario, "--folder", str(folder)]
            command += ["--patch", str(args.patch), "--batch", str(args.batch), "--repeats", str(args.repeats)]
            done = subprocess.run(
                command, env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(done.stderr)
            results = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"\n{scenario} cache (GDAL_CACHEMAX={env['GDAL_CACHEMAX']} MB):")
            for name, value in results.items():
                print(f"  {name:36s} {value:8.1f} patches/s")
            ratio = results["make_dataset(AUTOTUNE)"] / results["from_generator"]
            print(f"  AUTOTUNE / from_generator = {ratio:.2f}")


if __name__ == "__main__":
    main()
