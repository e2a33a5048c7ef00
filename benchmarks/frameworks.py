"""Framework pipelines, each measured in its own subprocess (torch and tensorflow never share one).

``python -m benchmarks.frameworks {torch,tf} --scene DIR --size N --patch-size P --windows N
--cachemax MB ...`` prints one JSON object. Both use the warped case (RGB DEFLATE GeoTIFF
image, EPSG:4326 mask), so they can be set beside the single-process core figures.

* torch: one epoch through ``crossgeo.torch.make_dataloader`` with 0 and with 2 workers
  (worker start-up included), then the summed RSS of 2 persistent workers after epoch 1
  and after epoch ``rss_epochs``.
* tf: ``crossgeo.tensorflow.make_dataset`` (parallel map, AUTOTUNE; default compact
  transfer, and ``compact=False``) against the plain ``tf.data.Dataset.from_generator`` over
  the same sampler and the same shared decode function, both batched and prefetched alike.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks import harness


def _sampler(args: argparse.Namespace) -> Any:
    from benchmarks.scenes import N_CLASSES
    from crossgeo import PatchSampler

    scene = harness.scene(args)
    return PatchSampler(scene.image_deflate, scene.mask_4326, scene.windows, args.patch_size, n_classes=N_CLASSES)


def bench_torch(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import Subset

    from crossgeo.torch import PatchDataset, make_dataloader

    torch.set_num_threads(1)
    dataset = PatchDataset(_sampler(args))
    n = len(dataset)
    out: dict[str, Any] = {"windows": n, "batch_size": args.batch_size}
    compact = PatchDataset(dataset.sampler, compact=True)
    # Alternating float and compact items, so a burst of load on the shared machine hits both alike.
    for workers in (0, 2):
        for suffix, data in (("", dataset), ("_compact", compact)):
            loader = make_dataloader(data, batch_size=args.batch_size, num_workers=workers, shuffle=False)
            start = time.perf_counter()
            count = sum(int(batch["image"].shape[0]) for batch in loader)
            elapsed = time.perf_counter() - start
            out[f"workers_{workers}{suffix}"] = {"patches_per_s": count / elapsed, "seconds": elapsed}
    dataset.close()

    # Worker memory over epochs: persistent workers, RSS after the first and the last epoch.
    subset = Subset(dataset, range(min(n, args.rss_windows)))
    loader = make_dataloader(subset, batch_size=args.batch_size, num_workers=2, persistent_workers=True)
    rss: list[float] = []
    for epoch in range(args.rss_epochs):
        for _ in loader:
            pass
        pids = [w.pid for w in loader._iterator._workers]  # type: ignore[union-attr]
        rss.append(sum(harness.rss_mb(pid) for pid in pids))
        if epoch == 0:
            first = rss[-1]
    del loader
    out["worker_rss"] = {
        "epochs": args.rss_epochs,
        "windows_per_epoch": len(subset),
        "after_first_mb": first,
        "after_last_mb": rss[-1],
        "per_epoch_mb": rss,
        "ratio": rss[-1] / first,
    }
    return out


def bench_tf(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from crossgeo.augment import to_model_inputs
    from crossgeo.tensorflow import make_dataset

    sampler = _sampler(args)
    n, size = len(sampler), args.patch_size

    def generator() -> Any:
        for i in range(n):
            yield to_model_inputs(sampler[i], channels_last=True)

    signature = (tf.TensorSpec((size, size, 3), tf.float32), tf.TensorSpec((size, size), tf.int64))
    pipelines = {
        "from_generator": lambda: (
            tf.data.Dataset.from_generator(generator, output_signature=signature)
            .batch(args.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        ),
        "autotune": lambda: make_dataset(sampler, batch_size=args.batch_size),  # compact transfer (the default)
        "autotune_float": lambda: make_dataset(sampler, batch_size=args.batch_size, compact=False),
    }
    out: dict[str, Any] = {"windows": n, "batch_size": args.batch_size}
    out["warm"] = bool(args.warm)
    for name, build in pipelines.items():
        dataset = build()
        if args.warm:  # one untimed pass fills GDAL's block cache (--cachemax must hold the scene's blocks)
            for _ in dataset:
                pass
        start = time.perf_counter()
        count = sum(int(image.shape[0]) for image, _ in dataset)
        elapsed = time.perf_counter() - start
        out[name] = {"patches_per_s": count / elapsed, "seconds": elapsed}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.frameworks")
    parser.add_argument("framework", choices=("torch", "tf"))
    parser.add_argument("--rss-epochs", type=int, default=10)
    parser.add_argument("--rss-windows", type=int, default=500)
    parser.add_argument("--warm", action="store_true", help="tf: time a second pass over each pipeline (warm cache)")
    args = parser.parse_args(argv)
    from benchmarks.gdal import limit_block_cache

    limit_block_cache(args.cachemax)
    return harness.emit(bench_torch(args) if args.framework == "torch" else bench_tf(args))


if __name__ == "__main__":
    raise SystemExit(main())
