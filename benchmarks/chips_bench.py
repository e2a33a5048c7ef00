"""Chip stores against the live sampler (issue 25): ``python -m benchmarks.chips_bench [--windows N] [--no-ray]``.

On the suite's 8192 x 8192 scene (`benchmarks.scenes`: DEFLATE GeoTIFF image, the EPSG:4326
mask warped onto it, 256-pixel windows), all in one run so the ratios share the machine's state:

* ``chips_vs_live``: an epoch after the first from `crossgeo.ChipSampler` / the live
  `crossgeo.PatchSampler` (direct ``sampler[i]``), target >= 10;
* ``chips_loader_vs_live_loader``: the same through a 0-worker ``make_dataloader`` (torch,
  when installed), target >= 10;
* ``chips_vs_zarr``: an epoch of `ChipSampler` per-chip reads (``cache_bytes=0``) / reading the
  same compressed chunks (every array of the chip) with zarr directly, target >= 0.8;
* ``write_vs_live``: `crossgeo.write_chips` chips per second / the live sampler's patches per
  second, target >= 0.8; the store's size against the raw array bytes is reported;
* ``ray_vs_local``: ``write_chips(engine="ray")`` on a 2-CPU local cluster / ``engine=None`` on
  a catalogue of 200 scenes, target >= 1.5, with identical arrays (every shard's sha256).

Standalone: it reuses the suite's scene cache (``CROSSGEO_BENCH_CACHE``) and only reads its
``windows.parquet`` (the first ``--windows`` rows). ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks.scenes import N_CLASSES, ensure_scene

DEFAULT_CACHE = Path(os.environ.get("CROSSGEO_BENCH_CACHE", Path.home() / ".cache" / "crossgeo-bench"))
TARGETS = {
    "chips_vs_live": 10.0,
    "chips_loader_vs_live_loader": 10.0,
    "chips_vs_zarr": 0.8,
    "write_vs_live": 0.8,
    "ray_vs_local": 1.5,
}


def _epoch(sampler: Any, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        sampler[i]
    return time.perf_counter() - start


def _loader_epoch(loader: Any) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def _zarr_epoch(store: Path, n: int) -> float:
    import zarr

    group = zarr.open_group(str(store), mode="r")
    arrays = [group[name] for name in ("image", "mask", "mask_valid", "image_valid")]
    start = time.perf_counter()
    for i in range(n):
        for array in arrays:
            array[i]
    return time.perf_counter() - start


def measure_scene(windows: int, work: Path, cache: Path, size: int = 8192, n_windows: int = 2000) -> dict[str, Any]:
    """Live sampler, chip writing and chip reads on the first ``windows`` windows of the suite's scene."""
    from crossgeo import ChipSampler, PatchSampler, write_chips

    scene = ensure_scene(cache, size, n_windows, 256)
    table = pq.read_table(scene.windows).slice(0, windows)
    crops = work / "windows.parquet"
    pq.write_table(table, crops)
    live = PatchSampler(scene.image_deflate, scene.mask_4326, crops, 256, n_classes=N_CLASSES)
    n = len(live)
    out: dict[str, Any] = {"windows": n}
    first = _epoch(live, n)
    second = _epoch(live, n)
    out["live_epoch1_s"], out["live_epoch2_s"] = first, second
    start = time.perf_counter()
    store = write_chips(live, work / "chips", progress=False)
    out["write_s"] = time.perf_counter() - start
    out["write_vs_live"] = second / out["write_s"]
    manifest = json.loads((store / "manifest.json").read_text())
    out["store_bytes"] = sum(f["bytes"] for s in manifest["shards"] for f in s["files"].values())
    out["raw_bytes"] = n * sum(
        int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in manifest["arrays"].values()
    )
    chips = ChipSampler(store)
    out["chips_epoch1_s"] = _epoch(chips, n)
    out["chips_epoch2_s"] = _epoch(chips, n)
    out["chips_vs_live"] = second / out["chips_epoch2_s"]
    per_chip = ChipSampler(store, cache_bytes=0)
    _epoch(per_chip, n)  # shard checksums and the page cache, as zarr's first pass below
    _zarr_epoch(store, n)
    out["chips_per_chip_epoch_s"] = _epoch(per_chip, n)
    out["zarr_epoch_s"] = _zarr_epoch(store, n)
    out["chips_vs_zarr"] = out["zarr_epoch_s"] / out["chips_per_chip_epoch_s"]
    out["chips_cached_vs_zarr"] = out["zarr_epoch_s"] / out["chips_epoch2_s"]
    try:
        import torch

        from crossgeo.torch import PatchDataset, make_dataloader
    except ImportError:
        out["chips_loader_vs_live_loader"] = None
        return out
    torch.set_num_threads(1)  # as the suite's torch rows: no intra-op threads contending with the reads
    loaders = [make_dataloader(PatchDataset(s), batch_size=16, num_workers=0, shuffle=False) for s in (live, chips)]
    for loader in loaders:
        _loader_epoch(loader)
    out["live_loader_epoch_s"] = _loader_epoch(loaders[0])
    out["chips_loader_epoch_s"] = _loader_epoch(loaders[1])
    out["chips_loader_vs_live_loader"] = out["live_loader_epoch_s"] / out["chips_loader_epoch_s"]
    return out


def _warm() -> None:
    import crossgeo.chips
    import crossgeo.scenes  # noqa: F401


def measure_ray(scenes: int, work: Path) -> dict[str, Any]:
    import ray

    from crossgeo import SceneSampler, write_chips
    from crossgeo.testing import write_scene_catalogue

    catalogue, mask = write_scene_catalogue(work / "catalogue", scenes, size=256, windows=((0, 0), (0, 128), (128, 0)))
    sampler = SceneSampler(catalogue, 128, mask_path=mask, n_classes=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.get([ray.remote(_warm).remote() for _ in range(8)])  # workers up, crossgeo imported, before timing
        start = time.perf_counter()
        local = write_chips(sampler, work / "local", shard_size=16, progress=False)
        local_s = time.perf_counter() - start
        start = time.perf_counter()
        spread = write_chips(sampler, work / "ray", shard_size=16, engine="ray", progress=False)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    same = [s["files"] for s in json.loads((local / "manifest.json").read_text())["shards"]] == [
        s["files"] for s in json.loads((spread / "manifest.json").read_text())["shards"]
    ]
    return {
        "scenes": scenes,
        "chips": len(sampler),
        "local_s": local_s,
        "ray_s": ray_s,
        "ray_vs_local": local_s / ray_s,
        "identical": same,
    }


def _scene_lines(results: dict[str, Any], lines: list[str], rows: list[tuple[str, Any]]) -> None:
    scene = results["scene"]
    lines.append(
        f"chip store vs live sampler, {scene['windows']} windows of the 8192 x 8192 scene (warped mask, "
        f"{results['gdal_cachemax']} MiB GDAL block cache)"
    )
    lines.append(
        f"  live epochs {scene['live_epoch1_s']:.2f} s, {scene['live_epoch2_s']:.2f} s; write_chips "
        f"{scene['write_s']:.2f} s; chips epochs {scene['chips_epoch1_s']:.2f} s, {scene['chips_epoch2_s']:.3f} s"
    )
    lines.append(
        f"  store {scene['store_bytes'] / 1e6:.1f} MB for {scene['raw_bytes'] / 1e6:.1f} MB of raw arrays "
        f"({scene['store_bytes'] / scene['raw_bytes']:.1%})"
    )
    names = ("chips_vs_live", "chips_loader_vs_live_loader", "chips_vs_zarr", "write_vs_live")
    rows.extend((k, scene.get(k)) for k in names)
    rows.append(("chips_cached_vs_zarr (report)", scene.get("chips_cached_vs_zarr")))


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    rows: list[tuple[str, Any]] = []
    if "scene" in results:
        _scene_lines(results, lines, rows)
    if "ray" in results:
        ray = results["ray"]
        lines.append(
            f"  ray: {ray['chips']} chips of {ray['scenes']} scenes: engine=None {ray['local_s']:.2f} s, "
            f"engine='ray' {ray['ray_s']:.2f} s, identical arrays: {ray['identical']}"
        )
        rows.append(("ray_vs_local", ray["ray_vs_local"]))
    for name, value in rows:
        target = TARGETS.get(name)
        if value is None:
            lines.append(f"  {name:<34} not measured (torch not installed)")
            continue
        verdict = "" if target is None else ("  ok" if value >= target else "  BELOW TARGET")
        goal = f" (target >= {target:g})" if target is not None else ""
        lines.append(f"  {name:<34} {value:8.2f}x{goal}{verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chips_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="windows of the scene (default 2000)")
    parser.add_argument("--scenes", type=int, default=200, help="scenes of the Ray catalogue (default 200)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    parser.add_argument("--only-ray", action="store_true", help="only the Ray comparison")
    parser.add_argument(
        "--gdal-cachemax", type=int, default=8, help="GDAL block cache in MiB, as the suite's (default 8)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="the suite's scene cache folder")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--size", type=int, default=8192, help="the suite scene's side (default 8192)")
    parser.add_argument("--scene-windows", type=int, default=2000, help="the suite scene's windows (default 2000)")
    parser.add_argument("--emit", action="store_true", help="print the JSON as the last line (python -m benchmarks)")
    args = parser.parse_args(argv)
    from benchmarks.gdal import limit_block_cache

    limit_block_cache(args.gdal_cachemax)
    work = Path(tempfile.mkdtemp(prefix="crossgeo-chips-bench-"))
    try:
        results: dict[str, Any] = {"gdal_cachemax": args.gdal_cachemax}
        if not args.only_ray:
            results["scene"] = measure_scene(args.windows, work, args.cache, args.size, args.scene_windows)
        if not args.no_ray:
            results["ray"] = measure_ray(args.scenes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results))
    if args.emit:
        print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
