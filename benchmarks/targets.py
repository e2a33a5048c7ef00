"""The suite's ratio table as data: what each ratio compares and the target it must meet.

`benchmarks.run` computes every row's value from the run's results with :func:`value` and
prints it beside its target (the performance page, `docs/scripts/performance_page.py`, shows the
run's measurements, not this table). A row is added here and nowhere else.

A value is ``numerator / denominator``, each a path of keys into the run's results (JSON). A
denominator of several paths is the best (largest) of the ones measured: a ratio against "the
best raw read" compares with whichever baseline was faster. With no denominator the value is the
number itself (seconds, megabytes). ``exact``: a path to a flag that must be true, or the value
is 0 (a miss): a speed-up only counts when both ways gave the same numbers.

Descriptions name what the run measured: ``{index_rows}``, ``{rss_epochs}``, ... are filled in
from the run's settings (the targets are for the full run's defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]
#: How a value is compared with its target; "report" rows are printed, never judged.
OPERATORS = (">=", "<=", "<", "report")


@dataclass(frozen=True)
class Target:
    """One row of the ratio table."""

    key: str
    description: str
    op: str
    target: float
    numerator: Path
    denominator: tuple[Path, ...] = ()
    exact: Path | None = None

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"target {self.key!r}: op {self.op!r} is not one of {OPERATORS}")


def _pps(*path: str) -> Path:
    """The patches/s of a case."""
    return (*path, "patches_per_s")


def _io(case: str) -> Path:
    return _pps("throughput", case)


def _peer(library: str, case: str, field: str = "patches_per_s") -> Path:
    return ("peers", f"{library}_{case}", field)


def _peer_rows(peer: str, name: str, times: float, worker_rss: float | None, peak_rss: float | None) -> list[Target]:
    """A peer's rows (issue #26): crossgeo's speed-up in four cases, then worker and peak RSS (None: report)."""
    rows = [
        ("aligned", "direct_aligned", "direct dataset[i], aligned mask"),
        ("warped", "direct_warped", "direct dataset[i], mask in EPSG:4326"),
        ("loader_0", "workers_0", "DataLoader bs {batch_size}, 0 workers"),
        ("loader_2", "workers_2", "DataLoader bs {batch_size}, 2 workers"),
    ]
    out = [
        Target(
            f"{peer}_{key}", f"crossgeo / {name}, {label}", ">=", times, _peer("crossgeo", case), (_peer(peer, case),)
        )
        for key, case, label in rows
    ]
    worker, peak = ("workers_2", "worker_rss_mb"), ("workers_0", "peak_rss_mb")
    out += [
        Target(
            f"{peer}_worker_rss",
            f"worker RSS (2 workers, fresh parents), crossgeo / {name}",
            "report" if worker_rss is None else "<=",
            worker_rss or 0.0,
            _peer("crossgeo", *worker),
            (_peer(peer, *worker),),
        ),
        Target(
            f"{peer}_peak_rss",
            f"0-worker DataLoader peak RSS, crossgeo / {name}",
            "report" if peak_rss is None else "<=",
            peak_rss or 0.0,
            _peer("crossgeo", *peak),
            (_peer(peer, *peak),),
        ),
    ]
    return out


_RAW_WARPED = (_io("raw_warped_full_vrt"), _io("raw_warped_window_vrt"))


def _s2_rows() -> list[Target]:
    """Issue #24's Sentinel-2-like rows (`benchmarks.s2_bench`): speed-ups cold and warm, then correctness."""
    rows = []
    for other, name, times in (("crossgeo_vrt", "hand-built VRT stack at 10 m", 1.0), ("torchgeo", "TorchGeo", 3.0)):
        for case, label in (("cold", "cold"), ("warm", "warm (2nd pass)")):
            rows.append(
                Target(
                    f"s2_vs_{'vrt' if other == 'crossgeo_vrt' else other}_{case}",
                    f"S2-like 12 band files, {{s2_windows:,}} windows, {label}: crossgeo / {name}",
                    ">=",
                    times,
                    _pps("s2", "throughput", f"crossgeo_bands_{case}"),
                    (_pps("s2", "throughput", f"{other}_{case}"),),
                )
            )
    checks = ("s2", "correctness")
    return [
        *rows,
        Target(
            "s2_vs_decode_bound_cold",
            "S2-like, cold: crossgeo / plain reads of the 12 bands at their resolutions (decode bound)",
            "report",
            0.0,
            _pps("s2", "throughput", "crossgeo_bands_cold"),
            (_pps("s2", "throughput", "raw_bands_cold"),),
        ),
        Target(
            "s2_other_crs_agreement",
            "S2-like: EPSG:4326 source, nearest: share of pixels = exact per-pixel answer",
            ">=",
            0.999,
            (*checks, "other_crs", "agreement"),
        ),
        Target(
            "s2_resolution_nearest_diff",
            "S2-like: 20/60 m bands, nearest: max |DN - whole-band reproject|",
            "<=",
            0.0,
            (*checks, "resolution", "nearest", "max_abs_diff"),
        ),
        Target(
            "s2_resolution_bilinear_diff",
            "S2-like: 20/60 m bands, bilinear: max |DN - whole-band reproject|",
            "<=",
            1.0,
            (*checks, "resolution", "bilinear", "max_abs_diff"),
        ),
    ]


TARGETS: list[Target] = [
    Target(
        "core_aligned_vs_raw", "core, aligned grids / raw bound", ">=", 0.90, _io("core_aligned"), (_io("raw_aligned"),)
    ),
    Target(
        "core_warped_vs_raw", "core, mask in EPSG:4326 / raw warped bound", ">=", 0.85, _io("core_warped"), _RAW_WARPED
    ),
    Target(
        "core_vs_open_per_item",
        "core / open-per-item (warped, GeoTIFF)",
        ">=",
        2.0,
        _io("core_warped"),
        (_io("open_per_item"),),
    ),
    Target(
        "core_vs_open_per_item_mbtiles",
        "core / open-per-item (warped, MBTiles; report)",
        "report",
        0.0,
        _io("core_warped_mbtiles"),
        (_io("open_per_item_mbtiles"),),
    ),
    Target(
        "torch_2_vs_0_workers",
        "torch DataLoader 2 workers / 0 workers (cold)",
        ">=",
        1.8,
        _pps("torch", "workers_2"),
        (_pps("torch", "workers_0"),),
    ),
    Target(
        "torch_2_vs_0_workers_compact",
        "torch DataLoader 2 / 0 workers, compact=True (cold)",
        ">=",
        1.8,
        _pps("torch", "workers_2_compact"),
        (_pps("torch", "workers_0_compact"),),
    ),
    Target(
        "torch_compact_vs_float_2",
        "torch 2 workers, compact / float items",
        "report",
        0.0,
        _pps("torch", "workers_2_compact"),
        (_pps("torch", "workers_2"),),
    ),
    Target(
        "loader_readahead_vs_direct",
        "0-worker DataLoader, read-ahead pool / one-thread dataset[i] loop",
        ">=",
        1.7,
        _pps("loader", "loader_0"),
        (_pps("loader", "direct"),),
    ),
    Target(
        "loader_serial_vs_direct",
        "0-worker DataLoader, read_threads=0 / one-thread dataset[i] loop",
        ">=",
        0.9,
        _pps("loader", "loader_0_serial"),
        (_pps("loader", "direct"),),
    ),
    Target(
        "loader_2_vs_0_serial",
        "2-worker DataLoader / 0 workers, one reader",
        ">=",
        1.6,
        _pps("loader", "loader_2"),
        (_pps("loader", "loader_0_serial"),),
    ),
    Target(
        "loader_2_vs_0_readahead",
        "2-worker DataLoader / 0 workers reading ahead (report)",
        "report",
        0.0,
        _pps("loader", "loader_2"),
        (_pps("loader", "loader_0"),),
    ),
    Target(
        "loader_2_compact_vs_float",
        "2 workers, compact batches into reused buffers / float items: patches/s",
        "report",
        0.0,
        _pps("loader", "loader_2_compact"),
        (_pps("loader", "loader_2_float"),),
    ),
    Target(
        "loader_2_compact_heap_mb",
        "2 workers, compact batches: main-process RSS growth, epoch 1 to 3 of {loader_windows}, MB",
        "<",
        50.0,
        ("loader", "loader_2_compact", "main_rss_growth_mb"),
    ),
    *_peer_rows("torchgeo", "TorchGeo", 4.0, worker_rss=0.6, peak_rss=0.8),
    *_peer_rows("original", "the original", 2.0, worker_rss=None, peak_rss=None),
    Target(
        "warm_warped_vs_raw",
        "warped, warm cache, crossgeo / best raw warped read",
        ">=",
        0.85,
        _pps("warm", "core_warped"),
        (_pps("warm", "raw_warped_full_vrt"), _pps("warm", "raw_warped_window_vrt")),
    ),
    Target(
        "warm_warped_vs_torchgeo",
        "warped, {warm_cachemax} MiB cache (2nd pass), crossgeo / TorchGeo",
        ">=",
        10.0,
        _peer("crossgeo", "direct_warped_warm"),
        (_peer("torchgeo", "direct_warped_warm"),),
    ),
    Target(
        "warm_aligned_vs_raw",
        "aligned, warm cache, crossgeo / raw",
        ">=",
        0.9,
        _pps("warm", "core_aligned"),
        (_pps("warm", "raw_aligned"),),
    ),
    Target("import_s", "import crossgeo (core), seconds", "<", 1.5, ("import", "import_crossgeo_s")),
    Target(
        "tf_autotune_vs_generator",
        "tf.data AUTOTUNE / from_generator",
        ">=",
        1.5,
        _pps("tf", "autotune"),
        (_pps("tf", "from_generator"),),
    ),
    Target(
        "tf_autotune_vs_generator_warm",
        "tf.data AUTOTUNE / from_generator, warm cache",
        ">=",
        1.5,
        _pps("tf_warm", "autotune"),
        (_pps("tf_warm", "from_generator"),),
    ),
    Target(
        "tf_float_vs_generator_warm",
        "tf.data AUTOTUNE compact=False / from_generator, warm cache",
        "report",
        0.0,
        _pps("tf_warm", "autotune_float"),
        (_pps("tf_warm", "from_generator"),),
    ),
    Target("colour_decode_vs_read", "colour-map decode / read time per patch", "<=", 0.10, ("colour", "ratio")),
    Target("index_build_s", "{index_rows:,}-row Parquet index: build seconds", "<", 3.0, ("index", "build_s")),
    Target("index_rss_mb", "{index_rows:,}-row Parquet index: resident MB", "<", 40.0, ("index", "rss_delta_mb")),
    Target(
        "worker_rss_ratio",
        "worker RSS after {rss_epochs} epochs / after 1",
        "<=",
        1.05,
        ("torch", "worker_rss", "ratio"),
    ),
    Target(
        "fractions_aligned_speedup",
        "class_fractions / per-window reads, aligned mask",
        ">=",
        10.0,
        ("planning", "fractions", "aligned", "speedup"),
        exact=("planning", "fractions", "aligned", "identical"),
    ),
    Target(
        "fractions_warped_speedup",
        "class_fractions / per-window reads, EPSG:4326 mask",
        ">=",
        3.0,
        ("planning", "fractions", "warped", "speedup"),
        exact=("planning", "fractions", "warped", "identical"),
    ),
    Target(
        "balanced_1m_s",
        "balanced_windows, {planning_rows:,} candidates: seconds",
        "<",
        2.0,
        ("planning", "tables", "balanced_windows", "seconds"),
    ),
    Target(
        "balanced_1m_mb",
        "balanced_windows, {planning_rows:,} candidates: peak MB",
        "<",
        200.0,
        ("planning", "tables", "balanced_windows", "peak_mb"),
    ),
    Target(
        "split_1m_s",
        "spatial_split, {planning_rows:,} windows: seconds",
        "<",
        2.0,
        ("planning", "tables", "spatial_split", "seconds"),
    ),
    Target(
        "split_1m_mb",
        "spatial_split, {planning_rows:,} windows: peak MB",
        "<",
        200.0,
        ("planning", "tables", "spatial_split", "peak_mb"),
    ),
    Target(
        "predict_vs_read",
        "predict_raster pixels/s / reading the windows (overlap 0)",
        ">=",
        0.8,
        ("predict", "throughput", "ratio"),
    ),
    Target(
        "predict_peak_vs_strip",
        "predict_raster peak memory / one strip of scores (K=5)",
        "<",
        2.0,
        ("predict", "memory", "ratio"),
    ),
    Target(
        "scenes_construction_s",
        "{scenes:,} scenes: SceneSampler construction seconds",
        "<",
        15.0,
        ("scenes", "construction_s"),
    ),
    Target(
        "scenes_vs_open_per_item",
        "{scenes:,} scenes, max_open=32 / open-per-item (shuffled)",
        ">=",
        1.5,
        _pps("scenes", "throughput", "scenes_max_open"),
        (_pps("scenes", "throughput", "open_per_item"),),
    ),
    Target(
        "scene_blocks_vs_open_per_item",
        "{scenes:,} scenes, max_open=32, order=scene-blocks (8 per block) / open-per-item",
        ">=",
        1.5,
        _pps("scenes", "throughput", "scenes_blocks"),
        (_pps("scenes", "throughput", "open_per_item"),),
    ),
    Target(
        "scenes_small_vs_single",
        "{tiles} scenes / one PatchSampler on the same windows",
        ">=",
        0.9,
        _pps("scenes", "throughput", "scenes_small"),
        (_pps("scenes", "throughput", "single"),),
    ),
    *_s2_rows(),
]


def lookup(results: dict[str, Any], path: Path) -> Any:
    """The value at ``path`` in ``results``, or None when any key is missing."""
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def value(target: Target, results: dict[str, Any]) -> float | None:
    """The row's value in this run's ``results``; None when a side was not measured."""
    top = lookup(results, target.numerator)
    if top is None:
        return None
    if target.exact is not None and not lookup(results, target.exact):
        return 0.0
    if not target.denominator:
        return float(top)
    bottom = max((float(v) for v in (lookup(results, p) for p in target.denominator) if v), default=None)
    return float(top) / bottom if bottom else None


def judge(target: Target, result: float | None, enforce: bool) -> str:
    """The row's status: skipped, reported, not enforced (smoke), met or MISSED."""
    if result is None:
        return "skipped"
    if target.op == "report":
        return "reported"
    if not enforce:
        return "not enforced (smoke)"
    ok = {">=": result >= target.target, "<=": result <= target.target, "<": result < target.target}[target.op]
    return "met" if ok else "MISSED"
