"""What a DataLoader worker holds, step by step, in a fresh process (prints JSON).

``python -m benchmarks.memory_probe --scene DIR --size N --windows N --cachemax MB``: RSS
after the interpreter, ``import crossgeo`` (core), ``import torch``, building the sampler
(window index), the first read (handles), an epoch of reads (GDAL block cache + allocator
retention), ``crossgeo.memory.trim_heap`` and one augmentation copy; then peak RSS of a
0-worker DataLoader epoch with float items and with compact items, and GDAL's cache use.
"""

from __future__ import annotations

import copy
import gc
import time
from typing import Any

from benchmarks import harness


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.memory_probe")
    parser.add_argument("--compact", action="store_true", help="the loader epoch uses compact items")
    args = parser.parse_args(argv)
    steps: dict[str, float] = {"interpreter": harness.rss_mb()}
    t0 = time.perf_counter()
    import crossgeo  # noqa: F401

    steps["import crossgeo"] = harness.rss_mb()
    import_s = time.perf_counter() - t0
    from benchmarks.gdal import _gdal, limit_block_cache

    limit_block_cache(args.cachemax)
    steps["rasterio + GDAL loaded"] = harness.rss_mb()
    import torch

    torch.set_num_threads(1)
    steps["import torch"] = harness.rss_mb()
    from benchmarks.scenes import N_CLASSES
    from crossgeo import PatchSampler
    from crossgeo.memory import trim_heap
    from crossgeo.torch import PatchDataset, make_dataloader

    scene = harness.scene(args)
    sampler = PatchSampler(scene.image_deflate, scene.mask_4326, scene.windows, args.patch_size, n_classes=N_CLASSES)
    steps["sampler (window index)"] = harness.rss_mb()
    sampler[0]
    steps["first read (handles)"] = harness.rss_mb()
    dataset = PatchDataset(sampler)
    for i in range(len(sampler)):
        dataset[i]
    gdal = _gdal()
    gdal.GDALGetCacheUsed64.restype = __import__("ctypes").c_int64
    cache_used = gdal.GDALGetCacheUsed64() / 2**20
    steps["epoch of items (GDAL cache + heap)"] = harness.rss_mb()
    gc.collect()
    trim_heap()
    steps["after trim_heap"] = harness.rss_mb()
    augmentation = PatchDataset(sampler, augmentation_list=[{"_target_": "albumentations.HorizontalFlip"}]).augmentation
    before = harness.rss_mb()
    copies = [copy.deepcopy(augmentation) for _ in range(8)]
    augmentation_mb = (harness.rss_mb() - before) / len(copies)
    peak_before = harness.peak_rss_mb()
    loader = make_dataloader(PatchDataset(sampler, compact=args.compact), batch_size=args.batch_size)
    for _ in loader:
        pass
    peak = harness.peak_rss_mb()
    out: dict[str, Any] = {
        "steps_mb": steps,
        "deltas_mb": {k: v - p for (k, v), p in zip(list(steps.items())[1:], list(steps.values())[:-1])},
        "gdal_cache_used_mb": cache_used,
        "augmentation_copy_mb": augmentation_mb,
        "import_crossgeo_s": import_s,
        "loader0_peak_rss_mb": max(peak, peak_before),
        "loader0_rss_after_epoch_mb": harness.rss_mb(),
        "compact": args.compact,
    }
    return harness.emit(out)


if __name__ == "__main__":
    raise SystemExit(main())
