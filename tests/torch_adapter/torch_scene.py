"""Small real rasters for the torch adapter tests (imported by conftest and the tests), written with rasterio/GDAL.

The scene is a 256 x 256 Web Mercator image whose pixels encode their own (row, col)
(``crossgeo.testing.coordinate_bands``), as a GeoTIFF and as MBTiles (GDAL's driver, read
back RGBA); an RGB colour-coded mask on the same grid mosaicked from two GeoTIFF halves by
a hand-written VRT, whose classes are a known function of (row, col); a single-band
EPSG:4326 lon/lat checkerboard mask (warped onto the image grid); windows as CSV and as
GeoPackage points.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from crossgeo import testing

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SIZE = 256
PATCH = 32
ZOOM, TILE_COL, TILE_ROW = 10, 500, 300
#: (row_off, col_off) of the CSV windows.
WINDOWS = [(0, 0), (0, 64), (32, 160), (96, 32), (128, 128), (200, 200), (224, 0), (160, 96)]
COLOR_MAP = [[255, 0, 0, 1], [0, 255, 0, 2], [0, 0, 255, 3]]
#: The lon/lat checkerboard cell of the single-band mask, in degrees.
CELL = 0.05


def expected_classes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The class of the colour-coded mask at image pixel (row, col): 1, 2 or 3."""
    return ((rows // 16) + 2 * (cols // 16)) % 3 + 1


def decode_window(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) encoded in a float32 (C, H, W) model image of the uint8 coordinate scene."""
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return testing.decode_coordinates(np.rint(array[:3] * 255).astype(np.uint8))


def assert_window(image: Any, row_off: int, col_off: int, *, flipped: bool = False) -> None:
    """The image holds exactly the pixels of the window at (row_off, col_off)."""
    rows, cols = decode_window(image)
    if flipped:
        rows, cols = rows[:, ::-1], cols[:, ::-1]
    expected_rows, expected_cols = np.mgrid[row_off : row_off + PATCH, col_off : col_off + PATCH]
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(cols, expected_cols)


def build_scene(root: Path) -> types.SimpleNamespace:
    """Write the scene's files into ``root`` (the image by `crossgeo.testing.CoordinateScene`)."""
    scene = testing.CoordinateScene(root, SIZE, zoom=ZOOM, tile=(TILE_COL, TILE_ROW))
    crs, transform = CRS.from_epsg(3857), scene.transform
    image_mbtiles = testing.write_mbtiles(scene.image, root / "imagery.mbtiles")

    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    palette = np.zeros((4, 3), dtype=np.uint8)
    for r, g, b, cls in COLOR_MAP:
        palette[cls] = (r, g, b)
    rgb = palette[expected_classes(rows, cols)].transpose(2, 0, 1)
    half = SIZE // 2
    left = scene.aligned_mask(np.ascontiguousarray(rgb[:, :, :half]), "mask_left.tif")
    right = testing.write_raster(
        root / "mask_right.tif",
        np.ascontiguousarray(rgb[:, :, half:]),
        crs=crs,
        transform=transform @ Affine.translation(half, 0),
    )
    mask_vrt = testing.write_vrt_mosaic(root / "mask.vrt", [left, right])
    mask_tif = scene.lonlat_mask("mask.tif", margin=0.05, resolution=0.0025, cell=CELL, n_classes=2)
    windows_csv = scene.windows(*zip(*WINDOWS))
    # GeoPackage points at the centres of the CSV windows, in EPSG:4326.
    xs, ys = [], []
    for row_off, col_off in WINDOWS:
        x, y = transform @ (col_off + PATCH / 2, row_off + PATCH / 2)
        xs.append(x)
        ys.append(y)
    lon, lat = warp_transform(crs, "EPSG:4326", xs, ys)
    regions_gpkg = testing.write_points(root / "regions.gpkg", lon, lat, crs="EPSG:4326", layer="training_windows")

    return types.SimpleNamespace(
        root=root,
        image_tif=str(scene.image),
        image_mbtiles=str(image_mbtiles),
        mask_vrt=str(mask_vrt),
        mask_tif=str(mask_tif),
        windows_csv=str(windows_csv),
        regions_gpkg=str(regions_gpkg),
        transform=transform,
        crs=crs,
    )


GDAL_CHECKED = ("GDAL_HTTP_MAX_RETRY", "GDAL_DISABLE_READDIR_ON_OPEN", "VSI_CACHE")
"""GDAL options crossgeo sets (crossgeo.io.GDAL_OPTIONS) that rasterio reads back unchanged."""


def gdal_options_now() -> str:
    """The GDAL options in force in this thread, as ``KEY=value,...``."""
    from rasterio.env import get_gdal_config

    return ",".join(f"{key}={get_gdal_config(key)}" for key in GDAL_CHECKED)


class ProbeDataset:
    """Wraps a PatchDataset; each item also says which process read it with which handles."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        sampler = self.dataset.sampler
        augmentation = self.dataset.augmentation
        item["pid"] = os.getpid()
        item["gdal"] = gdal_options_now()
        item["readers_held"] = len(sampler._readers)  # this process's readers
        item["readers_opened"] = sampler._readers.created  # of which it opened itself
        item["aug_seed"] = -1 if augmentation is None or augmentation.seed is None else int(augmentation.seed)
        return item


#: Weights of `ddp_worker`'s weighted epoch (window 0 never drawn).
DDP_WEIGHTS = [float(i % 3) for i in range(len(WINDOWS))]


def ddp_worker(rank: int, world_size: int, port: int, paths: dict[str, str], out_dir: str) -> None:
    """One DDP rank: two epochs through a DistributedSampler; rank 0 writes what every rank saw."""
    import json

    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, make_dataloader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        dataset = MBTilesCropsGeoTifMaskDataset(
            paths["image"],
            paths["mask"],
            paths["windows"],
            PATCH,
            color_map=COLOR_MAP,
            selected_bands=[1, 2, 3],
            return_metadata=True,
            augmentation_list=[{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
            seed=3,
        )
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
        loader = make_dataloader(dataset, sampler=sampler, batch_size=2, num_workers=0)
        seen: dict[str, Any] = {"rank": rank, "epochs": []}
        for epoch in range(2):
            sampler.set_epoch(epoch)
            windows, sums = [], []
            for batch in loader:
                windows += [
                    [int(r), int(c)] for r, c in zip(batch["metadata"]["row_off"], batch["metadata"]["col_off"])
                ]
                sums += [float(s) for s in (batch["image"] * torch_weights()).sum(dim=(1, 2, 3))]
            seen["epochs"].append({"windows": windows, "sums": sums, "dataset_epoch": dataset.epoch})
        # Weighted sampling under DDP: each rank takes its share of the shared seeded draw.
        dataset.set_epoch(5)
        weighted = make_dataloader(dataset, weights=DDP_WEIGHTS, batch_size=2, num_workers=0)
        seen["weighted"] = [
            [int(r), int(c)]
            for batch in weighted
            for r, c in zip(batch["metadata"]["row_off"], batch["metadata"]["col_off"])
        ]
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, seen)
        if rank == 0:
            with open(os.path.join(out_dir, "seen.json"), "w") as f:
                json.dump(gathered, f)
    finally:
        dist.destroy_process_group()


def torch_weights() -> Any:
    """A fixed (1, 1, PATCH) weight so image sums also distinguish a flipped patch."""
    import torch

    return torch.arange(1, PATCH + 1, dtype=torch.float32)[None, None, :]
