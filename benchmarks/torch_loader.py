"""DataLoader throughput (patches/s) of crossgeo.torch with different worker counts, same windows.

    python benchmarks/torch_loader.py                      # MBTiles image, EPSG:4326 mask (warped)
    python benchmarks/torch_loader.py --mask aligned --workers 0 2 4

Writes a synthetic scene (crossgeo.testing) into a temporary folder, then times full passes
over the same windows for each worker count, after one warm-up pass each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from crossgeo import testing
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, make_dataloader


def write_scene(root: Path, size: int, patch: int, windows: int, mask: str, seed: int) -> dict[str, str]:
    transform = testing.web_mercator_transform(12, 2000, 1300)
    image_tif = testing.write_raster(
        root / "image.tif", testing.coordinate_bands(size, size, "uint8"), crs="EPSG:3857", transform=transform
    )
    image = testing.write_mbtiles(image_tif, root / "image.mbtiles")
    if mask == "aligned":
        rows, cols = np.mgrid[0:size, 0:size]
        classes = (((rows // 64) + (cols // 64)) % 2).astype(np.uint8)[None]
        mask_path = testing.write_raster(root / "mask.tif", classes, crs="EPSG:3857", transform=transform)
    else:
        with rasterio.open(image_tif) as src:
            bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        res = (bounds[2] - bounds[0]) / size
        mask_path = testing.write_lonlat_mask(root / "mask.tif", bounds, res, cell=res * 64, n_classes=2)
    rng = np.random.default_rng(seed)
    row_off = rng.integers(0, size - patch + 1, windows)
    col_off = rng.integers(0, size - patch + 1, windows)
    crops = testing.write_windows_table(root / "windows.csv", row_off.tolist(), col_off.tolist())
    return {"image": str(image), "mask": str(mask_path), "crops": str(crops)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="image height/width in pixels (multiple of 256)")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--mask", choices=("warped", "aligned"), default="warped")
    parser.add_argument("--augment", action="store_true", help="add HorizontalFlip + RandomBrightnessContrast")
    parser.add_argument("--passes", type=int, default=2, help="timed passes per worker count")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        paths = write_scene(Path(folder), args.size, args.patch, args.windows, args.mask, seed=0)
        augmentation = (
            [
                {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
                {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
            ]
            if args.augment
            else None
        )
        print(
            f"scene: {args.size}x{args.size} MBTiles image (RGBA, bands 1-3 read), {args.mask} mask, "
            f"{args.windows} windows of {args.patch}x{args.patch}, batch {args.batch_size}, "
            f"augmentation {'on' if augmentation else 'off'}, {os.cpu_count()} CPUs"
        )
        for workers in args.workers:
            dataset = MBTilesCropsGeoTifMaskDataset(
                paths["image"],
                paths["mask"],
                paths["crops"],
                args.patch,
                selected_bands=[1, 2, 3],
                n_classes=2,
                augmentation_list=augmentation,
                seed=0,
                data_loader={"batch_size": args.batch_size, "num_workers": workers, "shuffle": True},
            )
            loader = make_dataloader(dataset, persistent_workers=workers > 0)
            for _ in loader:  # warm-up: workers start, handles open, page cache fills
                pass
            start = time.perf_counter()
            count = 0
            for _ in range(args.passes):
                for batch in loader:
                    count += int(batch["image"].shape[0])
            elapsed = time.perf_counter() - start
            print(f"num_workers={workers}: {count / elapsed:8.1f} patches/s ({count} patches in {elapsed:.2f} s)")
            del loader


if __name__ == "__main__":
    main()
