"""The torch loader paths of issue #26 (items 2 and 5), each case in a fresh process, rounds alternating.

``python -m benchmarks.loader_bench --scene DIR --size N --windows N [--loader-windows 600] [--rounds 3]
[--epochs 3]`` prints one JSON object (progress on stderr). The scene is `benchmarks.scenes`' (image:
RGB DEFLATE GeoTIFF; mask in EPSG:4326, warped per window), GDAL's block cache ``--cachemax`` MiB,
batch ``--batch-size``, one torch thread, the first ``--loader-windows`` windows in their order.

Cases (`CASES`): a plain loop of ``dataset[i]`` (``direct``, one thread: ``CROSSGEO_SOURCE_THREADS=0``),
and ``make_dataloader`` with 0 workers reading with one reader (``loader_0_serial``, ``read_threads=0``: the
default; a patch's mask beside its image, `crossgeo.io.SourcePool`) or
ahead on a pool of two threads (``loader_0``, ``read_threads=2``), and with 2 workers with the
default transfer (``loader_2``), float items (``loader_2_float``, ``compact_transfer=False``) or
compact batches converted into reused buffers in the main process (``loader_2_compact``;
``loader_2_compact_fresh``: each batch converted into new memory, as before the buffers). Each
case runs ``--epochs`` epochs; the first is timed (worker start-up included),
``main_rss_growth_mb`` is the main process's ``VmRSS`` after the last epoch less after the first
(heap growth), ``main_peak_rss_mb`` its ``ru_maxrss``, and ``main_cpu_ms_per_patch`` /
``workers_cpu_ms_per_patch`` the CPU time per patch of the main process (its threads included)
and of the workers: the work each path costs, steadier than patches/s on a
shared machine. The last lines of the log (and ``"ratios"`` in the JSON) are the patches/s ratios of
`RATIOS` within each round and their median: 2 workers against the 0-worker loader (issue #26's
target: >= 1.6x on two idle cores) in one command:

    python -m benchmarks.loader_bench --scene ~/.cache/crossgeo-bench/scene-8192-v1 --size 8192 --windows 2000 \
        --loader-windows 2000 --epochs 2 --cases loader_0_serial,loader_0,loader_2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from benchmarks import harness

#: case -> DataLoader workers (None: a direct loop) and make_dataloader options.
CASES: dict[str, tuple[int | None, dict[str, Any]]] = {
    "direct": (None, {}),
    "loader_0_serial": (0, {"read_threads": 0}),
    "loader_0": (0, {"read_threads": 2}),  # read-ahead (asked for: the loaders default to one reader)
    "loader_2": (2, {}),
    "loader_2_float": (2, {"compact_transfer": False}),
    "loader_2_compact": (2, {"compact_transfer": True}),
    "loader_2_compact_fresh": (2, {"compact_transfer": True, "buffers": False}),
}


def measure(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this (fresh) process."""
    import torch

    from benchmarks.scenes import N_CLASSES
    from crossgeo import PatchSampler
    from crossgeo.torch import PatchDataset, make_dataloader

    torch.set_num_threads(1)
    if CASES[case][0] is None:  # the direct loop: single-thread reads (no SourcePool), the read-ahead's baseline
        os.environ["CROSSGEO_SOURCE_THREADS"] = "0"
    scene = harness.scene(args)
    rows, cols = harness.window_offsets(scene.windows, args.loader_windows)
    import numpy as np

    windows = np.stack([rows, cols], axis=1)
    dataset = PatchDataset(
        PatchSampler(scene.image_deflate, scene.mask_4326, windows, args.patch_size, n_classes=N_CLASSES)
    )
    workers, options = CASES[case]
    out: dict[str, Any] = {"windows": len(dataset), "rss_start_mb": harness.rss_mb()}
    rss: list[float] = []
    times: list[float] = []
    if workers is None:
        passes: Any = lambda: (dataset[i] for i in range(len(dataset)))  # noqa: E731
    else:
        options = dict(options)
        fresh = not options.pop("buffers", True)
        loader = make_dataloader(dataset, batch_size=args.batch_size, num_workers=workers, shuffle=False, **options)
        if fresh:  # every batch converted into new memory (no reused buffers): how it was before them
            from crossgeo.torch.batches import OutputBuffers

            loader._buffers = OutputBuffers(slots=0)
        out["read_threads"] = loader._pool_size(dataset)
        out["converts"] = loader.converts
        passes = lambda: loader  # noqa: E731
    cpu: list[tuple[float, float]] = []
    for _ in range(args.epochs):
        start, main_cpu, workers_cpu = time.perf_counter(), time.process_time(), _children_cpu()
        count = 0
        for item in passes():
            count += int(item["image"].shape[0]) if item["image"].dim() == 4 else 1
            del item
        times.append(time.perf_counter() - start)
        cpu.append((time.process_time() - main_cpu, _children_cpu() - workers_cpu))
        rss.append(harness.rss_mb())
    out.update(
        {
            "patches_per_s": count / times[0],
            "patches_per_s_epochs": [count / t for t in times],
            "main_rss_mb": rss,
            "main_rss_growth_mb": rss[-1] - rss[0],
            "main_peak_rss_mb": harness.peak_rss_mb(),
            # CPU time per patch (all epochs): steadier than wall time on a shared machine; workers
            # are counted once they exit (non-persistent workers end with each epoch).
            "main_cpu_ms_per_patch": 1000 * sum(c[0] for c in cpu) / (count * args.epochs),
            "workers_cpu_ms_per_patch": 1000 * sum(c[1] for c in cpu) / (count * args.epochs),
        }
    )
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended children (DataLoader workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    names = [name for name in args.cases.split(",") if name] if args.cases else list(CASES)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            command = [
                sys.executable,
                "-m",
                "benchmarks.loader_bench",
                *harness.scene_args(harness.scene(args), args.cachemax, args.batch_size),
                *("--loader-windows", str(args.loader_windows), "--epochs", str(args.epochs), "--one", name),
            ]
            result = harness.run_json(command, 3600)
            runs[name].append(result)
            harness.log(
                f"  round {round_ + 1}/{args.rounds} {name:18s} {result['patches_per_s']:7.1f} patches/s, main RSS "
                f"+{result['main_rss_growth_mb']:.0f} MB over {args.epochs} epochs, "
                f"peak {result['main_peak_rss_mb']:.0f} MB ({time.perf_counter() - started:.0f} s)"
            )
    out: dict[str, Any] = {"rounds": args.rounds, "epochs": args.epochs, "statistic": "median of the rounds"}
    for name, results in runs.items():
        out[name] = {
            key: statistics.median(r[key] for r in results)
            for key in (
                "patches_per_s",
                "main_rss_growth_mb",
                "main_peak_rss_mb",
                "main_cpu_ms_per_patch",
                "workers_cpu_ms_per_patch",
            )
            if all(key in r for r in results)
        }
        out[name]["rounds"] = results
    out["ratios"] = ratios(runs)
    for label, ratio in out["ratios"].items():
        harness.log(f"  {label}: {ratio['median']:.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratio['rounds'])})")
    return out


#: (faster case, baseline case) pairs whose patches/s ratio `ratios` reports when both ran.
RATIOS = (("loader_2", "loader_0_serial"), ("loader_2", "loader_0"), ("loader_0", "loader_0_serial"))


def ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each `RATIOS` pair's patches/s ratio within each round (the cases of one round ran back to back), and the
    median over the rounds: the statistic a shared machine disturbs least."""
    out: dict[str, dict[str, Any]] = {}
    for case, base in RATIOS:
        if runs.get(case) and runs.get(base):
            per_round = [a["patches_per_s"] / b["patches_per_s"] for a, b in zip(runs[case], runs[base])]
            out[f"{case} / {base}"] = {"median": statistics.median(per_round), "rounds": per_round}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.loader_bench", cachemax=64, description=__doc__.splitlines()[0])
    parser.add_argument("--loader-windows", type=int, default=600, help="first windows of the scene per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per case (the first is timed)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the cases' order reversed every other")
    parser.add_argument("--cases", default="", help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from benchmarks.gdal import limit_block_cache

    limit_block_cache(args.cachemax)
    return harness.emit(measure(args.one, args) if args.one else orchestrate(args))


if __name__ == "__main__":
    raise SystemExit(main())
