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

The Ray catalogue (`ray_catalogue`, ``--scenes``, ``--scene-size``, ``--ray-patch``): 200 scenes of
768 x 768 pixels, each with its own EPSG:4326 mask (warped per window), tiled by 128-pixel
windows: 36 windows a scene, 7,200 chips, the store's default 256 chips a shard. Why that much:
a user chips a catalogue once for many epochs, a run of minutes to hours, in which Ray's fixed
costs (the workers importing crossgeo and unpickling the sampler, the sampler put in the object
store, the last task's tail) are a small part. A pass here takes several seconds per engine on a
quiet 2-CPU machine, long enough for those costs to be amortised the way they would be, short
enough to repeat; the earlier catalogue (three 128-pixel windows on 256-pixel scenes, 600 chips,
about 2 s a pass) measured mostly those fixed costs. Each of ``--rounds`` rounds (default 3)
starts a fresh local cluster (``ray.init`` and the start of its idle workers, untimed), then
times ``engine=None`` and ``engine="ray"``, in alternating order: every Ray timing includes its
workers' first tasks, as a user's first write on a new cluster does, and every ``engine=None``
timing starts as a first write in a process does (the driver's warped-mask cache emptied and its
scenes closed: before, the driver's later rounds read the 7,200 mask windows its cache kept from
round one, about a fifth less CPU, while the fresh workers read them cold). The ratio is of the
medians; the CPU seconds of the driver and the Ray workers are printed per round (on two CPUs
shared with other work the wall times follow each engine's share of the CPUs, not its speed).
The catalogue's files are read once before the rounds, so both engines read from the page cache.

Standalone: it reuses the suite's scene cache (``CROSSGEO_BENCH_CACHE``; the Ray catalogue is
generated there once) and only reads its ``windows.parquet`` (the first ``--windows`` rows).
``--json FILE`` writes the numbers.
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
import rasterio

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


RAY_CATALOGUE_VERSION = 1


def ray_catalogue(cache: Path, scenes: int, size: int, patch: int) -> tuple[list[dict[str, str]], Path]:
    """``scenes`` scenes of ``size`` x ``size`` pixels, each with its own EPSG:4326 mask, tiled by ``patch`` windows.

    Each scene is a uint8 `crossgeo.testing.coordinate_bands` image (DEFLATE, tiled) on the zoom-12
    Web Mercator grid, the scenes side by side, with a lon/lat class mask of its own in EPSG:4326
    at about the image's resolution (so every window's mask is warped, as a label raster in
    another CRS would be). The windows tile each scene (step = ``patch``). Generated once into
    ``cache`` (a temporary folder renamed into place), then reused.
    """
    from affine import Affine
    from rasterio.warp import transform_bounds

    from crossgeo.testing import (
        coordinate_bands,
        web_mercator_transform,
        write_lonlat_mask,
        write_raster,
        write_windows_table,
    )

    folder = cache / f"ray-catalogue-{scenes}x{size}-p{patch}-v{RAY_CATALOGUE_VERSION}"
    starts = range(0, size - patch + 1, patch)
    names = [(folder / f"scene{i:04d}.tif", folder / f"mask{i:04d}.tif") for i in range(scenes)]
    rows = [
        {"image_path": str(image), "mask_path": str(mask), "crops_path": str(folder / "windows.csv")}
        for image, mask in names
    ]
    if (folder / "done").exists():
        return rows, folder
    print(f"Generating the Ray catalogue ({scenes} scenes of {size} x {size}) in {folder} (once) ...", flush=True)
    temp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    write_windows_table(temp / "windows.csv", [r for r in starts for _ in starts], [c for _ in starts for c in starts])
    origin = web_mercator_transform(12, 2176, 1460)
    for i, (image, _) in enumerate(names):
        transform = origin * Affine.translation(size * i, 0)
        written = write_raster(
            temp / image.name, coordinate_bands(size, size, "uint8", 0, size * i), crs="EPSG:3857", transform=transform
        )
        with rasterio.open(written) as src:
            left, bottom, right, top = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        pad = (top - bottom) / 20
        write_lonlat_mask(
            temp / f"mask{i:04d}.tif",
            (left - pad, bottom - pad, right + pad, top + pad),
            (top - bottom) / size,
            cell=(top - bottom) / 7,
            n_classes=N_CLASSES,
        )
    (temp / "done").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    temp.rename(folder)
    return rows, folder


def _read_files(folder: Path) -> None:
    """Read every file of ``folder`` once (untimed): both engines then start from the page cache."""
    for path in folder.iterdir():
        path.read_bytes()


def _shard_files(store: Path) -> list[Any]:
    return [s["files"] for s in json.loads((store / "manifest.json").read_text())["shards"]]


def _ray_workers() -> list[tuple[bytes, int]] | None:
    """The Ray worker processes of the local cluster this process started (its descendants: ``ray::`` task or
    idle workers, not Ray's agents; another session's cluster on the machine is not counted): their process
    title and CPU ticks (user + system) so far; None off Linux."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    found: dict[int, tuple[int, bytes, int]] = {}
    for folder in proc.iterdir():
        if not folder.name.isdigit():
            continue
        try:
            name = (folder / "cmdline").read_bytes().split(b"\0", 1)[0].rstrip()
            fields = (folder / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[int(folder.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    mine = {os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, (parent, _, _) in found.items() if parent in mine} - mine
        grew = bool(children)
        mine |= children
    return [
        (name, ticks)
        for pid, (_, name, ticks) in found.items()
        if pid in mine and name.startswith(b"ray::") and not name.endswith(b"Agent")
    ]


def _workers_cpu() -> float | None:
    """CPU seconds so far of the Ray workers (a difference of two readings is their share of a run)."""
    workers = _ray_workers()
    return None if workers is None else sum(ticks for _, ticks in workers) / os.sysconf("SC_CLK_TCK")


def _settle(cpus: int, timeout: float = 60.0) -> None:
    """Wait until the cluster ``ray.init`` started is up: Ray starts one idle worker per CPU (each importing
    Ray, about half a CPU second) after ``ray.init`` returns. Part of starting the cluster, untimed, and
    not left to slow down whichever engine a round times first (crossgeo is not imported there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _ray_workers()
        if workers is None:
            time.sleep(3.0)
            return
        idle = [ticks for name, ticks in workers if name == b"ray::IDLE"]
        time.sleep(0.5)
        later = sum(ticks for name, ticks in _ray_workers() or [] if name == b"ray::IDLE")
        if len(idle) >= cpus and later - sum(idle) < 0.05 * os.sysconf("SC_CLK_TCK"):
            return  # every worker started and idle (under 0.1 CPU in the last half second)


def _cold(sampler: Any) -> None:
    """Forget what an earlier write left in this process, so each timed write starts as a user's first one.

    ``write_chips`` reads every window once; the driver would otherwise serve the next rounds'
    ``engine=None`` masks from the windows its warped-mask cache kept (`crossgeo.io.mask_blocks`,
    the 7,200 mask windows fit its 128 MiB) and from the scenes still open, while the fresh Ray
    workers of every round read them cold.
    """
    from crossgeo.io import mask_blocks

    sampler.close()
    mask_blocks.clear()


def _bytecode() -> None:
    """Compile crossgeo's modules to bytecode (its ``__pycache__`` folders; untimed), as an installed crossgeo has.

    Every round's fresh Ray workers import crossgeo from its files. Python caches the compiled
    modules itself, unless ``PYTHONDONTWRITEBYTECODE`` is set (as in some sandboxes and CI jobs): then
    each worker compiled crossgeo from source, about 0.2 CPU seconds a worker and round, which an
    installed crossgeo (pip compiles at install) never pays, nor ``engine=None`` (its process imported
    crossgeo before the rounds).
    """
    import compileall

    import crossgeo

    compileall.compile_dir(Path(crossgeo.__file__).parent, quiet=1)


def measure_ray(scenes: int, work: Path, cache: Path, *, size: int, patch: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds, each: a fresh 2-CPU local cluster (``ray.init`` and its idle workers' start,
    untimed), ``engine=None`` and ``engine="ray"`` timed, in alternating order; medians. Every Ray timing includes
    its workers' first tasks (importing crossgeo, from its bytecode: `_bytecode`; unpickling the sampler), as a
    user's first write on a new cluster does; every ``engine=None`` timing starts as a first write in a process
    does (`_cold`).
    CPU seconds: the driver's (``time.process_time``, its threads included) plus the Ray workers'."""
    import ray
    import zarr  # noqa: F401 - imported once per process by either engine: not part of the comparison

    from crossgeo import SceneSampler, write_chips

    catalogue, folder = ray_catalogue(cache, scenes, size, patch)
    _read_files(folder)
    _bytecode()
    sampler = SceneSampler(catalogue, patch, n_classes=N_CLASSES)
    times: dict[str | None, list[float]] = {None: [], "ray": []}
    cpu: dict[str | None, list[float | None]] = {None: [], "ray": []}
    reference: list[Any] | None = None
    identical = True
    for k in range(rounds):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            _settle(2)
            for engine in (None, "ray") if k % 2 == 0 else ("ray", None):
                target = work / f"chips-{engine}-{k}"
                _cold(sampler)
                workers, driver, start = _workers_cpu(), time.process_time(), time.perf_counter()
                store = write_chips(sampler, target, engine=engine, progress=False)
                times[engine].append(time.perf_counter() - start)
                after = _workers_cpu()
                spent = time.process_time() - driver
                cpu[engine].append(None if workers is None or after is None else spent + after - workers)
                files = _shard_files(store)
                reference = files if reference is None else reference
                identical = identical and files == reference
                shutil.rmtree(store)
        finally:
            ray.shutdown()
    local, spread = float(np.median(times[None])), float(np.median(times["ray"]))
    return {
        "scenes": scenes,
        "scene_size": size,
        "patch_size": patch,
        "chips": len(sampler),
        "rounds": rounds,
        "worker_niceness": int(os.environ.get("RAY_worker_niceness", 15)),
        "local_rounds_s": times[None],
        "ray_rounds_s": times["ray"],
        "local_cpu_rounds_s": cpu[None],
        "ray_cpu_rounds_s": cpu["ray"],
        "local_s": local,
        "ray_s": spread,
        "ray_vs_local": local / spread,
        "identical": identical,
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
            f"  ray: {ray['chips']} chips ({ray['patch_size']} px) of {ray['scenes']} scenes "
            f"({ray['scene_size']} px), Ray workers at niceness {ray['worker_niceness']}, "
            f"medians of {ray['rounds']} rounds: engine=None {ray['local_s']:.2f} s, engine='ray' {ray['ray_s']:.2f} s "
            f"(rounds: {', '.join(f'{t:.2f}' for t in ray['local_rounds_s'])} / "
            f"{', '.join(f'{t:.2f}' for t in ray['ray_rounds_s'])}), identical arrays: {ray['identical']}"
        )
        if None not in ray["local_cpu_rounds_s"] + ray["ray_cpu_rounds_s"]:
            lines.append(
                f"  ray: CPU seconds (driver + Ray workers) engine=None "
                f"{', '.join(f'{t:.1f}' for t in ray['local_cpu_rounds_s'])} / engine='ray' "
                f"{', '.join(f'{t:.1f}' for t in ray['ray_cpu_rounds_s'])}"
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
    parser.add_argument("--scene-size", type=int, default=768, help="pixels per side of a Ray scene (default 768)")
    parser.add_argument("--ray-patch", type=int, default=128, help="window size of the Ray comparison (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the Ray comparison (default 3)")
    parser.add_argument(
        "--ray-niceness",
        type=int,
        default=None,
        help="niceness of the Ray workers (RAY_worker_niceness; Ray's default 15, engine=None runs at this "
        "process's): 0 compares both engines at one priority on a machine shared with other work",
    )
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
            if args.ray_niceness is not None:
                os.environ["RAY_worker_niceness"] = str(args.ray_niceness)  # read by the clusters ray.init starts
            results["ray"] = measure_ray(
                args.scenes, work, args.cache, size=args.scene_size, patch=args.ray_patch, rounds=args.rounds
            )
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
