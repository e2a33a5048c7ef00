"""Build a window index from a Parquet table in a fresh process; print time and memory as JSON.

``python -m benchmarks.index_probe TABLE.parquet``. Resident memory is read from
``/proc/self/status`` (VmRSS now, VmHWM peak) before and after the build, with the index
still alive. pyarrow initialises its Parquet reader, thread pool and memory pool on first
use (tens of MB resident, once per process, whatever the table), so a 10-row table is
read first and the deltas are what the index itself costs; the first-use figures are
reported beside them (``cold_*``).
"""

from __future__ import annotations

import sys
import time

from benchmarks import harness


def _status_kib(field: str) -> int:
    return harness.status_kib("self", (field,))[field]


def probe(path: str) -> dict[str, float]:
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from crossgeo.windows import read_table_windows

    cold0 = _status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "warm.parquet")
        pq.write_table(pa.table({"row_off": list(range(10)), "col_off": list(range(10))}), small)
        start = time.perf_counter()
        read_table_windows(small, "row_off", "col_off", kind="parquet")
        cold_s = time.perf_counter() - start
    cold_mb = (_status_kib("VmRSS") - cold0) / 1024
    rss0, hwm0 = _status_kib("VmRSS"), _status_kib("VmHWM")
    start = time.perf_counter()
    index = read_table_windows(path, "row_off", "col_off", kind="parquet")
    seconds = time.perf_counter() - start
    rss1, hwm1 = _status_kib("VmRSS"), _status_kib("VmHWM")
    return {
        "rows": len(index),
        "build_s": seconds,
        "rss_delta_mb": (rss1 - rss0) / 1024,
        "peak_delta_mb": (max(hwm1, rss1) - rss0) / 1024,
        "cold_first_read_s": cold_s,
        "cold_first_read_rss_mb": cold_mb,
        "rss_before_mb": rss0 / 1024,
        "hwm_before_mb": hwm0 / 1024,
    }


if __name__ == "__main__":
    raise SystemExit(harness.emit(probe(sys.argv[1])))
