"""``crossgeo validate``: check a configuration without a full pass over its windows.

Prints one line per check (config, image, mask, overlap, windows, mask colours or values,
blocks decoded per patch, image data, augmentation) and lists the problems at the end; exits 1 when there are any
(with ``--strict`` also on warnings). The checks are the sampler's own inspection
(`crossgeo.inspection`; for a catalogue of ``scenes``, `crossgeo.catalogue.inspect_catalogue`),
collecting every problem as a record instead of stopping at the first. The mask is
looked at through `crossgeo.io.read_mask_overview` (a coarse warp onto the image grid) and
its colours are counted with `crossgeo.masks.colour_counts`, the decoder's own colour key.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from crossgeo.cli.common import EXAMPLE_CONFIG, add_config_arguments, config_of, one_line, split_options
from crossgeo.errors import CrossgeoError
from crossgeo.masks import colour_counts

if TYPE_CHECKING:
    from crossgeo.inspection import Inspection

__all__ = ["Checks", "add_parser", "run", "run_validate"]


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
        help="also let augmentation_list _target_ entries name transform classes (albumentations subclasses) of "
        "MODULE; never read from the configuration file (CROSSGEO_ALLOWED_TRANSFORMS=MODULE,... does the same)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too (e.g. unmapped mask colours)")
    return parser


@attrs.define
class Checks:
    """Collected results of ``validate``: printed as they come, problems and warnings counted."""

    problems: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    failed: set[str] = attrs.field(factory=set)

    def ok(self, what: str, text: str) -> None:
        print(f"  ok    {what:<13} {text}")

    def warn(self, what: str, text: str) -> None:
        print(f"  warn  {what:<13} {text}")
        self.warnings.append(f"{what}: {text}")

    def fail(self, what: str, text: str) -> None:
        print(f"  FAIL  {what:<13} {text}")
        self.problems.append(f"{what}: {text}")
        self.failed.add(what)


def _check_colours(checks: Checks, color_map: Any, data: np.ndarray, valid: np.ndarray) -> None:
    """Colours of a mask sample against ``color_map``: none known fails, unknown ones warn.

    Unknown colours become class 0 by the original's documented rule, so they are a
    warning naming each colour and its share, not a failure.
    """
    n_valid = int(valid.sum())
    if n_valid == 0 or data.shape[0] < 3:
        return
    counted = colour_counts(data[:3][:, valid], color_map)
    known = len({tuple(int(v) for v in entry[:3]) for entry in color_map})
    found, unknown = len(counted.mapped), counted.unmapped
    listed = ", ".join(f"{list(rgb)} {c / n_valid:.1%} ({c:,} px)" for rgb, c in unknown[:6])
    more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
    if found == 0:
        checks.fail(
            "colours",
            f"none of the {known} color_map colours occurs in a sample of {n_valid:,} mask pixels; "
            f"the mask's colours are {listed}{more}. Fix color_map ([R, G, B, class], RGB order).",
        )
    elif unknown:
        checks.warn(
            "colours",
            f"{len(unknown)} colour(s) in a sample of {n_valid:,} mask pixels are not in color_map and become "
            f"class 0: {listed}{more}. Add them to color_map if they mean another class.",
        )
    else:
        checks.ok("colours", f"all colours of {n_valid:,} sampled mask pixels are in color_map ({found} found)")


def _check_values(checks: Checks, n_classes: int, data: np.ndarray, valid: np.ndarray) -> None:
    """Values of a single-band mask sample: classes at or above ``n_classes`` are a problem."""
    n_valid = int(valid.sum())
    if n_valid == 0:
        return
    values, counts = np.unique(data[0][valid], return_counts=True)
    listed = ", ".join(f"{v:g}: {c / n_valid:.1%}" for v, c in list(zip(values.tolist(), counts.tolist()))[:10])
    if n_classes == 2:
        if values.size > 2:
            checks.warn(
                "values",
                f"the mask holds {values.size} values in {n_valid:,} sampled pixels ({listed}) but n_classes is 2 "
                "(the default, as in the original), so every non-zero value becomes class 1. If they are class "
                f"indices set n_classes: {int(values.max()) + 1}; if the mask is binary, ignore this.",
            )
        else:
            checks.ok("values", f"mask values in {n_valid:,} sampled pixels ({listed}); n_classes 2: non-zero -> 1")
        return
    bad = [v for v in values.tolist() if v < 0 or v >= n_classes or v != int(v)]
    if bad:
        checks.fail(
            "values",
            f"the mask holds values {bad[:10]} outside the classes 0..{n_classes - 1} (n_classes {n_classes}); "
            f"sampled values: {listed}. Raise n_classes, fix the mask, or set out_of_range: fill.",
        )
    else:
        checks.ok("values", f"mask values in {n_valid:,} sampled pixels: {listed}")


def _check_overlap(checks: Checks, inspection: Inspection) -> None:
    """How much of the image the mask has data for, and its colours/values, on a coarse overview."""
    from crossgeo.inspection import LOW_COVERAGE
    from crossgeo.io import read_mask_overview

    image, mask = inspection.image, inspection.mask
    if image is None or mask is None:
        return
    grid = image.grid
    bands = list(mask.data_bands[:3] if inspection.options["color_map"] is not None else mask.data_bands[:1])
    try:
        data, valid = read_mask_overview(mask.path, grid, bands)
    except CrossgeoError as error:
        checks.fail("overlap", f"the mask cannot be warped onto the image grid: {one_line(error)}")
        return
    covered = float(valid.mean())
    how = "same grid, plain windowed reads" if mask.aligned else "warped nearest-neighbour onto the image grid"
    if covered == 0:
        checks.fail("overlap", "the mask has no data over the image (0 % covered). Check both files' CRS and location.")
        return
    if covered < LOW_COVERAGE:
        checks.warn("overlap", f"the mask has data over only {covered:.1%} of the image ({how})")
    else:
        checks.ok("overlap", f"the mask has data over {covered:.1%} of the image ({how})")
    if inspection.options["color_map"] is not None:
        _check_colours(checks, inspection.options["color_map"], data, valid)
    else:
        _check_values(checks, inspection.options["n_classes"], data, valid)


def _check_windows(checks: Checks, inspection: Inspection) -> None:
    windows, image = inspection.windows, inspection.image
    if windows is None or image is None:
        return
    report, grid = windows.index.report, image.grid
    if len(windows.index) == 0:
        checks.fail(
            "windows",
            f"{windows.source}: no valid windows ({report.describe()}); check that the windows/features overlap "
            "the image. The sampler would have length 0.",
        )
        return
    text = f"{len(windows.index)} window(s) on the {grid.width} x {grid.height} image ({report.describe()})"
    extra = []
    if report.outside_dropped:
        extra.append(f"{report.outside_dropped} feature(s) outside the image dropped")
    if windows.partly_outside:
        extra.append(f"{windows.partly_outside} window(s) reach past the edge (filled)")
    if extra:
        checks.warn("windows", f"{text}; {'; '.join(extra)}")
    else:
        checks.ok("windows", f"{text}, all inside")


def _check_blocks(checks: Checks, sampler: Any) -> None:
    """Blocks each window decodes against the minimum (`crossgeo.survey.block_decoding`; no pixels read).

    A performance note, never a problem: above the minimum it is a warning naming the fix.
    """
    from crossgeo.survey import block_decoding

    found = block_decoding(sampler)
    fix = found.fix()
    if fix:
        checks.warn("blocks", f"{found.describe()}. Fix: {fix}.")
    else:
        checks.ok("blocks", found.describe())


def _check_sampling(checks: Checks, sampler: Any, augmentation_list: Any, allowed_targets: Sequence[str]) -> None:
    """Image pixels without data, and the augmentation run on window #0."""
    from crossgeo.augment import build_augmentation, to_model_inputs
    from crossgeo.survey import survey

    found = survey(sampler)
    if found.invalid_image_pixels:
        checks.warn("image data", f"{found.describe()} (ignore_invalid_image keeps them out of the loss)")
    else:
        checks.ok("image data", found.describe())
    if not augmentation_list:
        checks.ok("augmentation", "none configured")
        return
    try:
        augmentation = build_augmentation(augmentation_list, allowed_targets=allowed_targets)
        x, y = to_model_inputs(sampler[0], augmentation, seed=0)
    except ImportError as error:
        checks.fail("augmentation", f'augmentation_list needs albumentations ({error}): pip install ".[augment]"')
    except Exception as error:
        checks.fail("augmentation", one_line(error))
    else:
        n = len(augmentation.transforms) if augmentation is not None else 0
        checks.ok(
            "augmentation",
            f"{n} transform(s) ran on window #0: image {tuple(x.shape)} {x.dtype}, mask {tuple(y.shape)} {y.dtype}",
        )


def _check_sources(checks: Checks, sampler: Any, label: str = "") -> None:
    """One line per image source of a stacked image: CRS, pixel size, share of the reference grid it covers,
    nodata share there (`crossgeo.survey.survey_sources`, on a coarse overview), share of windows it has pixels in.

    A source covering less than `crossgeo.inspection.LOW_COVERAGE` of the grid, or without data on more
    than half of what it covers, is a warning.
    """
    from crossgeo.inspection import LOW_COVERAGE
    from crossgeo.survey import survey_sources

    info = sampler.image_info
    if not info.sources:
        return
    coverage = sampler.source_coverage
    try:
        found = survey_sources(info)
    except (CrossgeoError, OSError) as error:
        checks.fail(f"{label}sources", f"cannot be read: {one_line(error)}")
        return
    for k, source in enumerate(found):
        text = source.describe() + " (sampled)"
        if coverage is not None and len(coverage):
            text += f"; has pixels in {coverage[:, k].mean():.0%} of {len(coverage)} window(s)"
        low = source.coverage < LOW_COVERAGE or source.nodata_share > 1 - LOW_COVERAGE
        (checks.warn if low else checks.ok)(f"{label}source {source.name}", text)


def _validate_scenes(
    checks: Checks, kwargs: dict[str, Any], augmentation_list: Any, allowed_targets: Sequence[str]
) -> None:
    """A catalogue (``scenes``): its inspection's problems (records), then one line per scene.

    `crossgeo.catalogue.inspect_catalogue` with ``collect=True`` is `crossgeo.SceneSampler`'s
    own inspection, so construction and validation cannot disagree; each problem is printed
    from its record (`crossgeo.catalogue.SceneProblem`).
    """
    import warnings

    from crossgeo.catalogue import inspect_catalogue
    from crossgeo.scenes import SceneSampler, check_max_open, check_order

    options = dict(kwargs)
    try:
        max_open = check_max_open(options.pop("max_open", 32))
        ordering = check_order(options.pop("order", "random"), options.pop("block_scenes", 8))
    except CrossgeoError as error:
        checks.fail("scenes", one_line(error))
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inspection = inspect_catalogue(**options, collect=True)
    for problem in inspection.problems:
        checks.fail("scenes", problem.message)
    if not inspection.ok:
        return
    sampler = SceneSampler.from_inspection(inspection, max_open=max_open, order=ordering[0], block_scenes=ordering[1])
    counts = sampler.windows_per_scene()
    for scene, one in zip(sampler.catalogue, sampler.samplers):
        text = (
            f"{scene.image_label}: {one.image_info.describe()}; mask {one.mask_path} covers "
            f"{one.mask_info.coverage:.1%}; {counts[scene.position]} window(s)"
        )
        if counts[scene.position]:
            checks.ok(f"scene {scene.position}", text)
        else:
            checks.warn(f"scene {scene.position}", f"{text}: no valid windows, skipped")
        _check_sources(checks, one, f"scene {scene.position} ")
    info = sampler.windows_info
    total = f"{len(sampler)} window(s) in {sampler.scenes} scene(s) ({len(sampler.empty_scenes)} without windows)"
    if info.shared_features:
        total += f"; {info.shared_features} shared feature(s), {info.unassigned} inside no scene (unused)"
    if len(sampler) == 0:
        checks.fail("windows", f"{total}: no valid windows in any scene; the sampler would have length 0.")
        return
    (checks.warn if info.unassigned else checks.ok)("windows", total)
    found = [*inspection.warnings, *(str(w.message) for w in caught)]
    for text in dict.fromkeys(" ".join(t.split()) for t in found):
        checks.warn("warning", text)
    _check_blocks(checks, sampler)
    _check_sampling(checks, sampler, augmentation_list, allowed_targets)


def run_validate(args: argparse.Namespace) -> Checks:
    """Every check of ``validate``, printed as it runs; problems and warnings are returned.

    The checks are the sampler's own inspection (`crossgeo.inspection.inspect_sources` with
    ``collect=True``): construction and validation share one code path and cannot disagree.
    """
    from crossgeo.config import ORIGINAL_SPELLING
    from crossgeo.inspection import inspect_sources
    from crossgeo.sampler import PatchSampler

    checks = Checks()
    if os.path.isdir(args.config):  # a chip store (crossgeo chips): manifest against arrays, checksums, counts
        from crossgeo.cli.chips import validate_store

        validate_store(checks, args.config)
        return checks
    config = config_of(args)
    print(f"validating {args.config}")
    try:
        options = split_options(config, str(args.config))
    except CrossgeoError as error:
        checks.fail("config", one_line(error))
        return checks
    checks.ok("config", f"{len(config)} option(s): {', '.join(config)}")
    if options.sampler.get("chips_path") is not None:  # the patches come from a chip store: check that
        from crossgeo.cli.chips import validate_store

        validate_store(checks, str(options.sampler["chips_path"]))
        return checks
    if options.sampler.get("scenes") is not None:
        _validate_scenes(checks, options.sampler, options.adapter.get("augmentation_list"), args.allow_target or ())
        return checks
    inspection = inspect_sources(options.sampler, where=str(args.config), collect=True, spelling=ORIGINAL_SPELLING)
    for problem in inspection.problems:
        checks.fail(problem.step, problem.message)
    if inspection.image is not None:
        checks.ok("image", f"{inspection.image.path}: {inspection.image.describe()}")
    if inspection.mask is not None:
        checks.ok("mask", f"{inspection.mask.path}: {inspection.mask.describe()}")
    _check_overlap(checks, inspection)
    _check_windows(checks, inspection)
    for text in inspection.warnings:
        checks.warn("warning", text)
    if inspection.ok and len(inspection.windows.index) > 0:  # type: ignore[union-attr]
        sampler = PatchSampler.from_inspection(inspection)
        _check_blocks(checks, sampler)
        _check_sources(checks, sampler)
        _check_sampling(checks, sampler, options.adapter.get("augmentation_list"), args.allow_target or ())
    return checks


def run(args: argparse.Namespace) -> int:
    checks = run_validate(args)
    if checks.problems:
        print(f"\n{len(checks.problems)} problem(s) in {args.config}:")
        for k, problem in enumerate(checks.problems, 1):
            print(f"  {k}. {problem}")
        return 1
    if not checks.warnings:
        print(f"\n{args.config}: no problems found")
        return 0
    print(f"\n{args.config}: no problems ({len(checks.warnings)} warning(s))")
    if args.strict:
        print("--strict: warnings count as problems")
        return 1
    return 0
