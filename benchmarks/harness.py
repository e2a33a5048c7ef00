"""What every benchmark harness shares: its command line, its scene, its JSON hand-over, ``/proc`` memory.

Each measuring module (``frameworks``, ``curves``, ``memory_probe``, ``warm``, ``peers``) runs
in a fresh subprocess started by `benchmarks.run`; they all take the same scene options
(:func:`scene_parser`, written by :func:`scene_args`), build the same :class:`~benchmarks.scenes.Scene`
(:func:`scene`) and hand one JSON object back on the last line of stdout (:func:`emit`, read by
:func:`run_json`). Memory is read from ``/proc`` (Linux): :func:`rss_mb` for one process,
:class:`WorkerMemory` for the largest ``VmRSS`` of each DataLoader worker while an epoch runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: How often `WorkerMemory` samples the workers' ``/proc/<pid>/status``.
SAMPLE_EVERY_S = 0.02


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the JSON)."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- command line and scene


def scene_parser(prog: str, cachemax: int = 8, description: str | None = None) -> argparse.ArgumentParser:
    """The options every harness takes: where the scene is, its size, the block cache and the batch."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--scene", required=True, help="scene folder (written by benchmarks.scenes)")
    parser.add_argument("--size", type=int, required=True, help="scene width = height in pixels")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--windows", type=int, required=True, help="windows of the scene's windows.parquet")
    parser.add_argument("--cachemax", type=int, default=cachemax, help=f"GDAL block cache in MiB (default {cachemax})")
    parser.add_argument("--batch-size", type=int, default=16)
    return parser


def scene_args(scene: Any, cachemax: int, batch_size: int) -> list[str]:
    """The command-line arguments of :func:`scene_parser` for ``scene`` (a `benchmarks.scenes.Scene`)."""
    return [
        *("--scene", str(scene.folder), "--size", str(scene.size), "--patch-size", str(scene.patch_size)),
        *("--windows", str(scene.n_windows), "--cachemax", str(cachemax), "--batch-size", str(batch_size)),
    ]


def scene(args: argparse.Namespace) -> Any:
    """The `benchmarks.scenes.Scene` named by :func:`scene_parser`'s options."""
    from benchmarks.scenes import Scene

    return Scene(Path(args.scene), args.size, args.patch_size, args.windows)


def window_offsets(path: str | Path, n: int | None = None) -> tuple[Any, Any]:
    """``row_off`` and ``col_off`` (int64 numpy arrays) of the first ``n`` (default all) windows of a Parquet table.

    Read from the columns' buffers: ``pq.read_table`` and ``to_numpy`` import pandas (~30 MB in the
    process, and in every DataLoader worker forked from it), which would weigh on the measured loader.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read(columns=["row_off", "col_off"])
    if n is not None:
        table = table.slice(0, n)

    def values(name: str) -> Any:
        column = table.column(name).cast(pa.int64())
        parts = [np.frombuffer(c.buffers()[1], np.int64, len(c), c.offset * 8) for c in column.chunks if len(c)]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    return values("row_off"), values("col_off")


# ---------------------------------------------------------------------- JSON hand-over


def emit(result: dict[str, Any]) -> int:
    """Print ``result`` as the last line of stdout (what :func:`run_json` reads); return exit code 0."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def run_json(
    command: list[str], timeout: float, env: dict[str, str] | None = None, *, show_progress: bool = False
) -> dict[str, Any]:
    """Run ``command`` from the repository root and parse the last line of its stdout as JSON.

    The repository is put first on ``PYTHONPATH`` so ``-m benchmarks.*`` resolves in any
    interpreter. ``show_progress``: its stderr goes straight to ours instead of into the error.
    Raises ``RuntimeError`` (with the last lines of its output) when it exits non-zero.
    """
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    environment.update(env or {})
    stderr = None if show_progress else subprocess.PIPE
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout, cwd=REPO, env=environment
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:5])} ... exited {done.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- memory from /proc


def status_kib(pid: int | str = "self", fields: tuple[str, ...] = ("VmRSS", "RssAnon", "VmHWM")) -> dict[str, int]:
    """The named fields (KiB) of ``/proc/<pid>/status``; raises ``OSError`` when the process is gone."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                out[name] = int(value.split()[0])
    return out


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size (``VmRSS``) of a process in MiB."""
    return status_kib(pid, ("VmRSS",)).get("VmRSS", 0) / 1024


def peak_rss_mb() -> float:
    """This process's largest resident set so far (``ru_maxrss``) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children(parent: int) -> list[int]:
    """Pids of the live children of ``parent`` (from ``/proc/*/stat``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


def rollup_kib(pid: int | str = "self") -> dict[str, int]:
    """``Pss`` and ``Private`` (clean + dirty) of ``/proc/<pid>/smaps_rollup`` in KiB; raises ``OSError`` when gone.

    ``VmRSS`` counts every page a worker maps, the pages it shares with the process it was forked from (PyTorch's
    import) too; ``Private`` is what it holds alone, ``Pss`` its share of all it maps.
    """
    out = {"Pss": 0, "Private": 0}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, value = line.partition(":")
            if name == "Pss":
                out["Pss"] = int(value.split()[0])
            elif name in ("Private_Clean", "Private_Dirty"):
                out["Private"] += int(value.split()[0])
    return out


#: `WorkerMemory` reads ``smaps_rollup`` (slower than ``status``) at every this many samples.
ROLLUP_EVERY = 10


class WorkerMemory(threading.Thread):
    """Largest ``VmRSS`` / ``RssAnon`` (and ``Pss`` / private, `rollup_kib`) of each child process of this one.

    Looks for the children (DataLoader workers) by their parent pid until ``expected`` of them
    are found, then reads only their ``/proc/<pid>/status`` every `SAMPLE_EVERY_S` seconds (and their
    ``smaps_rollup`` every `ROLLUP_EVERY` samples).
    """

    def __init__(self, expected: int) -> None:
        super().__init__(daemon=True)
        self.expected = expected
        self.halt = threading.Event()
        self.peak: dict[int, dict[str, int]] = {}
        self.samples = 0

    def run(self) -> None:
        me, pids = os.getpid(), list[int]()
        while not self.halt.is_set():
            if len(pids) < self.expected:
                pids = children(me)
            for pid in pids:
                try:
                    now = status_kib(pid, ("VmRSS", "RssAnon"))
                    if self.samples % ROLLUP_EVERY == 0:
                        now.update(rollup_kib(pid))
                except OSError:  # the worker exited
                    continue
                best = self.peak.setdefault(pid, {})
                for key, value in now.items():
                    best[key] = max(best.get(key, 0), value)
            self.samples += 1
            self.halt.wait(SAMPLE_EVERY_S)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the mean over the workers of each one's largest sample, and each one's."""
        self.halt.set()
        self.join()
        rss = [p.get("VmRSS", 0) / 1024 for p in self.peak.values()]
        anon = [p.get("RssAnon", 0) / 1024 for p in self.peak.values()]
        pss = [p.get("Pss", 0) / 1024 for p in self.peak.values()]
        private = [p.get("Private", 0) / 1024 for p in self.peak.values()]
        return {
            "worker_rss_mb": statistics.mean(rss) if rss else None,
            "worker_rss_anon_mb": statistics.mean(anon) if anon else None,
            "worker_pss_mb": statistics.mean(pss) if pss else None,
            "worker_private_mb": statistics.mean(private) if private else None,
            "worker_rss_mb_per_worker": rss,
            "workers_seen": len(rss),
            "rss_samples": self.samples,
        }
