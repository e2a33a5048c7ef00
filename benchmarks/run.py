"""The benchmark driver: ``python -m benchmarks`` (see ``--help``).

Generates (once) or reuses the cached scenes, measures every case, prints a table of
patches/s and the target ratios of issue #6, and writes them as JSON with ``--json``.
Each ratio is measured in this one run, on the same windows and files, with GDAL's
block cache limited (``--gdal-cachemax``, MiB) for crossgeo and the baselines alike so
reads decompress as they would on a scene far larger than the cache.
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("CROSSGEO_BENCH_CACHE", Path.home() / ".cache" / "crossgeo-bench"))

#: (key, description, operator, target). Ratios are crossgeo over the baseline unless noted.
#: Descriptions name what the run measured: ``{index_rows}`` and ``{rss_epochs}`` are filled
#: from the run's settings (the targets are for the full run's 1,000,000 rows and 10 epochs).
TARGETS: list[tuple[str, str, str, float]] = [
    ("core_aligned_vs_raw", "core, aligned grids / raw bound", ">=", 0.90),
    ("core_warped_vs_raw", "core, mask in EPSG:4326 / raw warped bound", ">=", 0.85),
    ("core_vs_open_per_item", "core / open-per-item (warped, GeoTIFF)", ">=", 2.0),
    ("core_vs_open_per_item_mbtiles", "core / open-per-item (warped, MBTiles; report)", "report", 0.0),
    ("torch_vs_torchgeo", "torch DataLoader 2 workers, crossgeo / TorchGeo", ">=", 2.0),
    ("torch_2_vs_0_workers", "torch DataLoader 2 workers / 0 workers (cold)", ">=", 1.8),
    ("torch_2_vs_0_workers_compact", "torch DataLoader 2 / 0 workers, compact=True (cold)", ">=", 1.8),
    ("torch_compact_vs_float_2", "torch 2 workers, compact / float items", "report", 0.0),
    ("torchgeo_aligned", "crossgeo / TorchGeo, direct (no DataLoader), aligned mask", ">=", 3.0),
    ("torchgeo_warped", "crossgeo / TorchGeo, direct, mask in EPSG:4326", ">=", 3.0),
    ("torchgeo_loader_0", "crossgeo / TorchGeo, DataLoader bs {batch_size}, 0 workers", ">=", 3.0),
    ("torchgeo_loader_2", "crossgeo / TorchGeo, DataLoader bs {batch_size}, 2 workers", ">=", 3.0),
    ("torchgeo_worker_rss", "worker RSS (2 workers, fresh parents), crossgeo / TorchGeo", "<=", 0.8),
    ("torchgeo_peak_rss", "0-worker DataLoader peak RSS, crossgeo / TorchGeo", "<=", 0.8),
    ("warm_warped_vs_raw", "warped, warm cache, crossgeo / best raw warped read", ">=", 0.85),
    ("warm_warped_vs_torchgeo", "warped, {warm_cachemax} MiB cache (2nd pass), crossgeo / TorchGeo", ">=", 10.0),
    ("warm_aligned_vs_raw", "aligned, warm cache, crossgeo / raw", ">=", 0.9),
    ("import_s", "import crossgeo (core), seconds", "<", 1.5),
    ("tf_autotune_vs_generator", "tf.data AUTOTUNE / from_generator", ">=", 1.5),
    ("tf_autotune_vs_generator_warm", "tf.data AUTOTUNE / from_generator, warm cache", ">=", 1.5),
    ("tf_float_vs_generator_warm", "tf.data AUTOTUNE compact=False / from_generator, warm cache", "report", 0.0),
    ("colour_decode_vs_read", "colour-map decode / read time per patch", "<=", 0.10),
    ("index_build_s", "{index_rows:,}-row Parquet index: build seconds", "<", 3.0),
    ("index_rss_mb", "{index_rows:,}-row Parquet index: resident MB", "<", 40.0),
    ("worker_rss_ratio", "worker RSS after {rss_epochs} epochs / after 1", "<=", 1.05),
    ("fractions_aligned_speedup", "class_fractions / per-window reads, aligned mask", ">=", 10.0),
    ("fractions_warped_speedup", "class_fractions / per-window reads, EPSG:4326 mask", ">=", 3.0),
    ("balanced_1m_s", "balanced_windows, {planning_rows:,} candidates: seconds", "<", 2.0),
    ("balanced_1m_mb", "balanced_windows, {planning_rows:,} candidates: peak MB", "<", 200.0),
    ("split_1m_s", "spatial_split, {planning_rows:,} windows: seconds", "<", 2.0),
    ("split_1m_mb", "spatial_split, {planning_rows:,} windows: peak MB", "<", 200.0),
    ("predict_vs_read", "predict_raster pixels/s / reading the windows (overlap 0)", ">=", 0.8),
    ("predict_peak_vs_strip", "predict_raster peak memory / one strip of scores (K=5)", "<", 2.0),
    ("scenes_construction_s", "{scenes:,} scenes: SceneSampler construction seconds", "<", 15.0),
    ("scenes_vs_open_per_item", "{scenes:,} scenes, max_open=32 / open-per-item (shuffled)", ">=", 1.5),
    ("scenes_small_vs_single", "{tiles} scenes / one PatchSampler on the same windows", ">=", 0.9),
]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="crossgeo benchmark suite (issue #6): patches/s and target ratios."
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
        help="comma-separated sections to skip: io, colour, index, planning, predict, scenes, torch, tf, warm, "
        "memory, curves, torchgeo",
    )
    parser.add_argument(
        "--predict-size", type=int, default=16384, help="side of the image of the prediction memory run"
    )
    parser.add_argument(
        "--torchgeo-python",
        default=os.environ.get("CROSSGEO_BENCH_TORCHGEO_PYTHON"),
        help="python of a separate env with torchgeo (and crossgeo) installed; default: this one if it has torchgeo",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--plot", type=Path, help="also measure throughput/memory against 0..--max-workers workers and draw PNGs here"
    )
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 2, help="largest worker count plotted")
    parser.add_argument("--curve-windows", type=int, default=400, help="windows per point of the --plot curves")
    parser.add_argument("--warm-cachemax", type=int, default=512, help="GDAL block cache (MiB) of the warm rows")
    parser.add_argument("--warm-windows", type=int, default=150, help="windows of the warm-cache rows")
    parser.add_argument(
        "--torchgeo-windows",
        type=int,
        default=500,
        help="first windows both libraries read in each TorchGeo comparison case (default 500; 0: all --windows)",
    )
    parser.add_argument(
        "--torchgeo-rounds", type=int, default=3, help="alternating rounds per TorchGeo case; the median counts"
    )
    parser.add_argument(
        "--torchgeo-warm-windows", type=int, default=300, help="windows of the warm TorchGeo case (default 300)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.windows, args.repeat = 512, min(args.windows, 16), 1
        args.index_rows, args.rss_epochs, args.rss_windows = 10_000, 2, 16
        args.planning_rows, args.planning_windows = 10_000, 100
        args.predict_size = 1024
        args.curve_windows, args.warm_windows, args.max_workers = 16, 16, min(args.max_workers, 1)
        args.torchgeo_windows, args.torchgeo_rounds, args.torchgeo_warm_windows = 16, 1, 16
        args.scenes, args.scene_size, args.scene_windows, args.scene_reads, args.tiles = 20, 256, 3, 60, 8
    return args


def _subprocess_json(
    command: list[str], timeout: float, env: dict[str, str] | None = None, *, show_progress: bool = False
) -> dict[str, Any]:
    """Run ``command`` and parse the last line of its stdout as JSON.

    ``show_progress``: its stderr goes straight to ours (progress lines) instead of into the error.
    """
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    environment.update(env or {})
    stderr = None if show_progress else subprocess.PIPE
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout, cwd=REPO, env=environment
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _framework_args(args: argparse.Namespace, scene: Any) -> list[str]:
    return [
        "--scene",
        str(scene.folder),
        "--size",
        str(scene.size),
        "--patch-size",
        str(scene.patch_size),
        "--windows",
        str(scene.n_windows),
        "--cachemax",
        str(args.gdal_cachemax),
        "--batch-size",
        str(args.batch_size),
    ]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.gdal import limit_block_cache
    from benchmarks.scenes import ensure_scene

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    scene = ensure_scene(args.cache, args.size, args.windows, args.patch_size, log=_log)
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
        "counts": {
            "index_rows": args.index_rows,
            "rss_epochs": args.rss_epochs,
            "planning_rows": args.planning_rows,
            "scenes": args.scenes,
            "tiles": args.tiles,
            "batch_size": args.batch_size,
            "warm_cachemax": args.warm_cachemax,
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "throughput": {},
        "skipped": {},
    }
    throughput: dict[str, Any] = results["throughput"]
    skipped: dict[str, str] = results["skipped"]

    if "io" not in skip:
        from benchmarks import io_bench

        _log(f"I/O cases: {len(rows)} windows, best of {args.repeat} interleaved rounds")
        throughput.update(io_bench.run_cases(scene, rows, cols, args.repeat, _log))
    else:
        skipped["io"] = "--skip"

    if "colour" not in skip:
        from benchmarks import io_bench

        results["colour"] = io_bench.colour_decode(scene, rows, cols, args.repeat)
    else:
        skipped["colour"] = "--skip"

    if "index" not in skip:
        _log(f"Window index: {args.index_rows:,} rows in a fresh process")
        index_path = scene.folder / f"index-{args.index_rows}.parquet"
        if not index_path.exists():
            from benchmarks.scenes import write_windows

            write_windows(index_path, args.index_rows, scene.size, scene.patch_size, seed=7)
        results["index"] = _subprocess_json([sys.executable, "-m", "benchmarks.index_probe", str(index_path)], 300)
    else:
        skipped["index"] = "--skip"

    if "planning" not in skip:
        from benchmarks import planning_bench

        patch = 160 if scene.size >= 8192 else 64
        _log(
            f"Planning: class_fractions on {args.planning_windows} windows of {patch}; tables of {args.planning_rows:,}"
        )
        results["planning"] = {
            "fractions": planning_bench.fractions(scene, patch, args.planning_windows, args.repeat, _log),
            "tables": planning_bench.tables(args.planning_rows, args.repeat, _log),
        }
    else:
        skipped["planning"] = "--skip"
    if "predict" not in skip:
        from benchmarks import predict_bench

        _log(f"predict_raster: throughput on the scene, peak memory on {args.predict_size}^2")
        results["predict"] = {
            "throughput": predict_bench.throughput(scene.image_deflate, scene.patch_size, args.repeat),
            "memory": predict_bench.memory(predict_bench.memory_image(args.cache, args.predict_size, _log)),
        }
    else:
        skipped["predict"] = "--skip"
    if "scenes" not in skip:
        from benchmarks import catalogue

        patch = min(args.patch_size, args.scene_size // 2)
        folder = catalogue.ensure_catalogue(
            args.cache, args.scenes, args.scene_size, args.scene_windows, patch, tiles=args.tiles, log=_log
        )
        _log(f"Catalogue: {args.scenes} scenes, {args.scene_reads} shuffled reads, best of {args.repeat}")
        results["scenes"] = catalogue.run(folder, args.scene_reads, args.repeat, _log)
    else:
        skipped["scenes"] = "--skip"

    fw = _framework_args(args, scene)
    for name, module in (("torch", "torch"), ("tf", "tensorflow")):
        if name in skip:
            skipped[name] = "--skip"
        elif not _has(module):
            skipped[name] = f"{module} is not installed"
        else:
            _log(f"{name}: subprocess")
            extra = ["--rss-epochs", str(args.rss_epochs), "--rss-windows", str(args.rss_windows)]
            command = [sys.executable, "-m", "benchmarks.frameworks", name, *fw, *(extra if name == "torch" else [])]
            try:
                results[name] = _subprocess_json(command, 3600)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped[name] = f"failed: {error}"

    if "tf" not in skip and "warm" not in skip and _has("tensorflow"):
        _log(f"tf, warm cache: subprocess with GDAL_CACHEMAX {args.warm_cachemax} MiB")
        warm_fw = [
            *fw[: fw.index("--cachemax")],
            "--cachemax",
            str(args.warm_cachemax),
            *fw[fw.index("--cachemax") + 2 :],
        ]
        try:
            command = [sys.executable, "-m", "benchmarks.frameworks", "tf", *warm_fw, "--warm"]
            results["tf_warm"] = _subprocess_json(command, 3600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["tf_warm"] = f"failed: {error}"

    if "warm" in skip:
        skipped["warm"] = "--skip"
    else:
        _log(f"warm cache: subprocess with GDAL_CACHEMAX {args.warm_cachemax} MiB")
        warm = [*fw, "--cachemax", str(args.warm_cachemax), "--warm-windows", str(args.warm_windows)]
        try:
            results["warm"] = _subprocess_json([sys.executable, "-m", "benchmarks.warm", *warm], 3600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["warm"] = f"failed: {error}"

    if "memory" in skip or not _has("torch"):
        skipped["memory"] = "--skip" if "memory" in skip else "torch is not installed"
    else:
        _log("memory: what a fresh worker-like process holds (float and compact items)")
        results["memory"] = {}
        for kind, flag in (("float", []), ("compact", ["--compact"])):
            try:
                command = [sys.executable, "-m", "benchmarks.memory_probe", *fw, *flag]
                results["memory"][kind] = _subprocess_json(command, 3600)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped[f"memory_{kind}"] = f"failed: {error}"
    started_import = time.perf_counter()
    _subprocess_json([sys.executable, "-c", "import crossgeo; print('{}')"], 120)
    results["import"] = {"python_c_import_crossgeo_s": time.perf_counter() - started_import}
    probe = results.get("memory", {}).get("float", {})
    if "import_crossgeo_s" in probe:
        results["import"]["import_crossgeo_s"] = probe["import_crossgeo_s"]

    if args.plot is not None and _has("torch") and "curves" not in skip:
        _log(f"curves: 0..{args.max_workers} workers, {args.curve_windows} windows per point")
        curve = [*fw, "--max-workers", str(args.max_workers), "--curve-windows", str(args.curve_windows)]
        try:
            results["curves"] = _subprocess_json([sys.executable, "-m", "benchmarks.curves", *curve], 3600)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            skipped["curves"] = f"failed: {error}"

    if "torchgeo" in skip:
        skipped["torchgeo"] = "--skip"
    else:
        python = args.torchgeo_python or (sys.executable if _has("torchgeo") else None)
        if python is None:
            skipped["torchgeo"] = "torchgeo is not installed (pass --torchgeo-python of an env that has it)"
        else:
            windows = min(args.torchgeo_windows or scene.n_windows, scene.n_windows)
            _log(
                f"torchgeo: {python}, {windows} windows, {args.torchgeo_rounds} alternating rounds per case, "
                f"each in a fresh process (GDAL_CACHEMAX {args.gdal_cachemax} MiB; warm {args.warm_cachemax} MiB)"
            )
            tg = [
                *fw,
                "--torchgeo-windows",
                str(windows),
                "--rounds",
                str(args.torchgeo_rounds),
                "--warm-cachemax",
                str(args.warm_cachemax),
                "--warm-windows",
                str(args.torchgeo_warm_windows),
            ]
            try:
                results["torchgeo"] = _subprocess_json(
                    [python, "-m", "benchmarks.torchgeo_bench", *tg], 3600, show_progress=True
                )
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                skipped["torchgeo"] = f"failed: {error}"

    results["ratios"] = ratios(results)
    results["seconds"] = time.perf_counter() - started
    return results


def _pps(results: dict[str, Any], *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if node is not None else None


def _identical_speedup(results: dict[str, Any], mask: str) -> float | None:
    """class_fractions' speed-up over per-window reads; 0 (a miss) when the values differ."""
    case = results.get("planning", {}).get("fractions", {}).get(mask)
    if case is None:
        return None
    return float(case["speedup"]) if case["identical"] else 0.0


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    t = results.get("throughput", {})

    def pps(name: str) -> float | None:
        return t[name]["patches_per_s"] if name in t else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    raw_warped = max(filter(None, [pps("raw_warped_full_vrt"), pps("raw_warped_window_vrt")]), default=None)
    values: dict[str, float | None] = {
        "core_aligned_vs_raw": div(pps("core_aligned"), pps("raw_aligned")),
        "core_warped_vs_raw": div(pps("core_warped"), raw_warped),
        "core_vs_open_per_item": div(pps("core_warped"), pps("open_per_item")),
        "core_vs_open_per_item_mbtiles": div(pps("core_warped_mbtiles"), pps("open_per_item_mbtiles")),
        "torch_vs_torchgeo": div(
            _pps(results, "torchgeo", "crossgeo_workers_2", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_workers_2", "patches_per_s"),
        ),
        "torch_2_vs_0_workers": div(
            _pps(results, "torch", "workers_2", "patches_per_s"), _pps(results, "torch", "workers_0", "patches_per_s")
        ),
        "torch_2_vs_0_workers_compact": div(
            _pps(results, "torch", "workers_2_compact", "patches_per_s"),
            _pps(results, "torch", "workers_0_compact", "patches_per_s"),
        ),
        "torch_compact_vs_float_2": div(
            _pps(results, "torch", "workers_2_compact", "patches_per_s"),
            _pps(results, "torch", "workers_2", "patches_per_s"),
        ),
        "torchgeo_aligned": div(
            _pps(results, "torchgeo", "crossgeo_direct_aligned", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_direct_aligned", "patches_per_s"),
        ),
        "torchgeo_warped": div(
            _pps(results, "torchgeo", "crossgeo_direct_warped", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_direct_warped", "patches_per_s"),
        ),
        "torchgeo_loader_0": div(
            _pps(results, "torchgeo", "crossgeo_workers_0", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_workers_0", "patches_per_s"),
        ),
        "torchgeo_loader_2": div(
            _pps(results, "torchgeo", "crossgeo_workers_2", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_workers_2", "patches_per_s"),
        ),
        "torchgeo_worker_rss": div(
            _pps(results, "torchgeo", "crossgeo_workers_2", "worker_rss_mb"),
            _pps(results, "torchgeo", "torchgeo_workers_2", "worker_rss_mb"),
        ),
        "torchgeo_peak_rss": div(
            _pps(results, "torchgeo", "crossgeo_workers_0", "peak_rss_mb"),
            _pps(results, "torchgeo", "torchgeo_workers_0", "peak_rss_mb"),
        ),
        "warm_warped_vs_raw": div(
            _pps(results, "warm", "core_warped", "patches_per_s"),
            max(
                filter(
                    None,
                    [
                        _pps(results, "warm", "raw_warped_full_vrt", "patches_per_s"),
                        _pps(results, "warm", "raw_warped_window_vrt", "patches_per_s"),
                    ],
                ),
                default=None,
            ),
        ),
        "warm_warped_vs_torchgeo": div(
            _pps(results, "torchgeo", "crossgeo_direct_warped_warm", "patches_per_s"),
            _pps(results, "torchgeo", "torchgeo_direct_warped_warm", "patches_per_s"),
        ),
        "warm_aligned_vs_raw": div(
            _pps(results, "warm", "core_aligned", "patches_per_s"),
            _pps(results, "warm", "raw_aligned", "patches_per_s"),
        ),
        "import_s": _pps(results, "import", "import_crossgeo_s"),
        "tf_autotune_vs_generator": div(
            _pps(results, "tf", "autotune", "patches_per_s"), _pps(results, "tf", "from_generator", "patches_per_s")
        ),
        "tf_autotune_vs_generator_warm": div(
            _pps(results, "tf_warm", "autotune", "patches_per_s"),
            _pps(results, "tf_warm", "from_generator", "patches_per_s"),
        ),
        "tf_float_vs_generator_warm": div(
            _pps(results, "tf_warm", "autotune_float", "patches_per_s"),
            _pps(results, "tf_warm", "from_generator", "patches_per_s"),
        ),
        "colour_decode_vs_read": _pps(results, "colour", "ratio"),
        "index_build_s": _pps(results, "index", "build_s"),
        "index_rss_mb": _pps(results, "index", "rss_delta_mb"),
        "worker_rss_ratio": _pps(results, "torch", "worker_rss", "ratio"),
        "fractions_aligned_speedup": _identical_speedup(results, "aligned"),
        "fractions_warped_speedup": _identical_speedup(results, "warped"),
        "balanced_1m_s": _pps(results, "planning", "tables", "balanced_windows", "seconds"),
        "balanced_1m_mb": _pps(results, "planning", "tables", "balanced_windows", "peak_mb"),
        "split_1m_s": _pps(results, "planning", "tables", "spatial_split", "seconds"),
        "split_1m_mb": _pps(results, "planning", "tables", "spatial_split", "peak_mb"),
        "predict_vs_read": _pps(results, "predict", "throughput", "ratio"),
        "predict_peak_vs_strip": _pps(results, "predict", "memory", "ratio"),
        "scenes_construction_s": _pps(results, "scenes", "construction_s"),
        "scenes_vs_open_per_item": div(
            _pps(results, "scenes", "throughput", "scenes_max_open", "patches_per_s"),
            _pps(results, "scenes", "throughput", "open_per_item", "patches_per_s"),
        ),
        "scenes_small_vs_single": div(
            _pps(results, "scenes", "throughput", "scenes_small", "patches_per_s"),
            _pps(results, "scenes", "throughput", "single", "patches_per_s"),
        ),
    }
    enforce = results.get("mode") == "full"
    counts = results["counts"]
    out: dict[str, Any] = {}
    for key, template, op, target in TARGETS:
        label = template.format(**counts)
        value = values[key]
        if value is None:
            status = "skipped"
        elif op == "report":
            status = "reported"
        elif not enforce:
            status = "not enforced (smoke)"
        else:
            ok = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
            status = "met" if ok else "MISSED"
        out[key] = {"label": label, "value": value, "op": op, "target": target, "status": status}
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


def _torchgeo_rows(tg: dict[str, Any], width: int) -> list[str]:
    """The TorchGeo peer block: both libraries side by side (medians of the alternating rounds)."""
    bs = tg.get("batch_size", 16)
    lines = [
        "",
        f"TorchGeo {tg.get('torchgeo')} peer (torch {tg.get('torch')}): {tg.get('windows')} windows, median of "
        f"{tg.get('rounds')} alternating rounds, each case in a fresh process; GDAL_CACHEMAX "
        f"{tg.get('gdal_cachemax_mb')} MiB (warm row: {tg.get('warm_gdal_cachemax_mb')} MiB, "
        f"{tg.get('warm_windows')} windows)",
        f"{'':{width}s} {'crossgeo':>10s} {'TorchGeo':>10s}",
    ]
    rows = [
        ("direct_aligned", "patches_per_s", "direct dataset[i], aligned mask, patches/s"),
        ("direct_warped", "patches_per_s", "direct dataset[i], EPSG:4326 mask, patches/s"),
        ("workers_0", "patches_per_s", f"DataLoader bs {bs}, 0 workers (4326 mask), patches/s"),
        ("workers_2", "patches_per_s", f"DataLoader bs {bs}, 2 workers (4326 mask), patches/s"),
        ("direct_warped_warm", "patches_per_s", "direct, 4326 mask, warm cache (2nd pass), patches/s"),
        ("workers_0", "peak_rss_mb", "0-worker DataLoader process: peak RSS MB"),
        ("workers_2", "worker_rss_mb", "2-worker DataLoader: worker RSS MB (mean of maxima)"),
        ("workers_2", "worker_rss_anon_mb", "2-worker DataLoader: worker RssAnon MB (mean of maxima)"),
    ]
    for case, field, label in rows:
        ours, theirs = _pps(tg, f"crossgeo_{case}", field), _pps(tg, f"torchgeo_{case}", field)
        if ours is not None or theirs is not None:
            lines.append(f"{label:{width}s} {_fmt(ours):>10s} {_fmt(theirs):>10s}")
    for kind in ("aligned", "warped"):
        a = tg.get("agreement", {}).get(kind)
        if a:
            label = f"same window, {kind} mask: image identical / mask agreement"
            lines.append(
                f"{label:{width}s} {'yes' if a['image_identical_first_window'] else 'NO':>10s} "
                f"{a['mask_agreement_first_window']:10.4f}  (first window; mean of {a['windows_checked']}: "
                f"{a['mask_agreement_mean']:.4f})"
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
    if "torchgeo" in results:
        lines.extend(_torchgeo_rows(results["torchgeo"], width))
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
            ("open_per_item", f"{sc['catalogue']['scenes']} scenes, open-per-item (same windows)"),
            ("scenes_small", f"{sc['catalogue']['tiles']} scenes cut from one raster (shuffled)"),
            ("single", "one PatchSampler on that raster (same windows)"),
        ):
            lines.append(f"{label:{width}s} {sc['throughput'][key]['patches_per_s']:10.1f}")
        lines.append(
            f"{str(sc['catalogue']['scenes']) + ' scenes: construction s, wall / CPU':{width}s} "
            f"{sc['construction_s']:.2f} / {sc['construction_cpu_s']:.2f}"
        )
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
        lines.append(
            f"{'predict_raster model/blend/write thread CPU s / read alone s':{width}s} "
            f"{p['main_thread_cpu_vs_read']:10.2f}"
        )
        lines.append(
            f"{'predict_raster ' + str(m['size'][0]) + '^2 K=5: peak / strip / full MiB':{width}s} "
            f"{m['peak_mb']:.0f} / {m['strip_mb']:.0f} / {m['full_raster_mb']:.0f}"
        )
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=_json_default))
    if args.plot is not None:
        if "curves" not in results:
            print(f"--plot: no curves measured ({results['skipped'].get('curves', 'torch missing')})", file=sys.stderr)
        elif not _has("matplotlib"):
            print("--plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        else:
            from benchmarks.plot import plot

            for path in plot(results, args.plot):
                print(f"wrote {path}", file=sys.stderr)
    missed = [k for k, v in results["ratios"].items() if v["status"] == "MISSED"]
    return 1 if args.strict and missed else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
