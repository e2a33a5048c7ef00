"""The benchmark driver: ``python -m benchmarks`` (see ``--help``).

Generates (once) or reuses the cached scenes, measures every case, prints a table of
patches/s and the ratios the suite checks (`benchmarks.targets`), and writes them as JSON with
``--json``, together with the machine and the versions they were measured with. Each ratio is
measured in this one run, on the same windows and files, with GDAL's block cache limited
(``--gdal-cachemax``, MiB) for crossgeo and the baselines alike so reads decompress as they
would on a scene far larger than the cache.

``--page`` writes the JSON to ``docs/images/bench-run.json`` and regenerates the performance
page from it (``docs/scripts/performance_page.py``: its tables and figures).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.peers import MODULES
from benchmarks.targets import TARGETS, judge, lookup, value

__all__ = ["TARGETS", "counts", "format_table", "machine", "main", "parse_args", "ratios", "run"]

PAGE_JSON = harness.REPO / "docs" / "images" / "bench-run.json"
"""The run the performance page is generated from (``--page``)."""
DEFAULT_CACHE = Path(os.environ.get("CROSSGEO_BENCH_CACHE", Path.home() / ".cache" / "crossgeo-bench"))
ORIGINAL = MODULES["original"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="crossgeo benchmark suite: patches/s and the ratios it checks."
    )
    parser.add_argument("--smoke", action="store_true", help="tiny scene, few windows, targets not enforced (< 30 s)")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"scene cache folder (default {DEFAULT_CACHE})"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--windows", type=int, default=2000, help="random windows measured (default 2000)")
    parser.add_argument("--size", type=int, default=8192, help="scene width = height in pixels (default 8192)")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds per I/O case; the best counts")
    parser.add_argument("--gdal-cachemax", type=int, default=8, help="GDAL block cache in MiB (default 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rss-epochs", type=int, default=10)
    parser.add_argument("--rss-windows", type=int, default=500, help="windows per epoch of the worker-RSS run")
    parser.add_argument("--index-rows", type=int, default=1_000_000)
    parser.add_argument("--scenes", type=int, default=1000, help="scenes of the catalogue case (default 1000)")
    parser.add_argument("--scene-size", type=int, default=1024, help="catalogue scene width = height (default 1024)")
    parser.add_argument("--scene-windows", type=int, default=10, help="windows per catalogue scene (default 10)")
    parser.add_argument("--scene-reads", type=int, default=2000, help="shuffled catalogue reads timed (default 2000)")
    parser.add_argument("--tiles", type=int, default=32, help="scenes of the <= 32 scenes case (default 32)")
    parser.add_argument("--planning-rows", type=int, default=1_000_000, help="candidate rows of the planning tables")
    parser.add_argument(
        "--planning-windows", type=int, default=10_000, help="overlapping windows of the class_fractions case"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to skip: io, colour, index, planning, predict, scenes, torch, loader, tf, "
        "warm, memory, peers, blocks, bands, chips, s2",
    )
    parser.add_argument(
        "--predict-size", type=int, default=16384, help="side of the image of the prediction memory run"
    )
    parser.add_argument(
        "--peer-python",
        "--torchgeo-python",
        dest="peer_python",
        default=os.environ.get("CROSSGEO_BENCH_PEER_PYTHON") or os.environ.get("CROSSGEO_BENCH_TORCHGEO_PYTHON"),
        help="python of a separate env with the peers (TorchGeo, the original MBTilesCropsGeoTifMaskDataset) and "
        "crossgeo installed; default: this one if it has either peer",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--page",
        action="store_true",
        help=f"write the JSON to {PAGE_JSON.relative_to(harness.REPO)} and regenerate docs/performance.md and its "
        "figures from it",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=min(4, max(2, os.cpu_count() or 2)),
        help="the peer DataLoader cases run at 0..N workers (default: the CPU count, at least 2, at most 4)",
    )
    parser.add_argument(
        "--read-windows", type=int, default=150, help="windows per round of the block-alignment and band-file cases"
    )
    parser.add_argument(
        "--read-rounds", type=int, default=5, help="alternating rounds of the block-alignment and band-file cases"
    )
    parser.add_argument("--bands-size", type=int, default=4096, help="side of the band-file scene (default 4096)")
    parser.add_argument("--chip-windows", type=int, default=2000, help="windows of the chip-store case (default 2000)")
    parser.add_argument("--warm-cachemax", type=int, default=512, help="GDAL block cache (MiB) of the warm rows")
    parser.add_argument("--warm-windows", type=int, default=150, help="windows of the warm-cache rows")
    parser.add_argument(
        "--peer-windows",
        type=int,
        default=0,
        help="first windows all libraries read in each peer comparison case (default 0: all --windows)",
    )
    parser.add_argument(
        "--loader-windows", type=int, default=600, help="windows per epoch of the loader cases (default 600)"
    )
    parser.add_argument(
        "--peer-rounds", type=int, default=3, help="rounds per peer case, the libraries' order changing; median counts"
    )
    parser.add_argument(
        "--peer-cachemax", type=int, default=64, help="GDAL block cache (MiB) of the cold peer cases (default 64)"
    )
    parser.add_argument(
        "--peer-warm-windows", type=int, default=300, help="windows of the warm TorchGeo case (default 300)"
    )
    parser.add_argument(
        "--s2-windows", type=int, default=1000, help="windows of 256 of the Sentinel-2-like case (benchmarks.s2_bench)"
    )
    parser.add_argument("--s2-warm-windows", type=int, default=200, help="windows of its warm case (default 200)")
    parser.add_argument("--s2-rounds", type=int, default=2, help="rounds of the Sentinel-2-like case; median counts")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.windows, args.repeat = 512, min(args.windows, 16), 1
        args.index_rows, args.rss_epochs, args.rss_windows = 10_000, 2, 16
        args.planning_rows, args.planning_windows = 10_000, 100
        args.predict_size = 1024
        args.warm_windows, args.max_workers = 16, 2
        args.peer_windows, args.peer_rounds, args.peer_warm_windows = 16, 1, 16
        args.read_windows, args.read_rounds, args.bands_size, args.chip_windows = 8, 2, 1024, 16
        args.s2_windows, args.s2_warm_windows, args.s2_rounds = 16, 8, 1
        args.loader_windows = 32
        args.scenes, args.scene_size, args.scene_windows, args.scene_reads, args.tiles = 20, 256, 3, 60, 8
    return args


def counts(args: argparse.Namespace) -> dict[str, int]:
    """The run's settings that the ratio descriptions name (`benchmarks.targets`)."""
    names = (
        "index_rows",
        "rss_epochs",
        "planning_rows",
        "scenes",
        "tiles",
        "batch_size",
        "warm_cachemax",
        "s2_windows",
        "loader_windows",
    )
    return {name: getattr(args, name) for name in names}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Where the run happened: CPU model, cores, memory, OS and the versions of what was measured."""
    cpu, memory_kib = platform.processor() or platform.machine(), 0
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as info:
            memory_kib = next((int(line.split()[1]) for line in info if line.startswith("MemTotal:")), 0)
    except OSError:  # not Linux: platform's answer
        pass
    import rasterio

    versions = {
        name: _version(distribution)
        for name, distribution in (
            ("crossgeo", "crossgeo"),
            ("rasterio", "rasterio"),
            ("numpy", "numpy"),
            ("torch", "torch"),
            ("torchgeo", "torchgeo"),
            ("original", "pytorch-segmentation-models-trainer"),
        )
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=harness.REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_kib / 2**20, 1),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
        "versions": versions,
        "commit": commit,
        # kept for older readers of the JSON
        "platform": platform.platform(),
    }


def _section(results: dict[str, Any], skipped: dict[str, str], name: str, command: list[str]) -> None:
    """Run ``command`` (a module of this suite printing its JSON last) and keep its result as ``results[name]``."""
    try:
        results[name] = harness.run_json([sys.executable, "-m", *command], 7200)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        skipped[name] = f"failed: {error}"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.gdal import limit_block_cache
    from benchmarks.scenes import ensure_scene

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    skip |= {"peers"} if "torchgeo" in skip else set()  # its name before the original joined
    started = time.perf_counter()
    scene = ensure_scene(args.cache, args.size, args.windows, args.patch_size, log=harness.log)
    cache_bytes = limit_block_cache(args.gdal_cachemax)

    import pyarrow.parquet as pq

    from crossgeo.io import ensure_gdal_env

    # The whole run (baselines too) uses crossgeo's GDAL settings, so only the code differs.
    ensure_gdal_env()
    table = pq.read_table(scene.windows)
    rows = table.column("row_off").to_numpy()
    cols = table.column("col_off").to_numpy()
    results: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full",
        "scene": scene.describe(),
        "gdal_cachemax_bytes": cache_bytes,
        "repeat": args.repeat,
        "counts": counts(args),
        "machine": machine(),
        "throughput": {},
        "skipped": {},
    }
    throughput: dict[str, Any] = results["throughput"]
    skipped: dict[str, str] = results["skipped"]

    if "io" not in skip:
        from benchmarks import io_bench

        harness.log(f"I/O cases: {len(rows)} windows, best of {args.repeat} interleaved rounds")
        throughput.update(io_bench.run_cases(scene, rows, cols, args.repeat, harness.log))
    else:
        skipped["io"] = "--skip"

    if "colour" not in skip:
        from benchmarks import io_bench

        results["colour"] = io_bench.colour_decode(scene, rows, cols, args.repeat)
    else:
        skipped["colour"] = "--skip"

    if "index" not in skip:
        harness.log(f"Window index: {args.index_rows:,} rows in a fresh process")
        index_path = scene.folder / f"index-{args.index_rows}.parquet"
        if not index_path.exists():
            from benchmarks.scenes import write_windows

            write_windows(index_path, args.index_rows, scene.size, scene.patch_size, seed=7)
        results["index"] = harness.run_json([sys.executable, "-m", "benchmarks.index_probe", str(index_path)], 300)
    else:
        skipped["index"] = "--skip"

    if "planning" not in skip:
        from benchmarks import planning_bench

        patch = 160 if scene.size >= 8192 else 64
        harness.log(
            f"Planning: class_fractions on {args.planning_windows} windows of {patch}; tables of {args.planning_rows:,}"
        )
        results["planning"] = {
            "fractions": planning_bench.fractions(scene, patch, args.planning_windows, args.repeat, harness.log),
            "tables": planning_bench.tables(args.planning_rows, args.repeat, harness.log),
        }
    else:
        skipped["planning"] = "--skip"
    if "predict" not in skip:
        from benchmarks import predict_bench

        harness.log(f"predict_raster: throughput on the scene, peak memory on {args.predict_size}^2")
        results["predict"] = {
            "throughput": predict_bench.throughput(scene.image_deflate, scene.patch_size, args.repeat),
            "memory": predict_bench.memory(predict_bench.memory_image(args.cache, args.predict_size, harness.log)),
        }
    else:
        skipped["predict"] = "--skip"
    if "scenes" not in skip:
        from benchmarks import catalogue

        patch = min(args.patch_size, args.scene_size // 2)
        folder = catalogue.ensure_catalogue(
            args.cache, args.scenes, args.scene_size, args.scene_windows, patch, tiles=args.tiles, log=harness.log
        )
        harness.log(f"Catalogue: {args.scenes} scenes, {args.scene_reads} shuffled reads, best of {args.repeat}")
        results["scenes"] = catalogue.run(folder, args.scene_reads, args.repeat, harness.log)
    else:
        skipped["scenes"] = "--skip"

    fw = harness.scene_args(scene, args.gdal_cachemax, args.batch_size)
    for name, module in (("torch", "torch"), ("tf", "tensorflow")):
        if name in skip:
            skipped[name] = "--skip"
        elif not _has(module):
            skipped[name] = f"{module} is not installed"
        else:
            harness.log(f"{name}: subprocess")
            extra = ["--rss-epochs", str(args.rss_epochs), "--rss-windows", str(args.rss_windows)]
            command = [sys.executable, "-m", "benchmarks.frameworks", name, *fw, *(extra if name == "torch" else [])]
            try:
                results[name] = harness.run_json(command, 3600)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped[name] = f"failed: {error}"

    if "loader" in skip or not _has("torch"):
        skipped["loader"] = "--skip" if "loader" in skip else "torch is not installed"
    else:
        harness.log(f"loader: read-ahead and worker transfer, {args.loader_windows} windows, {args.peer_rounds} rounds")
        command = [
            *(sys.executable, "-m", "benchmarks.loader_bench"),
            *harness.scene_args(scene, args.peer_cachemax, args.batch_size),
            *("--loader-windows", str(args.loader_windows), "--rounds", str(args.peer_rounds)),
            *(("--epochs", "2", "--cases", "direct,loader_0_serial,loader_0,loader_2") if args.smoke else ()),
        ]
        try:
            results["loader"] = harness.run_json(command, 7200, show_progress=True)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["loader"] = f"failed: {error}"

    if "tf" not in skip and "warm" not in skip and _has("tensorflow"):
        harness.log(f"tf, warm cache: subprocess with GDAL_CACHEMAX {args.warm_cachemax} MiB")
        warm_fw = [
            *fw[: fw.index("--cachemax")],
            "--cachemax",
            str(args.warm_cachemax),
            *fw[fw.index("--cachemax") + 2 :],
        ]
        try:
            command = [sys.executable, "-m", "benchmarks.frameworks", "tf", *warm_fw, "--warm"]
            results["tf_warm"] = harness.run_json(command, 3600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["tf_warm"] = f"failed: {error}"

    if "warm" in skip:
        skipped["warm"] = "--skip"
    else:
        harness.log(f"warm cache: subprocess with GDAL_CACHEMAX {args.warm_cachemax} MiB")
        warm = [*fw, "--cachemax", str(args.warm_cachemax), "--warm-windows", str(args.warm_windows)]
        try:
            results["warm"] = harness.run_json([sys.executable, "-m", "benchmarks.warm", *warm], 3600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["warm"] = f"failed: {error}"

    if "memory" in skip or not _has("torch"):
        skipped["memory"] = "--skip" if "memory" in skip else "torch is not installed"
    else:
        harness.log("memory: what a fresh worker-like process holds (float and compact items)")
        results["memory"] = {}
        for kind, flag in (("float", []), ("compact", ["--compact"])):
            try:
                command = [sys.executable, "-m", "benchmarks.memory_probe", *fw, *flag]
                results["memory"][kind] = harness.run_json(command, 3600)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped[f"memory_{kind}"] = f"failed: {error}"
    started_import = time.perf_counter()
    harness.run_json([sys.executable, "-c", "import crossgeo; print('{}')"], 120)
    results["import"] = {"python_c_import_crossgeo_s": time.perf_counter() - started_import}
    probe = results.get("memory", {}).get("float", {})
    if "import_crossgeo_s" in probe:
        results["import"]["import_crossgeo_s"] = probe["import_crossgeo_s"]

    reads = ["--n", str(args.read_windows), "--rounds", str(args.read_rounds), "--cache", str(args.cache)]
    if "blocks" in skip:
        skipped["blocks"] = "--skip"
    else:
        harness.log(f"block alignment: {args.read_windows} windows, {args.read_rounds} rounds, {args.size}^2 scene")
        _section(results, skipped, "blocks", ["benchmarks.blocks_bench", "--size", str(args.size), *reads, "--emit"])
    if "bands" in skip:
        skipped["bands"] = "--skip"
    else:
        harness.log(f"band files: {args.read_windows} windows, {args.read_rounds} rounds, {args.bands_size}^2 scene")
        _section(results, skipped, "bands", ["benchmarks.bands_bench", "--size", str(args.bands_size), *reads])
    if "chips" in skip or not _has("zarr"):
        skipped["chips"] = "--skip" if "chips" in skip else "zarr is not installed (pip install crossgeo[chips])"
    else:
        windows = min(args.chip_windows, scene.n_windows)
        harness.log(f"chip store: {windows} windows of the scene, a live epoch against chip epochs")
        chips = [
            *("benchmarks.chips_bench", "--no-ray", "--emit", "--windows", str(windows)),
            *("--gdal-cachemax", str(args.gdal_cachemax), "--cache", str(args.cache)),
            *("--size", str(scene.size), "--scene-windows", str(scene.n_windows)),
        ]
        _section(results, skipped, "chips", chips)

    if "peers" in skip:
        skipped["peers"] = "--skip"
    else:
        python = args.peer_python or (sys.executable if _has("torchgeo") or _has(ORIGINAL) else None)
        if python is None:
            skipped["peers"] = (
                f"neither torchgeo nor {ORIGINAL} is installed (tox -e bench, or --peer-python of an env that has them)"
            )
        else:
            windows = min(args.peer_windows or scene.n_windows, scene.n_windows)
            harness.log(
                f"peers: {python}, {windows} windows, {args.peer_rounds} rounds per case, each in a fresh process "
                f"(GDAL_CACHEMAX {args.peer_cachemax} MiB; warm {args.warm_cachemax} MiB)"
            )
            command = [
                *(python, "-m", "benchmarks.peers"),
                *harness.scene_args(scene, args.peer_cachemax, args.batch_size),
                *("--peer-windows", str(windows), "--rounds", str(args.peer_rounds)),
                *("--max-workers", str(args.max_workers)),
                *("--warm-cachemax", str(args.warm_cachemax), "--warm-windows", str(args.peer_warm_windows)),
            ]
            try:
                results["peers"] = harness.run_json(command, 7200, show_progress=True)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped["peers"] = f"failed: {error}"
            else:
                for library, why in results["peers"]["missing"].items():
                    skipped[library] = why

    if "s2" in skip:
        skipped["s2"] = "--skip"
    else:
        python = args.peer_python or (sys.executable if _has("torchgeo") else None)
        harness.log(f"s2: 12 band files against a VRT stack and TorchGeo, each case in a fresh process ({python})")
        command = [
            *(sys.executable, "-m", "benchmarks.s2_bench", "--cache", str(args.cache), "--emit-json"),
            *("--windows", str(args.s2_windows), "--warm-windows", str(args.s2_warm_windows)),
            *("--rounds", str(args.s2_rounds), *(("--peer-python", python) if python else ())),
            *(("--smoke",) if args.smoke else ()),
        ]
        try:
            results["s2"] = harness.run_json(command, 7200, show_progress=True)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["s2"] = f"failed: {error}"

    results["ratios"] = ratios(results)
    results["seconds"] = time.perf_counter() - started
    return results


def _pps(results: dict[str, Any], *path: str) -> float | None:
    """The number at ``path`` in ``results`` (None when not measured)."""
    node = lookup(results, path)
    return float(node) if node is not None else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every row of `benchmarks.targets.TARGETS`: label, value, target and status in this run."""
    enforce = results.get("mode") == "full"
    counts = results["counts"]
    out: dict[str, Any] = {}
    for target in TARGETS:
        result = value(target, results)
        out[target.key] = {
            "label": target.description.format(**counts),
            "value": result,
            "op": target.op,
            "target": target.target,
            "status": judge(target, result, enforce),
        }
    return out


IO_ROWS = [
    ("raw_aligned", "raw bound, aligned mask (DEFLATE GeoTIFF)"),
    ("core_aligned", "crossgeo core, aligned mask (DEFLATE GeoTIFF)"),
    ("raw_aligned_jpeg", "raw bound, aligned mask (JPEG GeoTIFF)"),
    ("core_aligned_jpeg", "crossgeo core, aligned mask (JPEG GeoTIFF)"),
    ("raw_warped_full_vrt", "raw bound, 4326 mask, one VRT over the grid"),
    ("raw_warped_window_vrt", "raw bound, 4326 mask, small VRT per window"),
    ("core_warped", "crossgeo core, 4326 mask (DEFLATE GeoTIFF)"),
    ("open_per_item", "open-per-item, 4326 mask (DEFLATE GeoTIFF)"),
    ("raw_warped_full_vrt_mbtiles", "raw bound, 4326 mask, one VRT (MBTiles)"),
    ("raw_warped_window_vrt_mbtiles", "raw bound, 4326 mask, VRT per window (MBTiles)"),
    ("core_warped_mbtiles", "crossgeo core, 4326 mask (MBTiles)"),
    ("open_per_item_mbtiles", "open-per-item, 4326 mask (MBTiles)"),
]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio_text(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:.2f}"


def _peer_rows(peers: dict[str, Any], width: int) -> list[str]:
    """The peer block (issue #26): crossgeo, TorchGeo and the original side by side, medians of the rounds."""
    names = {"torchgeo": "TorchGeo", "original": "original"}
    versions = peers.get("versions", {})
    present = [lib for lib in names if lib in versions]
    title = ", ".join(f"{names[lib]} {versions[lib]['version']}" for lib in present) or "no peer installed"
    torch = next((v["torch"] for v in versions.values()), "?")
    bs = peers.get("batch_size", 16)
    lines = [
        "",
        f"peers: crossgeo {versions.get('crossgeo', {}).get('version', '?')} against {title} (torch {torch}): "
        f"{peers.get('windows')} windows, median of {peers.get('rounds')} rounds (order changing), each case in a "
        f"fresh process; GDAL_CACHEMAX {peers.get('gdal_cachemax_mb')} MiB (warm row: "
        f"{peers.get('warm_gdal_cachemax_mb')} MiB, {peers.get('warm_windows')} windows)",
        f"{'':{width}s} {'crossgeo':>10s} {'TorchGeo':>10s} {'original':>10s} {'/TorchGeo':>10s} {'/original':>10s}",
    ]
    rows = [
        ("direct_aligned", "patches_per_s", "direct dataset[i], aligned mask, patches/s"),
        ("direct_warped", "patches_per_s", "direct dataset[i], mask in EPSG:4326, patches/s"),
        *(
            (f"workers_{n}", "patches_per_s", f"DataLoader bs {bs}, {n} workers (4326 mask), patches/s")
            for n in range(peers.get("max_workers", 2) + 1)
        ),
        ("direct_warped_warm", "patches_per_s", "direct, 4326 mask, warm cache (2nd pass), patches/s"),
        ("workers_0", "peak_rss_mb", "0-worker DataLoader process: peak RSS MB"),
        ("workers_2", "worker_rss_mb", "2-worker DataLoader: worker RSS MB (mean of maxima)"),
        ("workers_2", "worker_rss_anon_mb", "2-worker DataLoader: worker RssAnon MB (mean of maxima)"),
        ("workers_2", "worker_private_mb", "2-worker DataLoader: worker private MB (not shared; mean of maxima)"),
        ("workers_2", "worker_pss_mb", "2-worker DataLoader: worker PSS MB (mean of maxima)"),
    ]
    for case, field, label in rows:
        ours, tg, orig = (_pps(peers, f"{lib}_{case}", field) for lib in ("crossgeo", "torchgeo", "original"))
        if ours is not None:
            lines.append(
                f"{label:{width}s} {_fmt(ours):>10s} {_fmt(tg):>10s} {_fmt(orig):>10s} "
                f"{_ratio_text(ours, tg):>10s} {_ratio_text(ours, orig):>10s}"
            )
    each = [
        "/".join(f"{v:.0f}" for v in lookup(peers, (f"{lib}_workers_2", "rounds"))[0]["worker_rss_mb_per_worker"])
        if lookup(peers, (f"{lib}_workers_2", "rounds"))
        else "-"
        for lib in ("crossgeo", "torchgeo", "original")
    ]
    label = "2-worker DataLoader: RSS MB of each worker (round 1)"
    lines.append(f"{label:{width}s} {each[0]:>10s} {each[1]:>10s} {each[2]:>10s}")
    for lib in present:
        for kind in ("aligned", "warped"):
            a = peers.get("agreement", {}).get(lib, {}).get(kind)
            if a:
                label = f"same pixels as {names[lib]}, {kind}: images equal / mask agreement"
                lines.append(
                    f"{label:{width}s} {a['images_identical']:>4d}/{a['windows_checked']:<5d} "
                    f"{a['mask_agreement_mean']:10.4f}  (first window: {a['mask_agreement_first_window']:.4f})"
                )
    return lines


def format_table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    scene = results["scene"]
    lines.append(
        f"crossgeo benchmarks ({results['mode']}): {scene['size']}x{scene['size']} scene, {scene['windows']} windows "
        f"of {scene['patch_size']}, GDAL_CACHEMAX {results['gdal_cachemax_bytes'] >> 20} MiB, "
        f"best of {results['repeat']}, {results['machine']['cpus']} CPUs"
    )
    lines.append(f"scene cache: {scene['folder']} (--cache DIR or CROSSGEO_BENCH_CACHE to move it)")
    width = 58
    lines.append("")
    lines.append(f"{'throughput (single process unless noted)':{width}s} {'patches/s':>10s}")
    lines.append("-" * (width + 11))
    t = results.get("throughput", {})
    for key, label in IO_ROWS:
        if key in t:
            lines.append(f"{label:{width}s} {t[key]['patches_per_s']:10.1f}")
    framework_rows = [
        ("torch", "workers_0", "torch DataLoader, 0 workers (4326 mask)"),
        ("torch", "workers_2", "torch DataLoader, 2 workers (4326 mask)"),
        ("torch", "workers_0_compact", "torch DataLoader, 0 workers, compact=True"),
        ("torch", "workers_2_compact", "torch DataLoader, 2 workers, compact=True"),
        ("loader", "direct", "loader cases: dataset[i] loop, one thread (4326 mask)"),
        ("loader", "loader_0_serial", "loader cases: 0 workers, read_threads=0"),
        ("loader", "loader_0", "loader cases: 0 workers, read-ahead (read_threads=2)"),
        ("loader", "loader_2", "loader cases: 2 workers (default transfer)"),
        ("loader", "loader_2_float", "loader cases: 2 workers, float items"),
        ("loader", "loader_2_compact", "loader cases: 2 workers, compact batches, reused buffers"),
        ("warm", "raw_aligned", "warm cache: raw bound, aligned"),
        ("warm", "core_aligned", "warm cache: crossgeo core, aligned"),
        ("warm", "raw_warped_full_vrt", "warm cache: raw, 4326 mask, one VRT over the grid"),
        ("warm", "raw_warped_window_vrt", "warm cache: raw, 4326 mask, VRT per window"),
        ("warm", "core_warped", "warm cache: crossgeo core, 4326 mask"),
        ("tf", "from_generator", "tf.data from_generator (4326 mask)"),
        ("tf", "autotune", "tf.data make_dataset AUTOTUNE (4326 mask)"),
        ("tf_warm", "from_generator", "tf.data from_generator, warm cache"),
        ("tf_warm", "autotune", "tf.data make_dataset AUTOTUNE, warm cache"),
        ("tf_warm", "autotune_float", "tf.data make_dataset AUTOTUNE compact=False, warm cache"),
        ("tf", "autotune_float", "tf.data make_dataset AUTOTUNE compact=False (4326 mask)"),
    ]
    for section, key, label in framework_rows:
        value = _pps(results, section, key, "patches_per_s")
        if value is not None:
            lines.append(f"{label:{width}s} {value:10.1f}")
    if "peers" in results:
        lines.extend(_peer_rows(results["peers"], width))
    if "colour" in results:
        c = results["colour"]
        lines.append(
            f"{'colour mask: read ms / decode ms per patch':{width}s} "
            f"{_fmt(c['read_ms_per_patch'], 3):>5s} / {_fmt(c['decode_ms_per_patch'], 3)}"
        )
    if "index" in results:
        i = results["index"]
        lines.append(
            f"{'window index ' + format(i['rows'], ',') + ' rows: s / RSS MB / peak MB':{width}s} "
            f"{i['build_s']:.3f} / {i['rss_delta_mb']:.1f} / {i['peak_delta_mb']:.1f}"
        )
    if "scenes" in results:
        sc = results["scenes"]
        for key, label in (
            ("scenes_max_open", f"{sc['catalogue']['scenes']} scenes, max_open=32 (shuffled, 4326 mosaic)"),
            ("scenes_blocks", f"{sc['catalogue']['scenes']} scenes, max_open=32, order=scene-blocks (8 per block)"),
            ("open_per_item", f"{sc['catalogue']['scenes']} scenes, open-per-item (same windows)"),
            ("scenes_small", f"{sc['catalogue']['tiles']} scenes cut from one raster (shuffled)"),
            ("single", "one PatchSampler on that raster (same windows)"),
        ):
            lines.append(f"{label:{width}s} {sc['throughput'][key]['patches_per_s']:10.1f}")
        lines.append(
            f"{str(sc['catalogue']['scenes']) + ' scenes: construction s, wall / CPU':{width}s} "
            f"{sc['construction_s']:.2f} / {sc['construction_cpu_s']:.2f}"
        )
    for name, entry in results.get("blocks", {}).get("variants", {}).items():
        label = f"block alignment, {name} windows: unaligned -> aligned patches/s"
        lines.append(
            f"{label:{width}s} {entry['unaligned']['median']:.1f} -> {entry['aligned']['median']:.1f} "
            f"({entry['ratio']:.2f}x; blocks per patch {entry['unaligned']['blocks_per_patch']:.2f} -> "
            f"{entry['aligned']['blocks_per_patch']:.2f})"
        )
    for name, entry in results.get("bands", {}).get("variants", {}).items():
        label = f"band files, {name}: patches/s (/ one 3-band file)"
        lines.append(f"{label:{width}s} {entry['median']:10.1f} ({entry['vs_one_file']:.2f}x)")
    if "chips" in results and "scene" in results["chips"]:
        c = results["chips"]["scene"]
        n = c["windows"]
        for key, label in (
            ("live_epoch2_s", "live sampler, 2nd epoch"),
            ("write_s", "write_chips"),
            ("chips_epoch2_s", "chip store, 2nd epoch"),
        ):
            lines.append(f"{label + ', patches/s':{width}s} {n / c[key]:10.1f}")
    if "torch" in results and "worker_rss" in results["torch"]:
        w = results["torch"]["worker_rss"]
        lines.append(
            f"{'worker RSS MB (2 workers) after epoch 1 / ' + str(w['epochs']):{width}s} "
            f"{w['after_first_mb']:.1f} / {w['after_last_mb']:.1f}"
        )
    for kind, probe in results.get("memory", {}).items():
        steps = ", ".join(f"{k} {v:+.0f}" for k, v in probe["deltas_mb"].items())
        lines.append(f"memory ({kind} items), MB: {steps}")
        lines.append(
            f"  GDAL cache used {probe['gdal_cache_used_mb']:.0f} MB; augmentation copy "
            f"{probe['augmentation_copy_mb']:.2f} MB; 0-worker loader peak / after epoch "
            f"{probe['loader0_peak_rss_mb']:.0f} / {probe['loader0_rss_after_epoch_mb']:.0f} MB"
        )
    if "import" in results:
        i = results["import"]
        lines.append(
            f"{'import crossgeo: in-process s / python -c s':{width}s} "
            f"{i.get('import_crossgeo_s', float('nan')):.3f} / {i['python_c_import_crossgeo_s']:.3f}"
        )
    if "planning" in results:
        p = results["planning"]
        f = p["fractions"]
        for mask in ("aligned", "warped"):
            case = f[mask]
            label = f"class_fractions {f['windows']} windows of {f['patch_size']}, {mask}: s / per-window s"
            lines.append(
                f"{label:{width}s} {case['class_fractions_s']:.2f} / {case['per_window_s']:.2f}"
                f"{'' if case['identical'] else '  VALUES DIFFER'}"
            )
        for name in ("balanced_windows", "spatial_split"):
            case = p["tables"][name]
            label = f"{name} {p['tables']['rows']:,} rows: s / peak MB"
            lines.append(f"{label:{width}s} {case['seconds']:.3f} / {case['peak_mb']:.1f}")
    if "predict" in results:
        p, m = results["predict"]["throughput"], results["predict"]["memory"]
        lines.append(
            f"{'predict_raster / read alone, Mpixels/s (overlap 0)':{width}s} "
            f"{p['predict_pixels_per_s'] / 1e6:.1f} / {p['read_pixels_per_s'] / 1e6:.1f}"
        )
        if "shifted_ratio" in p:
            lines.append(
                f"{'predict_raster / read alone, winner changing every pixel':{width}s} {p['shifted_ratio']:10.2f}"
            )
        lines.append(
            f"{'predict_raster model/blend/write thread CPU s / read alone s':{width}s} "
            f"{p['main_thread_cpu_vs_read']:10.2f}"
        )
        lines.append(
            f"{'predict_raster ' + str(m['size'][0]) + '^2 K=5: peak / strip / full MiB':{width}s} "
            f"{m['peak_mb']:.0f} / {m['strip_mb']:.0f} / {m['full_raster_mb']:.0f}"
        )
    if "s2" in results:
        from benchmarks.s2_bench import format_table as s2_table

        lines.extend(["", *s2_table(results["s2"]).splitlines()])
    lines.append("")
    lines.append(f"{'ratio':{width}s} {'value':>10s} {'target':>8s}  status")
    lines.append("-" * (width + 30))
    for item in results["ratios"].values():
        target = "" if item["op"] == "report" else f"{item['op']} {item['target']:g}"
        lines.append(f"{item['label']:{width}s} {_fmt(item['value'], 3):>10s} {target:>8s}  {item['status']}")
    if results["skipped"]:
        lines.append("")
        for name, why in results["skipped"].items():
            lines.append(f"skipped {name}: {why.splitlines()[0]}")
    lines.append(f"\n({results['seconds']:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(format_table(results), flush=True)
    for path in [args.json, PAGE_JSON if args.page else None]:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    if args.page:
        page = [sys.executable, str(harness.REPO / "docs" / "scripts" / "performance_page.py"), str(PAGE_JSON)]
        subprocess.run(page, check=True, cwd=harness.REPO)
    missed = [k for k, v in results["ratios"].items() if v["status"] == "MISSED"]
    return 1 if args.strict and missed else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
