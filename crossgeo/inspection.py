"""Inspecting a configuration: the image, the mask and the windows, one small step each.

Each step opens its raster through `crossgeo.io`, checks what can be checked and returns
a plain frozen record (`ImageInfo`, `MaskInfo`, the `WindowIndex`). `PatchSampler` is
built from these records, and ``crossgeo validate`` / ``stats`` report the very same
records, so construction and validation can never disagree:

* `inspect_sources` with ``collect=False`` (what `PatchSampler` does) raises the first
  problem as it is found;
* with ``collect=True`` (what ``crossgeo validate`` does) it runs every step whose inputs
  are usable and returns all problems and warnings at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.warp import transform as warp_transform

from crossgeo import windows as winsrc
from crossgeo.errors import ConfigError, CrossgeoError, NoOverlapError, OptionError, OptionTypeError, RasterError
from crossgeo.grid import Grid, pixel_offset, scaled_offset
from crossgeo.io import (
    DEFAULT_TOLERANCE,
    EXACT_TOLERANCE,
    NEAREST_TOLERANCE,
    RasterInfo,
    ReadPlan,
    SourcePlan,
    SourcePool,
    is_remote,
    kept_part,
    mask_interior,
    mask_lookup,
    mask_view_for,
    missing_parts,
    open_raster,
    table_fits,
    table_lattice,
)
from crossgeo.masks import MaskDecoder, make_decoder, validate_color_map
from crossgeo.options import (
    IMAGE_DTYPES,
    ON_READ_ERROR,
    SamplerOptions,
    check_bands,
    check_choice,
    check_int,
    check_pathlike,
    resolve_sampler_options,
)

__all__ = [
    "IMAGE_DTYPES",
    "LOW_COVERAGE",
    "MAX_OVERSIZED_PATCH_BYTES",
    "MAX_PATCH_BYTES",
    "ON_READ_ERROR",
    "ImageInfo",
    "ImageSource",
    "Inspection",
    "MaskInfo",
    "Problem",
    "WindowsInfo",
    "check_int",
    "check_patch_size",
    "check_path",
    "covered_pixels",
    "inspect_any_image",
    "inspect_image",
    "inspect_image_sources",
    "inspect_mask",
    "inspect_sources",
    "inspect_windows",
    "is_multi_source",
    "parse_resampling",
    "read_plan",
    "resolve_image_dtype",
    "source_coverage",
    "window_warnings",
]

LOW_COVERAGE = 0.5
"""A mask covering less than this fraction of the image gets a warning."""
HIGH_FILL = 0.5
"""Windows whose pixels lie outside the image more than this on average get a warning."""
MAX_PATCH_BYTES = 2 * 1024**3
"""The most one patch (image, int64 mask and validity mask, as read) may take: 2 GiB."""
MAX_OVERSIZED_PATCH_BYTES = 256 * 1024**2
"""The most a patch larger than the image (so mostly fill) may take: 256 MiB; below it, only a warning."""

T = TypeVar("T")


# --------------------------------------------------------------------------- records


@attrs.frozen
class ImageInfo:
    """What the image step found and decided: the reference grid and how to read the image."""

    raster: RasterInfo
    """The image file's header."""
    option: str
    """The name the user gave the image option (``image_path`` or ``image_mbtiles_path``)."""
    bands: tuple[int, ...]
    """1-based bands read (``selected_bands``)."""
    dtype: str
    """Output dtype of `Patch.image`."""
    grid: Grid
    """The reference grid: the image's own, or its footprint on ``target_crs``/``target_resolution``."""
    warp: bool
    fill: float
    """Value of image pixels outside the raster."""
    sources: tuple[ImageSource, ...] = ()
    """The sources of a stacked image, in channel order (empty: one ``image_path``, described above).
    With sources, ``raster`` is the reference source's header and ``bands`` the band of each channel."""
    reference: int = 0
    """Position of the reference source in `sources`."""

    @property
    def path(self) -> str:
        return self.raster.path

    @property
    def channels(self) -> tuple[tuple[str, int], ...]:
        """``(source name, 1-based band)`` per channel of `Patch.image`."""
        if not self.sources:
            name = Path(self.path).name.split(".")[0]
            return tuple((name, b) for b in self.bands)
        return tuple((s.name, b) for s in self.sources for b in s.bands)

    def _how(self, source: ImageSource) -> str:
        """How a stacked source reaches the reference grid (`_stacked_source_plan` decides the same way)."""
        if source.shift is not None:
            return ", plain reads"
        if source.resampling == Resampling.nearest and scaled_offset(self.grid, Grid.of(source.raster)) is not None:
            return ", plain reads, each pixel repeated (nearest)"
        return ", warped"

    def describe(self) -> str:
        if self.sources:
            parts = [
                f"{s.name}: {s.raster.describe()}, band(s) {list(s.bands)}"
                + (" (reference)" if i == self.reference else self._how(s))
                for i, s in enumerate(self.sources)
            ]
            return f"{len(self.sources)} sources stacked as {len(self.bands)} channel(s) of {self.dtype}: " + "; ".join(
                parts
            )
        return f"{self.raster.describe()}; reading band(s) {list(self.bands)} as {self.dtype}" + (
            f", warped to a {self.grid.width} x {self.grid.height} grid" if self.warp else ""
        )


@attrs.frozen
class MaskInfo:
    """What the mask step found: its bands, validity markers and how it meets the reference grid."""

    raster: RasterInfo
    """The mask file's header (its nodata, alpha band and per-dataset mask band mark missing data)."""
    data_bands: tuple[int, ...]
    """Bands the decoder reads (the first three for a ``color_map``)."""
    offset: tuple[int, int] | None
    """(rows, cols) from the reference grid to the mask's when the grids coincide, else None (warped)."""
    interior: tuple[tuple[float, float], ...] | None
    """The mask footprint shrunk by a margin, in reference-grid pixels (warped masks without alpha)."""
    coverage: float
    """Share of the reference grid's pixels the mask covers (sampled on the grids)."""

    @property
    def path(self) -> str:
        return self.raster.path

    @property
    def aligned(self) -> bool:
        """True when the mask is read with plain windows (its grid coincides with the image's)."""
        return self.offset is not None

    def describe(self) -> str:
        how = "same grid, plain windowed reads" if self.aligned else "warped nearest-neighbour onto the image grid"
        return f"{self.raster.describe()}; {how}; covers {self.coverage:.1%} of the image"


@attrs.frozen
class WindowsInfo:
    """What the windows step produced: the index, where it came from and whether a cache was reused."""

    index: winsrc.WindowIndex
    source: str
    """The crops file, or a description of an in-memory table."""
    from_cache: bool
    outside_share: float
    """Mean share of a window's pixels outside the image (filled)."""
    partly_outside: int
    """Windows reaching past the image edge."""
    cache_state: str = "none"
    """What happened to ``window_index_cache`` (one of `crossgeo.windows.CACHE_STATES`)."""

    def describe(self) -> str:
        return f"{len(self.index)} window(s) from {self.source}: {self.index.report.describe()}"


@attrs.frozen
class Problem:
    """One thing that stops a configuration from working: the step, and the error raised for it."""

    step: str
    error: Exception

    @property
    def message(self) -> str:
        return " ".join(str(self.error).split()) or type(self.error).__name__


@attrs.frozen
class Inspection:
    """Every step's record (None where the step could not run) plus all problems and warnings."""

    options: dict[str, Any]
    names: dict[str, str]
    image: ImageInfo | None = None
    mask: MaskInfo | None = None
    decoder: MaskDecoder | None = None
    windows: WindowsInfo | None = None
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and None not in (self.image, self.mask, self.windows)


# --------------------------------------------------------------------------- option checks


def check_path(value: Any, option: str) -> str:
    """A path (`crossgeo.options.check_pathlike`) that exists (remote ``/vsi...`` paths are not looked up)."""
    path = check_pathlike(value, option)
    if not is_remote(path) and not Path(path).exists():
        where = "" if Path(path).is_absolute() else f" (relative paths start at {os.getcwd()})"
        raise ConfigError(f"{option} {path!r} does not exist. Check the path{where}.")
    return path


def parse_resampling(value: Any, option: str = "image_resampling") -> Resampling:
    """A rasterio ``Resampling`` from its name (case-insensitive) or the enum itself."""
    if isinstance(value, Resampling):
        return value
    names = [m for m in Resampling.__members__ if not m.startswith("_")]
    if isinstance(value, str) and value.lower() in Resampling.__members__:
        return Resampling[value.lower()]
    raise ConfigError(f"{option} {value!r} is not a rasterio resampling method; choose one of {', '.join(names)}.")


def _check_scalar_options(options: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The checks that need no file: `SamplerOptions`' fields, then the colour map, resampling and cache path.

    Returns the normalised values (a plain dict, as `Inspection.options` keeps them).
    """
    out = attrs.asdict(SamplerOptions(**options), recurse=False)
    if out["color_map"] is not None:
        validate_color_map(out["color_map"])  # its type before the mask's band count is compared with it
    out["image_resampling"] = parse_resampling(out["image_resampling"])
    cache = out["window_index_cache"]
    out["window_index_cache"] = winsrc.check_cache_path(cache) if cache is not None else None
    return out


# --------------------------------------------------------------------------- image


def resolve_image_dtype(requested: Any, source_dtypes: Sequence[str], image_path: str) -> np.dtype[Any]:
    """The output dtype, refusing casts that can lose values.

    Integer and float targets alike: uint16 -> uint8 wraps, and float32 holds integers
    exactly only up to 2**24 and neither float64's precision nor its range, so uint32,
    int32, (u)int64 and float64 data are refused as float32 (16777217 -> 16777216,
    1e-50 -> 0). The message names a dtype that holds the data ('native' always does).
    """
    check_choice(requested, "image_dtype", IMAGE_DTYPES)
    source = np.result_type(*[np.dtype(d) for d in source_dtypes])
    if requested == "native":
        return source
    target = np.dtype(requested)
    if not np.can_cast(source, target, "safe"):
        holding = [d for d in ("uint16", "float32") if np.can_cast(source, np.dtype(d), "safe")]
        better = f"{holding[0]!r} or 'native'" if holding else "'native'"
        why = (
            "float32 holds integers exactly only up to 2**24 and neither float64's precision nor its range"
            if target.kind == "f"
            else f"{target} cannot hold every {source} value"
        )
        raise ConfigError(
            f"image_dtype {requested!r} would lose values of {image_path} (its data is {source}; {why}); "
            f"use image_dtype: {better}."
        )
    return target


def _bands(selected: Any, count: int, image_path: str) -> tuple[int, ...]:
    selected = check_bands(selected)
    if selected is None:
        return tuple(range(1, count + 1))
    for band in selected:
        if not 1 <= band <= count:
            raise ConfigError(
                f"selected_bands {list(selected)} asks for band {band} but {image_path} has {count} band(s); "
                f"bands are numbered 1..{count}."
            )
    return tuple(int(b) for b in selected)


def _check_parts(dataset: Any, path: str, option: str) -> None:
    missing = missing_parts(dataset)
    if missing:
        raise RasterError(
            f"{option} {path!r} refers to file(s) that do not exist: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Fix the paths in the VRT (SourceFilename) or rebuild it "
            "with gdalbuildvrt."
        )


def _image_fill(nodata: float | None, dtype: np.dtype[Any]) -> float:
    """The value for image pixels outside the raster: its nodata if ``dtype`` holds it, else 0."""
    if nodata is None:
        return 0.0
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if math.isnan(nodata) or not info.min <= nodata <= info.max:
            return 0.0
    return float(nodata)


def _target_grid(source: Any, target_crs: Any, target_resolution: Any, image_path: str) -> Grid:
    """The image's footprint on ``target_crs`` at ``target_resolution`` (either may be None)."""
    if source.crs is None:
        raise RasterError(f"{image_path} has no CRS, so it cannot be warped to target_crs/target_resolution.")
    try:
        dst_crs = CRS.from_user_input(target_crs) if target_crs is not None else source.crs
    except CRSError as error:
        raise ConfigError(
            f"target_crs {target_crs!r} is not a CRS rasterio understands ({error}); e.g. 'EPSG:3857'."
        ) from error
    resolution: tuple[float, float] | None = None
    if target_resolution is not None:
        values = (
            target_resolution if isinstance(target_resolution, Sequence) else (target_resolution, target_resolution)
        )
        if len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise ConfigError(
                "target_resolution must be a positive number or [x, y] pair in target CRS units, "
                f"got {target_resolution!r}."
            )
        resolution = (float(values[0]), float(values[1]))
    transform, width, height = calculate_default_transform(
        source.crs, dst_crs, source.width, source.height, *source.bounds, resolution=resolution
    )
    return Grid(int(height), int(width), transform, dst_crs)


def inspect_image(
    path: Any,
    *,
    option: str = "image_path",
    selected_bands: Any = None,
    image_dtype: Any = "uint8",
    target_crs: Any = None,
    target_resolution: Any = None,
) -> ImageInfo:
    """Open the image once: bands, output dtype, the reference grid and the outside fill."""
    path = check_path(path, option)
    with open_raster(path, option) as image:
        _check_parts(image, path, option)
        bands = _bands(selected_bands, image.count, path)
        dtype = resolve_image_dtype(image_dtype, [image.dtypes[b - 1] for b in bands], path)
        warp = target_crs is not None or target_resolution is not None
        grid = _target_grid(image, target_crs, target_resolution, path) if warp else Grid.of(image)
        return ImageInfo(
            raster=RasterInfo.of(image, path),
            option=option,
            bands=bands,
            dtype=dtype.str,
            grid=grid,
            warp=warp,
            fill=_image_fill(image.nodata, dtype),
        )


# --------------------------------------------------------------------------- several image sources

SOURCE_KEYS = ("path", "bands", "resampling", "nodata", "scale", "offset")
"""What a source's mapping may hold (a list entry may also give its ``name``)."""


@attrs.frozen
class ImageSource:
    """One source of a stacked image: its header, the bands it adds and how it reaches the reference grid."""

    name: str
    raster: RasterInfo
    bands: tuple[int, ...]
    """1-based bands of this source, in channel order."""
    resampling: Resampling
    nodata: float | None
    """Its nodata: the given one, else the file's."""
    scale: float | None
    offset: float | None
    shift: tuple[int, int] | None
    """(rows, cols) of reference pixel (0, 0) on this source's grid when they coincide (plain reads), else None."""
    footprint: tuple[tuple[float, float], ...] | None = attrs.field(repr=False)
    """Its outline in reference-grid pixels (None for the reference and aligned sources: a rectangle)."""
    interior: tuple[tuple[float, float], ...] | None = attrs.field(repr=False)
    """The outline shrunk by two source pixels (a warped window inside it needs no alpha band)."""

    @property
    def path(self) -> str:
        return self.raster.path


def _number_or_none(value: Any, what: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptionTypeError(f"{what}: {key} must be a number, got {type(value).__name__}: {value!r}.")
    return float(value)


def _source_entries(value: Any, option: str) -> list[tuple[str, dict[str, Any]]]:
    """``(name, spec)`` per source from a list of paths/mappings or a mapping ``name -> path | mapping``."""
    entries: list[tuple[str | None, Any]] = []
    if isinstance(value, Mapping):
        for key, spec in value.items():
            if not isinstance(key, str) or not key:
                raise OptionTypeError(f"{option}: source names must be non-empty strings, got {key!r}.")
            entries.append((key, spec))
    else:
        entries = [(None, spec) for spec in value]
    if not entries:
        raise ConfigError(f"{option} lists no image source; give one path, a list of paths or a mapping name -> path.")
    out: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for name, spec in entries:
        if isinstance(spec, (str, os.PathLike)):
            spec = {"path": spec}
        if not isinstance(spec, Mapping):
            raise OptionTypeError(
                f"{option}: each source is a path or a mapping with 'path' (and optional "
                f"{', '.join(SOURCE_KEYS[1:])}), got {type(spec).__name__}: {spec!r}."
            )
        spec = dict(spec)
        allowed = SOURCE_KEYS if name is not None else (*SOURCE_KEYS, "name")
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise OptionError(
                f"{option}: source {name or spec.get('path')!r} has unknown key(s) {unknown}; a source takes "
                f"{', '.join(allowed)}."
            )
        if "path" not in spec:
            raise ConfigError(f"{option}: source {name or spec!r} has no 'path'; give the raster file of that source.")
        given = spec.pop("name", None) if name is None else name
        if given is not None:
            if not isinstance(given, str) or not given:
                raise OptionTypeError(f"{option}: a source name must be a non-empty string, got {given!r}.")
            if given in used:
                raise ConfigError(
                    f"{option}: the source name {given!r} is given twice; give every source its own name "
                    "(channels are listed as (source, band))."
                )
            name = given
        else:
            stem = Path(os.fspath(spec["path"])).name.split(".")[0] or "source"
            name, k = stem, 2
            while name in used:  # the same file twice, or two files of one stem: stem, stem_2, ...
                name, k = f"{stem}_{k}", k + 1
        used.add(name)
        out.append((name, spec))
    return out


def is_multi_source(value: Any) -> bool:
    """True when an ``image_path`` value lists several sources (a list or a mapping), not one path."""
    return isinstance(value, (Mapping, list, tuple))


def _source_bands(given: Any, count: int, what: str) -> tuple[int, ...]:
    if given is None:
        return tuple(range(1, count + 1))
    if isinstance(given, (int, np.integer)) and not isinstance(given, bool):
        given = [given]
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or not given:
        raise OptionTypeError(f"{what}: bands must be a non-empty list of 1-based band numbers, got {given!r}.")
    for band in given:
        if isinstance(band, bool) or not isinstance(band, (int, np.integer)):
            raise OptionTypeError(f"{what}: bands entries must be integers (1-based), got {band!r}.")
        if not 1 <= band <= count:
            raise ConfigError(
                f"{what}: bands {list(given)} asks for band {band} but the file has {count} band(s); "
                f"bands are numbered 1..{count}."
            )
    return tuple(int(b) for b in given)


def _stack_dtype(requested: Any, dtypes: Sequence[tuple[str, str]], scaled: bool, option: str) -> np.dtype[Any]:
    """The stack's dtype: the narrowest holding every source's (``native``), or the requested one, never lossy."""
    kinds = [np.dtype(d) for _, d in dtypes]
    source = np.result_type(*kinds)
    names = ", ".join(f"{name} ({d})" for name, d in dict.fromkeys(dtypes))  # a source once, not once per band
    if source.kind == "f" and any(d.kind in "ui" and d.itemsize >= 8 for d in kinds):
        raise RasterError(
            f"{option}: no dtype holds every source's values ({names}): 64-bit integers do not fit a float. "
            "Give those sources scale/offset, or convert them to a narrower type."
        )
    if scaled:
        if requested not in ("float32", "native"):
            raise ConfigError(
                f"{option}: a source with scale/offset makes the image float32, but image_dtype is {requested!r}; "
                "use image_dtype: float32 (or native)."
            )
        requested = "float32"
    return resolve_image_dtype(requested, [d for _, d in dtypes], f"the sources {names}")


def inspect_image_sources(
    value: Any,
    *,
    option: str = "image_path",
    image_dtype: Any = "uint8",
    resampling: Any = "bilinear",
    reference: Any = None,
    target_crs: Any = None,
    target_resolution: Any = None,
) -> ImageInfo:
    """Open each source of a stacked image once: bands, dtypes, the reference grid and how each meets it."""
    entries = _source_entries(value, option)
    names = [name for name, _ in entries]
    if reference is not None and reference not in names:
        raise ConfigError(f"reference {reference!r} names no source of {option}; the sources are {names}.")
    ref_at = names.index(reference) if reference is not None else 0
    default_resampling = parse_resampling(resampling)
    headers: list[RasterInfo] = []
    specs: list[dict[str, Any]] = []
    for name, spec in entries:
        what = f"{option} source {name!r}"
        path = check_path(spec["path"], what)
        with open_raster(path, what) as dataset:
            _check_parts(dataset, path, what)
            header = RasterInfo.of(dataset, path)
        if header.crs is None:
            raise RasterError(
                f"{what} {path} has no CRS, so it cannot be placed on the reference grid; give the file a CRS "
                "(e.g. gdal_edit.py -a_srs EPSG:32632 FILE)."
            )
        headers.append(header)
        specs.append(
            {
                "what": what,
                "bands": _source_bands(spec.get("bands"), header.count, f"{what} ({path})"),
                "resampling": parse_resampling(spec.get("resampling", default_resampling), f"{what}: resampling"),
                "nodata": _number_or_none(spec.get("nodata", header.nodata), what, "nodata"),
                "scale": _number_or_none(spec.get("scale"), what, "scale"),
                "offset": _number_or_none(spec.get("offset"), what, "offset"),
            }
        )
    ref = headers[ref_at]
    warp = target_crs is not None or target_resolution is not None
    grid = _target_grid(ref, target_crs, target_resolution, ref.path) if warp else Grid.of(ref)
    dtypes = [(name, headers[i].dtypes[b - 1]) for i, name in enumerate(names) for b in specs[i]["bands"]]
    scaled = any(s["scale"] is not None or s["offset"] is not None for s in specs)
    dtype = _stack_dtype(image_dtype, dtypes, scaled, option)
    sources = []
    for i, (name, header) in enumerate(zip(names, headers)):
        spec = specs[i]
        shift = pixel_offset(grid, Grid.of(header))
        footprint = interior = None
        if shift is None:
            footprint = mask_interior(header, grid, margin=0)
            interior = mask_interior(header, grid) if header.alpha is None and not header.mask_band else None
        _source_coverage(header, grid, ref.path, spec["what"])
        sources.append(
            ImageSource(
                name=name,
                raster=header,
                bands=spec["bands"],
                resampling=spec["resampling"],
                nodata=spec["nodata"],
                scale=spec["scale"],
                offset=spec["offset"],
                shift=shift,
                footprint=footprint,
                interior=interior,
            )
        )
    return ImageInfo(
        raster=ref,
        option=option,
        bands=tuple(b for s in sources for b in s.bands),
        dtype=dtype.str,
        grid=grid,
        warp=warp,
        fill=_image_fill(sources[ref_at].nodata, dtype),
        sources=tuple(sources),
        reference=ref_at,
    )


def _source_coverage(header: RasterInfo, grid: Grid, reference_path: str, what: str) -> None:
    """Refuse a source none of whose sampled pixels lands on the reference grid."""
    xs, ys = _moved(*_pixel_centres(grid.height, grid.width, grid.transform), grid.crs, header.crs)
    if np.any(_on_grid(xs, ys, header.height, header.width, header.transform)):
        return
    mx, my = _moved(*_pixel_centres(header.height, header.width, header.transform), header.crs, grid.crs)
    if not np.any(_on_grid(mx, my, grid.height, grid.width, grid.transform)):
        raise RasterError(
            f"{what} {header.path} does not overlap the reference grid ({reference_path}, bounds "
            f"{tuple(round(v, 6) for v in grid.bounds)} in {grid.crs}). Check that the file carries the right CRS "
            "and belongs to this scene."
        )


def source_coverage(image: ImageInfo, index: winsrc.WindowIndex, patch_size: int) -> np.ndarray | None:
    """(N, S) bool: whether source s has any pixel in window n (None: a single-path image).

    A source's footprint is a rectangle of whole pixels when it is aligned with the reference
    grid, else its outline projected into reference pixels; only the part of a window on the
    reference grid counts.
    """
    if not image.sources:
        return None
    import shapely

    grid = image.grid
    n = len(index)
    rows = np.clip(index.row_off, 0, grid.height)
    cols = np.clip(index.col_off, 0, grid.width)
    rows_end = np.clip(index.row_off + patch_size, 0, grid.height)
    cols_end = np.clip(index.col_off + patch_size, 0, grid.width)
    out = np.ones((n, len(image.sources)), dtype=bool)
    for s, source in enumerate(image.sources):
        if source.shift is not None:
            dr, dc = source.shift
            top, left = -dr, -dc
            bottom, right = top + source.raster.height, left + source.raster.width
            out[:, s] = (np.maximum(rows, top) < np.minimum(rows_end, bottom)) & (
                np.maximum(cols, left) < np.minimum(cols_end, right)
            )
        elif source.footprint is not None and n:
            polygon = shapely.polygons(np.asarray(source.footprint, dtype=np.float64))
            if polygon.contains(shapely.box(0, 0, grid.width, grid.height)):
                continue
            boxes = shapely.box(cols, rows, cols_end, rows_end)
            out[:, s] = shapely.intersects(polygon, boxes) & (rows < rows_end) & (cols < cols_end)
    return out


# --------------------------------------------------------------------------- mask


COVERAGE_SAMPLES = 128
"""Pixel centres per axis sampled on each grid to measure the mask's coverage."""


def covered_pixels(raster: RasterInfo, grid: Grid) -> np.ndarray:
    """(H, W) bool: the pixels of ``grid`` whose centre lies on ``raster`` (in any CRS), whatever its values."""
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width] + 0.5
    xs, ys = grid.transform @ (cols.ravel(), rows.ravel())
    xs, ys = _moved(xs, ys, grid.crs, raster.crs)
    return _on_grid(xs, ys, raster.height, raster.width, raster.transform).reshape(grid.height, grid.width)


def _pixel_centres(height: int, width: int, transform: Any, samples: int = COVERAGE_SAMPLES) -> tuple[Any, Any]:
    """Map coordinates of up to ``samples`` x ``samples`` evenly spread pixel centres (edges included)."""
    rows = np.unique(np.linspace(0, height - 1, min(height, samples)).round()) + 0.5
    cols = np.unique(np.linspace(0, width - 1, min(width, samples)).round()) + 0.5
    cc, rr = np.meshgrid(cols, rows)
    return transform @ (cc.ravel(), rr.ravel())


def _on_grid(xs: Any, ys: Any, height: int, width: int, transform: Any) -> np.ndarray:
    """True for points inside the pixels of a ``height`` x ``width`` grid (any orientation)."""
    cols, rows = ~transform @ (np.asarray(xs), np.asarray(ys))
    with np.errstate(invalid="ignore"):
        return (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)


def _moved(xs: Any, ys: Any, src_crs: Any, dst_crs: Any) -> tuple[Any, Any]:
    if src_crs is None or src_crs == dst_crs:
        return xs, ys
    with np.errstate(all="ignore"):
        return warp_transform(src_crs, dst_crs, xs, ys)


def _mask_coverage(mask: Any, grid: Grid, image_path: str, mask_path: str, samples: int = COVERAGE_SAMPLES) -> float:
    """Fraction of the reference grid's pixels the mask covers, measured on the grids themselves.

    A lattice of image pixel centres is transformed into the mask CRS and looked up on the
    mask's pixel grid - the question the warp answers per pixel - so a south-up, rotated or
    antimeridian-crossing mask is measured as it will be read (a bounding box in the image
    CRS gets those wrong: bottom > top, or left > right once wrapped). A mask none of whose
    sampled pixel centres lands on the image either is refused.
    """
    if mask.crs is None or grid.crs is None:
        if mask.crs != grid.crs:
            raise RasterError(
                f"{mask_path if mask.crs is None else image_path} has no CRS, so the mask cannot be aligned "
                "with the image; give both rasters a CRS."
            )
    xs, ys = _moved(*_pixel_centres(grid.height, grid.width, grid.transform, samples), grid.crs, mask.crs)
    covered = float(np.mean(_on_grid(xs, ys, mask.height, mask.width, mask.transform)))
    if covered == 0:
        # A mask smaller than the lattice spacing: do any of its own pixel centres land on the image?
        mx, my = _moved(*_pixel_centres(mask.height, mask.width, mask.transform), mask.crs, grid.crs)
        if not np.any(_on_grid(mx, my, grid.height, grid.width, grid.transform)):
            with np.errstate(all="ignore"):
                mask_bounds = (
                    transform_bounds(mask.crs, grid.crs, *mask.bounds, densify_pts=21)
                    if mask.crs is not None
                    else mask.bounds
                )
            raise NoOverlapError(
                f"The mask {mask_path} does not overlap the image {image_path}: in the image CRS the image "
                f"bounds are {tuple(round(v, 6) for v in grid.bounds)} and the mask bounds are "
                f"{tuple(round(float(v), 6) for v in mask_bounds)} (left, bottom, right, top). "
                "Check that both files carry the right CRS."
            )
    return covered


def inspect_mask(
    path: Any,
    image: ImageInfo,
    *,
    color_map: Any = None,
    n_classes: int = 2,
    mask_fill_value: int = 0,
    coverage_samples: int = COVERAGE_SAMPLES,
    dataset: Any = None,
) -> tuple[MaskInfo, MaskDecoder]:
    """Open the mask once: its bands and decoder, validity markers and how it meets the reference grid.

    ``coverage_samples`` pixel centres per axis measure the coverage (a catalogue of many
    scenes uses fewer: it inspects the shared mask once per scene). ``dataset``: the mask
    already open (a catalogue opens its shared mask once); it is left open.
    """
    path = check_path(path, "mask_path")
    grid = image.grid
    with nullcontext(dataset) if dataset is not None else open_raster(path, "mask_path") as mask:
        _check_parts(mask, path, "mask_path")
        header = RasterInfo.of(mask, path)
        data_bands = tuple(b for b in range(1, mask.count + 1) if b != header.alpha)
        decoder = make_decoder(color_map, n_classes, len(data_bands), path, fill_value=mask_fill_value)
        if color_map is not None:
            data_bands = data_bands[:3]
        offset = pixel_offset(grid, Grid.of(mask))
        # Only a warped mask without its own alpha or mask band can skip the alpha band per window.
        plain = offset is None and header.alpha is None and not header.mask_band
        interior = mask_interior(mask, grid) if plain else None
        coverage = _mask_coverage(mask, grid, image.path, path, coverage_samples)
        info = MaskInfo(
            raster=header, data_bands=data_bands, offset=offset, interior=interior, coverage=min(coverage, 1.0)
        )
    return info, decoder


def read_plan(
    image: ImageInfo,
    mask: MaskInfo | None,
    patch_size: int,
    *,
    resampling: Resampling = Resampling.nearest,
    mask_tolerance: float | None = None,
    grid_views: int = 1,
) -> ReadPlan:
    """The reader's plan from the inspection records (``mask=None``: an image-only reader).

    One `crossgeo.io.SourcePlan` per source; each source's view (aligned, whole-grid, per-window
    warp) is chosen here, once. ``mask_tolerance`` overrides GDAL's warp approximation for a
    per-window mask warp (`crossgeo.io.EXACT_TOLERANCE` transforms every pixel centre exactly,
    as evaluation wants). ``grid_views``: how many readers of this size share GDAL's cache
    (`crossgeo.io.mask_view_for`).
    """
    sources = (
        tuple(_stacked_source_plan(image, at, grid_views) for at in range(len(image.sources)))
        if image.sources
        else (_image_source_plan(image, resampling),)
    )
    if len(sources) > 1:
        SourcePool.threads()  # CROSSGEO_SOURCE_THREADS checked here, not at the first read
    return ReadPlan(
        grid=image.grid,
        patch_size=patch_size,
        image=sources,
        image_dtype=image.dtype,
        mask=_mask_source_plan(mask, image.grid, mask_tolerance, grid_views) if mask is not None else None,
    )


def _image_source_plan(image: ImageInfo, resampling: Resampling) -> SourcePlan:
    """The image read plainly, or warped over the whole target grid (``target_crs``/``target_resolution``)."""
    raster = image.raster
    return SourcePlan(
        path=image.path,
        option=image.option,
        what="image",
        bands=image.bands,
        dtype=image.dtype,
        view="grid" if image.warp else "aligned",
        fill=image.fill,
        alpha=raster.alpha,
        nodata=raster.nodata,
        mask_band=raster.mask_band,
        resampling=resampling,
        warp_alpha=raster.mask_band,  # the warper honours the mask band; an added alpha band carries it
    )


def _stacked_source_plan(image: ImageInfo, at: int, grid_views: int) -> SourcePlan:
    """Source ``at`` of a stacked image: plain reads when on the reference grid, else warped with its resampling."""
    source = image.sources[at]
    raster = source.raster
    scaled = source.scale is not None or source.offset is not None
    dtype = np.dtype("float32") if scaled else np.dtype(image.dtype)
    common: dict[str, Any] = {
        "path": source.path,
        "option": f"{image.option} source {source.name!r}",
        "what": f"image source {source.name!r}",
        "bands": source.bands,
        "dtype": dtype.str,
        "fill": _image_fill(source.nodata, dtype),
        "alpha": raster.alpha,
        "nodata": source.nodata,
        "mask_band": raster.mask_band,
        "resampling": source.resampling,
        "name": source.name,
        "scale": source.scale,
        "offset": source.offset,
        "warp_nodata": source.nodata != raster.nodata,
    }
    if at == image.reference:
        # As a single image: plain reads, or one view of the whole target grid.
        return SourcePlan(view="grid" if image.warp else "aligned", warp_alpha=raster.mask_band, **common)
    if source.shift is not None:
        return SourcePlan(view="aligned", shift=source.shift, **common)
    blocks = scaled_offset(image.grid, Grid.of(raster)) if source.resampling == Resampling.nearest else None
    if blocks is not None:
        # Nearest neighbour onto a grid that subdivides the source's pixels: plain reads, pixels repeated.
        return SourcePlan(view="scaled", shift=blocks[0], factor=blocks[1], **common)
    if source.resampling == Resampling.nearest and table_fits(raster, image.grid, len(source.bands), source.nodata):
        # Exact without a warp: each reference pixel's source pixel from exact transforms on a lattice and their
        # interpolation, checked where it could pick a neighbour (crossgeo.grid.nearest_table).
        whole, part = kept_part(raster, image.grid, len(source.bands), views=grid_views)
        if grid_views == 1:
            table_lattice(raster, image.grid)  # moved once here: every reader in this process and its forks
        return SourcePlan(view="table", lookup_whole=whole, whole_window=part, tolerance=EXACT_TOLERANCE, **common)
    view = mask_view_for(image.grid, len(source.bands) + 1, dtype, views=grid_views)
    # Exact transforms in the whole-grid view (each block is warped once). Per window, nearest promises the
    # source pixel under each centre: GDAL's default approximation misses it on ~0.5 % of a 256-pixel
    # window's pixels (UTM onto EPSG:4326), `NEAREST_TOLERANCE` on < 0.01 % at a fifth of the exact cost.
    if view == "grid":
        tolerance = EXACT_TOLERANCE
    else:
        tolerance = NEAREST_TOLERANCE if source.resampling == Resampling.nearest else DEFAULT_TOLERANCE
    return SourcePlan(view=view, tolerance=tolerance, interior=source.interior, **common)


def _mask_source_plan(mask: MaskInfo, grid: Grid, tolerance: float | None, grid_views: int) -> SourcePlan:
    """The mask read plainly when the grids coincide, else its nearest-neighbour warp: looked up or tabled
    (exact, no warp: `crossgeo.io.mask_lookup`, `crossgeo.io.table_fits`) where it can be, else warped
    (`mask_view_for`)."""
    raster = mask.raster
    view, lookup_whole, part = "aligned", False, None
    if mask.offset is None:
        bands = len(mask.data_bands) + 1  # the data bands and the alpha band (the mask's own or an added one)
        # (Chosen, and CROSSGEO_MASK_CACHE_BYTES checked, even when the lookup below replaces it.)
        view = mask_view_for(grid, bands, raster.dtypes[0], views=grid_views, block_cache_bytes=None)
        if mask_lookup(raster, grid, len(mask.data_bands)):
            # Exact without a warp: rows and columns looked up (crossgeo.io.lookup_axes) in the mask (the part under
            # the image) kept in crossgeo's block cache when every scene's fits it together, else in a window read
            # per patch.
            view = "lookup"
        elif table_fits(raster, grid, len(mask.data_bands), raster.nodata):
            # A warp that does not separate (a UTM image, a mask in EPSG:4326): the exact warp's pixels from
            # exact transforms on a lattice (crossgeo.grid.nearest_table), gathered from plain reads.
            view = "table"
        if view in ("lookup", "table"):
            lookup_whole, part = kept_part(raster, grid, len(mask.data_bands), views=grid_views)
        if view == "table" and grid_views == 1:
            table_lattice(raster, grid)  # moved once here: every reader in this process and its forks
    if view in ("grid", "blocks", "table"):
        # Exact per-pixel transforms: the warp runs once per block, and each pixel then gets the same value
        # whichever window or region reads it (the table view warps so a window where a transform fails).
        tolerance = EXACT_TOLERANCE
    return SourcePlan(
        path=mask.path,
        option="mask_path",
        what="mask",
        bands=mask.data_bands,
        dtype=raster.dtypes[0],
        view=view,
        lookup_whole=lookup_whole,
        whole_window=part,
        shift=mask.offset if mask.offset is not None else (0, 0),
        alpha=raster.alpha,
        nodata=raster.nodata,
        mask_band=raster.mask_band,
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
        nodata_in_alpha=True,
        interior=mask.interior,
    )


# --------------------------------------------------------------------------- windows


def _outside_share(index: winsrc.WindowIndex, size: int, grid: Grid) -> tuple[float, int]:
    """Mean share of window pixels outside the grid, and how many windows reach past it."""
    if len(index) == 0:
        return 0.0, 0
    rows = np.clip(index.row_off + size, 0, grid.height) - np.clip(index.row_off, 0, grid.height)
    cols = np.clip(index.col_off + size, 0, grid.width) - np.clip(index.col_off, 0, grid.width)
    inside = rows * cols / float(size * size)
    return float(1.0 - inside.mean()), int(np.count_nonzero(inside < 1.0))


def inspect_windows(
    crops: Any,
    image: ImageInfo,
    patch_size: int,
    *,
    crops_layer: str | None = None,
    row_off_key: str = "row_off",
    col_off_key: str = "col_off",
    cache: Path | None = None,
    split: str | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> WindowsInfo:
    """Plan the windows on the reference grid from a file (through the cache) or an in-memory table.

    ``split`` keeps only the table rows of that split (see `crossgeo.windows.SPLIT_COLUMN`).
    ``inputs`` (option name -> path(s)) are the configuration's input files, which the cache may not be.
    """
    grid = image.grid
    if winsrc.is_window_table(crops):
        if cache is not None:
            raise ConfigError(
                "window_index_cache keeps windows planned from a file; crops_path is an in-memory "
                f"{type(crops).__name__}. Remove window_index_cache, or write the table to a file first."
            )
        source = winsrc.describe_windows(crops)
        index = winsrc.windows_from_table(crops, row_off_key, col_off_key, split=split)
        winsrc.check_inside(index, patch_size, grid, source)
        state = "none"
    else:
        source = check_path(crops, "crops_path")
        plan: dict[str, Any] = {
            "grid": grid,
            "patch_size": patch_size,
            "crops_layer": crops_layer,
            "row_off_key": row_off_key,
            "col_off_key": col_off_key,
            "split": split,
        }
        index, state = winsrc.cached_window_index(
            cache,
            lambda: winsrc.source_fingerprint(source, **plan),
            lambda: winsrc.build_window_index(source, **plan),
            {"crops_path": source, **(inputs or {})},
        )
    for offsets in (index.row_off, index.col_off, index.weight):
        if offsets is not None:
            offsets.setflags(write=False)  # shared by every worker: nobody edits the plan in place
    share, partly = _outside_share(index, patch_size, grid)
    return WindowsInfo(
        index=index,
        source=source,
        from_cache=state == "reused",
        outside_share=share,
        partly_outside=partly,
        cache_state=state,
    )


def _size(nbytes: float) -> str:
    return f"{nbytes / 1024**3:.1f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.0f} MiB"


def check_patch_size(patch_size: int, image: ImageInfo, option: str = "patch_size") -> int:
    """Refuse a ``patch_size`` whose patches could not be held in memory, before any is allocated.

    One patch takes ``patch_size**2`` pixels times the image bands' bytes, plus 8 bytes (the
    int64 mask) and 1 byte (its validity) per pixel. It is refused above `MAX_PATCH_BYTES`
    (2 GiB), or above `MAX_OVERSIZED_PATCH_BYTES` (256 MiB) when the patch is larger than the
    image, since such a patch is mostly fill. A patch larger than the image but small in bytes
    is only a warning (`window_warnings`).
    """
    grid = image.grid
    per_pixel = len(image.bands) * np.dtype(image.dtype).itemsize + 8 + 1
    nbytes = float(patch_size) ** 2 * per_pixel
    oversized = patch_size > grid.height or patch_size > grid.width
    limit = MAX_OVERSIZED_PATCH_BYTES if oversized else MAX_PATCH_BYTES
    if nbytes <= limit:
        return patch_size
    took = (
        f"one patch would take {_size(nbytes)} ({patch_size} x {patch_size} pixels x {per_pixel} bytes: image bands, "
    )
    took += "int64 mask, validity)"
    if oversized:
        fits = min(grid.width, grid.height, int(math.sqrt(MAX_PATCH_BYTES / per_pixel)))
        raise ConfigError(
            f"{option} {patch_size} is larger than the image {image.path} ({grid.width} x {grid.height} pixels), so "
            f"its patches are mostly fill, and {took}; crossgeo refuses such a patch over {_size(limit)} before "
            f"allocating it. Use a smaller {option} (at most the image's {fits} pixels)."
        )
    raise ConfigError(
        f"{option} {patch_size} on the image {image.path} ({grid.width} x {grid.height} pixels, {len(image.bands)} "
        f"band(s) of {np.dtype(image.dtype).name}): {took}; crossgeo refuses patches over {_size(limit)} before "
        f"allocating them. Use a smaller {option} (at most {int(math.sqrt(limit / per_pixel))})."
    )


def window_warnings(
    image: ImageInfo, mask: MaskInfo | None, windows: WindowsInfo | None, patch_size: int, fill_value: int = 0
) -> list[str]:
    """What works but is probably not meant: a patch larger than the image, mostly-filled windows, a small mask."""
    found = []
    grid = image.grid
    if patch_size > grid.height or patch_size > grid.width:
        found.append(
            f"patch_size {patch_size} is larger than the image {image.path} ({grid.width} x {grid.height} pixels): "
            "every patch is partly fill. Use a smaller patch_size."
        )
    if windows is not None and windows.outside_share > HIGH_FILL:
        found.append(
            f"on average {windows.outside_share:.0%} of each window's pixels lie outside the image "
            f"{image.path} ({grid.width} x {grid.height} pixels, patch_size {patch_size}) and are fill; "
            "check the window offsets or use a smaller patch_size."
        )
    if mask is not None and mask.coverage < LOW_COVERAGE:
        found.append(
            f"The mask {mask.path} covers only {mask.coverage:.1%} of the image {image.path}; uncovered pixels get "
            f"class {fill_value} (mask_fill_value)."
        )
    return found


# --------------------------------------------------------------------------- all steps


def inspect_any_image(
    value: Any,
    *,
    option: str = "image_path",
    selected_bands: Any = None,
    image_dtype: Any = "uint8",
    image_resampling: Any = "bilinear",
    reference: Any = None,
    target_crs: Any = None,
    target_resolution: Any = None,
) -> ImageInfo:
    """The image step: one path (`inspect_image`), or several sources stacked (`inspect_image_sources`).

    Shared by the sampler, a catalogue's scenes and `crossgeo.predict.predict_raster`, so an
    ``image_path`` list or mapping means the same stack (channels, reference grid) everywhere.
    """
    if not is_multi_source(value):
        if reference is not None:
            raise ConfigError(
                f"reference {reference!r} names a source, but {option} is one path; remove reference, "
                f"or give {option} a list or mapping of sources."
            )
        return inspect_image(
            value,
            option=option,
            selected_bands=selected_bands,
            image_dtype=image_dtype,
            target_crs=target_crs,
            target_resolution=target_resolution,
        )
    if selected_bands is not None:
        raise ConfigError(
            f"selected_bands applies to one image; {option} lists several sources: give each source its bands "
            "(e.g. {B11: {path: B11.tif, bands: [1]}}) and remove selected_bands."
        )
    return inspect_image_sources(
        value,
        option=option,
        image_dtype=image_dtype,
        resampling=image_resampling,
        reference=reference,
        target_crs=target_crs,
        target_resolution=target_resolution,
    )


def _inspect_any_image(options: Mapping[str, Any], names: Mapping[str, str]) -> ImageInfo:
    """`inspect_any_image` of a mapping of resolved sampler options."""
    return inspect_any_image(
        options["image_path"],
        option=names["image_path"],
        selected_bands=options["selected_bands"],
        image_dtype=options["image_dtype"],
        image_resampling=options["image_resampling"],
        reference=options["reference"],
        target_crs=options["target_crs"],
        target_resolution=options["target_resolution"],
    )


def inspect_sources(
    config: Mapping[str, Any],
    *,
    where: str = "PatchSampler",
    collect: bool = False,
    spelling: Mapping[str, str] | None = None,
) -> Inspection:
    """Run the option, image, mask and windows steps on a mapping of sampler options.

    ``collect=False`` raises the first problem (construction); ``collect=True`` records
    every problem and runs each later step whose inputs are still usable (validation).
    ``spelling`` names options as the user's configuration does (e.g. ``image_path`` ->
    ``image_mbtiles_path``) in messages about missing options.
    """
    problems: list[Problem] = []

    def step(name: str, run: Callable[[], T]) -> T | None:
        if not collect:
            return run()
        try:
            return run()
        except (CrossgeoError, OSError, ValueError, TypeError) as error:
            problems.append(Problem(name, error))
            return None

    resolved = step("options", lambda: resolve_sampler_options(config, where, spelling=spelling))
    if resolved is None:
        return Inspection(options=dict(config), names={}, problems=tuple(problems))
    raw, names = resolved
    options = step("options", lambda: _check_scalar_options(raw, names))
    if options is None:
        return Inspection(options=raw, names=names, problems=tuple(problems))
    image = step("image", lambda: _inspect_any_image(options, names))
    mask = decoder = windows = size = None
    if image is not None:
        found = step(
            "mask",
            lambda: inspect_mask(
                options["mask_path"],
                image,
                color_map=options["color_map"],
                n_classes=options["n_classes"],
                mask_fill_value=options["mask_fill_value"],
            ),
        )
        if found is not None:
            mask, decoder = found
        size = step("patch_size", lambda: check_patch_size(options["patch_size"], image, names["patch_size"]))
    if image is not None and size is not None:
        windows = step(
            "windows",
            lambda: inspect_windows(
                options["crops_path"],
                image,
                options["patch_size"],
                crops_layer=options["crops_layer"],
                row_off_key=options["row_off_key"],
                col_off_key=options["col_off_key"],
                cache=options["window_index_cache"],
                split=options["split"],
                inputs={names["image_path"]: options["image_path"], "mask_path": options["mask_path"]},
            ),
        )
    warned = (
        window_warnings(image, mask, windows, options["patch_size"], options["mask_fill_value"])
        if image is not None and size is not None
        else []
    )
    return Inspection(
        options=options,
        names=names,
        image=image,
        mask=mask,
        decoder=decoder,
        windows=windows,
        problems=tuple(problems),
        warnings=tuple(warned),
    )
