"""Single-process read throughput: crossgeo's core against the plain-rasterio baselines.

Every case reads the same windows of the same files in one process under the same GDAL
settings. Cases run interleaved, ``repeat`` rounds, and each keeps its fastest round, so a
burst of load from a neighbour on the shared machine hits one round, not one case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import baselines
from benchmarks.scenes import COLOR_MAP, N_CLASSES, Scene

Case = tuple[str, Callable[[], baselines.Reader]]


def _core(
    image: str, mask: str, scene: Scene, mask_dtype: Any = np.int64, **options: Any
) -> Callable[[], baselines.Reader]:
    """crossgeo's per-patch read; ``mask_dtype=np.uint8`` is the read of the compact loaders (no int64 mask)."""

    def factory() -> baselines.Reader:
        from crossgeo import PatchSampler

        sampler = PatchSampler(image, mask, scene.windows, scene.patch_size, **options)

        def read(row_off: int, col_off: int) -> Any:
            patch = sampler.read(row_off, col_off, mask_dtype=mask_dtype)
            return patch.image, patch.mask

        return read, sampler.close

    return factory


def cases(scene: Scene) -> list[Case]:
    size = scene.patch_size
    rgb = (1, 2, 3)
    tif, jpeg, mbt = scene.image_deflate, scene.image_jpeg, scene.image
    m, m4326 = scene.mask, scene.mask_4326
    n = {"n_classes": N_CLASSES}
    mb = {"n_classes": N_CLASSES, "selected_bands": [1, 2, 3]}
    B = baselines
    return [
        ("raw_aligned", lambda: B.raw_aligned(tif, m, size, rgb)),
        ("core_aligned", _core(tif, m, scene, **n)),
        ("core_aligned_compact", _core(tif, m, scene, np.uint8, **n)),
        ("raw_aligned_jpeg", lambda: B.raw_aligned(jpeg, m, size, rgb)),
        ("core_aligned_jpeg", _core(jpeg, m, scene, **n)),
        ("raw_warped_full_vrt", lambda: B.raw_warped_full_grid(tif, m4326, size, rgb)),
        ("raw_warped_window_vrt", lambda: B.raw_warped_per_window(tif, m4326, size, rgb)),
        ("core_warped", _core(tif, m4326, scene, **n)),
        ("core_warped_compact", _core(tif, m4326, scene, np.uint8, **n)),
        ("open_per_item", lambda: B.open_per_item(tif, m4326, size, rgb)),
        ("raw_warped_full_vrt_mbtiles", lambda: B.raw_warped_full_grid(mbt, m4326, size, rgb)),
        ("raw_warped_window_vrt_mbtiles", lambda: B.raw_warped_per_window(mbt, m4326, size, rgb)),
        ("core_warped_mbtiles", _core(mbt, m4326, scene, **mb)),
        ("open_per_item_mbtiles", lambda: B.open_per_item(mbt, m4326, size, rgb)),
    ]


def run_cases(
    scene: Scene, rows: np.ndarray, cols: np.ndarray, repeat: int, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """patches/s of every case (best of ``repeat`` interleaved rounds)."""
    selected = cases(scene)
    best: dict[str, float] = {}
    pairs = list(zip(rows.tolist(), cols.tolist()))
    for round_ in range(repeat):
        for name, factory in selected:
            read, close = factory()
            read(*pairs[0])  # open lazily-opened handles outside the timing
            start = time.perf_counter()
            for r, c in pairs:
                read(r, c)
            elapsed = time.perf_counter() - start
            close()
            best[name] = min(best.get(name, float("inf")), elapsed)
            log(f"  round {round_ + 1}/{repeat} {name:32s} {len(pairs) / elapsed:8.1f} patches/s")
    return {name: {"patches_per_s": len(pairs) / seconds, "seconds": seconds} for name, seconds in best.items()}


def colour_decode(scene: Scene, rows: np.ndarray, cols: np.ndarray, repeat: int) -> dict[str, Any]:
    """Per patch: crossgeo's two reads (image + RGB mask) vs its colour-map decode of the mask."""
    from crossgeo import PatchSampler

    sampler = PatchSampler(scene.image_deflate, scene.mask_rgb, scene.windows, scene.patch_size, color_map=COLOR_MAP)
    reader = sampler._reader()
    decoder = sampler.decoder
    bands, invalid = reader.read_mask(int(rows[0]), int(cols[0]))
    decoder(bands, invalid)  # builds the 2**24 lookup table once, outside the timing
    best_read = best_decode = float("inf")
    for _ in range(repeat):
        read_s = decode_s = 0.0
        for r, c in zip(rows.tolist(), cols.tolist()):
            t0 = time.perf_counter()
            reader.read_image(r, c)
            bands, invalid = reader.read_mask(r, c)
            t1 = time.perf_counter()
            decoder(bands, invalid)
            decode_s += time.perf_counter() - t1
            read_s += t1 - t0
        best_read, best_decode = min(best_read, read_s), min(best_decode, decode_s)
    sampler.close()
    n = len(rows)
    return {
        "read_ms_per_patch": 1000 * best_read / n,
        "decode_ms_per_patch": 1000 * best_decode / n,
        "ratio": best_decode / best_read,
    }
