"""crossgeo against TorchGeo in one torch environment (run in a separate env that has torchgeo).

``python -m benchmarks.torchgeo_bench --scene DIR --size N --windows N ...`` prints JSON.
TorchGeo reads an ``IntersectionDataset`` of two ``RasterDataset``s (the RGB DEFLATE
GeoTIFF image and the EPSG:4326 mask, which TorchGeo reprojects onto the image's CRS and
resolution), queried at exactly the windows crossgeo reads, through a small sampler that
yields their bounds. Both go through a torch ``DataLoader`` with 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _window_slices(scene: Any, rows: Any, cols: Any) -> list[tuple[slice, slice]]:
    import rasterio

    with rasterio.open(scene.image_deflate) as src:
        t = src.transform
    size = scene.patch_size
    out = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        xmin = t.c + c * t.a
        ymax = t.f + r * t.e
        out.append((slice(xmin, xmin + size * t.a, t.a), slice(ymax + size * t.e, ymax, -t.e)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torchgeo_bench")
    parser.add_argument("--scene", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--windows", type=int, required=True)
    parser.add_argument("--cachemax", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    from benchmarks.gdal import limit_block_cache

    limit_block_cache(args.cachemax)

    import pyarrow.parquet as pq
    import torch
    import torchgeo
    from torch.utils.data import DataLoader, Sampler
    from torchgeo.datasets import IntersectionDataset, RasterDataset, stack_samples

    from benchmarks.scenes import N_CLASSES, Scene
    from crossgeo import PatchSampler
    from crossgeo.torch import PatchDataset, make_dataloader

    torch.set_num_threads(1)
    scene = Scene(Path(args.scene), args.size, args.patch_size, args.windows)
    table = pq.read_table(scene.windows)
    rows, cols = table.column("row_off").to_numpy(), table.column("col_off").to_numpy()
    queries = _window_slices(scene, rows, cols)

    class Image(RasterDataset):
        is_image = True

    class Mask(RasterDataset):
        is_image = False

    class Windows(Sampler[Any]):
        def __init__(self) -> None:
            pass

        def __iter__(self) -> Iterator[Any]:
            return iter(queries)

        def __len__(self) -> int:
            return len(queries)

    image = Image(paths=[scene.image_deflate])
    intersection = IntersectionDataset(image, Mask(paths=[scene.mask_4326]))
    first = intersection[queries[0]]
    shapes = {"image": list(first["image"].shape), "mask": list(first["mask"].shape)}

    sampler = PatchSampler(scene.image_deflate, scene.mask_4326, scene.windows, args.patch_size, n_classes=N_CLASSES)
    dataset = PatchDataset(sampler)
    patch = sampler[0]
    same_image = bool((first["image"].numpy() == patch.image).all()) if shapes["image"][-2:] == [256, 256] else False
    same_mask = (
        float((first["mask"].numpy().squeeze() == patch.mask).mean()) if shapes["mask"][-2:] == [256, 256] else 0.0
    )

    out: dict[str, Any] = {
        "torchgeo": torchgeo.__version__,
        "torch": torch.__version__,
        "windows": len(queries),
        "sample_shapes": shapes,
        "image_identical_first_window": same_image,
        "mask_agreement_first_window": same_mask,
    }
    for workers in (0, 2):
        loaders = {
            "crossgeo": make_dataloader(dataset, batch_size=args.batch_size, num_workers=workers),
            # A fresh dataset per loader: TorchGeo caches open handles per dataset, and forked
            # workers must not share handles the parent already read through.
            "torchgeo": DataLoader(
                IntersectionDataset(Image(paths=[scene.image_deflate]), Mask(paths=[scene.mask_4326])),
                sampler=Windows(),
                batch_size=args.batch_size,
                num_workers=workers,
                collate_fn=stack_samples,
            ),
        }
        for name, loader in loaders.items():
            start = time.perf_counter()
            count = sum(int(batch["image"].shape[0]) for batch in loader)
            elapsed = time.perf_counter() - start
            out[f"{name}_workers_{workers}"] = {"patches_per_s": count / elapsed, "seconds": elapsed}
            print(f"{name} workers={workers}: {count / elapsed:.1f} patches/s", file=sys.stderr)
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
