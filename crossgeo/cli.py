"""The ``crossgeo`` command: demo, preview, stats, index and validate.

Every subcommand except ``demo`` takes a YAML configuration with the seed spec's keys,
either flat or under ``train_dataset:`` (``_target_`` is ignored; ``--section`` picks
another block). Relative paths are looked up in the working directory first, then next to
the configuration file.

The command's own dependencies (PyYAML, tqdm, Pillow: ``pip install "crossgeo[cli]"``)
are imported when a subcommand needs them, so ``crossgeo --help`` always works and
``import crossgeo`` never imports them. Errors are one line on stderr (``--debug`` shows
the traceback); the exit status is 0 on success, 1 on failure or validation problems and
2 for usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from crossgeo.errors import CrossgeoError

log = logging.getLogger("crossgeo")

PATH_KEYS = ("image_mbtiles_path", "image_path", "mask_path", "crops_path")
"""Keys holding input paths (resolved against the config's folder when not found in the cwd)."""
PALETTE = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
)
"""Class colours for single-band masks (class 0, background, is never tinted)."""
MARGIN, TITLE_HEIGHT, CAPTION_HEIGHT, LEGEND_ROW, LEGEND_ENTRY = 8, 26, 16, 20, 190
"""Contact sheet geometry (pixels)."""
UNKNOWN_COLOUR_PROBLEM = 0.001
"""Unknown mask colours covering at least this fraction of the sample are a problem."""


class CliError(Exception):
    """A failure the command reports as one line (no traceback)."""


# --------------------------------------------------------------------------- helpers


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CliError(
            f"this command needs {package} ({error}); install the command's extras: pip install 'crossgeo[cli]'"
        ) from error


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    tqdm = _require("tqdm", "tqdm").tqdm
    kwargs.setdefault("disable", None)  # no bar when stderr is not a terminal
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def _readable_warnings() -> Iterator[None]:
    """Show warnings as ``warning: message`` lines instead of file:line dumps."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        original = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            print(
                f"warning: {_one_line(message if isinstance(message, Warning) else Warning(message))}", file=sys.stderr
            )

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original


def _resolve_paths(mapping: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Relative paths: the working directory first, then the configuration file's folder."""
    from crossgeo.io import is_remote

    out = dict(mapping)
    base: Path | None = None
    for key in PATH_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or not value or is_remote(value) or Path(value).is_absolute():
            continue
        if not Path(value).exists() and (config_dir / value).exists():
            out[key] = str(config_dir / value)
            if key == "crops_path":
                base = config_dir
    cache = out.get("window_index_cache")
    if isinstance(cache, str) and cache and not Path(cache).is_absolute() and base is not None:
        out["window_index_cache"] = str(base / cache)
    return out


def load_config(path: str | os.PathLike[str], section: str | None = None) -> dict[str, Any]:
    """The dataset options of a YAML file: flat, under ``train_dataset:`` or ``section``."""
    yaml = _require("yaml", "PyYAML")
    file = Path(path)
    if not file.is_file():
        raise CliError(f"configuration file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise CliError(f"{file} is not valid YAML: {_one_line(error)}") from error
    with contextlib.suppress(ImportError, Exception):
        from omegaconf import OmegaConf  # resolve ${...} interpolations when OmegaConf is around

        data = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    if not isinstance(data, dict):
        raise CliError(f"{file} must hold a mapping of options, not {type(data).__name__}")
    if section is not None:
        block = data.get(section)
        if not isinstance(block, dict):
            blocks = [k for k, v in data.items() if isinstance(v, dict)]
            raise CliError(f"{file} has no {section!r} block; its blocks are {blocks or 'none'}")
        data = block
    elif not any(k in data for k in ("image_mbtiles_path", "image_path")):
        if isinstance(data.get("train_dataset"), dict):
            data = data["train_dataset"]
        else:
            blocks = [
                k for k, v in data.items() if isinstance(v, dict) and ("image_mbtiles_path" in v or "image_path" in v)
            ]
            if len(blocks) == 1:
                data = data[blocks[0]]
            elif len(blocks) > 1:
                raise CliError(
                    f"{file} has several dataset blocks ({', '.join(blocks)}); choose one with --section NAME"
                )
            else:
                raise CliError(
                    f"{file} has no image_mbtiles_path, neither at the top level nor under train_dataset: "
                    "see the example in 'crossgeo validate --help'"
                )
    return _resolve_paths({str(k): v for k, v in data.items()}, file.resolve().parent)


def split_options(config: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from crossgeo.config import split_config

    return split_config(config, where=where)


def make_sampler(args: argparse.Namespace, **overrides: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(PatchSampler, sampler keyword arguments, adapter options) of the command's CONFIG."""
    from crossgeo.sampler import PatchSampler

    config = load_config(args.config, args.section)
    kwargs, rest = split_options(config, str(args.config))
    kwargs.update(overrides)
    return PatchSampler(**kwargs), kwargs, rest


def read_with_validity(
    sampler: Any, index: int, *, image: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(image, mask, invalid)`` of window ``index``: the patch plus where the mask had no data.

    ``mask`` equals ``sampler[index].mask``; ``invalid`` is True where the mask does not cover
    the window or marks nodata (those pixels hold ``sampler.mask_fill_value``).
    """
    row, col = int(sampler.row_off[index]), int(sampler.col_off[index])
    if image:
        patch = sampler.read(row, col, index=index)
        return patch.image, patch.mask, ~patch.mask_valid
    mask, valid = sampler.read_mask(row, col)
    return None, mask, ~valid


def declared_classes(sampler: Any) -> list[int]:
    """The classes the configuration can produce (0 always included)."""
    if sampler.color_map is not None:
        return sorted({0, *(int(entry[3]) for entry in sampler.color_map)})
    return [0, 1] if sampler.n_classes == 2 else list(range(sampler.n_classes))


def class_colours(sampler: Any, classes: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """Display colour per class: the colour map's own colours, else `PALETTE`."""
    colours: dict[int, tuple[int, int, int]] = {}
    if sampler.color_map is not None:
        for r, g, b, c in sampler.color_map:
            colours.setdefault(int(c), (int(r), int(g), int(b)))
    for c in classes:
        colours.setdefault(int(c), PALETTE[int(c) % len(PALETTE)] if c else (0, 0, 0))
    return colours


def ignore_index(sampler: Any) -> int | None:
    """The fill value when it is not one of the declared classes (an ignore index)."""
    fill = int(sampler.mask_fill_value)
    return fill if fill not in declared_classes(sampler) else None


def _class_label(sampler: Any, cls: int) -> str:
    if sampler.color_map is not None:
        rgb = [list(e[:3]) for e in sampler.color_map if int(e[3]) == cls]
        if rgb:
            return f"{cls} {rgb[0]}" + (f" +{len(rgb) - 1}" if len(rgb) > 1 else "")
        return f"{cls} (unmapped colours)" if cls == 0 else str(cls)
    return str(cls)


# --------------------------------------------------------------------------- preview


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


def layout(count: int, tile: int, legend_entries: int) -> Layout:
    """The contact sheet's geometry: ``count`` tiles of ``tile`` px, captions, legend rows."""
    columns = max(1, min(count, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    width = max(MARGIN + columns * (tile + MARGIN), 2 * LEGEND_ENTRY + 2 * MARGIN)
    tiles = tuple(
        (MARGIN + (i % columns) * (tile + MARGIN), TITLE_HEIGHT + (i // columns) * (tile + CAPTION_HEIGHT + MARGIN))
        for i in range(count)
    )
    legend_top = TITLE_HEIGHT + rows * (tile + CAPTION_HEIGHT + MARGIN)
    per_row = max(1, (width - 2 * MARGIN) // LEGEND_ENTRY)
    legend_rows = max(1, math.ceil(legend_entries / per_row))
    height = legend_top + legend_rows * LEGEND_ROW + MARGIN
    return Layout(width, height, columns, tile, tiles, legend_top, per_row)


def display_rgb(images: Sequence[np.ndarray], stretch: bool, nodata: float | None) -> list[np.ndarray]:
    """(H, W, 3) uint8 pictures of (C, H, W) patches: bands 1-3 (or band 1 as grey), stretched.

    The stretch maps each band's 2nd..98th percentile over all patches (nodata excluded) to
    0..255, so tiles stay comparable.
    """
    picked = [img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0) for img in images]
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
    progress: bool = True,
) -> Any:
    """A Pillow image: each window's patch with its mask blended in, captions and a legend."""
    Image = _require("PIL.Image", "Pillow")
    ImageDraw = _require("PIL.ImageDraw", "Pillow")
    ImageFont = _require("PIL.ImageFont", "Pillow")
    import rasterio

    with rasterio.open(sampler.image_path) as src:
        nodata = src.nodata
    tile = tile or min(max(sampler.patch_size, 96), 256)
    images, masks, invalids = [], [], []
    for i in _progress(indices, desc="reading", unit="patch", disable=None if progress else True):
        image, mask, invalid = read_with_validity(sampler, i)
        images.append(image)
        masks.append(mask)
        invalids.append(invalid)
    do_stretch = stretch == "always" or (stretch == "auto" and sampler.image_dtype != np.uint8)
    pictures = display_rgb([im for im in images if im is not None], do_stretch, nodata)

    classes = sorted(set(declared_classes(sampler)) | {int(c) for m in masks for c in np.unique(m)})
    colours = class_colours(sampler, classes)
    skip = {0}
    ignore = ignore_index(sampler)
    any_invalid = any(inv.any() for inv in invalids)
    total = sum(m.size for m in masks) or 1
    shown = [c for c in classes if c != 0 and c != ignore]
    geometry = layout(len(indices), tile, len(shown) + 1 + int(any_invalid))

    sheet = Image.new("RGB", (geometry.width, geometry.height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    draw.text((MARGIN, 6), title, fill=(0, 0, 0), font=font)
    for (x, y), i, picture, mask, invalid in zip(geometry.tiles, indices, pictures, masks, invalids):
        tinted = Image.fromarray(blend(picture, mask, invalid, colours, alpha, skip))
        if tinted.size != (tile, tile):
            method = Image.Resampling.NEAREST if tile > sampler.patch_size else Image.Resampling.BOX
            tinted = tinted.resize((tile, tile), method)
        sheet.paste(tinted, (x, y))
        caption = f"#{i}  row {int(sampler.row_off[i])}  col {int(sampler.col_off[i])}"
        draw.text((x, y + tile + 2), caption, fill=(40, 40, 40), font=font)

    entries: list[tuple[tuple[int, int, int] | None, str]] = [(None, "0 background: not tinted")]
    for c in shown:
        share = sum(int(np.count_nonzero((m == c) & ~inv)) for m, inv in zip(masks, invalids)) / total
        entries.append((colours[c], f"class {_class_label(sampler, c)}  {share:.1%}"))
    if any_invalid:
        share = sum(int(inv.sum()) for inv in invalids) / total
        entries.append(((128, 128, 128), f"no mask data (hatched)  {share:.1%}"))
    for k, (colour, text) in enumerate(entries):
        x = MARGIN + (k % geometry.legend_per_row) * LEGEND_ENTRY
        y = geometry.legend_top + (k // geometry.legend_per_row) * LEGEND_ROW + 2
        if colour is None:
            draw.rectangle((x, y, x + 14, y + 14), outline=(0, 0, 0))
        else:
            draw.rectangle((x, y, x + 14, y + 14), fill=colour, outline=(0, 0, 0))
        draw.text((x + 20, y + 1), text, fill=(0, 0, 0), font=font)
    return sheet


def cmd_preview(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError("-n must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError("--alpha must be between 0 and 1")
    sampler, _, _ = make_sampler(args)
    indices = choose_windows(len(sampler), args.n, args.seed)
    title = (
        f"{Path(args.config).name}: {Path(sampler.image_path).name} + mask {Path(sampler.mask_path).name}, "
        f"{len(indices)} of {len(sampler)} windows, {sampler.patch_size} px"
    )
    sheet = render_preview(sampler, indices, tile=args.tile, alpha=args.alpha, stretch=args.stretch, title=title)
    out = Path(args.out)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out} ({sheet.width} x {sheet.height} px): {len(indices)} of {len(sampler)} windows")
    return 0


# --------------------------------------------------------------------------- stats


def compute_stats(sampler: Any, *, progress: bool = True) -> dict[str, Any]:
    """One pass over every window: per-class pixels, fill, empty windows, class weights."""
    declared = declared_classes(sampler)
    ignore = ignore_index(sampler)
    counts = np.zeros(max(declared) + 1, dtype=np.int64)
    present = np.zeros_like(counts)  # pixels of the windows where the class occurs
    windows_with = np.zeros_like(counts)
    fill_pixels = 0
    no_foreground: list[int] = []
    n = len(sampler)
    start = time.perf_counter()
    bar = _progress(range(n), desc="stats", unit="patch", disable=None if progress else True)
    for i in bar:
        _, mask, invalid = read_with_validity(sampler, i, image=False)
        found = np.bincount(mask.ravel())
        if found.size > counts.size:
            grow = found.size - counts.size
            counts, present, windows_with = (np.pad(a, (0, grow)) for a in (counts, present, windows_with))
        counts[: found.size] += found
        occurs = np.flatnonzero(found)
        present[occurs] += mask.size
        windows_with[occurs] += 1
        fill_pixels += int(invalid.sum())
        foreground = [c for c in occurs if c != 0 and c != ignore]
        if not foreground:
            no_foreground.append(i)
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
                "label": _class_label(sampler, c),
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
        "windows_without_foreground": len(no_foreground),
        "windows_without_foreground_index": no_foreground,
        "class_weights": {str(r["class"]): r["weight"] for r in rows if r["weight"] is not None},
        "weighting": "median-frequency balancing (Eigen & Fergus 2015): median(freq) / freq(c), "
        "freq(c) = pixels of c / pixels of the windows where c occurs",
        "seconds": round(seconds, 3),
    }


def format_stats(stats: dict[str, Any], sampler: Any) -> str:
    lines = [
        f"{stats['windows']} windows of {stats['patch_size']} x {stats['patch_size']} px "
        f"({stats['pixels']:,} pixels) read in {stats['seconds']:.2f} s "
        f"({stats['windows'] / max(stats['seconds'], 1e-9):.0f} patches/s)",
        "",
        f"{'class':<24} {'pixels':>14} {'frequency':>10} {'windows':>8} {'weight':>8}",
    ]
    for row in stats["classes"]:
        label = row["label"] + (" (ignore)" if row["ignore"] else "") + ("" if row["declared"] else " (undeclared)")
        weight = "-" if row["weight"] is None else f"{row['weight']:.3f}"
        lines.append(f"{label:<24} {row['pixels']:>14,} {row['frequency']:>10.2%} {row['windows']:>8} {weight:>8}")
    lines.append("")
    lines.append(
        f"no mask data (uncovered or nodata, decoded as class {stats['fill_value']}): "
        f"{stats['fill_pixels']:,} pixels ({stats['fill_fraction']:.2%})"
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
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    sampler, _, _ = make_sampler(args)
    stats = compute_stats(sampler)
    stats["config"] = str(args.config)
    print(format_stats(stats, sampler))
    if args.json:
        out = Path(args.json)
        if out.parent != Path():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stats, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- index


def cmd_index(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.section)
    kwargs, _ = split_options(config, str(args.config))
    cache = args.cache or kwargs.get("window_index_cache")
    if not cache:
        raise CliError(f"{args.config} sets no window_index_cache; name the file with --cache FILE.csv|.parquet")
    cache_path = Path(cache)
    if args.rebuild and cache_path.exists():
        cache_path.unlink()
    before = cache_path.stat().st_mtime_ns if cache_path.exists() else None
    from crossgeo.sampler import PatchSampler

    kwargs["window_index_cache"] = str(cache_path)
    sampler = PatchSampler(**kwargs)
    after = cache_path.stat().st_mtime_ns if cache_path.exists() else None
    state = "reused (up to date)" if before is not None and before == after else "built and written"
    report = sampler.index.report
    partly = ~(
        (sampler.row_off >= 0)
        & (sampler.col_off >= 0)
        & (sampler.row_off + sampler.patch_size <= sampler.grid.height)
        & (sampler.col_off + sampler.patch_size <= sampler.grid.width)
    )
    print(f"window index {cache_path}: {state}")
    print(f"  source   {sampler.crops_path}")
    print(
        f"  kept {report.kept}   skipped (empty geometry) {report.empty_skipped}   "
        f"dropped (outside the image) {report.outside_dropped}   clamped {report.clamped}   "
        f"duplicates {report.duplicates}"
    )
    if partly.any():
        print(f"  {int(partly.sum())} window(s) reach past the image edge; their outside pixels are filled")
    return 0


# --------------------------------------------------------------------------- validate


@attrs.define
class Checks:
    """Collected results of ``validate``: printed as they come, problems listed at the end."""

    problems: list[str] = attrs.field(factory=list)
    failed: set[str] = attrs.field(factory=set)

    def ok(self, what: str, text: str) -> None:
        print(f"  ok    {what:<13} {text}")

    def warn(self, what: str, text: str) -> None:
        print(f"  warn  {what:<13} {text}")

    def fail(self, what: str, text: str) -> None:
        print(f"  FAIL  {what:<13} {text}")
        self.problems.append(f"{what}: {text}")
        self.failed.add(what)


def _describe_raster(src: Any) -> str:
    crs = src.crs.to_string() if src.crs else "no CRS"
    res = ", ".join(f"{v:.6g}" for v in src.res)
    dtypes = sorted(set(src.dtypes))
    return f"{src.driver} {src.width} x {src.height}, {src.count} band(s) {'/'.join(dtypes)}, {crs}, pixel {res}"


def mask_sample(mask: Any, grid: Any, bands: Sequence[int], max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The mask's ``bands`` warped (nearest) onto a coarsened copy of the reference grid.

    Returns ``(data (B, h, w), valid (h, w))``; ``valid`` is False where the mask has no
    data (outside it, nodata or alpha 0).
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from crossgeo.io import alpha_band

    scale = max(1.0, max(grid.width, grid.height) / max_side)
    width, height = max(1, round(grid.width / scale)), max(1, round(grid.height / scale))
    transform = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    alpha = alpha_band(mask)
    with WarpedVRT(
        mask,
        crs=grid.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.nearest,
        add_alpha=alpha is None,
    ) as vrt:
        data = vrt.read([*bands, alpha if alpha is not None else vrt.count])
    valid = data[-1] != 0
    data = data[:-1]
    if mask.nodata is not None:
        valid &= ~np.all(data == mask.nodata, axis=0)
    return data, valid


def _check_colours(checks: Checks, sampler_kwargs: dict[str, Any], data: np.ndarray, valid: np.ndarray) -> None:
    color_map = sampler_kwargs.get("color_map")
    n_valid = int(valid.sum())
    if n_valid == 0:
        return
    if color_map is not None:
        if data.shape[0] < 3:
            return
        rgb = data[:3][:, valid].astype(np.int64)
        keys = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        values, counts = np.unique(keys, return_counts=True)
        try:
            known = {(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b, _ in color_map}
        except (TypeError, ValueError):
            return  # the sampler check reports a malformed colour map
        unknown = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in known]
        unknown.sort(key=lambda item: -item[1])
        found = sum(1 for v in values if int(v) in known)

        def rgb_of(key: int) -> str:
            return f"[{key >> 16}, {(key >> 8) & 255}, {key & 255}]"

        listed = ", ".join(f"{rgb_of(k)} {c / n_valid:.1%} ({c:,} px)" for k, c in unknown[:6])
        more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        serious = [(k, c) for k, c in unknown if k != 0 and c / n_valid >= UNKNOWN_COLOUR_PROBLEM]
        if found == 0:
            checks.fail(
                "colours",
                f"none of the {len(known)} color_map colours occurs in a sample of {n_valid:,} mask pixels; "
                f"the mask's colours are {listed}{more}. Fix color_map ([R, G, B, class], RGB order).",
            )
        elif serious:
            checks.fail(
                "colours",
                f"{len(unknown)} colour(s) in a sample of {n_valid:,} mask pixels are not in color_map and "
                f"would become class 0: {listed}{more}. Add them to color_map ([R, G, B, 0] if they are background).",
            )
        elif unknown:
            checks.ok(
                "colours",
                f"{found} of {len(known)} color_map colours found in {n_valid:,} sampled mask pixels; "
                f"unmapped (class 0): {listed}{more}",
            )
        else:
            checks.ok("colours", f"all colours of {n_valid:,} sampled mask pixels are in color_map ({found} found)")
        return
    values, counts = np.unique(data[0][valid], return_counts=True)
    listed = ", ".join(f"{v:g}: {c / n_valid:.1%}" for v, c in list(zip(values.tolist(), counts.tolist()))[:10])
    n_classes = int(sampler_kwargs.get("n_classes", 2))
    if n_classes == 2:
        checks.ok("values", f"mask values in {n_valid:,} sampled pixels ({listed}); n_classes 2: non-zero -> 1")
        return
    bad = [v for v in values.tolist() if v < 0 or v >= n_classes or v != int(v)]
    if bad:
        checks.fail(
            "values",
            f"the mask holds values {bad[:10]} outside the classes 0..{n_classes - 1} (n_classes {n_classes}); "
            f"sampled values: {listed}",
        )
    else:
        checks.ok("values", f"mask values in {n_valid:,} sampled pixels: {listed}")


def run_validate(args: argparse.Namespace) -> Checks:
    """All checks of ``validate``, printed as they run; the problems are returned."""
    from crossgeo import windows as winsrc
    from crossgeo.augment import build_augmentation, to_model_inputs
    from crossgeo.grid import Grid
    from crossgeo.io import alpha_band, open_raster
    from crossgeo.options import ALIASES
    from crossgeo.sampler import PatchSampler

    checks = Checks()
    config = load_config(args.config, args.section)
    print(f"validating {args.config}")
    try:
        kwargs, rest = split_options(config, str(args.config))
        kwargs = {ALIASES.get(k, k): v for k, v in kwargs.items()}
    except CrossgeoError as error:
        checks.fail("config", _one_line(error))
        return checks
    checks.ok("config", f"{len(config)} option(s): {', '.join(config)}")

    sampler, sampler_error = None, None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            sampler = PatchSampler(**kwargs)
        except Exception as error:
            sampler_error = error

    image = mask = None
    for key, option in (("image_path", "image"), ("mask_path", "mask")):
        try:
            src = open_raster(str(kwargs[key]), key)
        except Exception as error:
            checks.fail(option, _one_line(error))
            continue
        checks.ok(option, f"{kwargs[key]}: {_describe_raster(src)}")
        if option == "image":
            image = src
        else:
            mask = src
    try:
        grid = sampler.grid if sampler is not None else Grid.of(image) if image is not None else None
        data = valid = None
        if image is not None and mask is not None and grid is not None:
            if (mask.crs is None) != (grid.crs is None):
                checks.fail("overlap", f"{'the mask' if mask.crs is None else 'the image'} has no CRS; both need one")
            else:
                alpha = alpha_band(mask)
                bands = [b for b in range(1, mask.count + 1) if b != alpha][: 3 if kwargs.get("color_map") else 1]
                try:
                    data, valid = mask_sample(mask, grid, bands)
                except Exception as error:
                    checks.fail("overlap", f"the mask cannot be warped onto the image grid: {_one_line(error)}")
                else:
                    covered = float(valid.mean())
                    bounds = (
                        f"image {_lonlat_bounds(grid.crs, grid.bounds)}, mask {_lonlat_bounds(mask.crs, mask.bounds)}"
                    )
                    if covered == 0:
                        checks.fail(
                            "overlap",
                            f"the mask has no data over the image (0 % covered; lon/lat bounds: {bounds}). "
                            "Check both files' CRS and location.",
                        )
                    else:
                        how = (
                            "same grid, plain windowed reads"
                            if sampler is not None and sampler.aligned
                            else "warped nearest-neighbour onto the image grid"
                        )
                        if covered < 0.5:
                            checks.warn("overlap", f"the mask has data over only {covered:.1%} of the image ({bounds})")
                        else:
                            checks.ok("overlap", f"the mask has data over {covered:.1%} of the image ({how})")
        if grid is not None:
            try:
                index = winsrc.build_window_index(
                    kwargs["crops_path"],
                    grid=grid,
                    patch_size=int(kwargs["patch_size"]),
                    crops_layer=kwargs.get("crops_layer"),
                    row_off_key=kwargs.get("row_off_key", "row_off"),
                    col_off_key=kwargs.get("col_off_key", "col_off"),
                )
            except Exception as error:
                checks.fail("windows", _one_line(error))
            else:
                size = int(kwargs["patch_size"])
                report = index.report
                if len(index) == 0:
                    checks.fail("windows", f"{kwargs['crops_path']}: no valid windows ({report.describe()})")
                else:
                    partly = ~(
                        (index.row_off >= 0)
                        & (index.col_off >= 0)
                        & (index.row_off + size <= grid.height)
                        & (index.col_off + size <= grid.width)
                    )
                    text = f"{len(index)} window(s) on the {grid.width} x {grid.height} image ({report.describe()})"
                    if report.outside_dropped or partly.any():
                        extra = []
                        if report.outside_dropped:
                            extra.append(f"{report.outside_dropped} feature(s) outside the image dropped")
                        if partly.any():
                            extra.append(f"{int(partly.sum())} window(s) reach past the edge (filled)")
                        checks.warn("windows", f"{text}; {'; '.join(extra)}")
                    else:
                        checks.ok("windows", f"{text}, all inside")
        if data is not None and valid is not None:
            _check_colours(checks, kwargs, data, valid)
    finally:
        for src in (image, mask):
            if src is not None:
                src.close()

    if sampler_error is not None:
        text = _one_line(sampler_error)
        covered = ("windows" in checks.failed and "window" in text) or (
            "overlap" in checks.failed and "overlap" in text
        )
        if not covered and not (checks.failed & {"image", "mask"}):
            checks.fail("sampler", text)
    elif sampler is not None:
        augmentation_list = rest.get("augmentation_list")
        if not augmentation_list:
            checks.ok("augmentation", "none configured")
        else:
            try:
                augmentation = build_augmentation(augmentation_list, allowed_targets=args.allow_target or ())
                x, y = to_model_inputs(sampler[0], augmentation, seed=0)
            except ImportError as error:
                checks.fail(
                    "augmentation", f"augmentation_list needs albumentations ({error}): pip install 'crossgeo[augment]'"
                )
            except Exception as error:
                checks.fail("augmentation", _one_line(error))
            else:
                n = len(augmentation.transforms) if augmentation is not None else 0
                checks.ok(
                    "augmentation",
                    f"{n} transform(s) ran on window #0: image {tuple(x.shape)} {x.dtype}, "
                    f"mask {tuple(y.shape)} {y.dtype}",
                )
    return checks


def _lonlat_bounds(crs: Any, bounds: Sequence[float]) -> str:
    from rasterio.warp import transform_bounds

    try:
        if crs is not None:
            with np.errstate(all="ignore"):
                bounds = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    except Exception:  # only used in a message
        pass
    return "(" + ", ".join(f"{v:.4f}" for v in bounds) + ")"


def cmd_validate(args: argparse.Namespace) -> int:
    checks = run_validate(args)
    if checks.problems:
        print(f"\n{len(checks.problems)} problem(s) in {args.config}:")
        for k, problem in enumerate(checks.problems, 1):
            print(f"  {k}. {problem}")
        return 1
    print(f"\n{args.config}: no problems found")
    return 0


# --------------------------------------------------------------------------- demo


def _framework(requested: str) -> str:
    import importlib.util

    order = ["torch", "tensorflow"] if requested == "auto" else [requested]
    for name in order:
        if name == "none":
            return "none"
        if importlib.util.find_spec(name) is None:
            print(f"{name} is not installed, so the demo skips training (pip install 'crossgeo[{name}]')")
            continue
        return name
    return "none"


def _train_torch(sampler: Any, rest: dict[str, Any], steps: int, batch_size: int, n_classes: int) -> dict[str, float]:
    import torch
    from torch import nn

    from crossgeo.torch import PatchDataset, make_dataloader

    dataset = PatchDataset(sampler, augmentation_list=rest.get("augmentation_list"), seed=0)
    torch.manual_seed(0)
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    channels = int(dataset[0]["image"].shape[0])
    model = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, n_classes, 1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    first = last = accuracy = float("nan")
    bar = _progress(total=steps * batch_size, desc="training (torch)", unit="patch", leave=True)
    step = 0
    while step < steps:
        for batch in loader:
            x, y = batch["image"], batch["mask"]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            last = float(loss.item())
            first = last if step == 0 else first
            accuracy = float((logits.argmax(1) == y).float().mean())
            bar.set_postfix(loss=f"{last:.3f}", acc=f"{accuracy:.2f}")
            bar.update(len(x))
            step += 1
            if step >= steps:
                break
    bar.close()
    return {"first_loss": first, "loss": last, "pixel_accuracy": accuracy}


def _train_tensorflow(
    sampler: Any, rest: dict[str, Any], steps: int, batch_size: int, n_classes: int
) -> dict[str, float]:
    import tensorflow as tf

    from crossgeo.tensorflow import make_dataset

    dataset = make_dataset(
        sampler, batch_size=batch_size, shuffle=True, seed=0, augmentation_list=rest.get("augmentation_list")
    )
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            tf.keras.layers.Conv2D(n_classes, 1),
        ]
    )
    optimiser = tf.keras.optimizers.Adam(0.01)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    first = last = accuracy = float("nan")
    bar = _progress(total=steps * batch_size, desc="training (tensorflow)", unit="patch", leave=True)
    step = 0
    while step < steps:
        for batch in dataset:
            x, y = batch[0], batch[1]
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, logits)
            grads = tape.gradient(loss, model.trainable_variables)
            optimiser.apply_gradients(zip(grads, model.trainable_variables))
            last = float(loss.numpy())
            first = last if step == 0 else first
            accuracy = float(tf.reduce_mean(tf.cast(tf.argmax(logits, -1) == y, tf.float32)).numpy())
            bar.set_postfix(loss=f"{last:.3f}", acc=f"{accuracy:.2f}")
            bar.update(int(x.shape[0]))
            step += 1
            if step >= steps:
                break
    bar.close()
    return {"first_loss": first, "loss": last, "pixel_accuracy": accuracy}


def cmd_demo(args: argparse.Namespace) -> int:
    from crossgeo.demo import write_demo_scene

    if args.steps < 0:
        raise CliError("--steps must be >= 0")
    out = Path(args.out)
    start = time.perf_counter()
    print(f"writing the demo scene to {out}/ ...")
    files = write_demo_scene(out)
    print(f"  {len(files)} files in {time.perf_counter() - start:.1f} s")

    config_args = argparse.Namespace(config=str(files["config"]), section=None)
    sampler, _, rest = make_sampler(config_args)
    print(
        f"sampler: {len(sampler)} windows of {sampler.patch_size} px on {Path(sampler.image_path).name} "
        f"({sampler.grid.width} x {sampler.grid.height}, {sampler.grid.crs}); mask {Path(sampler.mask_path).name} "
        f"{'read on the same grid' if sampler.aligned else 'warped from EPSG:4326'}, covers {sampler.mask_coverage:.0%}"
    )
    t0 = time.perf_counter()
    for i in _progress(range(len(sampler)), desc="sampling", unit="patch"):
        sampler[i]
    rate = len(sampler) / max(time.perf_counter() - t0, 1e-9)
    print(f"  read every window once: {rate:.0f} patches/s")

    preview = out / "preview.png"
    sheet = render_preview(
        sampler,
        choose_windows(len(sampler), 16, 0),
        title=f"crossgeo demo: {Path(sampler.image_path).name} + {Path(sampler.mask_path).name}",
        progress=False,
    )
    sheet.save(preview)
    print(f"  wrote {preview}")

    framework = _framework(args.framework)
    n_classes = max(declared_classes(sampler)) + 1
    if framework != "none" and args.steps > 0:
        train = _train_torch if framework == "torch" else _train_tensorflow
        try:
            result = train(sampler, rest, args.steps, args.batch_size, n_classes)
        except ImportError as error:
            print(f"{framework} could not be used ({_one_line(error)}); skipping training")
        else:
            print(
                f"trained a tiny {framework} model for {args.steps} steps: loss {result['first_loss']:.3f} -> "
                f"{result['loss']:.3f}, pixel accuracy {result['pixel_accuracy']:.2f}"
            )
    config = files["config"]
    print(f"\ndone in {time.perf_counter() - start:.1f} s. Files in {out}/:")
    for key, path in files.items():
        print(f"  {key:<14} {path}")
    print(f"  {'preview':<14} {preview}")
    print("\nnext, try:")
    for line in (
        f"crossgeo validate {config}",
        f"crossgeo preview {config} -n 16 --out preview.png",
        f"crossgeo stats {config} --json stats.json",
        f"crossgeo index {config}",
        f"crossgeo validate {files['config_vector']}",
    ):
        print(f"  {line}")
    return 0


# --------------------------------------------------------------------------- parser

EXAMPLE_CONFIG = """\
configuration (YAML; flat or under train_dataset:, _target_ is ignored):
  train_dataset:
    image_mbtiles_path: imagery.mbtiles
    mask_path: masks/mask.vrt
    crops_path: crops/windows.csv
    patch_size: 256
    selected_bands: [1, 2, 3]
    color_map: [[255, 0, 0, 1], [0, 255, 0, 2]]
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show crossgeo's log messages"
    )
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("config", help="YAML configuration with the seed spec's keys")
    with_config.add_argument(
        "--section", metavar="NAME", help="the block of the YAML file to use (default: the top level or train_dataset)"
    )
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="crossgeo",
        description="Look at, check and measure crossgeo patch datasets.",
        epilog="Start with:  crossgeo demo\nThen:        crossgeo validate|preview|stats|index CONFIG.yaml "
        "(each has --help)",
        formatter_class=formatter,
        parents=[common],
    )
    from crossgeo import __version__

    parser.add_argument("--version", action="version", version=f"crossgeo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        parents=[common],
        formatter_class=formatter,
        help="write a small scene, sample it and train a tiny model",
        description="Write a small realistic scene (GeoTIFF and MBTiles image, a colour-coded mask in EPSG:4326 at "
        "another resolution, windows as CSV and GeoPackage, YAML configs), sample it, write a preview and - "
        "when torch or tensorflow is installed - train a tiny segmentation model for a few steps.",
        epilog="example:\n  crossgeo demo\n  crossgeo demo --framework none --out /tmp/crossgeo-demo",
    )
    demo.add_argument(
        "--framework",
        choices=("auto", "torch", "tensorflow", "none"),
        default="auto",
        help="framework for the training steps (default: auto = torch, else tensorflow, else none)",
    )
    demo.add_argument(
        "--out", default="crossgeo-demo", metavar="DIR", help="folder for the scene (default: %(default)s)"
    )
    demo.add_argument("--steps", type=int, default=40, metavar="N", help="training steps (default: %(default)s)")
    demo.add_argument("--batch-size", type=int, default=8, metavar="N", help="patches per step (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)

    preview = sub.add_parser(
        "preview",
        parents=[with_config, common],
        formatter_class=formatter,
        help="write a PNG contact sheet of patches with their masks",
        description="Write a PNG contact sheet: each patch with its mask blended on top in a class palette (the "
        "color_map's own colours for colour-coded masks), window offsets as captions, and a legend. Pixels the "
        "mask does not cover are hatched grey. 1-band images are shown grey, 3/4-band images as RGB (bands 1-3); "
        "non-uint8 data is stretched (2-98 %% per band).",
        epilog="example:\n  crossgeo preview config.yaml -n 16 --out preview.png --seed 1\n\n" + EXAMPLE_CONFIG,
    )
    preview.add_argument("-n", type=int, default=16, help="number of windows to show (default: %(default)s)")
    preview.add_argument("--out", default="preview.png", help="output PNG (default: %(default)s)")
    preview.add_argument("--seed", type=int, default=0, help="which windows are drawn (default: %(default)s)")
    preview.add_argument("--tile", type=int, metavar="PX", help="tile size in pixels (default: patch size, 96-256)")
    preview.add_argument("--alpha", type=float, default=0.45, help="mask opacity 0..1 (default: %(default)s)")
    preview.add_argument(
        "--stretch",
        choices=("auto", "always", "never"),
        default="auto",
        help="contrast stretch (default: auto = for non-uint8 images)",
    )
    preview.set_defaults(func=cmd_preview)

    stats = sub.add_parser(
        "stats",
        parents=[with_config, common],
        formatter_class=formatter,
        help="class pixel counts, frequencies and suggested class weights",
        description="Read the mask of every window once and print per-class pixel counts and frequencies, the "
        "pixels without mask data, windows with no foreground, and suggested class weights (median-frequency "
        "balancing).",
        epilog="example:\n  crossgeo stats config.yaml --json stats.json\n\n" + EXAMPLE_CONFIG,
    )
    stats.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    stats.set_defaults(func=cmd_stats)

    index = sub.add_parser(
        "index",
        parents=[with_config, common],
        formatter_class=formatter,
        help="build and write the window-index cache",
        description="Plan the windows and write window_index_cache (rebuilt when the source or the settings "
        "changed, reused otherwise); print kept / skipped / dropped / clamped counts.",
        epilog="example:\n  crossgeo index config.yaml\n  crossgeo index config.yaml --cache windows.index.parquet "
        "--rebuild\n\n" + EXAMPLE_CONFIG,
    )
    index.add_argument("--cache", metavar="FILE", help="cache file (.csv or .parquet); default: window_index_cache")
    index.add_argument("--rebuild", action="store_true", help="delete the cache first")
    index.set_defaults(func=cmd_index)

    validate = sub.add_parser(
        "validate",
        parents=[with_config, common],
        formatter_class=formatter,
        help="check a configuration without a full pass",
        description="Check a configuration without reading every window: the files open, CRS and overlap (percent "
        "of the image with mask data), windows inside the raster, mask colours that color_map does not know "
        "(with counts), and that augmentation_list instantiates and runs on one patch. Exits 1 with a list of "
        "problems.",
        epilog="example:\n  crossgeo validate config.yaml\n\n" + EXAMPLE_CONFIG,
    )
    validate.add_argument(
        "--allow-target",
        action="append",
        metavar="MODULE",
        help="also let augmentation_list _target_ entries resolve inside MODULE (besides albumentations); "
        "never read from the configuration file",
    )
    validate.set_defaults(func=cmd_validate)
    for subparser in sub.choices.values():  # the raw formatter keeps lines as written: wrap them here
        subparser.description = textwrap.fill(subparser.description or "", 88)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crossgeo`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    previous = log.level
    log.addHandler(handler)
    log.setLevel(level)
    try:
        with _readable_warnings():
            return int(args.func(args))
    except KeyboardInterrupt:
        print("crossgeo: interrupted", file=sys.stderr)
        return 130
    except (CliError, CrossgeoError) as error:
        if debug:
            raise
        print(f"crossgeo {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(
            f"crossgeo {args.command}: error: {type(error).__name__}: {_one_line(error)} "
            "(run with --debug for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)


if __name__ == "__main__":
    sys.exit(main())
