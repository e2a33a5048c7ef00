"""``crossgeo validate``: check a configuration without a full pass over its windows.

Prints one line per check (config, image, mask, overlap, windows, mask colours or values,
augmentation) and lists the problems at the end; exits 1 when there are any. The mask is
looked at through `crossgeo.io.read_mask_overview` (a coarse warp onto the image grid) and
its colours are counted with `crossgeo.masks.colour_counts`, the decoder's own colour key.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from crossgeo.cli.common import EXAMPLE_CONFIG, add_config_arguments, load_config, one_line, split_options
from crossgeo.errors import CrossgeoError
from crossgeo.masks import colour_counts

__all__ = ["Checks", "add_parser", "run", "run_validate"]

UNKNOWN_COLOUR_PROBLEM = 0.001
"""Unknown mask colours covering at least this fraction of the sample are a problem."""


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check a configuration without a full pass",
        description="Check a configuration without reading every window: the files open, CRS and overlap (percent "
        "of the image with mask data), windows inside the raster, mask colours that color_map does not know "
        "(with counts), and that augmentation_list instantiates and runs on one patch. Exits 1 with a list of "
        "problems.",
        epilog="example:\n  crossgeo validate config.yaml\n\n" + EXAMPLE_CONFIG,
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--allow-target",
        action="append",
        metavar="MODULE",
        help="also let augmentation_list _target_ entries resolve inside MODULE (besides albumentations); "
        "never read from the configuration file",
    )
    return parser


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


def _check_colours(checks: Checks, sampler_kwargs: dict[str, Any], data: np.ndarray, valid: np.ndarray) -> None:
    color_map = sampler_kwargs.get("color_map")
    n_valid = int(valid.sum())
    if n_valid == 0:
        return
    if color_map is not None:
        if data.shape[0] < 3:
            return
        try:
            counted = colour_counts(data[:3][:, valid], color_map)
        except (TypeError, ValueError):
            return  # the sampler check reports a malformed colour map
        known = len({tuple(int(v) for v in entry[:3]) for entry in color_map})
        found, unknown = len(counted.mapped), counted.unmapped
        listed = ", ".join(f"{list(rgb)} {c / n_valid:.1%} ({c:,} px)" for rgb, c in unknown[:6])
        more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        serious = [(k, c) for k, c in unknown if k != (0, 0, 0) and c / n_valid >= UNKNOWN_COLOUR_PROBLEM]
        if found == 0:
            checks.fail(
                "colours",
                f"none of the {known} color_map colours occurs in a sample of {n_valid:,} mask pixels; "
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
                f"{found} of {known} color_map colours found in {n_valid:,} sampled mask pixels; "
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
    from crossgeo.io import RasterInfo, raster_info, read_mask_overview
    from crossgeo.sampler import PatchSampler

    checks = Checks()
    config = load_config(args.config, args.section)
    print(f"validating {args.config}")
    try:
        options = split_options(config, str(args.config))
    except CrossgeoError as error:
        checks.fail("config", one_line(error))
        return checks
    kwargs, rest = options.sampler, options.adapter
    checks.ok("config", f"{len(config)} option(s): {', '.join(config)}")

    sampler, sampler_error = None, None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            sampler = PatchSampler(**kwargs)
        except Exception as error:
            sampler_error = error

    infos: dict[str, RasterInfo] = {}
    for key, option in (("image_path", "image"), ("mask_path", "mask")):
        try:
            infos[option] = raster_info(str(kwargs[key]), key)
        except Exception as error:
            checks.fail(option, one_line(error))
            continue
        checks.ok(option, f"{kwargs[key]}: {infos[option].describe()}")
    image, mask = infos.get("image"), infos.get("mask")
    grid = sampler.grid if sampler is not None else Grid.of(image) if image is not None else None
    data = valid = None
    if image is not None and mask is not None and grid is not None:
        if (mask.crs is None) != (grid.crs is None):
            checks.fail("overlap", f"{'the mask' if mask.crs is None else 'the image'} has no CRS; both need one")
        else:
            bands = [b for b in range(1, mask.count + 1) if b != mask.alpha][: 3 if kwargs.get("color_map") else 1]
            try:
                data, valid = read_mask_overview(mask.path, grid, bands)
            except Exception as error:
                checks.fail("overlap", f"the mask cannot be warped onto the image grid: {one_line(error)}")
            else:
                covered = float(valid.mean())
                bounds = f"image {_lonlat_bounds(grid.crs, grid.bounds)}, mask {_lonlat_bounds(mask.crs, mask.bounds)}"
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
            checks.fail("windows", one_line(error))
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

    if sampler_error is not None:
        text = one_line(sampler_error)
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
                checks.fail("augmentation", one_line(error))
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


def run(args: argparse.Namespace) -> int:
    checks = run_validate(args)
    if checks.problems:
        print(f"\n{len(checks.problems)} problem(s) in {args.config}:")
        for k, problem in enumerate(checks.problems, 1):
            print(f"  {k}. {problem}")
        return 1
    print(f"\n{args.config}: no problems found")
    return 0
