"""``crossgeo windows``: write a windows table (grid or random, filtered, split, balanced) and a map of it.

The steps are `crossgeo.planning.plan_windows`'s; this command parses the options, shows a
progress bar while the class fractions are counted, prints the class presence per split
before and after balancing, writes the table (Parquet or CSV by suffix) and, with
``--map``, draws the windows over a thumbnail of the image (`crossgeo.io.read_overview`),
outlined in their split's colour.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossgeo.cli.common import (
    EXAMPLE_CONFIG,
    CliError,
    add_config_arguments,
    class_label,
    config_of,
    progress,
    require,
    split_options,
)
from crossgeo.files import atomic_output, check_not_input, input_paths

__all__ = ["SPLIT_COLOURS", "add_parser", "draw_map", "format_presence", "parse_splits", "run"]

SPLIT_COLOURS: dict[str, tuple[int, int, int]] = {
    "train": (0, 114, 178),
    "val": (230, 159, 0),
    "test": (204, 51, 153),
    "all": (0, 158, 115),
}
"""Outline colour of each split on the map (colour-blind safe); other split names get `EXTRA_COLOURS`."""
EXTRA_COLOURS = ((86, 180, 233), (213, 94, 0), (240, 228, 66), (0, 0, 0))
MAP_SIDE = 1024
"""Longest side of the map's image thumbnail in pixels."""
LEGEND_HEIGHT = 24
#: The legend's text is this fraction of the map's width (at least 12 px), so it stays legible where the
#: picture is shown scaled down: a 1024-px map's 43-px text is ~29 px on a 1280-px screen's page and
#: ~15 px on a 390-px phone.
LEGEND_TEXT_SHARE = 1 / 24


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "windows",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a windows table: grid/random, class-balanced, leak-free splits",
        description="Generate candidate windows on the image (a grid, or random), count each one's class "
        "fractions, drop windows with too little mask data, assign square blocks to splits so that no two "
        "splits share a pixel, choose class-balanced windows within each split, and write the table "
        "(row_off, col_off, valid, class_0 ..., split, weight) as Parquet or CSV. Prints the class presence "
        "per split before and after balancing. The config's crops_path is not read; the table's split "
        "column serves configs with split: train / split: val.",
        epilog="example:\n  crossgeo windows config.yaml --grid 64 --balanced 200 --split train=0.8,val=0.1,test=0.1 "
        "--block 256 --out windows.parquet --map windows.png\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--grid", type=int, metavar="STRIDE", help="grid windows at this stride (default: patch_size)")
    source.add_argument("--random", type=int, metavar="N", help="N random windows instead of a grid")
    parser.add_argument(
        "--balanced", type=int, metavar="N", help="choose N class-balanced windows among the candidates"
    )
    parser.add_argument(
        "--split", metavar="SPEC", help="splits and shares, e.g. train=0.8,val=0.1,test=0.1 (needs --block)"
    )
    parser.add_argument(
        "--block", type=int, metavar="PIXELS", help="side of the square blocks assigned to splits (default: 4 x patch)"
    )
    parser.add_argument(
        "--min-valid", type=float, default=0.0, metavar="SHARE", help="drop windows with less mask data (0..1)"
    )
    parser.add_argument("--aoi", metavar="FILE", help="vector file: keep only windows entirely inside it")
    parser.add_argument(
        "--align",
        choices=["blocks"],
        help="start windows on the image file's internal tiles/strips, so each patch decodes the fewest blocks "
        "(a patch_size smaller than a tile must divide it; crossgeo.grid_windows align)",
    )
    parser.add_argument("--weights", action="store_true", help="add a weight column (crossgeo.window_weights)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--out",
        default="windows.parquet",
        metavar="FILE",
        help="table to write, .parquet or .csv (default: %(default)s)",
    )
    parser.add_argument("--map", metavar="PNG", help="also draw the windows over the image, coloured by split")
    return parser


def parse_splits(spec: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> {"train": 0.8, ...} (the shares are checked by the library)."""
    splits: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, share = part.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = float("nan")
        if not sep or not name.strip() or value != value:
            raise CliError(f"--split {spec!r}: write NAME=SHARE pairs separated by commas, e.g. train=0.8,val=0.2")
        splits[name.strip()] = value
    return splits


def run(args: argparse.Namespace) -> int:
    from crossgeo.planning import plan_windows

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise CliError(f"--out {args.out!r} must end in .parquet or .csv")
    config = config_of(args)
    config.setdefault("crops_path", "(generated)")  # the windows are what this command makes
    options = split_options(config, str(args.config))
    # crops_path is not read here, so --out may name it (that is how a configuration's table is remade).
    inputs = {k: v for k, v in input_paths(args.config, options.sampler).items() if k != "crops_path"}
    inputs["--aoi"] = args.aoi
    check_not_input(out, inputs, option="--out")
    if args.map:
        check_not_input(args.map, {**inputs, "--out": out}, option="--map")
    sampler_options = {
        k: v for k, v in options.sampler.items() if k not in ("crops_path", "split", "window_index_cache")
    }
    splits = parse_splits(args.split) if args.split else None
    patch_size = sampler_options.get("patch_size")
    block = args.block
    if splits is not None and block is None and isinstance(patch_size, int):
        block = 4 * patch_size
        print(f"--block not given: blocks of {block} pixels (4 x patch_size)")
    bar = progress(total=None, desc="class fractions", unit="window")
    try:
        plan = plan_windows(
            sampler_options,
            stride=args.grid,
            random=args.random,
            balanced=args.balanced,
            splits=splits,
            block=block,
            min_valid=args.min_valid,
            aoi=args.aoi,
            seed=args.seed,
            weights=args.weights,
            progress=bar.update,
            align=args.align,
            class_names=options.class_names,
        )
    finally:
        bar.close()
    counts, table = plan.counts, plan.windows
    print(
        f"{counts['candidates']} candidate windows of {patch_size} px"
        + (f" ({counts['aoi_dropped']} outside the AOI not kept)" if counts["aoi_dropped"] else "")
        + f"; {counts['low_valid_dropped']} below --min-valid {args.min_valid:g}"
        + (f"; {counts['straddling_dropped']} straddling blocks of two splits dropped" if splits else "")
    )
    print(format_presence(plan.presence, options.class_names, options.sampler))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, option="--out") as temp:
        if out.suffix.lower() == ".parquet":
            table.to_parquet(temp, index=False)
        else:
            table.to_csv(temp, index=False)
    print(f"wrote {out} ({len(table)} windows)")
    if args.map:
        from crossgeo.io import read_overview
        from crossgeo.sampler import PatchSampler

        sampler = PatchSampler(**{**sampler_options, "crops_path": table[["row_off", "col_off"]]})
        bands = list(sampler.selected_bands[:3])
        thumbnail = read_overview(sampler.image_path, bands, MAP_SIDE, grid=sampler.grid)
        picture = draw_map(thumbnail, table, sampler.patch_size, (sampler.grid.height, sampler.grid.width))
        with atomic_output(args.map, option="--map") as temp:
            picture.save(temp)
        print(f"wrote {args.map} ({picture.width} x {picture.height} px)")
    return 0


def format_presence(
    presence: Mapping[str, Mapping[str, Any]], class_names: Mapping[int, str], sampler_options: Mapping[str, Any]
) -> str:
    """The table of class presence (share of windows holding the class) per split, before -> after balancing."""
    names = list(presence)
    classes = sorted({c for entry in presence.values() for c in entry["before"]}, key=lambda c: int(c.split("_")[1]))
    probe = _Labels(sampler_options)
    labels = {c: class_label(probe, int(c.split("_")[1]), class_names) for c in classes}
    width = max([len("class presence (windows)"), *map(len, labels.values())]) + 2
    lines = [f"{'class presence (windows)':<{width}}" + "".join(f"{name:^22}" for name in names)]
    lines.append(f"{'windows':<{width}}" + "".join(_cell(e["candidates"], e["chosen"]) for e in presence.values()))
    for column in classes:
        cells = "".join(
            _cell(f"{presence[n]['before'][column]:.1%}", f"{presence[n]['after'][column]:.1%}") for n in names
        )
        lines.append(f"{labels[column]:<{width}}{cells}")
    lines.append("before -> after balancing; a class is present in a window when its share is above 0")
    return "\n".join(lines)


def _cell(before: Any, after: Any) -> str:
    return f"{before!s:>9} -> {after!s:<9}"


class _Labels:
    """What `class_label` reads off a sampler (the colour map), from the configuration."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.color_map = options.get("color_map")


def _split_colour(name: str, position: int) -> tuple[int, int, int]:
    return SPLIT_COLOURS.get(name, EXTRA_COLOURS[position % len(EXTRA_COLOURS)])


def draw_map(thumbnail: np.ndarray, table: Any, patch_size: int, shape: tuple[int, int]) -> Any:
    """The windows of ``table`` outlined over ``thumbnail`` in their split's colour, legend below.

    ``thumbnail`` is `crossgeo.io.read_overview`'s (bands, h, w) of a reference grid of
    ``shape`` (height, width): window (row_off, col_off) is outlined from thumbnail pixel
    ``(row_off * h / height, col_off * w / width)`` to the one holding its last pixel. The
    map occupies the picture's top-left h x w pixels; the legend is a strip below it.
    """
    image_module = require("PIL.Image", "Pillow")
    draw_module = require("PIL.ImageDraw", "Pillow")
    font_module = require("PIL.ImageFont", "Pillow")
    rgb = _display(thumbnail)
    h, w = rgb.shape[:2]
    size = max(12, round(w * LEGEND_TEXT_SHARE))
    font = font_module.load_default(size=size)
    picture = image_module.new("RGB", (max(w, 240), h + LEGEND_HEIGHT * size // 12), (255, 255, 255))
    picture.paste(image_module.fromarray(rgb), (0, 0))
    draw = draw_module.Draw(picture)
    sy, sx = h / shape[0], w / shape[1]
    splits = list(dict.fromkeys(table["split"])) if "split" in table else ["all"]
    labels = table["split"].to_numpy() if "split" in table else np.full(len(table), "all", dtype=object)
    for position, name in enumerate(splits):
        colour = _split_colour(name, position)
        chosen = labels == name
        for row, col in zip(table["row_off"].to_numpy()[chosen], table["col_off"].to_numpy()[chosen]):
            top, left = int(row * sy), int(col * sx)
            bottom, right = int((row + patch_size - 1) * sy), int((col + patch_size - 1) * sx)
            draw.rectangle((left, top, right, bottom), outline=colour)
    x = 4
    for position, name in enumerate(splits):
        count = int(np.count_nonzero(labels == name))
        top = h + size // 2
        draw.rectangle((x, top, x + size, top + size), fill=_split_colour(name, position))
        text = f"{name} ({count})"
        draw.text((x + size + size // 3, top), text, fill=(0, 0, 0), font=font)
        x += size + size // 3 + int(draw.textlength(text, font=font)) + size
    return picture


def _display(thumbnail: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 for display: uint8 as is, other types stretched between their 2nd and 98th percentiles."""
    data = thumbnail if thumbnail.shape[0] >= 3 else np.repeat(thumbnail[:1], 3, axis=0)
    data = data[:3]
    if data.dtype != np.uint8:
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data.ravel()
        low, high = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
        scaled = (data.astype(np.float64) - low) / max(high - low, 1e-12) * 255
        data = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))
