"""``crossgeo stac``: write the catalogue table of a STAC item collection (`crossgeo.stac_scenes`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from crossgeo.cli.common import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stac",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a catalogue of scenes from STAC items",
        description="Read a STAC item collection (a file or URL) and write one catalogue row per item: the "
        "listed assets as the image's sources (scale/offset/nodata from the raster extension), the item's "
        "datetime as time, its id as id. Give the table to SceneSampler or a config's scenes: key. Needs pystac "
        "(pip install '.[stac]' in a clone).",
        epilog="example:\n  crossgeo stac items.json --assets B04 B08 --out scenes.parquet --mask-path labels\n"
        "  crossgeo stac https://example.com/search.json --assets visual --out scenes.csv --crops-path crops.gpkg",
    )
    parser.add_argument("items", metavar="ITEMS", help="item collection JSON (path or http(s) URL)")
    parser.add_argument("--assets", nargs="+", required=True, metavar="KEY", help="asset keys stacked as sources")
    parser.add_argument("--out", required=True, metavar="FILE", help="the table to write (.csv or .parquet)")
    parser.add_argument("--mask-path", metavar="KEY|PATH", help="each scene's mask: an asset key or one path")
    parser.add_argument("--crops-path", metavar="KEY|PATH", help="each scene's windows: an asset key or one path")
    parser.add_argument("--group-by", metavar="PROPERTY", help="an item property written as a group column")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE when it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossgeo.catalogue import write_catalogue
    from crossgeo.stac import stac_scenes

    if Path(args.out).exists() and not args.overwrite:
        raise CliError(f"{args.out} exists; pass --overwrite to replace it, or choose another --out.")
    rows = stac_scenes(
        args.items, args.assets, mask_path=args.mask_path, crops_path=args.crops_path, group_by=args.group_by
    )
    path = write_catalogue(rows, args.out)
    sources = sorted({name for row in rows for name in row["image_path"]})
    times = sorted(row["time"] for row in rows if row["time"])
    span = f", {times[0]} .. {times[-1]}" if times else ""
    print(f"wrote {path}: {len(rows)} scene(s), source(s) {', '.join(sources)}{span}")
    return 0
