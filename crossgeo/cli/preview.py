"""``crossgeo preview``: a PNG contact sheet of patches with their masks blended on top.

Each tile is one window's patch (channels 1-3, or channel 1 as grey, or the three channels
``--rgb`` names as ``sampler.channels`` lists them; non-uint8 data stretched; a time series
shows each window's latest valid date), tinted by class where the mask says; pixels without
mask data are hatched grey. With ``--prediction`` each tile is a pair: the patch tinted by the mask (left) and by the
prediction's classes on the same window (right; read by `crossgeo.evaluation.read_classes`). The legend
gives each class's share of the pixels of the tiles shown (not of the whole dataset: that is
``crossgeo stats``), with the configuration's ``class_names`` when it has them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from crossgeo.cli.common import (
    EXAMPLE_CONFIG,
    PALETTE,
    CliError,
    add_config_arguments,
    class_colours,
    class_label,
    declared_classes,
    ignore_index,
    make_sampler,
    progress,
    require,
)
from crossgeo.files import atomic_output, check_not_input, input_paths

__all__ = [
    "Layout",
    "Legend",
    "add_parser",
    "blend",
    "channel_names",
    "choose_channels",
    "choose_windows",
    "display_rgb",
    "draw_title",
    "layout",
    "legend",
    "legend_entry_width",
    "render_preview",
    "run",
    "save_png",
    "sheet_layout",
    "title_lines",
]

MARGIN, TITLE_HEIGHT, CAPTION_HEIGHT, LEGEND_ROW, LEGEND_ENTRY = 8, 26, 16, 20, 190
"""Contact sheet geometry (pixels); a legend entry is at least LEGEND_ENTRY wide. A title of
one line takes TITLE_HEIGHT, each further line TITLE_LINE more (`title_lines` wraps it)."""
TITLE_TOP, TITLE_LINE = 6, 16
PANEL_GAP = 4
"""Pixels between the mask and prediction panels of one tile."""
FONT_SIZE = 12
NO_DATA_COLOUR = (128, 128, 128)


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "preview",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a PNG contact sheet of patches with their masks",
        description="Write a PNG contact sheet: each patch with its mask blended on top in a class palette (the "
        "color_map's own colours for colour-coded masks), window offsets as captions, and a legend giving each "
        "class's share of the pixels of the tiles shown (named by class_names when the configuration has it). "
        "Pixels the mask does not cover are hatched grey. 1-band images are shown grey, others as RGB from "
        "their first three channels (bands 1-3 of one image, or the first three channels of several stacked "
        "sources), or the three channels --rgb names; non-uint8 data is stretched (2nd-98th percentile per band). "
        "A time series shows each window's latest valid date.",
        epilog="example:\n  crossgeo preview config.yaml -n 16 --out preview.png --seed 1\n"
        "  crossgeo preview config.yaml --rgb B04,B03,B02    (sources of one band each, by name)\n"
        "  crossgeo preview config.yaml --rgb B20:3,B10:1,B10:2    (SOURCE:BAND, as sampler.channels lists them)\n"
        "  crossgeo preview config.yaml --prediction prediction.tif --out compare.png\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    parser.add_argument("-n", type=int, default=16, help="number of windows to show (default: %(default)s)")
    parser.add_argument("--out", default="preview.png", help="output PNG (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which windows are drawn (default: %(default)s)")
    parser.add_argument("--tile", type=int, metavar="PX", help="tile size in pixels (default: patch size, 96-256)")
    parser.add_argument("--alpha", type=float, default=0.45, help="mask opacity 0..1 (default: %(default)s)")
    parser.add_argument(
        "--prediction",
        metavar="FILE",
        help="a class GeoTIFF on the image's grid (crossgeo predict): drawn next to each mask",
    )
    parser.add_argument(
        "--rgb",
        metavar="R,G,B",
        help="the channels shown as red, green and blue (one name: grey), each as sampler.channels lists it: "
        "SOURCE:BAND (e.g. B08:1), a source's name when it adds one channel (B08), or a 1-based channel number "
        "(default: the first three channels)",
    )
    parser.add_argument(
        "--stretch",
        choices=("auto", "always", "never"),
        default="auto",
        help="contrast stretch (default: auto = for non-uint8 images)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError("-n must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError("--alpha must be between 0 and 1")
    sampler, options = make_sampler(args)
    inputs = {"--prediction": args.prediction, **input_paths(args.config, options.sampler)}
    check_not_input(args.out, inputs, option="--out")
    names = channel_names(sampler)
    channels = choose_channels(names, args.rgb)  # before any pixel is read
    indices = choose_windows(len(sampler), args.n, args.seed)
    title = (
        f"{Path(args.config).name}: {Path(sampler.image_path).name} + mask {Path(sampler.mask_path).name}, "
        f"{len(indices)} of {len(sampler)} windows, {sampler.patch_size} px"
    )
    if args.rgb or len(names) > 3:  # which channels the picture shows, when it is a choice
        title += f"; {'grey' if len(channels) == 1 else 'RGB'}: {', '.join(names[c] for c in channels)}"
    predictions = None
    if args.prediction:
        from crossgeo.evaluation import read_classes

        windows = [(int(sampler.row_off[i]), int(sampler.col_off[i])) for i in indices]
        predictions = read_classes(args.prediction, sampler.grid, windows, sampler.patch_size, option="--prediction")
        title += f"; left: mask, right: {Path(args.prediction).name}"
    sheet = render_preview(
        sampler,
        indices,
        tile=args.tile,
        alpha=args.alpha,
        stretch=args.stretch,
        title=title,
        class_names=options.class_names,
        predictions=predictions,
        channels=channels,
    )
    out = Path(args.out)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, option="--out") as temp:
        save_png(sheet, temp, title)
    print(f"wrote {out} ({sheet.width} x {sheet.height} px): {len(indices)} of {len(sampler)} windows")
    return 0


@attrs.frozen
class Layout:
    """Where everything goes on the contact sheet."""

    width: int
    height: int
    columns: int
    tile: int
    tiles: tuple[tuple[int, int], ...]
    legend_top: int
    legend_per_row: int
    legend_entry: int
    panels: int = 1
    """Panels per tile, side by side ``PANEL_GAP`` apart (2: mask and prediction)."""
    title: tuple[str, ...] = ()
    """The title's lines, as drawn from `TITLE_TOP` (`title_lines`)."""


def layout(
    count: int,
    tile: int,
    legend_entries: int,
    entry_width: int = LEGEND_ENTRY,
    panels: int = 1,
    title: str = "",
) -> Layout:
    """The sheet's geometry: ``title`` (wrapped to the sheet's width), ``count`` tiles of ``panels`` x ``tile``
    px, captions, a legend heading and rows."""
    columns = max(1, min(count, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    tile_width = panels * tile + (panels - 1) * PANEL_GAP
    width = max(MARGIN + columns * (tile_width + MARGIN), 2 * entry_width + 2 * MARGIN)
    lines = title_lines(title, width)
    top = TITLE_HEIGHT + max(0, len(lines) - 1) * TITLE_LINE
    tiles = tuple(
        (
            MARGIN + (i % columns) * (tile_width + MARGIN),
            top + (i // columns) * (tile + CAPTION_HEIGHT + MARGIN),
        )
        for i in range(count)
    )
    legend_top = top + rows * (tile + CAPTION_HEIGHT + MARGIN) + LEGEND_ROW  # below the heading
    per_row = max(1, (width - 2 * MARGIN) // entry_width)
    legend_rows = max(1, math.ceil(legend_entries / per_row))
    height = legend_top + legend_rows * LEGEND_ROW + MARGIN
    return Layout(width, height, columns, tile, tiles, legend_top, per_row, entry_width, panels, lines)


def _font() -> Any:
    return require("PIL.ImageFont", "Pillow").load_default(size=FONT_SIZE)


def title_lines(title: str, width: int) -> tuple[str, ...]:
    """``title`` in lines that fit a figure ``width`` px wide within its margins (a figure never cuts its title).

    Lines break between words; a word wider than the room (a long path) is broken inside.
    """
    font, room = _font(), width - 2 * MARGIN
    lines: list[str] = []
    line = ""
    for word in title.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= room:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > room and len(word) > 1:
            cut = 1
            while font.getlength(word[: cut + 1]) <= room:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return (*lines, line) if line else tuple(lines)


def save_png(picture: Any, path: Any, title: str) -> None:
    """``picture`` as a PNG whose ``Title`` text is ``title`` (a viewer shows it; a test rebuilds the layout)."""
    info = require("PIL.PngImagePlugin", "Pillow").PngInfo()
    info.add_text("Title", title)
    picture.save(path, format="PNG", pnginfo=info)


def draw_title(draw: Any, lines: Sequence[str], top: int = TITLE_TOP) -> None:
    """The title's ``lines`` (`title_lines`), TITLE_LINE apart from ``top`` at the left margin."""
    font = _font()
    for k, line in enumerate(lines):
        draw.text((MARGIN, top + k * TITLE_LINE), line, fill=(0, 0, 0), font=font)


@attrs.frozen
class Legend:
    """The legend's heading and its entries: (swatch colour or None for an empty box, text)."""

    heading: str
    entries: tuple[tuple[tuple[int, int, int] | None, str], ...]

    @property
    def texts(self) -> tuple[str, ...]:
        """The heading and every entry's text, as drawn."""
        return (self.heading, *(text for _, text in self.entries))


def legend(
    sampler: Any,
    masks: Sequence[np.ndarray],
    invalids: Sequence[np.ndarray],
    class_names: Mapping[int, str] | None = None,
) -> Legend:
    """The legend of a sheet showing ``masks``: each class's share of the pixels of those tiles.

    Class 0 is listed first (it is never tinted), then every other class that is declared or
    occurs (an ignore index only as "no mask data"), then the hatched pixels without mask data.
    """
    names = dict(class_names or {})
    classes = sorted(set(declared_classes(sampler)) | {int(c) for m in masks for c in np.unique(m)})
    colours = class_colours(sampler, classes)
    ignore = ignore_index(sampler)
    total = sum(m.size for m in masks) or 1

    def share(cls: int) -> float:
        return sum(int(np.count_nonzero((m == cls) & ~inv)) for m, inv in zip(masks, invalids)) / total

    background = f"0 {names.get(0, 'background')}"
    entries: list[tuple[tuple[int, int, int] | None, str]] = [
        (None, f"class {background} (not tinted)  {share(0):.1%}")
    ]
    for c in classes:
        if c != 0 and c != ignore:
            entries.append((colours[c], f"class {class_label(sampler, c, names)}  {share(c):.1%}"))
    invalid = sum(int(inv.sum()) for inv in invalids)
    if invalid:
        entries.append((NO_DATA_COLOUR, f"no mask data (hatched)  {invalid / total:.1%}"))
    count = len(masks)
    heading = f"legend: share of the pixels of the {count} tile{'s' if count != 1 else ''} shown"
    return Legend(heading, tuple(entries))


def sheet_layout(count: int, tile: int, key: Legend, panels: int = 1, title: str = "") -> Layout:
    """The `layout` of a sheet of ``count`` tiles with the legend ``key`` (its columns fit the longest entry)."""
    width = legend_entry_width([text for _, text in key.entries])
    return layout(count, tile, len(key.entries), width, panels, title)


def legend_entry_width(texts: Sequence[str]) -> int:
    """The width of one legend column: the swatch and the longest text (at least LEGEND_ENTRY)."""
    font = require("PIL.ImageFont", "Pillow").load_default(size=FONT_SIZE)
    widest = max((font.getlength(text) for text in texts), default=0.0)
    return max(LEGEND_ENTRY, math.ceil(widest) + 30)


def channel_names(sampler: Any) -> list[str]:
    """``SOURCE:BAND`` of each channel of the sampler's patches (`PatchSampler.channels`; one date's for a time
    series), as ``--rgb`` takes them."""
    channels = getattr(sampler, "channels", None) or [("image", band) for band in sampler.selected_bands]
    return [f"{source}:{band}" for source, band in channels]


def choose_channels(names: Sequence[str], rgb: str | None) -> list[int]:
    """0-based channels to show: ``rgb`` ("R,G,B" or one channel for grey) by name, else the first three (or the first).

    A name is ``SOURCE:BAND`` as `channel_names` gives it, a source's name when that source adds exactly
    one channel, or a 1-based channel number. Anything else is a `CliError` listing the names there are.
    """
    if rgb is None:
        return [0, 1, 2] if len(names) >= 3 else [0]
    wanted = [part.strip() for part in rgb.split(",")]
    listed = ", ".join(names)
    if len(wanted) not in (1, 3) or not all(wanted):
        raise CliError(f"--rgb {rgb!r}: give three channels R,G,B (or one, shown grey); the channels are {listed}")
    singles: dict[str, list[int]] = {}
    for c, name in enumerate(names):
        singles.setdefault(name.rsplit(":", 1)[0], []).append(c)
    chosen = []
    for part in wanted:
        if part in names:
            chosen.append(names.index(part))
        elif part in singles and len(singles[part]) == 1:
            chosen.append(singles[part][0])
        elif part.isdigit() and 1 <= int(part) <= len(names):
            chosen.append(int(part) - 1)
        else:
            why = (
                f"the source {part!r} adds {len(singles[part])} channels: name one as SOURCE:BAND"
                if part in singles
                else f"no channel is named {part!r}"
            )
            raise CliError(
                f"--rgb {rgb!r}: {why}; the channels are {listed} (SOURCE:BAND, a one-channel source's name, "
                f"or a number 1..{len(names)})"
            )
    return chosen


def display_rgb(
    images: Sequence[np.ndarray], stretch: bool, nodata: float | None, channels: Sequence[int] | None = None
) -> list[np.ndarray]:
    """(H, W, 3) uint8 pictures of (C, H, W) patches: ``channels`` (0-based; default: 1-3, or 1 as grey), stretched.

    One channel is shown grey. The stretch maps each band's 2nd..98th percentile over all
    patches (nodata excluded) to 0..255, so tiles stay comparable.
    """
    if channels is None:
        channels = [0, 1, 2] if images and images[0].shape[0] >= 3 else [0]
    index = list(channels) if len(channels) == 3 else [channels[0]] * 3
    picked = [img[index] for img in images]
    if not picked:
        return []
    if not stretch:
        return [np.clip(p, 0, 255).astype(np.uint8).transpose(1, 2, 0) for p in picked]
    stack = np.stack(picked).astype(np.float64)  # (N, 3, H, W)
    out = np.empty_like(stack)
    for band in range(3):
        values = stack[:, band]
        finite = np.isfinite(values)
        if nodata is not None and not math.isnan(nodata):
            finite &= values != nodata
        sample = values[finite]
        lo, hi = np.percentile(sample, (2, 98)) if sample.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        out[:, band] = (np.nan_to_num(values, nan=lo) - lo) / (hi - lo) * 255.0
    pictures = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return [p.transpose(1, 2, 0) for p in pictures]


def blend(
    picture: np.ndarray,
    mask: np.ndarray,
    invalid: np.ndarray,
    colours: dict[int, tuple[int, int, int]],
    alpha: float,
    skip: set[int],
) -> np.ndarray:
    """Tint each pixel of class c (not in ``skip``) towards its colour; hatch pixels without mask data."""
    out = picture.astype(np.float64)
    for cls in np.unique(mask):
        c = int(cls)
        if c in skip:
            continue
        where = (mask == c) & ~invalid
        colour = np.array(colours.get(c, PALETTE[c % len(PALETTE)]), dtype=np.float64)
        out[where] = (1 - alpha) * out[where] + alpha * colour
    if invalid.any():
        rows, cols = np.indices(mask.shape)
        hatch = invalid & ((rows + cols) % 6 < 2)
        out[hatch] = (128, 128, 128)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def choose_windows(n_windows: int, count: int, seed: int) -> list[int]:
    """``count`` window indices drawn with ``seed`` (all when there are fewer), in order."""
    if count >= n_windows:
        return list(range(n_windows))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_windows, size=count, replace=False))


def render_preview(
    sampler: Any,
    indices: Sequence[int],
    *,
    tile: int | None = None,
    alpha: float = 0.45,
    stretch: str = "auto",
    title: str = "",
    progress_bar: bool = True,
    class_names: Mapping[int, str] | None = None,
    predictions: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    channels: Sequence[int] | None = None,
) -> Any:
    """A Pillow image: each window's patch with its mask blended in, captions and a `legend`.

    ``predictions``: (classes, valid) per window of ``indices`` (`crossgeo.evaluation.read_classes`),
    drawn as a second panel right of each tile, tinted in the same class colours. ``channels``:
    the 0-based channels shown (`choose_channels`; default the first three). A time series
    (``(T, C, H, W)`` patches) shows each window's latest valid date, named in its caption.
    """
    Image = require("PIL.Image", "Pillow")
    ImageDraw = require("PIL.ImageDraw", "Pillow")
    ImageFont = require("PIL.ImageFont", "Pillow")

    tile = tile or min(max(sampler.patch_size, 96), 256)
    images, masks, invalids, dates = [], [], [], []
    for i in progress(indices, desc="reading", unit="patch", disable=None if progress_bar else True):
        patch = sampler[i]
        image, date = _latest_date(patch)
        images.append(image)
        dates.append(date)
        masks.append(patch.mask)
        invalids.append(~patch.mask_valid)
    do_stretch = stretch == "always" or (stretch == "auto" and sampler.image_dtype != np.uint8)
    pictures = display_rgb(images, do_stretch, sampler.image_info.raster.nodata, channels)

    key = legend(sampler, masks, invalids, class_names)
    shown = {int(c) for m in masks for c in np.unique(m)}
    if predictions is not None:
        if len(predictions) != len(indices):
            raise CliError(f"{len(predictions)} prediction windows for {len(indices)} windows to preview")
        shown |= {int(c) for classes, _ in predictions for c in np.unique(classes)}
    colours = class_colours(sampler, sorted(shown))
    geometry = sheet_layout(len(indices), tile, key, panels=1 if predictions is None else 2, title=title)

    sheet = Image.new("RGB", (geometry.width, geometry.height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    draw_title(draw, geometry.title)
    method = Image.Resampling.NEAREST if tile > sampler.patch_size else Image.Resampling.BOX
    scene_of = getattr(sampler, "scene", None)  # catalogue windows (SceneSampler, a chip store of one)
    tiles = zip(geometry.tiles, indices, pictures, masks, invalids, dates)
    for n, ((x, y), i, picture, mask, invalid, date) in enumerate(tiles):
        panels = [(mask, invalid)]
        if predictions is not None:
            classes, valid = predictions[n]
            panels.append((classes, ~valid))
        for p, (classes, missing) in enumerate(panels):
            tinted = Image.fromarray(blend(picture, classes, missing, colours, alpha, {0}))
            if tinted.size != (tile, tile):
                tinted = tinted.resize((tile, tile), method)
            sheet.paste(tinted, (x + p * (tile + PANEL_GAP), y))
        scene = f"  scene {int(scene_of[i])}" if scene_of is not None else ""
        caption = f"#{i}{scene}  row {int(sampler.row_off[i])}  col {int(sampler.col_off[i])}{date}"
        draw.text((x, y + tile + 2), caption, fill=(40, 40, 40), font=font)

    draw.text((MARGIN, geometry.legend_top - LEGEND_ROW + 3), key.heading, fill=(0, 0, 0), font=font)
    for k, (colour, text) in enumerate(key.entries):
        x = MARGIN + (k % geometry.legend_per_row) * geometry.legend_entry
        y = geometry.legend_top + (k // geometry.legend_per_row) * LEGEND_ROW + 2
        draw.rectangle((x, y, x + 14, y + 14), fill=colour, outline=(0, 0, 0))
        draw.text((x + 20, y + 1), text, fill=(0, 0, 0), font=font)
    return sheet


def _latest_date(patch: Any) -> tuple[np.ndarray, str]:
    """A patch's (C, H, W) image to draw and a caption suffix: a time series' latest valid date (its time)."""
    image = patch.image
    if image.ndim != 4:
        return image, ""
    valid = np.flatnonzero(patch.time_valid) if patch.time_valid is not None else np.arange(len(image))
    t = int(valid[-1]) if valid.size else 0
    when = patch.times[t] if patch.times is not None else None
    return image[t], "" if when is None or np.isnat(when) else f"  {np.datetime_as_string(when, unit='D')}"
