"""``python -m benchmarks --plot DIR``: PNGs of throughput and worker memory against the worker count.

Draws from the ``curves`` section of a results dict (`benchmarks.curves`) with matplotlib
(``pip install matplotlib``, in the ``bench`` extra) and writes ``bench-throughput.png``,
``bench-memory.png`` and ``bench-machine.json`` (the machine and settings they came from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = {
    "crossgeo": "crossgeo",
    "crossgeo_compact": "crossgeo, compact=True",
    "raw_bound": "raw bound (plain rasterio)",
    "open_per_item": "open-per-item (the original)",
    "torchgeo": "TorchGeo",
}


def plot(results: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = results["curves"]
    workers = sorted(int(w) for w in curves["workers"])
    names = [n for n in LABELS if n in curves["workers"][str(workers[0])]]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, ylabel, name in (
        ("patches_per_s", "patches / s", "bench-throughput.png"),
        ("worker_rss_mb", "RSS per worker (MB; 0 workers: the process)", "bench-memory.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for lib in names:
            ax.plot(workers, [curves["workers"][str(w)][lib][key] for w in workers], marker="o", label=LABELS[lib])
        ax.set_xlabel("DataLoader workers")
        ax.set_ylabel(ylabel)
        ax.set_xticks(workers)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        scene = results["scene"]
        ax.set_title(
            f"{scene['size']}² RGB GeoTIFF, EPSG:4326 mask, {curves['windows']} windows of {scene['patch_size']}",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        written.append(folder / name)
    machine = {
        "machine": results["machine"],
        "gdal_cachemax_bytes": results["gdal_cachemax_bytes"],
        "batch_size": curves["batch_size"],
        "windows": curves["windows"],
        "note": results.get("note", ""),
        "data": curves["workers"],
    }
    (folder / "bench-machine.json").write_text(json.dumps(machine, indent=2))
    written.append(folder / "bench-machine.json")
    return written
