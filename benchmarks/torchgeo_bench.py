"""crossgeo against TorchGeo, each measurement in a fresh process (run in an env that has torchgeo).

``python -m benchmarks.torchgeo_bench --scene DIR --size N --windows N ...`` prints one JSON
object (progress goes to stderr). It is the orchestrator: it never imports torch itself, it
writes the first ``--torchgeo-windows`` windows of the scene to a temporary table and starts
one fresh Python process per (library, case, round), so

* the peak RSS of a case is that process's ``ru_maxrss`` (imports included: a 0-worker
  DataLoader's process holds torch and the library it reads with);
* DataLoader workers fork from a parent that has only imported its library and built its
  dataset, not from one that already ran other cases;
* a case's rounds alternate the two libraries (crossgeo first in odd rounds, TorchGeo first in
  even ones) and the JSON keeps every round's values and their median.

The cases (same windows, same files, batch ``--batch-size``, one torch thread):

``direct_aligned`` / ``direct_warped``
    a plain loop over the dataset, no DataLoader: ``PatchDataset[i]`` (float32 image scaled to
    0..1, int64 mask) against ``IntersectionDataset(image, mask)[bounds]`` (TorchGeo's float32
    image, int64 mask), with the mask on the image grid (``mask.tif``) or in EPSG:4326
    (``mask_4326.tif``, which both libraries warp onto the image grid by nearest neighbour).
``workers_0`` / ``workers_2``
    one epoch of a DataLoader over the EPSG:4326 case: ``crossgeo.torch.make_dataloader``
    against ``torch.utils.data.DataLoader(sampler=<the windows' bounds>,
    collate_fn=stack_samples)``; worker start-up is part of the time. With 2 workers a thread
    of the parent samples the workers' ``VmRSS`` (and ``RssAnon``) from ``/proc`` every 20 ms;
    ``worker_rss_mb`` is the **mean over the workers of each worker's largest sample** (the
    same statistic for both libraries; per-worker values are kept).
``direct_warped_warm``
    the EPSG:4326 direct loop in a process whose GDAL block cache is ``--warm-cachemax`` MiB,
    over the first ``--warm-windows`` windows (whose blocks fit in it): an untimed first pass
    fills the cache, the second pass is timed.

The cold cases run with GDAL's block cache at ``--cachemax`` MiB (`benchmarks.gdal`). Each
library reads under its own GDAL settings (crossgeo enters its ``rasterio.Env``, TorchGeo uses
rasterio's defaults). A separate process checks that both return the same pixels: the first
window's image must be identical and the masks agree on most pixels (the two nearest-neighbour
warps may split exact ties differently).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

LIBRARIES = ("crossgeo", "torchgeo")
#: case -> (mask file attribute of `benchmarks.scenes.Scene`, DataLoader workers or None for a direct loop, warm)
CASES: dict[str, tuple[str, int | None, bool]] = {
    "direct_aligned": ("mask", None, False),
    "direct_warped": ("mask_4326", None, False),
    "workers_0": ("mask_4326", 0, False),
    "workers_2": ("mask_4326", 2, False),
    "direct_warped_warm": ("mask_4326", None, True),
}
SAMPLE_EVERY_S = 0.02
AGREEMENT_WINDOWS = 16


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _window_slices(image_path: str, patch_size: int, rows: Any, cols: Any) -> list[tuple[slice, slice]]:
    """TorchGeo queries (x and y slices with the image's resolution as step) of the pixel windows."""
    import rasterio

    with rasterio.open(image_path) as src:
        t = src.transform
    out = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        xmin = t.c + c * t.a
        ymax = t.f + r * t.e
        out.append((slice(xmin, xmin + patch_size * t.a, t.a), slice(ymax + patch_size * t.e, ymax, -t.e)))
    return out


def _windows(path: str) -> tuple[Any, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["row_off", "col_off"])
    return table.column("row_off").to_numpy(), table.column("col_off").to_numpy()


# ---------------------------------------------------------------------- memory from /proc


def _status_kib(pid: int, fields: tuple[str, ...] = ("VmRSS", "RssAnon", "VmHWM")) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                out[name] = int(value.split()[0])
    return out


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


class WorkerMemory(threading.Thread):
    """Largest ``VmRSS`` / ``RssAnon`` of each child process of this one, sampled while running.

    Looks for the children (DataLoader workers) by their parent pid until ``expected`` of them
    are found, then reads only their ``/proc/<pid>/status``.
    """

    def __init__(self, expected: int) -> None:
        super().__init__(daemon=True)
        self.expected = expected
        self.halt = threading.Event()
        self.peak: dict[int, dict[str, int]] = {}
        self.samples = 0

    def run(self) -> None:
        me, pids = os.getpid(), list[int]()
        while not self.halt.is_set():
            if len(pids) < self.expected:
                pids = _children(me)
            for pid in pids:
                try:
                    now = _status_kib(pid, ("VmRSS", "RssAnon"))
                except OSError:  # the worker exited
                    continue
                best = self.peak.setdefault(pid, {})
                for key, value in now.items():
                    best[key] = max(best.get(key, 0), value)
            self.samples += 1
            self.halt.wait(SAMPLE_EVERY_S)

    def stop(self) -> dict[str, Any]:
        self.halt.set()
        self.join()
        rss = [p.get("VmRSS", 0) / 1024 for p in self.peak.values()]
        anon = [p.get("RssAnon", 0) / 1024 for p in self.peak.values()]
        return {
            "worker_rss_mb": statistics.mean(rss) if rss else None,
            "worker_rss_anon_mb": statistics.mean(anon) if anon else None,
            "worker_rss_mb_per_worker": rss,
            "workers_seen": len(rss),
            "rss_samples": self.samples,
        }


# ---------------------------------------------------------------------- one measurement (child)


def _torchgeo_dataset(image: str, mask: str) -> Any:
    from torchgeo.datasets import IntersectionDataset, RasterDataset

    class Image(RasterDataset):
        is_image = True

    class Mask(RasterDataset):
        is_image = False

    return IntersectionDataset(Image(paths=[image]), Mask(paths=[mask]))


def measure(library: str, case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One (library, case) in this process; ``args.cachemax`` is already applied."""
    from benchmarks.scenes import N_CLASSES, Scene

    scene = Scene(Path(args.scene), args.size, args.patch_size, args.windows)
    mask_name, workers, warm = CASES[case]
    mask = getattr(scene, mask_name)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    if library == "crossgeo":
        from crossgeo import PatchSampler
        from crossgeo.torch import PatchDataset, make_dataloader

        dataset = PatchDataset(
            PatchSampler(scene.image_deflate, mask, args.windows_file, args.patch_size, n_classes=N_CLASSES)
        )

        def items() -> Any:
            return (dataset[i] for i in range(len(dataset)))

        def loader(n_workers: int) -> Any:
            return make_dataloader(dataset, batch_size=args.batch_size, num_workers=n_workers, shuffle=False)

    else:
        from torch.utils.data import DataLoader
        from torchgeo.datasets import stack_samples

        rows, cols = _windows(args.windows_file)
        queries = _window_slices(scene.image_deflate, args.patch_size, rows, cols)
        intersection = _torchgeo_dataset(scene.image_deflate, mask)

        def items() -> Any:
            return (intersection[q] for q in queries)

        def loader(n_workers: int) -> Any:
            # The list of bounds is the sampler: the loader visits exactly these windows, in order.
            return DataLoader(
                intersection,
                sampler=queries,
                batch_size=args.batch_size,
                num_workers=n_workers,
                collate_fn=stack_samples,
            )

    out: dict[str, Any] = {
        "setup_s": time.perf_counter() - started,
        "rss_before_mb": _status_kib(os.getpid())["VmRSS"] / 1024,
    }
    monitor = None
    if workers is None:
        passes = 2 if warm else 1
        for _ in range(passes):  # warm: the first pass fills the block cache, the last one is timed
            start = time.perf_counter()
            count = sum(1 for _item in items())
            elapsed = time.perf_counter() - start
            if warm and "cold_patches_per_s" not in out:
                out["cold_patches_per_s"] = count / elapsed
    else:
        if workers:
            monitor = WorkerMemory(workers)
            monitor.start()
        start = time.perf_counter()
        count = sum(int(batch["image"].shape[0]) for batch in loader(workers))
        elapsed = time.perf_counter() - start
    out.update({"patches_per_s": count / elapsed, "seconds": elapsed, "patches": count})
    if monitor is not None:
        out.update(monitor.stop())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if warm:
        from benchmarks.gdal import block_cache_used_bytes

        out["gdal_cache_used_mb"] = block_cache_used_bytes() / 2**20
    return out


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    """Both libraries on the first windows: the image must be identical, the masks agree on most pixels."""
    import numpy as np
    import torch
    import torchgeo

    from benchmarks.scenes import N_CLASSES, Scene
    from crossgeo import PatchSampler

    scene = Scene(Path(args.scene), args.size, args.patch_size, args.windows)
    rows, cols = _windows(args.windows_file)
    queries = _window_slices(scene.image_deflate, args.patch_size, rows, cols)[:AGREEMENT_WINDOWS]
    out: dict[str, Any] = {"torchgeo": torchgeo.__version__, "torch": torch.__version__}
    size = [args.patch_size, args.patch_size]
    for kind, mask in (("aligned", scene.mask), ("warped", scene.mask_4326)):
        intersection = _torchgeo_dataset(scene.image_deflate, mask)
        sampler = PatchSampler(scene.image_deflate, mask, args.windows_file, args.patch_size, n_classes=N_CLASSES)
        same_images, agree = [], []
        shapes: dict[str, list[int]] = {}
        for i, query in enumerate(queries):
            theirs, ours = intersection[query], sampler[i]
            image, labels = theirs["image"].numpy(), theirs["mask"].numpy().squeeze()
            shapes = shapes or {"image": list(image.shape), "mask": list(labels.shape)}
            fits = list(image.shape[-2:]) == size and list(labels.shape) == size
            same_images.append(bool(fits and (image == ours.image).all()))
            agree.append(float((labels == ours.mask).mean()) if fits else 0.0)
        out[kind] = {
            "sample_shapes": shapes,
            "image_identical_first_window": same_images[0],
            "mask_agreement_first_window": agree[0],
            "windows_checked": len(queries),
            "images_identical": int(sum(same_images)),
            "mask_agreement_mean": float(np.mean(agree)),
        }
        sampler.close()
    return out


# ---------------------------------------------------------------------- orchestration (parent)


def _child(args: argparse.Namespace, extra: list[str], cachemax: int, windows_file: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.torchgeo_bench",
        "--scene",
        args.scene,
        "--size",
        str(args.size),
        "--patch-size",
        str(args.patch_size),
        "--windows",
        str(args.windows),
        "--batch-size",
        str(args.batch_size),
        "--cachemax",
        str(cachemax),
        "--windows-file",
        windows_file,
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(extra)} exited {done.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [run[key] for run in runs if run.get(key) is not None]
            out[key] = statistics.median(values) if values else None
    out["rounds"] = runs
    return out


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from benchmarks.scenes import Scene

    scene = Scene(Path(args.scene), args.size, args.patch_size, args.windows)
    table = pq.read_table(scene.windows)
    n = min(args.torchgeo_windows or table.num_rows, table.num_rows)
    n_warm = min(args.warm_windows, n)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crossgeo-torchgeo-") as folder:
        files = {"cold": str(Path(folder) / "windows.parquet"), "warm": str(Path(folder) / "windows-warm.parquet")}
        pq.write_table(table.slice(0, n), files["cold"])
        pq.write_table(table.slice(0, n_warm), files["warm"])
        _log(f"torchgeo: agreement on the first {min(n, AGREEMENT_WINDOWS)} windows (fresh process)")
        agree = _child(args, ["--agree"], args.cachemax, files["cold"])
        out: dict[str, Any] = {
            "torchgeo": agree.pop("torchgeo"),
            "torch": agree.pop("torch"),
            "windows": n,
            "warm_windows": n_warm,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "gdal_cachemax_mb": args.cachemax,
            "warm_gdal_cachemax_mb": args.warm_cachemax,
            "statistic": "median of the rounds; libraries alternate within each case (crossgeo first in odd rounds)",
            "worker_rss_statistic": "mean over the 2 workers of each worker's largest VmRSS (sampled every 20 ms)",
            # The warped case under the original field names; both cases under "agreement".
            "sample_shapes": agree["warped"]["sample_shapes"],
            "image_identical_first_window": agree["warped"]["image_identical_first_window"],
            "mask_agreement_first_window": agree["warped"]["mask_agreement_first_window"],
            "agreement": agree,
        }
        for kind, result in agree.items():
            _log(
                f"  {kind}: image identical {result['image_identical_first_window']}, mask agreement "
                f"{result['mask_agreement_first_window']:.4f} (mean over {result['windows_checked']}: "
                f"{result['mask_agreement_mean']:.4f})"
            )
        runs: dict[str, list[dict[str, Any]]] = {f"{lib}_{case}": [] for case in CASES for lib in LIBRARIES}
        for round_ in range(args.rounds):
            for case, (_mask, _workers, warm) in CASES.items():
                order = LIBRARIES if round_ % 2 == 0 else LIBRARIES[::-1]
                for lib in order:
                    cachemax, windows_file = (
                        (args.warm_cachemax, files["warm"]) if warm else (args.cachemax, files["cold"])
                    )
                    result = _child(args, ["--measure", lib, case], cachemax, windows_file)
                    runs[f"{lib}_{case}"].append(result)
                    rss = (
                        f", worker RSS {result['worker_rss_mb']:.0f} MB"
                        if "worker_rss_mb" in result
                        else f", peak RSS {result['peak_rss_mb']:.0f} MB"
                    )
                    _log(
                        f"  round {round_ + 1}/{args.rounds} {case:18s} {lib:8s} "
                        f"{result['patches_per_s']:7.1f} patches/s{rss} ({time.perf_counter() - started:.0f} s)"
                    )
    for key, results in runs.items():
        out[key] = _medians(results)
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torchgeo_bench")
    parser.add_argument("--scene", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--windows", type=int, required=True)
    parser.add_argument("--cachemax", type=int, default=8, help="GDAL block cache (MiB) of the cold cases")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--torchgeo-windows", type=int, default=500, help="first windows of the scene read by both (0: all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case; the median counts")
    parser.add_argument("--warm-cachemax", type=int, default=512, help="GDAL block cache (MiB) of the warm case")
    parser.add_argument("--warm-windows", type=int, default=300, help="windows of the warm case (blocks must fit)")
    parser.add_argument("--windows-file", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("LIBRARY", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--agree", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure or args.agree:
        from benchmarks.gdal import limit_block_cache

        limit_block_cache(args.cachemax)
        if args.agree:
            result = agreement(args)
        else:
            library, case = args.measure
            if library not in LIBRARIES or case not in CASES:
                parser.error(f"--measure: library in {LIBRARIES}, case in {tuple(CASES)}")
            result = measure(library, case, args)
    else:
        result = orchestrate(args)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
