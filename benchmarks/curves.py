"""Throughput and worker memory against the DataLoader worker count (``python -m benchmarks --plot DIR``).

``python -m benchmarks.curves --scene DIR ... --max-workers N`` prints JSON: for 0..N workers,
patches/s and mean worker RSS of one epoch through a torch ``DataLoader`` (batch 16) for
crossgeo (float and compact items), the plain-rasterio raw bound (handles opened once per
worker, one small ``WarpedVRT`` per window), open-per-item (the original's approach) and,
when it is installed, TorchGeo (`benchmarks.peers`'s ``IntersectionDataset``
queried at the same windows), all on the warped (EPSG:4326 mask) case and the same windows.
Every loader starts its workers from this process, which opened nothing before (a fresh parent).
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

from benchmarks import harness


class _Baseline:
    """A torch map-style dataset over a `benchmarks.baselines` reader (opened lazily per process)."""

    def __init__(self, factory: Any, rows: list[int], cols: list[int]) -> None:
        self.factory, self.rows, self.cols = factory, rows, cols
        self.reader: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        import numpy as np
        import torch

        if self.reader is None:
            self.reader = self.factory()[0]
        image, mask = self.reader(self.rows[i], self.cols[i])
        image = torch.from_numpy(image.astype(np.float32) / np.float32(255))
        return {"image": image, "mask": torch.from_numpy(np.asarray(mask, dtype=np.int64))}


def measure(loader: Any) -> dict[str, Any]:
    start = time.perf_counter()
    count = 0
    worker_rss: list[float] = []
    iterator = iter(loader)
    for batch in iterator:
        count += int(batch["image"].shape[0])
        workers = getattr(iterator, "_workers", [])
        if workers:
            worker_rss = [max(a, harness.rss_mb(w.pid)) for a, w in zip(worker_rss or [0.0] * len(workers), workers)]
    elapsed = time.perf_counter() - start
    rss = sum(worker_rss) / len(worker_rss) if worker_rss else harness.rss_mb(os.getpid())
    return {"patches_per_s": count / elapsed, "worker_rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    parser = harness.scene_parser("python -m benchmarks.curves")
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--curve-windows", type=int, default=400)
    args = parser.parse_args(argv)
    from benchmarks.gdal import limit_block_cache

    limit_block_cache(args.cachemax)
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from benchmarks import baselines
    from benchmarks.scenes import N_CLASSES
    from crossgeo import PatchSampler
    from crossgeo.torch import PatchDataset, make_dataloader

    torch.set_num_threads(1)
    scene = harness.scene(args)
    row_offs, col_offs = harness.window_offsets(scene.windows, args.curve_windows)
    rows, cols, n = row_offs.tolist(), col_offs.tolist(), len(row_offs)
    tif, m4326, size = scene.image_deflate, scene.mask_4326, scene.patch_size
    rgb = (1, 2, 3)

    def crossgeo_loader(workers: int, compact: bool) -> Any:
        sampler = PatchSampler(tif, m4326, scene.windows, size, n_classes=N_CLASSES)
        dataset = Subset(PatchDataset(sampler, compact=compact), range(n))
        return make_dataloader(dataset, batch_size=args.batch_size, num_workers=workers)

    def torchgeo_loader(workers: int) -> Any:
        from torchgeo.datasets import stack_samples

        from benchmarks.peers import _torchgeo_dataset, _window_slices

        queries = _window_slices(tif, size, np.asarray(rows), np.asarray(cols))
        return DataLoader(
            _torchgeo_dataset(tif, m4326),
            sampler=queries,
            batch_size=args.batch_size,
            num_workers=workers,
            collate_fn=stack_samples,
        )

    def baseline_loader(factory: Any, workers: int) -> Any:
        return DataLoader(_Baseline(factory, rows, cols), batch_size=args.batch_size, num_workers=workers)

    libraries = {
        "crossgeo": lambda w: crossgeo_loader(w, False),
        "crossgeo_compact": lambda w: crossgeo_loader(w, True),
        "raw_bound": lambda w: baseline_loader(lambda: baselines.raw_warped_per_window(tif, m4326, size, rgb), w),
        "open_per_item": lambda w: baseline_loader(lambda: baselines.open_per_item(tif, m4326, size, rgb), w),
    }
    if importlib.util.find_spec("torchgeo") is not None:
        libraries["torchgeo"] = torchgeo_loader
    out: dict[str, Any] = {"windows": n, "batch_size": args.batch_size, "workers": {}}
    for workers in range(args.max_workers + 1):
        row: dict[str, Any] = {}
        for name, build in libraries.items():
            # Compact items are only worth it across processes; with 0 workers it measures the same path.
            row[name] = measure(build(workers))
            harness.log(f"curves: {name} workers={workers}: {row[name]['patches_per_s']:.1f} p/s")
        out["workers"][str(workers)] = row
    return harness.emit(out)


if __name__ == "__main__":
    raise SystemExit(main())
