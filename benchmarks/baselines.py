"""Baselines implemented plainly with rasterio - no crossgeo code.

Each factory returns ``(read, close)``: ``read(row_off, col_off)`` reads one image window
and the matching mask window; ``close()`` releases what the factory opened.

* **raw bound**: handles opened once; the mask either read with a plain window (aligned
  grids) or warped nearest-neighbour onto the image grid, by (a) one ``WarpedVRT`` over
  the whole image grid or (b) a small ``WarpedVRT`` per window on the cached mask handle.
  Nothing is decoded beyond what the read returns.
* **open-per-item**: the original's approach - open the image, open the mask and build a
  ``WarpedVRT`` of the mask over the image grid for every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

Reader = tuple[Callable[[int, int], Any], Callable[[], None]]


def raw_aligned(
    image_path: str, mask_path: str, size: int, bands: Sequence[int], mask_bands: Sequence[int] = (1,)
) -> Reader:
    image = rasterio.open(image_path)
    mask = rasterio.open(mask_path)
    bands, mask_bands = list(bands), list(mask_bands)

    def read(row_off: int, col_off: int) -> Any:
        window = Window(col_off, row_off, size, size)
        return image.read(bands, window=window), mask.read(mask_bands, window=window)

    def close() -> None:
        image.close()
        mask.close()

    return read, close


def raw_warped_full_grid(image_path: str, mask_path: str, size: int, bands: Sequence[int]) -> Reader:
    """(a) one WarpedVRT of the mask over the whole image grid, opened once."""
    image = rasterio.open(image_path)
    mask = rasterio.open(mask_path)
    vrt = WarpedVRT(
        mask,
        crs=image.crs,
        transform=image.transform,
        width=image.width,
        height=image.height,
        resampling=Resampling.nearest,
    )
    bands = list(bands)

    def read(row_off: int, col_off: int) -> Any:
        window = Window(col_off, row_off, size, size)
        return image.read(bands, window=window), vrt.read(1, window=window)

    def close() -> None:
        vrt.close()
        mask.close()
        image.close()

    return read, close


def raw_warped_per_window(image_path: str, mask_path: str, size: int, bands: Sequence[int]) -> Reader:
    """(b) a small WarpedVRT per window (its target is the window) on the cached mask handle."""
    image = rasterio.open(image_path)
    mask = rasterio.open(mask_path)
    crs, image_transform = image.crs, image.transform
    bands = list(bands)

    def read(row_off: int, col_off: int) -> Any:
        window = Window(col_off, row_off, size, size)
        data = image.read(bands, window=window)
        with WarpedVRT(
            mask,
            crs=crs,
            transform=window_transform(window, image_transform),
            width=size,
            height=size,
            resampling=Resampling.nearest,
        ) as vrt:
            return data, vrt.read(1)

    def close() -> None:
        mask.close()
        image.close()

    return read, close


def open_per_item(image_path: str, mask_path: str, size: int, bands: Sequence[int]) -> Reader:
    """The original's approach: open both rasters and build the mask VRT for every sample."""
    bands = list(bands)

    def read(row_off: int, col_off: int) -> Any:
        window = Window(col_off, row_off, size, size)
        with rasterio.open(image_path) as image, rasterio.open(mask_path) as mask:
            with WarpedVRT(
                mask,
                crs=image.crs,
                transform=image.transform,
                width=image.width,
                height=image.height,
                resampling=Resampling.nearest,
            ) as vrt:
                return image.read(bands, window=window), vrt.read(1, window=window)

    return read, lambda: None
