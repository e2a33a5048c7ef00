"""``crossgeo stats``: class pixel counts, frequencies and suggested class weights over every window.

Reads only the masks (`crossgeo.PatchSampler.read_mask`), once per window; classes are
labelled with the configuration's ``class_names`` when it has them. The share of image
pixels without data is measured on an even sample of windows (`crossgeo.survey.survey`);
each image source's coverage, nodata share and per-band minimum, maximum, mean and standard
deviation on a coarse overview of the reference grid (`crossgeo.survey.survey_sources`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossgeo.cli.common import (
    EXAMPLE_CONFIG,
    add_config_arguments,
    class_label,
    declared_classes,
    ignore_index,
    make_sampler,
    progress,
    read_with_validity,
)
from crossgeo.files import atomic_output, check_not_input, input_paths
from crossgeo.survey import SourceSurvey, block_decoding, survey, survey_sources

__all__ = ["add_parser", "compute_stats", "format_stats", "run"]

SCENE_LINES = 50
"""Scenes of a catalogue listed in the printed report (all of them go to ``--json``)."""


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stats",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="class pixel counts, frequencies and suggested class weights",
        description="Read the mask of every window once and print per-class pixel counts and frequencies, the "
        "pixels without mask data, windows with no foreground, and suggested class weights (median-frequency "
        "balancing).",
        epilog="example:\n  crossgeo stats config.yaml --json stats.json\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    sampler, options = make_sampler(args)
    if args.json:  # before the masks are read: a refused output should not wait for them
        check_not_input(args.json, input_paths(args.config, options.sampler), option="--json")
    stats = compute_stats(sampler, class_names=options.class_names)
    stats["config"] = str(args.config)
    print(format_stats(stats, sampler))
    if args.json:
        out = Path(args.json)
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(out, option="--json") as temp:
            temp.write_text(json.dumps(stats, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def compute_stats(
    sampler: Any, *, progress_bar: bool = True, class_names: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """One pass over every window: per-class pixels, fill, empty windows, class weights."""
    declared = declared_classes(sampler)
    ignore = ignore_index(sampler)
    counts = np.zeros(max(declared) + 1, dtype=np.int64)
    present = np.zeros_like(counts)  # pixels of the windows where the class occurs
    windows_with = np.zeros_like(counts)
    fill_pixels = 0
    no_foreground: list[int] = []
    n = len(sampler)
    scene_of = getattr(sampler, "scene", None)  # a SceneSampler: also count per scene
    per_scene: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    bar = progress(range(n), desc="stats", unit="patch", disable=None if progress_bar else True)
    for i in bar:
        _, mask, invalid = read_with_validity(sampler, i, image=False)
        found = np.bincount(mask.ravel())
        if found.size > counts.size:
            grow = found.size - counts.size
            counts, present, windows_with = (np.pad(a, (0, grow)) for a in (counts, present, windows_with))
        counts[: found.size] += found
        if scene_of is not None:
            scene = int(scene_of[i])
            tally = per_scene.setdefault(scene, np.zeros(0, dtype=np.int64))
            if tally.size < found.size:
                tally = per_scene[scene] = np.pad(tally, (0, found.size - tally.size))
            tally[: found.size] += found
        occurs = np.flatnonzero(found)
        present[occurs] += mask.size
        windows_with[occurs] += 1
        fill_pixels += int(invalid.sum())
        foreground = [c for c in occurs if c != 0 and c != ignore]
        if not foreground:
            no_foreground.append(i)
    looked = survey(sampler)  # image data: a sample of windows spread evenly (stats reads masks only)
    sources = [_source_entry(found) for found in survey_sources(sampler.image_info)] if scene_of is None else None
    blocks = block_decoding(sampler)
    seconds = time.perf_counter() - start
    total = int(counts.sum())
    classes = sorted(set(declared) | {int(c) for c in np.flatnonzero(counts)})
    weighted = [c for c in classes if c != ignore and counts[c] > 0]
    freq = {c: counts[c] / present[c] for c in weighted}
    median = float(np.median(list(freq.values()))) if freq else 0.0
    rows = []
    for c in classes:
        rows.append(
            {
                "class": c,
                "label": class_label(sampler, c, class_names),
                "pixels": int(counts[c]),
                "frequency": float(counts[c] / total) if total else 0.0,
                "windows": int(windows_with[c]),
                "weight": round(median / freq[c], 6) if c in freq else None,
                "declared": c in declared,
                "ignore": c == ignore,
            }
        )
    return {
        "image": sampler.image_path,
        "mask": sampler.mask_path,
        "windows": n,
        "patch_size": sampler.patch_size,
        "pixels": total,
        "classes": rows,
        "fill_value": int(sampler.mask_fill_value),
        "fill_pixels": fill_pixels,
        "fill_fraction": fill_pixels / total if total else 0.0,
        "image_invalid_fraction": looked.invalid_image_share,
        "image_invalid_sampled_windows": looked.windows,
        "windows_without_foreground": len(no_foreground),
        "windows_without_foreground_index": no_foreground,
        "class_weights": {str(r["class"]): r["weight"] for r in rows if r["weight"] is not None},
        "weighting": "median-frequency balancing (Eigen & Fergus 2015): median(freq) / freq(c), "
        "freq(c) = pixels of c / pixels of the windows where c occurs",
        "seconds": round(seconds, 3),
        "blocks": _blocks_entry(blocks),
        **({"sources": sources} if sources is not None else {}),
        **({"scenes": _scene_rows(sampler, per_scene)} if scene_of is not None else {}),
    }


def _blocks_entry(blocks: Any) -> dict[str, Any]:
    """`crossgeo.survey.BlockDecoding` as JSON: block shape, blocks per patch, minimum, amplification, fix."""
    found = blocks.image
    if found is None:
        return {"measured": False, "reason": blocks.reason, "text": blocks.describe()}
    return {
        "measured": True,
        "block_shape": [found.layout.height, found.layout.width],
        "interleave": found.layout.interleave,
        "blocks_per_patch": round(found.mean_blocks * found.planes, 4),
        "minimum": found.minimum * found.planes,
        "amplification": round(found.amplification, 4),
        "share_above_minimum": round(found.share_above, 4),
        "decoded_pixels_per_patch_pixel": round(found.decoded_pixels, 4),
        "mask_amplification": None if blocks.mask is None else round(blocks.mask.amplification, 4),
        "text": blocks.describe(),
        "fix": blocks.fix(),
    }


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _source_entry(found: SourceSurvey) -> dict[str, Any]:
    """`crossgeo.survey.SourceSurvey` as JSON: CRS, pixel size, coverage, nodata share, statistics per band."""
    return {
        "name": found.name,
        "path": found.path,
        "crs": found.crs,
        "resolution": list(found.resolution),
        "coverage": round(found.coverage, 6),
        "nodata_share": round(found.nodata_share, 6),
        "overview_pixels": found.pixels,
        "bands": [
            {
                "band": b.band,
                "min": _number(b.minimum),
                "max": _number(b.maximum),
                "mean": _number(b.mean),
                "std": _number(b.std),
            }
            for b in found.bands
        ],
    }


def _scene_rows(sampler: Any, per_scene: Mapping[int, np.ndarray]) -> list[dict[str, Any]]:
    """Per scene of a `crossgeo.SceneSampler`: its image, windows, pixels per class and image sources."""
    windows = sampler.windows_per_scene()
    return [
        {
            "scene": scene.position,
            "image": scene.image_path,
            "windows": int(windows[scene.position]),
            "pixels": {str(c): int(v) for c, v in enumerate(per_scene.get(scene.position, np.zeros(0)).tolist()) if v},
            "sources": [_source_entry(found) for found in survey_sources(one.image_info)],
        }
        for scene, one in zip(sampler.catalogue, sampler.samplers)
    ]


def _format_sources(sources: list[dict[str, Any]]) -> list[str]:
    """The printed lines of the image sources: one per source, one per band."""
    lines = ["", "image sources (on an overview of the reference grid, at most 256 px a side):"]
    for source in sources:
        res = " x ".join(f"{v:g}" for v in source["resolution"])
        lines.append(
            f"  {source['name']}: {source['crs']}, {res} pixels; covers {source['coverage']:.1%} of the reference "
            f"grid, no data on {source['nodata_share']:.2%} of that  ({source['path']})"
        )
        for band in source["bands"]:
            if band["mean"] is None:
                lines.append(f"    {source['name']}:{band['band']:<4} no data")
                continue
            lines.append(
                f"    {source['name']}:{band['band']:<4} min {band['min']:g}  max {band['max']:g}  "
                f"mean {band['mean']:.4g}  std {band['std']:.4g}"
            )
    return lines


def aligned(rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> list[str]:
    """``rows`` (the first one the header) as text columns as wide as their widest cell.

    Columns ``left`` are left-aligned (names), the others right-aligned (numbers), so a long
    class name or a count of billions widens its column instead of pushing its row askew.
    """
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if c in left else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


def format_stats(stats: dict[str, Any], sampler: Any) -> str:
    """The printed report of `compute_stats`."""
    lines = [
        f"{stats['windows']} windows of {stats['patch_size']} x {stats['patch_size']} px "
        f"({stats['pixels']:,} pixels) read in {stats['seconds']:.2f} s "
        f"({stats['windows'] / max(stats['seconds'], 1e-9):.0f} patches/s)",
        "",
    ]
    table = [["class", "pixels", "frequency", "windows", "weight"]]
    for row in stats["classes"]:
        label = row["label"] + (" (ignore)" if row["ignore"] else "") + ("" if row["declared"] else " (undeclared)")
        weight = "-" if row["weight"] is None else f"{row['weight']:.3f}"
        table.append([label, f"{row['pixels']:,}", f"{row['frequency']:.2%}", str(row["windows"]), weight])
    lines.extend(aligned(table))
    lines.append("")
    lines.append(
        f"no mask data (uncovered or nodata, decoded as class {stats['fill_value']}): "
        f"{stats['fill_pixels']:,} pixels ({stats['fill_fraction']:.2%})"
    )
    lines.append(
        f"image pixels without data (alpha 0, nodata, mask band or outside the image) in a sample of "
        f"{stats['image_invalid_sampled_windows']} windows: {stats['image_invalid_fraction']:.2%}"
        + (" (ignore_invalid_image: true keeps them out of the loss)" if stats["image_invalid_fraction"] else "")
    )
    empty = stats["windows_without_foreground_index"]
    listed = ", ".join(f"#{i} (row {int(sampler.row_off[i])}, col {int(sampler.col_off[i])})" for i in empty[:5])
    lines.append(
        f"windows with no foreground: {len(empty)} of {stats['windows']}"
        + (f": {listed}{' ...' if len(empty) > 5 else ''}" if empty else "")
    )
    weights = stats["class_weights"]
    lines.append(
        "suggested class weights (median-frequency balancing): "
        + (", ".join(f"{k}: {v:.3f}" for k, v in weights.items()) if weights else "none (no pixels)")
    )
    blocks = stats["blocks"]
    lines.append(f"image blocks: {blocks['text']}")
    if blocks.get("fix"):
        lines.append(f"  fix: {blocks['fix']}")
    if "sources" in stats:
        lines += _format_sources(stats["sources"])
    if "scenes" in stats:
        classes = [row["class"] for row in stats["classes"]]
        lines.append("")
        lines.append(f"per scene ({len(stats['scenes'])}): windows, then the pixel share of each class")
        table = [["scene", "windows", *(f"class {c}" for c in classes), "image"]]
        for row in stats["scenes"][:SCENE_LINES]:
            total = sum(row["pixels"].values())
            shares = [f"{row['pixels'].get(str(c), 0) / total:.2%}" if total else "-" for c in classes]
            table.append([str(row["scene"]), str(row["windows"]), *shares, str(row["image"])])
        lines.extend("  " + line for line in aligned(table, left=(0, len(classes) + 2)))
        if len(stats["scenes"]) > SCENE_LINES:
            lines.append(f"  ... {len(stats['scenes']) - SCENE_LINES} more scene(s) in --json")
        lines.append("  (each scene's image sources, their coverage and band statistics: in --json)")
    return "\n".join(lines)
