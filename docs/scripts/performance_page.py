"""Generate docs/performance.md's tables and figures from one run of the benchmark suite.

    python docs/scripts/performance_page.py [RUN.json]          # rewrite the tables, draw the figures
    python docs/scripts/performance_page.py [RUN.json] --check  # exit 1 when the page or a figure is out of date

``RUN.json`` (default ``docs/images/bench-run.json``) is what ``python -m benchmarks --json FILE``
writes; ``python -m benchmarks --page`` writes it there and runs this script. Every number of the
page comes from that one file: each table sits between a BEGIN and an END marker (one pair per
section), and each figure is drawn from the same file with matplotlib and carries the file's
SHA-256 in its PNG metadata, so ``--check`` (which needs no matplotlib) also fails when a figure
was drawn from another run. Text outside the markers is hand-written and states no number.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import generated_section  # docs/scripts, beside this file

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "performance.md"
IMAGES = REPO / "docs" / "images"
RUN = IMAGES / "bench-run.json"
END = generated_section.END
LIBRARIES = {"crossgeo": "crossgeo", "torchgeo": "TorchGeo", "original": "the original"}
PACKAGES = {"torchgeo": "TorchGeo", "original": "`pytorch_segmentation_models_trainer` (the original)"}
COLOURS = {"crossgeo": "#1f77b4", "torchgeo": "#ff7f0e", "original": "#2ca02c"}
FIGURES = {"peers": "bench-peers.png", "workers": "bench-workers.png"}
"""Figure name -> file in docs/images."""
DASH = "–"


def begin(section: str) -> str:
    """The BEGIN marker of one generated section of the page."""
    return f"<!-- BEGIN GENERATED {section} by docs/scripts/performance_page.py from bench-run.json; do not edit -->"


# ---------------------------------------------------------------------- reading the run


def load(path: Path = RUN) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def digest(path: Path = RUN) -> str:
    """The run file's SHA-256 (hex), stamped into every figure."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def peer(results: dict[str, Any], library: str, case: str, field: str = "patches_per_s") -> float | None:
    """A library's median in a peer case, or None when it was not measured."""
    value = _get(results, "peers", f"{library}_{case}", field)
    return None if value is None else float(value)


def libraries(results: dict[str, Any]) -> list[str]:
    """The libraries the run measured, crossgeo first."""
    versions = _get(results, "peers", "versions") or {}
    return [lib for lib in LIBRARIES if lib in versions]


def library_name(results: dict[str, Any], library: str) -> str:
    """``TorchGeo 0.10.1``, ``the original 1.4.0``, ``crossgeo``."""
    if library == "crossgeo":
        return "crossgeo"
    version = _get(results, "peers", "versions", library, "version")
    return f"{LIBRARIES[library]} {version}" if version else LIBRARIES[library]


def max_workers(results: dict[str, Any]) -> int:
    return int(_get(results, "peers", "max_workers") or 2)


# ---------------------------------------------------------------------- formatting


def rate(value: float | None) -> str:
    """Patches (or chips) per second: three significant figures at most, thousands separated."""
    if value is None:
        return DASH
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def times(value: float | None) -> str:
    """A ratio as ``4.2×`` (two significant figures below 10)."""
    if value is None:
        return DASH
    return f"{value:.0f}×" if value >= 10 else f"{value:.1f}×" if value >= 1 else f"{value:.2f}×"


def ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def megabytes(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f} MB"


def runs(n: int) -> str:
    """``median of 3 runs``, ``one run``."""
    return "one run" if n == 1 else f"median of {n} runs"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def not_measured(name: str, results: dict[str, Any]) -> str:
    why = _get(results, "skipped", name) or "not part of this run"
    return f"*Not measured in this run ({why.splitlines()[0]}).*"


# ---------------------------------------------------------------------- the sections


def section_machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = m.get("versions", {})
    peers = _get(results, "peers", "versions") or {}
    torch = next((v.get("torch") for v in peers.values() if v.get("torch")), versions.get("torch"))
    commit = f" (commit `{m['commit']}`)" if m.get("commit") else ""
    scene = results["scene"]
    cache = f"{results['gdal_cachemax_bytes'] >> 20} MiB"
    peer_cache = _get(results, "peers", "gdal_cachemax_mb")
    if peer_cache is not None and peer_cache != results["gdal_cachemax_bytes"] >> 20:
        cache += f" ({peer_cache} MiB in the comparison with TorchGeo and the original)"
    rows = [
        ["Date", m.get("date", DASH)],
        ["CPU", f"{m.get('cpu', DASH)}, {m['cpus']} cores"],
        ["Memory", f"{m['memory_gb']:g} GB" if m.get("memory_gb") else DASH],
        ["OS", m.get("os", m.get("platform", DASH))],
        ["Python", m["python"]],
        ["GDAL / rasterio / NumPy", f"{m.get('gdal', DASH)} / {versions.get('rasterio')} / {versions.get('numpy')}"],
        ["PyTorch", torch or DASH],
        ["crossgeo", f"{versions.get('crossgeo', DASH)}{commit}"],
    ]
    rows += [[PACKAGES[lib], peers[lib]["version"]] for lib in PACKAGES if lib in peers]
    rows += [
        [
            "Main scene",
            f"{scene['size']:,} × {scene['size']:,} RGB GeoTIFF, DEFLATE, 256 × 256 tiles; "
            f"windows of {scene['patch_size']} pixels",
        ],
        ["GDAL block cache (`GDAL_CACHEMAX`)", cache],
        ["Whole run", f"{results['seconds'] / 60:.0f} minutes"],
    ]
    return table(["", "this run"], rows)


def _peer_cases(results: dict[str, Any]) -> list[tuple[str, str]]:
    batch = _get(results, "peers", "batch_size") or 16
    top = max_workers(results)
    return [
        ("direct_aligned", "read `dataset[i]`, mask on the image grid"),
        ("direct_warped", "read `dataset[i]`, mask in EPSG:4326"),
        ("workers_0", f"DataLoader, batch {batch}, 0 workers"),
        (f"workers_{top}", f"DataLoader, batch {batch}, {top} workers"),
        ("direct_warped_warm", "`dataset[i]`, mask in EPSG:4326, second pass, warm cache"),
    ]


def section_peers(results: dict[str, Any]) -> str:
    if "peers" not in results:
        return not_measured("peers", results)
    libs = libraries(results)
    others = [lib for lib in libs if lib != "crossgeo"]
    header = ["patches/s", *(library_name(results, lib) for lib in libs)]
    header += [f"crossgeo / {library_name(results, lib)}" for lib in others]
    rows = []
    for case, label in _peer_cases(results):
        ours = peer(results, "crossgeo", case)
        if ours is None:
            continue
        rows.append(
            [
                label,
                *(f"**{rate(ours)}**" if lib == "crossgeo" else rate(peer(results, lib, case)) for lib in libs),
                *(times(ratio(ours, peer(results, lib, case))) for lib in others),
            ]
        )
    p = results["peers"]
    grid = {"utm": "a UTM zone 32N grid", "mercator": "the Web Mercator grid"}[p.get("grid", "mercator")]
    notes = [
        f"Image: the scene's pixels on {grid}; the EPSG:4326 mask is warped onto it by every library.",
        f"Windows: the first {p['windows']:,} of the scene's random windows ({p['warm_windows']:,} for the warm-cache "
        f"row, whose block cache is {p['warm_gdal_cachemax_mb']} MiB); {runs(p['rounds'])} per library and row, "
        "each in a fresh process, the libraries' order changing between runs.",
    ]
    for lib in others:
        for kind, mask in (("aligned", "on the image grid"), ("warped", "in EPSG:4326")):
            a = _get(p, "agreement", lib, kind)
            if a:
                notes.append(
                    f"Same pixels, mask {mask}: {library_name(results, lib)}'s images equal crossgeo's in "
                    f"{a['images_identical']} of the first {a['windows_checked']} windows; the masks agree on "
                    f"{100 * a['mask_agreement_mean']:.1f} % of the pixels."
                )
    return table(header, rows) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def section_workers(results: dict[str, Any]) -> str:
    if "peers" not in results:
        return not_measured("peers", results)
    libs = libraries(results)
    header = ["DataLoader workers", *(f"{library_name(results, lib)}, patches/s" for lib in libs)]
    rows = []
    for n in range(max_workers(results) + 1):
        cells = [str(n)]
        for lib in libs:
            value, base = peer(results, lib, f"workers_{n}"), peer(results, lib, "workers_0")
            cells.append(rate(value) if n == 0 else f"{rate(value)} ({times(ratio(value, base))})")
        rows.append(cells)
    best = []
    for lib in libs:
        speeds = {n: peer(results, lib, f"workers_{n}") or 0.0 for n in range(max_workers(results) + 1)}
        fastest = max(speeds, key=lambda n: speeds[n])
        best.append(f"{LIBRARIES[lib]} with {fastest} worker{'' if fastest == 1 else 's'}")
    p = results["peers"]
    note = (
        "In brackets: the speed-up over the same library's loader without workers. "
        f"One epoch of {p['windows']:,} windows, {runs(p['rounds'])}. "
        f"Fastest on this machine: {', '.join(best)}."
    )
    return table(header, rows) + "\n\n" + note


def section_memory(results: dict[str, Any]) -> str:
    if "peers" not in results:
        return not_measured("peers", results)
    libs = libraries(results)
    header = ["resident memory (RSS)", *(library_name(results, lib) for lib in libs)]
    rows = [
        [
            "the whole training process, 0 workers (peak)",
            *(megabytes(peer(results, lib, "workers_0", "peak_rss_mb")) for lib in libs),
        ]
    ]
    for n in range(1, max_workers(results) + 1):
        label = f"each worker, {n} worker{'s' if n > 1 else ''}"
        rows.append([label, *(megabytes(peer(results, lib, f"workers_{n}", "worker_rss_mb")) for lib in libs)])
    return table(header, rows)


def section_blocks(results: dict[str, Any]) -> str:
    blocks = results.get("blocks")
    if not blocks:
        return not_measured("blocks", results)
    names = {
        "random": "`random_windows`, read in random order",
        "grid, shuffled": "`grid_windows`, read in random order",
        "grid, row-major": "`grid_windows`, read row by row",
    }
    rows = []
    for name, entry in blocks["variants"].items():
        free, aligned = entry["unaligned"], entry["aligned"]
        rows.append(
            [
                names.get(name, name),
                f"{free['blocks_per_patch']:.2f} → {aligned['blocks_per_patch']:.2f}",
                rate(free["median"]),
                rate(aligned["median"]),
                f"**{times(entry['ratio'])}**",
            ]
        )
    header = ["windows of 256", "tiles decoded per patch", "patches/s", 'patches/s, `align="blocks"`', "gain"]
    first = next(iter(blocks["variants"].values()))
    note = (
        f"{blocks['size']:,} × {blocks['size']:,} scene of {blocks['tile']} × {blocks['tile']} DEFLATE tiles, "
        f"{first['unaligned']['windows']} windows per run, {runs(len(first['unaligned']['patches_per_s']))} "
        "(aligned and free windows alternating, each run with a fresh sampler)."
    )
    return table(header, rows) + "\n\n" + note


def section_scenes(results: dict[str, Any]) -> str:
    sc = results.get("scenes")
    if not sc:
        return not_measured("scenes", results)
    t = {name: case["patches_per_s"] for name, case in sc["throughput"].items()}
    n, tiles = sc["catalogue"]["scenes"], sc["catalogue"]["tiles"]
    base = t.get("open_per_item")
    rows = [
        [
            f"{n:,} scenes, `SceneSampler(max_open={sc['max_open']})`, shuffled",
            rate(t.get("scenes_max_open")),
            times(ratio(t.get("scenes_max_open"), base)),
        ],
        [
            f'the same, `order="scene-blocks"`, {sc["block_scenes"]} scenes per block',
            rate(t.get("scenes_blocks")),
            times(ratio(t.get("scenes_blocks"), base)),
        ],
        ["the same windows, opening image and mask for every patch", rate(base), times(1.0 if base else None)],
    ]
    table1 = table(["reading", "patches/s", "/ opening per patch"], rows)
    note = (
        f"{n:,} GeoTIFF scenes of {sc['catalogue']['size']:,} × {sc['catalogue']['size']:,} pixels with one mask "
        f"mosaic in EPSG:4326; {sc['reads']:,} windows of {sc['catalogue']['patch_size']} read in each case; building "
        f"the `SceneSampler` (every scene inspected) took {sc['construction_s']:.1f} s."
    )
    if "scenes_small" in t and "single" in t:
        note += (
            f" {tiles} scenes cut from one raster read at {times(ratio(t['scenes_small'], t['single']))} the speed of "
            "one `PatchSampler` on that raster (same windows)."
        )
    return table1 + "\n\n" + note


def section_chips(results: dict[str, Any]) -> str:
    c = _get(results, "chips", "scene")
    if not c:
        return not_measured("chips", results)
    n = c["windows"]
    live = n / c["live_epoch2_s"]
    rows = [
        ["live `PatchSampler`, second epoch", rate(live), times(1.0)],
        ["`write_chips` (once)", rate(n / c["write_s"]), times(c["write_s"] and c["live_epoch2_s"] / c["write_s"])],
        ["`ChipSampler`, first epoch", rate(n / c["chips_epoch1_s"]), times(c["live_epoch2_s"] / c["chips_epoch1_s"])],
        ["`ChipSampler`, later epochs", rate(n / c["chips_epoch2_s"]), f"**{times(c['chips_vs_live'])}**"],
    ]
    if c.get("chips_loader_vs_live_loader"):
        rows.append(
            [
                "0-worker DataLoader: chips / live sampler",
                f"{rate(n / c['chips_loader_epoch_s'])} / {rate(n / c['live_loader_epoch_s'])}",
                times(c["chips_loader_vs_live_loader"]),
            ]
        )
    note = (
        f"The first {n:,} windows of the scene, mask in EPSG:4326. The store takes "
        f"{c['store_bytes'] / 1e6:,.0f} MB for {c['raw_bytes'] / 1e6:,.0f} MB of arrays."
    )
    return table(["reading", "patches/s", "/ live sampler"], rows) + "\n\n" + note


def section_bands(results: dict[str, Any]) -> str:
    b = results.get("bands")
    if not b:
        return not_measured("bands", results)
    names = {
        "one_file": "one 3-band file",
        "band_files": "three band files, same 10 m grid",
        "mixed_resolution": "two 10 m band files and one 20 m band file (resampled)",
    }
    rows = [
        [names.get(k, k), rate(v["median"]), times(v["vs_one_file"])] for k, v in b["variants"].items() if k in names
    ]
    note = (
        f"{b['size']:,} × {b['size']:,} pixels at 10 m, {b['tile']} × {b['tile']} DEFLATE tiles, "
        f"{b['windows']} random windows of {b['patch']} per run, {runs(b['rounds'])} (variants alternating, "
        "a fresh sampler each run). The three band files on one grid give the 3-band file's pixels exactly (checked "
        "in the run)."
    )
    return table(["image", "patches/s", "/ one file"], rows) + "\n\n" + note


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "machine": section_machine,
    "peers": section_peers,
    "workers": section_workers,
    "memory": section_memory,
    "blocks": section_blocks,
    "scenes": section_scenes,
    "chips": section_chips,
    "bands": section_bands,
}


def generated(results: dict[str, Any]) -> dict[str, str]:
    """Each section's text, markers included."""
    return {name: "\n\n".join([begin(name), make(results), END]) for name, make in SECTIONS.items()}


def current(page: Path = PAGE) -> dict[str, str]:
    return {name: generated_section.current(page, begin(name)) for name in SECTIONS}


# ---------------------------------------------------------------------- figures


def _style(plt: Any) -> None:
    """Large type: the figures are read at 1280 px and on a phone (about 390 px wide)."""
    plt.rcParams.update(
        {
            "font.size": 17,
            "axes.titlesize": 18,
            "axes.labelsize": 17,
            "xtick.labelsize": 16,
            "ytick.labelsize": 16,
            "legend.fontsize": 16,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def _legend(ax: Any) -> None:
    """One row across the top of the figure, where it can cover no bar or line."""
    ax.figure.legend(loc="upper center", ncol=3, frameon=False, handlelength=1.2, columnspacing=1.2)


def draw_peers(results: dict[str, Any], ax: Any) -> None:
    """Patches/s per case, one bar per library (the peers table's rows)."""
    import numpy as np

    short = {
        "direct_aligned": "mask on grid",
        "direct_warped": "mask in 4326",
        "workers_0": "loader, 0 workers",
        f"workers_{max_workers(results)}": f"loader, {max_workers(results)} workers",
    }
    cases = [case for case in short if peer(results, "crossgeo", case) is not None]
    libs = libraries(results)
    height = 0.8 / len(libs)
    y = np.arange(len(cases))
    for k, lib in enumerate(libs):
        values = [peer(results, lib, case) or 0.0 for case in cases]
        ax.barh(y + (k - (len(libs) - 1) / 2) * height, values, height, color=COLOURS[lib], label=LIBRARIES[lib])
    ax.set_yticks(y, [short[case] for case in cases])
    ax.invert_yaxis()
    ax.set_xlabel("patches / s (more is better)")
    _legend(ax)
    ax.grid(axis="x", alpha=0.3)


def draw_workers(results: dict[str, Any], ax: Any) -> None:
    """Patches/s against the DataLoader's workers, one line per library (the workers table)."""
    workers = list(range(max_workers(results) + 1))
    for lib in libraries(results):
        values = [peer(results, lib, f"workers_{n}") for n in workers]
        ax.plot(workers, values, marker="o", markersize=9, linewidth=3, color=COLOURS[lib], label=LIBRARIES[lib])
    ax.set_xticks(workers)
    ax.set_xlabel("DataLoader workers")
    ax.set_ylabel("patches / s")
    ax.set_ylim(bottom=0)
    _legend(ax)
    ax.grid(alpha=0.3)


DRAW: dict[str, Callable[[dict[str, Any], Any], None]] = {"peers": draw_peers, "workers": draw_workers}


def draw(results: dict[str, Any], stamp: str, folder: Path = IMAGES) -> list[Path]:
    """Every figure, each stamped with the run file's SHA-256 (PNG metadata ``Source``)."""
    if "peers" not in results:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _style(plt)
    written = []
    for name, make in DRAW.items():
        fig, ax = plt.subplots(figsize=(7, 4.6), dpi=150)
        make(results, ax)
        fig.tight_layout(rect=(0, 0, 1, 0.9))  # the top tenth: the legend
        path = folder / FIGURES[name]
        fig.savefig(path, metadata={"Source": f"bench-run.json sha256:{stamp}"})
        plt.close(fig)
        written.append(path)
    return written


def png_source(path: Path) -> str | None:
    """The ``Source`` text of a PNG (what :func:`draw` stamps), read without matplotlib."""
    data = path.read_bytes()
    offset = 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            if key == b"Source":
                return text.decode("latin-1")
        offset += 12 + length
    return None


def stale(results: dict[str, Any], stamp: str, page: Path = PAGE, folder: Path = IMAGES) -> list[str]:
    """What is out of date: sections of the page, and figures drawn from another run (or missing)."""
    fresh, old = generated(results), current(page)
    out = [f"section {name}" for name in SECTIONS if fresh[name] != old[name]]
    if "peers" in results:
        for name in DRAW:
            path = folder / FIGURES[name]
            if not path.exists() or png_source(path) != f"bench-run.json sha256:{stamp}":
                out.append(f"figure {path.name}")
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--check"]
    run = Path(args[0]) if args else RUN
    results, stamp = load(run), digest(run)
    if "--check" in argv:
        out = stale(results, stamp)
        if out:
            print(f"{PAGE} is out of date with {run} ({', '.join(out)}): run python docs/scripts/performance_page.py")
            return 1
        return 0
    text = PAGE.read_text()
    for name, section in generated(results).items():
        text = text.replace(generated_section.current(PAGE, begin(name)), section)
    PAGE.write_text(text)
    for path in draw(results, stamp):
        print(f"wrote {path}")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
