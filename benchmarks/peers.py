"""crossgeo against its peers, each measurement in a fresh process: TorchGeo and the original.

The peers (run in an env that has them: ``tox -e bench``):

``torchgeo``
    TorchGeo's ``IntersectionDataset(RasterDataset image, RasterDataset mask)`` queried with each
    window's bounds (a list of bounds as the DataLoader's sampler, ``stack_samples`` as collate).
``original``
    the original ``MBTilesCropsGeoTifMaskDataset`` (``pytorch_segmentation_models_trainer``),
    driven as its users do: imported from its module, built from the image and mask paths, a crops
    CSV of ``row_off``/``col_off`` and the patch size (``n_classes`` = the scene's classes, so the
    mask keeps its class values), with a plain torch ``DataLoader``. It reopens both rasters and
    builds a ``WarpedVRT`` of the mask for every item.

``python -m benchmarks.peers --scene DIR --size N --windows N ...`` prints one JSON object
(progress goes to stderr). It is the orchestrator: it never imports torch itself, it writes the
first ``--peer-windows`` windows of the scene to a temporary table (Parquet for crossgeo, CSV for
the original) and starts one fresh Python process per (library, case, round), so

* the peak RSS of a case is that process's ``ru_maxrss`` (imports included: a 0-worker
  DataLoader's process holds torch and the library it reads with);
* DataLoader workers fork from a parent that has only imported its library and built its
  dataset, not from one that already ran other cases;
* a case's rounds alternate the libraries (round 1 crossgeo first, round 2 reversed, ...) and the
  JSON keeps every round's values and their median.

A peer that is not installed is listed under ``"missing"`` and its cases are not run.

The scene's grid (``--grid``): ``utm`` (default, as issue #26 measures) reads ``image_utm.tif`` with
``mask_utm.tif`` as the aligned mask; ``mercator`` reads ``image_deflate.tif`` with ``mask.tif``. The
EPSG:4326 mask is ``mask_4326.tif`` on both (on Web Mercator its warp separates into rows and columns,
on UTM it does not).

The cases (same windows, same files, batch ``--batch-size``, one torch thread):

``direct_aligned`` / ``direct_warped``
    a plain loop over the dataset, no DataLoader: ``PatchDataset[i]`` (float32 image scaled to
    0..1, int64 mask), TorchGeo's ``IntersectionDataset[bounds]`` (float32 image, int64 mask) and
    the original's ``dataset[i]`` (float32 image scaled to 0..1, int64 mask), with the mask on the
    image grid (``mask.tif``) or in EPSG:4326 (``mask_4326.tif``, which all three warp onto the
    image grid by nearest neighbour).
``workers_0`` ... ``workers_N`` (``--max-workers N``, default 2)
    one epoch of a DataLoader over the EPSG:4326 case (``crossgeo.torch.make_dataloader``, the
    plain ``torch.utils.data.DataLoader`` for the peers); worker start-up is part of the time.
    With workers a thread of the parent samples the workers' ``VmRSS`` (and ``RssAnon``, ``Pss`` and
    private memory) from ``/proc`` (`benchmarks.harness.WorkerMemory`); ``worker_rss_mb`` is the
    **mean over the workers of each worker's largest sample** (per-worker values are kept).
    ``VmRSS`` counts the pages a worker shares with its parent (PyTorch's import: ~350 MB with a CUDA
    build of torch 2.14); ``worker_private_mb`` is what each worker holds alone.
``direct_warped_warm``
    (crossgeo and TorchGeo) the EPSG:4326 direct loop in a process whose GDAL block cache is
    ``--warm-cachemax`` MiB, over the first ``--warm-windows`` windows (whose blocks fit in it):
    an untimed first pass fills the cache, the second pass is timed.

The cold cases run with GDAL's block cache at ``--cachemax`` MiB (`benchmarks.gdal`). Each
library reads under its own GDAL settings (crossgeo enters its ``rasterio.Env``, the peers use
rasterio's defaults). A separate process per peer checks that it returns crossgeo's pixels on
the first windows: the images must be identical and the masks agree on most pixels (two
nearest-neighbour warps may split exact ties differently).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

LIBRARIES = ("crossgeo", "torchgeo", "original")
#: The module whose presence makes a library measurable, and how the tables name it.
MODULES = {
    "crossgeo": "crossgeo",
    "torchgeo": "torchgeo",
    "original": "pytorch_segmentation_models_trainer",
}
ORIGINAL_MODULE = "pytorch_segmentation_models_trainer.dataset_loader.mbtiles_crops_dataset"
Case = tuple[str, int | None, bool]
"""(mask file attribute of `benchmarks.scenes.Scene`, DataLoader workers or None for a direct loop, warm)."""


def cases(max_workers: int = 2) -> dict[str, Case]:
    """The cases in the order they run: direct loops, a DataLoader at 0..``max_workers`` workers, the warm loop."""
    loaders: dict[str, Case] = {f"workers_{n}": ("mask_4326", n, False) for n in range(max_workers + 1)}
    return {
        "direct_aligned": ("mask", None, False),
        "direct_warped": ("mask_4326", None, False),
        **loaders,
        "direct_warped_warm": ("mask_4326", None, True),
    }


def case_spec(name: str) -> Case:
    """The case called ``name`` (``workers_N`` for any N); KeyError when there is none."""
    prefix, _, count = name.partition("workers_")
    if not prefix and count.isdigit():
        return ("mask_4326", int(count), False)
    return cases(0)[name]


CASES = cases(2)
#: Cases a library skips: the warm row is crossgeo's block-cache reuse against TorchGeo's; the
#: original reopens its rasters per item, so it has no cache to warm.
NOT_RUN = {("original", "direct_warped_warm")}
AGREEMENT_WINDOWS = 16


def installed(library: str) -> bool:
    """Whether ``library``'s module can be imported in this interpreter (without importing it)."""
    try:
        return importlib.util.find_spec(MODULES[library]) is not None
    except (ImportError, ValueError):
        return False


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


def _torchgeo_dataset(image: str, mask: str) -> Any:
    from torchgeo.datasets import IntersectionDataset, RasterDataset

    class Image(RasterDataset):
        is_image = True

    class Mask(RasterDataset):
        is_image = False

    return IntersectionDataset(Image(paths=[image]), Mask(paths=[mask]))


def _original_dataset(image: str, mask: str, crops_csv: str, patch_size: int) -> Any:
    """The original ``MBTilesCropsGeoTifMaskDataset`` as its YAML configs build it (one class per value)."""
    import importlib

    from benchmarks.scenes import N_CLASSES

    module = importlib.import_module(ORIGINAL_MODULE)
    return module.MBTilesCropsGeoTifMaskDataset(
        image_mbtiles_path=image, mask_path=mask, crops_path=crops_csv, patch_size=patch_size, n_classes=N_CLASSES
    )


def _csv_path(windows_file: str) -> str:
    """The crops CSV written beside the Parquet windows table (same rows)."""
    return str(Path(windows_file).with_suffix(".csv"))


# ---------------------------------------------------------------------- one measurement (child)


GRIDS = {"utm": ("image_utm", "mask_utm"), "mercator": ("image_deflate", "mask")}
"""``--grid``: the scene's image file and its aligned mask (`benchmarks.scenes.Scene` attributes)."""


def scene_files(args: argparse.Namespace, mask_name: str) -> tuple[str, str]:
    """The image and the mask of a case's mask name (``mask``: the grid's aligned mask; ``mask_4326``)."""
    scene = harness.scene(args)
    image, aligned = GRIDS[args.grid]
    return getattr(scene, image), getattr(scene, aligned if mask_name == "mask" else mask_name)


def _readers(library: str, mask: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """``(items, loader)`` of ``library``: an iterator over the items, and a DataLoader factory."""
    image = scene_files(args, "mask")[0]
    if library == "crossgeo":
        from benchmarks.scenes import N_CLASSES
        from crossgeo import PatchSampler
        from crossgeo.torch import PatchDataset, make_dataloader

        dataset = PatchDataset(PatchSampler(image, mask, args.windows_file, args.patch_size, n_classes=N_CLASSES))
        return (
            lambda: (dataset[i] for i in range(len(dataset))),
            lambda n_workers: make_dataloader(
                dataset, batch_size=args.batch_size, num_workers=n_workers, shuffle=False
            ),
        )
    from torch.utils.data import DataLoader

    if library == "torchgeo":
        from torchgeo.datasets import stack_samples

        rows, cols = harness.window_offsets(args.windows_file)
        queries = _window_slices(image, args.patch_size, rows, cols)
        intersection = _torchgeo_dataset(image, mask)
        # The list of bounds is the sampler: the loader visits exactly these windows, in order.
        return (
            lambda: (intersection[q] for q in queries),
            lambda n_workers: DataLoader(
                intersection,
                sampler=queries,
                batch_size=args.batch_size,
                num_workers=n_workers,
                collate_fn=stack_samples,
            ),
        )
    original = _original_dataset(image, mask, _csv_path(args.windows_file), args.patch_size)
    return (
        lambda: (original[i] for i in range(len(original))),
        lambda n_workers: DataLoader(original, batch_size=args.batch_size, num_workers=n_workers, shuffle=False),
    )


def measure(library: str, case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One (library, case) in this process; ``args.cachemax`` is already applied."""
    mask_name, workers, warm = case_spec(case)
    mask = scene_files(args, mask_name)[1]
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    items, loader = _readers(library, mask, args)
    out: dict[str, Any] = {"setup_s": time.perf_counter() - started, "rss_before_mb": harness.rss_mb()}
    monitor = None
    if workers is None:
        for _ in range(2 if warm else 1):  # warm: the first pass fills the block cache, the last one is timed
            start = time.perf_counter()
            count = sum(1 for _item in items())
            elapsed = time.perf_counter() - start
            if warm and "cold_patches_per_s" not in out:
                out["cold_patches_per_s"] = count / elapsed
    else:
        if workers:
            monitor = harness.WorkerMemory(workers)
            monitor.start()
        start = time.perf_counter()
        count = sum(int(batch["image"].shape[0]) for batch in loader(workers))
        elapsed = time.perf_counter() - start
    out.update({"patches_per_s": count / elapsed, "seconds": elapsed, "patches": count})
    if monitor is not None:
        out.update(monitor.stop())
    out["peak_rss_mb"] = harness.peak_rss_mb()
    if warm:
        from benchmarks.gdal import block_cache_used_bytes

        out["gdal_cache_used_mb"] = block_cache_used_bytes() / 2**20
    return out


def _peer_items(library: str, mask: str, args: argparse.Namespace, n: int) -> list[tuple[Any, Any]]:
    """The first ``n`` (image uint8-valued array, mask array) pairs a peer returns."""
    image = scene_files(args, "mask")[0]
    if library == "torchgeo":
        rows, cols = harness.window_offsets(args.windows_file)
        dataset = _torchgeo_dataset(image, mask)
        samples = [dataset[q] for q in _window_slices(image, args.patch_size, rows, cols)[:n]]
        return [(s["image"].numpy(), s["mask"].numpy().squeeze()) for s in samples]
    original = _original_dataset(image, mask, _csv_path(args.windows_file), args.patch_size)
    # The original scales uint8 images by 1/255; scaled back they must be the stored values.
    samples = [original[i] for i in range(n)]
    return [((s["image"].numpy() * 255).round(), s["mask"].numpy()) for s in samples]


def agreement(library: str, args: argparse.Namespace) -> dict[str, Any]:
    """A peer and crossgeo on the first windows: the image must be identical, the masks agree on most pixels."""
    import numpy as np

    from benchmarks.scenes import N_CLASSES
    from crossgeo import PatchSampler

    n = min(AGREEMENT_WINDOWS, len(harness.window_offsets(args.windows_file)[0]))
    out: dict[str, Any] = {}
    size = [args.patch_size, args.patch_size]
    for kind, name in (("aligned", "mask"), ("warped", "mask_4326")):
        image_path, mask = scene_files(args, name)
        sampler = PatchSampler(image_path, mask, args.windows_file, args.patch_size, n_classes=N_CLASSES)
        same_images, agree = [], []
        shapes: dict[str, list[int]] = {}
        for i, (image, labels) in enumerate(_peer_items(library, mask, args, n)):
            ours = sampler[i]
            shapes = shapes or {"image": list(image.shape), "mask": list(labels.shape)}
            fits = list(image.shape[-2:]) == size and list(labels.shape) == size
            same_images.append(bool(fits and (image == ours.image).all()))
            agree.append(float((labels == ours.mask).mean()) if fits else 0.0)
        out[kind] = {
            "sample_shapes": shapes,
            "image_identical_first_window": same_images[0],
            "mask_agreement_first_window": agree[0],
            "windows_checked": n,
            "images_identical": int(sum(same_images)),
            "mask_agreement_mean": float(np.mean(agree)),
        }
        sampler.close()
    return out


def versions(library: str) -> dict[str, str]:
    """The version of ``library`` and of torch in this process (imports them, as a measurement would)."""
    import importlib
    import importlib.metadata

    import torch

    module = importlib.import_module(ORIGINAL_MODULE if library == "original" else MODULES[library])
    version = getattr(module, "__version__", None)
    if version is None:  # the original has no __version__; its distribution's metadata has it
        version = importlib.metadata.version("pytorch-segmentation-models-trainer")
    return {"version": str(version), "torch": torch.__version__}


# ---------------------------------------------------------------------- orchestration (parent)


def _child(args: argparse.Namespace, extra: list[str], cachemax: int, windows_file: str) -> dict[str, Any]:
    fields = argparse.Namespace(**{**vars(args), "cachemax": cachemax})
    command = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        *harness.scene_args(harness.scene(fields), cachemax, args.batch_size),
        "--windows-file",
        windows_file,
        *extra,
    ]
    return harness.run_json(command, 1800)


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [run[key] for run in runs if run.get(key) is not None]
            out[key] = statistics.median(values) if values else None
    out["rounds"] = runs
    return out


def _order(round_: int, libraries: list[str]) -> list[str]:
    """The libraries' order in round ``round_`` (0-based): rotated by one each round, reversed every other."""
    shift = round_ % len(libraries)
    rotated = libraries[shift:] + libraries[:shift]
    return rotated if round_ % 2 == 0 else rotated[::-1]


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    scene = harness.scene(args)
    table = pq.read_table(scene.windows, columns=["row_off", "col_off"])
    n = min(args.peer_windows or table.num_rows, table.num_rows)
    n_warm = min(args.warm_windows, n)
    libraries = [lib for lib in LIBRARIES if installed(lib)]
    out: dict[str, Any] = {
        "missing": {lib: f"{MODULES[lib]} is not installed" for lib in LIBRARIES if lib not in libraries},
        "windows": n,
        "warm_windows": n_warm,
        "rounds": args.rounds,
        "max_workers": args.max_workers,
        "batch_size": args.batch_size,
        "grid": args.grid,
        "gdal_cachemax_mb": args.cachemax,
        "warm_gdal_cachemax_mb": args.warm_cachemax,
        "statistic": "median of the rounds; the libraries' order changes every round",
        "worker_rss_statistic": "mean over the 2 workers of each worker's largest VmRSS "
        f"(sampled every {harness.SAMPLE_EVERY_S} s)",
        "versions": {},
        "agreement": {},
    }
    if "crossgeo" not in libraries:
        raise SystemExit("benchmarks.peers: crossgeo is not importable in this interpreter")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crossgeo-peers-") as folder:
        files = {"cold": str(Path(folder) / "windows.parquet"), "warm": str(Path(folder) / "windows-warm.parquet")}
        for key, count in (("cold", n), ("warm", n_warm)):
            pq.write_table(table.slice(0, count), files[key])
            pcsv.write_csv(table.slice(0, count), _csv_path(files[key]))
        for lib in libraries:
            out["versions"][lib] = _child(args, ["--versions", lib], args.cachemax, files["cold"])
        for lib in libraries[1:]:
            harness.log(f"peers: {lib} against crossgeo on the first {min(n, AGREEMENT_WINDOWS)} windows")
            agree = out["agreement"][lib] = _child(args, ["--agree", lib], args.cachemax, files["cold"])
            for kind, result in agree.items():
                harness.log(
                    f"  {kind}: image identical {result['image_identical_first_window']}, mask agreement "
                    f"{result['mask_agreement_first_window']:.4f} (mean over {result['windows_checked']}: "
                    f"{result['mask_agreement_mean']:.4f})"
                )
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.rounds):
            for name, (_mask, _workers, warm) in cases(args.max_workers).items():
                for lib in _order(round_, libraries):
                    if (lib, name) in NOT_RUN:
                        continue
                    cachemax, windows_file = (
                        (args.warm_cachemax, files["warm"]) if warm else (args.cachemax, files["cold"])
                    )
                    result = _child(args, ["--measure", lib, name], cachemax, windows_file)
                    runs.setdefault(f"{lib}_{name}", []).append(result)
                    rss = (
                        f", worker RSS {result['worker_rss_mb']:.0f} MB"
                        if "worker_rss_mb" in result
                        else f", peak RSS {result['peak_rss_mb']:.0f} MB"
                    )
                    harness.log(
                        f"  round {round_ + 1}/{args.rounds} {name:18s} {lib:8s} "
                        f"{result['patches_per_s']:7.1f} patches/s{rss} ({time.perf_counter() - started:.0f} s)"
                    )
    for key, results in runs.items():
        out[key] = _medians(results)
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--peer-windows", type=int, default=0, help="first windows of the scene read by all (0: all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case, the order changing; the median counts")
    parser.add_argument("--warm-cachemax", type=int, default=512, help="GDAL block cache (MiB) of the warm case")
    parser.add_argument("--warm-windows", type=int, default=300, help="windows of the warm case (blocks must fit)")
    parser.add_argument("--max-workers", type=int, default=2, help="DataLoader cases at 0..N workers (default 2)")
    parser.add_argument("--grid", choices=tuple(GRIDS), default="utm", help="the scene's grid (default utm)")
    parser.add_argument("--windows-file", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("LIBRARY", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--agree", choices=LIBRARIES[1:], help=argparse.SUPPRESS)
    parser.add_argument("--versions", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.versions:
        return harness.emit(versions(args.versions))
    if args.measure or args.agree:
        from benchmarks.gdal import limit_block_cache

        limit_block_cache(args.cachemax)
        if args.agree:
            return harness.emit(agreement(args.agree, args))
        library, name = args.measure
        try:
            case_spec(name)
        except KeyError:
            name = ""
        if library not in LIBRARIES or not name:
            parser.error(f"--measure: library in {LIBRARIES}, case in {tuple(CASES)} (workers_N for any N)")
        return harness.emit(measure(library, name, args))
    return harness.emit(orchestrate(args))


if __name__ == "__main__":
    raise SystemExit(main())
