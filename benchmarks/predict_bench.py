"""Tiled prediction (issue 14): throughput against reading the same windows, and peak memory.

* Throughput: `crossgeo.predict_raster` over the scene's DEFLATE image with a trivial model
  (K = 5 scores copied from the bands) at overlap 0, against reading the same windows with
  plain rasterio in one thread. Both run interleaved, ``repeat`` rounds, best round counts.
  A second model (`shifted_model`: the K scores are neighbouring pixels, so the winning class
  changes from pixel to pixel as a real model's does at class edges) measures the per-window
  class decision (`crossgeo.predict._argmax`), which the trivial model's equal scores hide.
* Memory: the peak of numpy allocations (tracemalloc) while predicting a ``memory_size``²
  image (16384² in the full run) with K = 5, patch 256, overlap 64, against one strip of
  scores (K x patch x width float32) - the bound the design promises - and against a
  full-raster score array.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

K = 5


def trivial_model(x: np.ndarray) -> np.ndarray:
    """K = 5 score bands, all the first image band (a broadcast view: no compute at all)."""
    return np.broadcast_to(x[:, :1], (x.shape[0], K, *x.shape[2:]))


def shifted_model(x: np.ndarray) -> np.ndarray:
    """K = 5 score bands: band 1 shifted by 0..4 pixels along the row (a strided view of the batch: no compute)."""
    n, bands, height, width = x.shape
    if bands < 2:  # the last window's shifted pixels run into its next band: there must be one
        raise ValueError(f"shifted_model needs an image of 2 or more bands, got {bands}")
    strides = (x.strides[0], x.strides[3], x.strides[2], x.strides[3])  # class k: k pixels further on
    return np.lib.stride_tricks.as_strided(x, (n, K, height, width), strides, writeable=False)


def _read_windows(image: str, patch: int) -> float:
    from crossgeo.grid import axis_offsets

    started = time.perf_counter()
    with rasterio.open(image) as src:
        rows = axis_offsets(src.height, patch, patch)
        cols = axis_offsets(src.width, patch, patch)
        for row in rows:
            for col in cols:
                src.read(window=Window(int(col), int(row), patch, patch))
    return time.perf_counter() - started


def _predict(
    image: str, out: Path, patch: int, overlap: int = 0, cpu: list[float] | None = None, model: Any = trivial_model
) -> float:
    """Seconds of one prediction; appends the calling thread's CPU seconds (the model/blend/write side) to ``cpu``."""
    from crossgeo.predict import predict_raster

    started, started_cpu = time.perf_counter(), time.thread_time()
    predict_raster(image, model, out, patch_size=patch, overlap=overlap, progress=False, overwrite=True)
    if cpu is not None:
        cpu.append(time.thread_time() - started_cpu)
    return time.perf_counter() - started


def throughput(image: str, patch: int, repeat: int) -> dict[str, Any]:
    with rasterio.open(image) as src:
        pixels = src.width * src.height
    read_s: list[float] = []
    predict_s: list[float] = []
    shifted_s: list[float] = []
    main_cpu_s: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(max(repeat, 1)):
            read_s.append(_read_windows(image, patch))
            predict_s.append(_predict(image, Path(folder) / "pred.tif", patch, cpu=main_cpu_s))
            shifted_s.append(_predict(image, Path(folder) / "pred.tif", patch, model=shifted_model))
    read_pps, predict_pps = pixels / min(read_s), pixels / min(predict_s)
    return {
        "pixels": pixels,
        "patch_size": patch,
        "read_pixels_per_s": read_pps,
        "predict_pixels_per_s": predict_pps,
        "ratio": predict_pps / read_pps,
        # The same with scores whose winner changes from pixel to pixel (`shifted_model`).
        "shifted_ratio": min(read_s) / min(shifted_s),
        # CPU seconds of the model/blend/write thread against the wall time of reading alone:
        # below 1, the two overlap fully when a second core is free.
        "main_thread_cpu_vs_read": min(main_cpu_s) / min(read_s),
    }


def memory_image(cache: Path, size: int, log: Any = print) -> Path:
    """An RGB uint8 ``size``² GeoTIFF (256-pixel DEFLATE tiles), written once into ``cache``."""
    path = cache / f"predict-{size}.tif"
    if path.exists():
        return path
    log(f"Writing the {size} x {size} prediction image in {path} (once) ...")
    from crossgeo.testing import web_mercator_transform

    partial = path.with_suffix(".partial.tif")
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": web_mercator_transform(17, 69176, 44714),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "bigtiff": "IF_SAFER",
    }
    cols = np.arange(size)
    with rasterio.open(partial, "w", **profile) as dst:
        for row in range(0, size, 256):
            rows = np.arange(row, min(row + 256, size))[:, None]
            smooth = (np.sin(rows / 97.0) + np.cos(cols[None, :] / 131.0)) * 60 + 128
            bands = [smooth + rng.normal(0, 6, smooth.shape) + 20 * b for b in range(3)]
            dst.write(np.clip(bands, 0, 255).astype(np.uint8), window=Window(0, row, size, len(rows)))
    partial.rename(path)
    return path


def memory(image: Path, patch: int = 256, overlap: int = 64) -> dict[str, Any]:
    with rasterio.open(image) as src:
        width, height = src.width, src.height
    with tempfile.TemporaryDirectory() as folder:
        tracemalloc.start()
        try:
            seconds = _predict(str(image), Path(folder) / "pred.tif", patch, overlap)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    strip = K * patch * width * 4
    return {
        "size": [height, width],
        "k": K,
        "patch_size": patch,
        "overlap": overlap,
        "peak_mb": peak / 2**20,
        "strip_mb": strip / 2**20,
        "full_raster_mb": K * width * height * 4 / 2**20,
        "ratio": peak / strip,
        "seconds": seconds,
    }
