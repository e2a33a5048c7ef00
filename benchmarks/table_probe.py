"""The ``"table"`` view's cost per window (`crossgeo.grid.nearest_table`), two crossgeo checkouts alternating.

``python benchmarks/table_probe.py --old /work/main --new . [--rounds 3 --windows 300]`` starts one fresh
process per (checkout, round), the checkouts alternating (its first import of ``crossgeo`` comes from that
checkout's ``PYTHONPATH``; run it as a file, not with ``-m``, so the current directory does not shadow it).
Each child reads the first ``--windows`` windows of the benchmark scene (``image_utm.tif`` and the
EPSG:4326 ``mask_4326.tif``) twice: ``nearest_table`` alone (an untimed pass first) and the whole mask read
(`crossgeo.io.SourceReader._table`: table, plain read, gather; GDAL's block cache warm after the first
pass), and reports wall and CPU ms per window and a digest of the tables (both checkouts must agree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCENE = Path.home() / ".cache/crossgeo-bench/scene-8192-v2"
SIZE = 256


def child(windows: int) -> dict[str, object]:
    import numpy as np
    import pyarrow.parquet as pq

    import crossgeo
    from crossgeo import PatchSampler
    from crossgeo.grid import nearest_table, overlap
    from crossgeo.io import mask_blocks

    table = pq.ParquetFile(SCENE / "windows.parquet").read(columns=["row_off", "col_off"]).slice(0, windows)
    offsets = list(zip(table["row_off"].to_pylist(), table["col_off"].to_pylist()))
    mask_blocks.keep_windows = False  # every read computes its table
    sampler = PatchSampler(SCENE / "image_utm.tif", SCENE / "mask_4326.tif", SCENE / "windows.parquet", SIZE)
    reader = sampler._reader().mask
    assert reader is not None and reader.plan.view == "table", "the mask is not read through the table view"
    grid, shape = sampler.grid, reader.dataset.shape
    work = getattr(reader, "_table_work", None)  # the reader's int work arrays (new code), as `_table` passes them
    out: dict[str, object] = {"crossgeo": crossgeo.__file__}
    digest = hashlib.sha256()

    def tables(record: bool) -> None:
        for row_off, col_off in offsets:
            r0, r1 = overlap(row_off, SIZE, grid.height)
            c0, c1 = overlap(col_off, SIZE, grid.width)
            extra = {} if work is None else {"out": work(r1 - r0, c1 - c0)}
            rows, cols = nearest_table(grid.transform, r0, c0, r1 - r0, c1 - c0, reader.to_source, shape, **extra)
            if record:
                digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
                digest.update(np.ascontiguousarray(cols, dtype=np.int64).tobytes())

    def timed(name: str, run: object) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        run()  # type: ignore[operator]
        out[f"{name}_ms"] = (time.perf_counter() - wall) * 1e3 / len(offsets)
        out[f"{name}_cpu_ms"] = (time.process_time() - cpu) * 1e3 / len(offsets)
        out[f"{name}_faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(offsets)

    tables(True)
    timed("table", lambda: tables(False))

    def reads(record: bool) -> None:
        for row_off, col_off in offsets:
            data, invalid = reader._table(row_off, col_off, SIZE, SIZE)
            if record:
                digest.update(data.tobytes())
                digest.update(b"" if invalid is None else np.packbits(invalid).tobytes())

    reads(True)
    timed("read", lambda: reads(False))
    out["digest"] = digest.hexdigest()[:16]  # of the tables and of the reads
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="/work/main")
    parser.add_argument("--new", default=".")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.windows)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for round_ in range(args.rounds):
        for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
            env = {**os.environ, "PYTHONPATH": str(Path(getattr(args, name)).resolve())}
            command = [sys.executable, __file__, "--child", "--windows", str(args.windows)]
            result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
            runs[name].append(result)
            print(f"round {round_ + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    digests = {r["digest"] for rs in runs.values() for r in rs}
    summary: dict[str, object] = {"identical_tables": len(digests) == 1, "uptime": os.getloadavg()}
    for key in ("table_ms", "table_cpu_ms", "table_faults", "read_ms", "read_cpu_ms", "read_faults"):
        old, new = (statistics.median(float(r[key]) for r in runs[n]) for n in ("old", "new"))
        summary[key] = {"old": round(old, 3), "new": round(new, 3), "old/new": round(old / new, 2) if new else None}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
