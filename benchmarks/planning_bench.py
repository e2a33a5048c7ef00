"""Windows as data (issue #12): class_fractions against per-window reads, and the 1M-row table steps.

* ``class_fractions`` over ~10,000 overlapping windows (stride = patch / 2) on the scene's
  aligned mask and on its EPSG:4326 mask, against the baseline of reading each window's mask
  through the same sampler (``PatchSampler.read_mask``) and counting its classes; the values
  must be identical.
* ``balanced_windows`` and ``spatial_split`` on a synthetic table of ``rows`` candidates:
  seconds (best of ``repeat``) and peak traced memory (``tracemalloc``, numpy included).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.scenes import N_CLASSES, Scene


def _windows(size: int, patch: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` grid windows of ``patch`` at stride patch / 2, row-major from the top-left."""
    per_axis = min(int(np.sqrt(count)), (size - patch) // (patch // 2) + 1)
    offsets = np.arange(per_axis, dtype=np.int64) * (patch // 2)
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    return rows.ravel(), cols.ravel()


def _per_window(sampler: Any) -> np.ndarray:
    """The baseline: each window's mask through the sampler, classes counted where valid."""
    counts = np.zeros((len(sampler), N_CLASSES + 1), dtype=np.int64)
    for i, (r, c) in enumerate(zip(sampler.row_off, sampler.col_off)):
        classes, valid = sampler.read_mask(int(r), int(c))
        counts[i, 0] = np.count_nonzero(valid)
        counts[i, 1:] = np.bincount(classes[valid], minlength=N_CLASSES)[:N_CLASSES]
    return counts / float(sampler.patch_size**2)


def fractions(scene: Scene, patch: int, count: int, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crossgeo import PatchSampler, class_fractions

    rows, cols = _windows(scene.size, patch, count)
    path = scene.folder / f"planning-windows-{patch}-{rows.size}.parquet"
    pq.write_table(pa.table({"row_off": rows, "col_off": cols}), path)
    out: dict[str, Any] = {"windows": int(rows.size), "patch_size": patch, "stride": patch // 2}
    for name, mask in (("aligned", scene.mask), ("warped", scene.mask_4326)):
        sampler = PatchSampler(scene.image_deflate, mask, path, patch, n_classes=N_CLASSES)
        best_fast = best_slow = float("inf")
        identical = True
        for _ in range(repeat):  # interleaved rounds, each case keeps its best
            sampler.close()
            start = time.perf_counter()
            table = class_fractions(sampler)
            best_fast = min(best_fast, time.perf_counter() - start)
            sampler.close()
            start = time.perf_counter()
            reference = _per_window(sampler)
            best_slow = min(best_slow, time.perf_counter() - start)
            columns = ["valid", *(f"class_{k}" for k in range(N_CLASSES))]
            identical &= bool(np.array_equal(table[columns].to_numpy(), reference))
        sampler.close()
        out[name] = {
            "class_fractions_s": best_fast,
            "per_window_s": best_slow,
            "speedup": best_slow / best_fast,
            "identical": identical,
        }
        log(f"  class_fractions {name}: {best_fast:.2f} s vs per-window {best_slow:.2f} s, identical={identical}")
    return out


def _candidates(rows: int, seed: int = 0) -> Any:
    """``rows`` windows on a square grid with 5 class shares; class 4 present in ~2 % of them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(rows)))
    index = np.arange(rows)
    shares = rng.dirichlet(np.ones(N_CLASSES), rows)
    rare = rng.random(rows) > 0.02
    shares[rare, N_CLASSES - 1] = 0.0
    shares /= shares.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"row_off": (index // side) * 128, "col_off": (index % side) * 128, "valid": 1.0})
    for k in range(N_CLASSES):
        frame[f"class_{k}"] = shares[:, k]
    return frame


def _measure(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak / 2**20


def tables(rows: int, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    import logging

    from crossgeo import balanced_windows, spatial_split

    frame = _candidates(rows)
    logging.getLogger("crossgeo").setLevel(logging.WARNING)
    out: dict[str, Any] = {"rows": rows}
    for name, call in (
        ("balanced_windows", lambda: balanced_windows(frame, rows // 10, seed=0)),
        ("spatial_split", lambda: spatial_split(frame, patch_size=128, block=1024, seed=0)),
    ):
        seconds, peak = _measure(call, repeat)
        out[name] = {"seconds": seconds, "peak_mb": peak}
        log(f"  {name} on {rows:,} rows: {seconds:.3f} s, peak {peak:.1f} MB")
    return out
