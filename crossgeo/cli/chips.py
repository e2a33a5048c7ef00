"""``crossgeo chips``: write every window of a configuration into a chip store (`crossgeo.write_chips`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from crossgeo.cli.common import EXAMPLE_CONFIG, CliError, make_sampler

__all__ = ["add_parser", "run", "validate_store"]


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "chips",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write every window once into a chip store (Zarr or WebDataset)",
        description="Read every window of CONFIG once and write its patch (image, mask and validity, in their "
        "stored dtypes) into the chip store OUT: Zarr v3 arrays plus a Parquet table and a manifest, or WebDataset "
        "tar shards. Train from it with crossgeo.ChipSampler (chips_path in a configuration) for the same numbers "
        "at memory speed. Check a store with crossgeo validate OUT.",
        epilog="examples:\n  crossgeo chips config.yaml chips/\n  crossgeo chips config.yaml chips/ --resume\n"
        "  crossgeo chips config.yaml shards/ --format webdataset\n  crossgeo chips config.yaml chips/ --engine ray\n\n"
        + EXAMPLE_CONFIG,
    )
    parser.add_argument("config", help="YAML configuration with the original MBTilesCropsGeoTifMaskDataset keys")
    parser.add_argument("out", help="the chip store folder to write")
    parser.add_argument(
        "--section", metavar="NAME", help="the block of the YAML file to use (default: the top level or train_dataset)"
    )
    parser.add_argument("--format", choices=("zarr", "webdataset"), default="zarr", help="store format (zarr)")
    parser.add_argument("--engine", choices=("ray",), default=None, help="write the shards in Ray tasks")
    parser.add_argument("--shard-size", type=int, default=256, metavar="N", help="chips per shard file (256)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted write (finished shards kept)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing chip store at OUT")
    return parser


def run(args: argparse.Namespace) -> int:
    from crossgeo.chips import write_chips

    if args.resume and args.overwrite:
        raise CliError("give --resume or --overwrite, not both")
    sampler, _ = make_sampler(args)
    store = write_chips(
        sampler,
        args.out,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        resume=args.resume,
        engine=args.engine,
        format=args.format,
        progress=True,
    )
    import json

    manifest = json.loads((store / "manifest.json").read_text())
    counts = manifest["counts"]
    splits = ", ".join(f"{name} {n}" for name, n in sorted(counts["splits"].items()))
    stored = sum(f["bytes"] for shard in manifest["shards"] for f in shard["files"].values())
    print(
        f"wrote {counts['chips']} chip(s) in {len(manifest['shards'])} shard(s) to {store} "
        f"({args.format}, {stored / 1e6:.1f} MB{f'; splits: {splits}' if splits else ''})"
    )
    if counts["skipped"]:
        print(f"  {counts['skipped']} chip(s) came from a replacement window (on_read_error: skip); see the log")
    return 0


def validate_store(checks: Any, path: str) -> None:
    """``crossgeo validate STORE``: the manifest against the arrays and table, each shard's sha256, split counts."""
    from crossgeo.chips import verify_chips
    from crossgeo.errors import CrossgeoError

    print(f"validating the chip store {path}")
    try:
        found = verify_chips(path)
    except CrossgeoError as error:
        checks.fail("chip store", " ".join(str(error).split()))
        return
    manifest = found["manifest"]
    counts = manifest["counts"]
    arrays = ", ".join(f"{name} {tuple(spec['shape'])} {spec['dtype']}" for name, spec in manifest["arrays"].items())
    checks.ok("manifest", f"format {manifest['format_version']}, crossgeo {manifest['crossgeo_version']}: {arrays}")
    for problem in found["problems"]:
        checks.fail("chip store", problem)
    if not found["problems"]:
        checks.ok("shards", f"{len(manifest['shards'])} shard file group(s) match their sha256")
    splits = ", ".join(f"{name} {n}" for name, n in sorted(counts["splits"].items())) or "no split column"
    checks.ok("chips", f"{counts['chips']} chip(s); per split: {splits}")
    if counts["skipped"]:
        checks.warn("chips", f"{counts['skipped']} chip(s) came from a replacement window (on_read_error: skip)")
