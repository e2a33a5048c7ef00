"""``crossgeo index``: plan the windows and write (or reuse) the window-index cache."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossgeo.cli.common import EXAMPLE_CONFIG, CliError, add_config_arguments, config_of, split_options

__all__ = ["add_parser", "run"]

_INPUTS = ("image_path", "image_mbtiles_path", "mask_path", "crops_path", "scenes")
_STATES = {
    "reused": "reused (up to date)",
    "written": "built and written",
    "not written": "built, NOT written (the location is not writable; see the warning)",
    "left alone": "built; the file was left untouched (the original's cache; see the warning)",
}


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="build and write the window-index cache",
        description="Plan the windows and write window_index_cache (rebuilt when the source or the settings "
        "changed, reused otherwise); print kept / skipped / dropped / clamped counts.",
        epilog="example:\n  crossgeo index config.yaml\n  crossgeo index config.yaml --cache windows.index.parquet "
        "--rebuild\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    parser.add_argument("--cache", metavar="FILE", help="cache file (.csv or .parquet); default: window_index_cache")
    parser.add_argument(
        "--rebuild", action="store_true", help="delete the cache first (only a cache crossgeo wrote; never an input)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    kwargs = split_options(config_of(args), str(args.config)).sampler
    cache = args.cache or kwargs.get("window_index_cache")
    if not cache:
        raise CliError(f"{args.config} sets no window_index_cache; name the file with --cache FILE.csv|.parquet")
    cache_path = Path(cache)
    from crossgeo import windows as winsrc
    from crossgeo.config import build_sampler
    from crossgeo.scenes import SceneSampler

    if args.rebuild:
        inputs = {key: kwargs[key] for key in _INPUTS if key in kwargs}
        winsrc.remove_cache(cache_path, inputs)  # refuses an input or a file crossgeo did not write
    kwargs["window_index_cache"] = str(cache_path)
    sampler = build_sampler(kwargs)
    state = _STATES.get(sampler.windows_info.cache_state, sampler.windows_info.cache_state)
    if isinstance(sampler, SceneSampler):
        info = sampler.windows_info
        print(f"window index {cache_path}: {state}")
        print(f"  {len(sampler)} window(s) in {sampler.scenes} scene(s) of {sampler.source}")
        for scene, count in zip(sampler.catalogue, sampler.windows_per_scene().tolist()):
            print(f"  scene {scene.position:<5} {count:>8} window(s)  {scene.image_label}")
        if info.shared_features:
            print(
                f"  shared crops {sampler.shared_crops_path}: {info.shared_features} feature(s), "
                f"{info.unassigned} inside no scene (unused)"
            )
        return 0
    report = sampler.index.report
    partly = sampler.windows_info.partly_outside
    print(f"window index {cache_path}: {state}")
    print(f"  source   {sampler.crops_path}")
    print(
        f"  kept {report.kept}   skipped (empty geometry) {report.empty_skipped}   "
        f"dropped (outside the image) {report.outside_dropped}   clamped {report.clamped}   "
        f"duplicates {report.duplicates}"
    )
    if report.split_left_out:
        print(f"  split {sampler.split!r}: {report.split_left_out} row(s) of other splits left out")
    if partly:
        print(f"  {partly} window(s) reach past the image edge; their outside pixels are filled")
    return 0
