"""What the data holds, measured on a sample of a sampler's windows (for `validate` and `stats`).

`survey` reads windows through the sampler's own reader (image and raw mask bands, before
decoding, so ``out_of_range="error"`` does not stop it) and counts two things a user needs
before training:

* mask class values outside ``0..n_classes-1`` (class-index masks with ``n_classes`` > 2;
  binarising with 2 and colour maps have none by construction), which ``out_of_range``
  would stop at or fill;
* image pixels without data (``Patch.image_valid`` False: alpha 0, nodata, mask band,
  outside the image), which ``ignore_invalid_image`` keeps out of the loss.

`survey_sources` looks at each image source on a coarse overview of the reference grid: its
CRS and pixel size, the share of the reference grid it covers, its nodata share there, and
per band the minimum, maximum, mean and standard deviation of its data (``validate`` and
``stats`` report them per source).

`block_decoding` reads nothing: from the windows' offsets and the files' internal blocks
(`crossgeo.io.RasterInfo.blocks`) it counts the blocks GDAL decodes per patch against the
fewest a window of that size can touch, and names the fix when they differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import attrs
import numpy as np

from crossgeo.grid import DecodeAmplification, align_step, decode_amplification
from crossgeo.inspection import ImageInfo, covered_pixels
from crossgeo.io import RasterInfo, read_mask_overview
from crossgeo.masks import ClassIndexDecoder, out_of_range_pixels

__all__ = [
    "DECODED_PIXELS_LIMIT",
    "SNAP_ABOVE",
    "SOURCE_OVERVIEW_SIDE",
    "SURVEY_WINDOWS",
    "BandStatistics",
    "BlockDecoding",
    "SourceSurvey",
    "ValueSurvey",
    "block_decoding",
    "survey",
    "survey_sources",
]

SURVEY_WINDOWS = 64
"""Windows `survey` reads by default, spread evenly over the sampler's positions."""


@attrs.frozen
class ValueSurvey:
    """Counts over the surveyed windows (every pixel of each window)."""

    windows: int
    """Windows read."""
    pixels: int
    """Pixels of those windows (windows x patch_size**2)."""
    invalid_image_pixels: int
    """Pixels where the image has no data."""
    out_of_range: dict[float, int]
    """Mask value -> pixels, for valid mask pixels outside ``0..n_classes-1``."""
    n_classes: int

    @property
    def invalid_image_share(self) -> float:
        """Fraction of the surveyed pixels where the image has no data (0 when nothing was read)."""
        return self.invalid_image_pixels / self.pixels if self.pixels else 0.0

    def describe(self) -> str:
        """One line for a report."""
        text = f"{self.windows} window(s): {self.invalid_image_share:.2%} of image pixels without data"
        if self.out_of_range:
            values = ", ".join(f"{_plain(v)} ({n} px)" for v, n in sorted(self.out_of_range.items())[:10])
            text += f"; mask values outside 0..{self.n_classes - 1}: {values}"
        return text


DECODED_PIXELS_LIMIT = 4.0
"""Above this many decoded pixels per patch pixel (big tiles, whole-width strips), retiling is suggested."""
SNAP_ABOVE = 1.05
"""Snapping the windows is suggested when they decode more than this many times the minimum blocks."""
RETILE = "gdal_translate -co TILED=YES -co BLOCKXSIZE=256 -co BLOCKYSIZE=256 -co COMPRESS=DEFLATE in.tif out.tif"


@attrs.frozen
class BlockDecoding:
    """Blocks decoded per patch by a sampler's windows (`block_decoding`): image, and the mask when read plainly."""

    image: DecodeAmplification | None
    """None when not measured (``reason`` says why)."""
    mask: DecodeAmplification | None
    reason: str
    """Why the image was not measured ("" when it was)."""
    patch_size: int
    image_width: int
    alignable: bool
    """True when ``patch_size`` fits the image's blocks (``align="blocks"`` is possible)."""
    scope: str = ""
    """For a catalogue: which scenes the numbers cover (``"12 scenes"``, ``"scene 3, the worst of 12"``)."""

    @property
    def amplification(self) -> float:
        """The image's amplification (1.0 when not measured)."""
        return self.image.amplification if self.image is not None else 1.0

    def describe(self) -> str:
        """One line: block shape, blocks per patch against the minimum, share above it (or why not measured)."""
        if self.image is None:
            return f"not measured: {self.reason}"
        text = (f"{self.scope}: " if self.scope else "") + _amplification_line(self.image, self.image_width)
        if self.mask is not None:
            text += f"; mask: {self.mask.mean_blocks * self.mask.planes:.2f} block(s) (x{self.mask.amplification:.2f})"
        return text

    def fix(self) -> str | None:
        """What to do when patches decode much more than they must (`SNAP_ABOVE`, `DECODED_PIXELS_LIMIT`), or None."""
        found = self.image
        if found is None:
            return None
        strips = found.layout.width >= self.image_width and found.layout.height < self.patch_size
        fixes: list[str] = []
        if found.decoded_pixels > DECODED_PIXELS_LIMIT:
            what = "whole-width strips" if strips else f"{found.layout.height} x {found.layout.width} blocks"
            fixes.append(
                f"each patch decodes {found.decoded_pixels:.1f} pixels per patch pixel ({what}): retile the image "
                f"to tiles near the patch size ({RETILE})"
            )
        if found.amplification > SNAP_ABOVE:
            if self.alignable:
                fixes.append(
                    "snap the windows to the blocks: crossgeo windows --align blocks, or "
                    'grid_windows / random_windows(..., align="blocks")'
                )
            else:
                fixes.append(
                    f"patch_size {self.patch_size} is smaller than the {found.layout.height} x {found.layout.width} "
                    "blocks and does not divide them: use a divisor of the block as patch size, or retile the image "
                    'to smaller blocks, then snap the windows (align="blocks")'
                )
        return "; ".join(fixes) or None


def _amplification_line(found: DecodeAmplification, width: int) -> str:
    return (
        f"{found.layout.describe(width)}: {found.mean_blocks * found.planes:.2f} block(s) decoded per patch, "
        f"minimum {found.minimum * found.planes} (amplification x{found.amplification:.2f}); "
        f"{found.share_above:.0%} of {found.windows} window(s) above the minimum"
    )


def block_decoding(sampler: Any) -> BlockDecoding:
    """Blocks a `crossgeo.PatchSampler`'s windows decode: every window, from offsets and block sizes (no reads).

    Amplification = mean blocks touched per window / ``ceil(size / block_height) *
    ceil(size / block_width)`` (`crossgeo.grid.decode_amplification`). Band-interleaved files
    decode one block plane per band read, so the counts are multiplied by the bands read (the
    ratio is not). Not measured for a warped image (``target_crs`` / ``target_resolution``:
    a window maps onto source blocks through the warp), a VRT (its blocks are virtual; its
    sources' tiles are decoded). For a `crossgeo.SceneSampler` each scene is measured on its own
    image: when the scenes share block shape and width the counts are summed over them,
    otherwise the scene with the highest amplification is reported (``scope`` says which).
    """
    patch_size = int(sampler.patch_size)
    scenes = getattr(sampler, "samplers", None)
    if scenes is not None:
        return _scenes_decoding([(k, block_decoding(one)) for k, one in enumerate(scenes) if len(one)], patch_size)
    info = sampler.image_info
    raster, grid = info.raster, info.grid
    reason = ""
    if info.warp:
        reason = (
            "the image is warped (target_crs / target_resolution), so a window maps onto source blocks through the "
            "warp; there are no blocks on its grid to align to"
        )
    elif raster.driver == "VRT":
        reason = "the image is a VRT, whose blocks are virtual (its sources' tiles are what GDAL decodes)"
    elif raster.blocks is None:
        reason = f"{raster.driver} declares no internal blocks"
    if reason:
        return BlockDecoding(None, None, reason, patch_size, grid.width, False)
    layout = raster.blocks
    row_off, col_off = np.asarray(sampler.row_off), np.asarray(sampler.col_off)
    image = decode_amplification(row_off, col_off, patch_size, layout, grid.height, grid.width, len(info.bands))
    mask = None
    mask_info = getattr(sampler, "mask_info", None)
    if mask_info is not None and mask_info.offset is not None and mask_info.raster.blocks is not None:
        dr, dc = mask_info.offset
        m = mask_info.raster
        mask = decode_amplification(
            row_off + dr, col_off + dc, patch_size, m.blocks, m.height, m.width, len(mask_info.data_bands)
        )
    alignable = (
        align_step(patch_size, layout.height, grid.height) is not None
        and align_step(patch_size, layout.width, grid.width) is not None
    )
    return BlockDecoding(image, mask, "", patch_size, grid.width, alignable)


def _scenes_decoding(parts: list[tuple[int, BlockDecoding]], patch_size: int) -> BlockDecoding:
    """One `BlockDecoding` for a catalogue's scenes (see `block_decoding`)."""
    measured = [(k, p) for k, p in parts if p.image is not None]
    if not measured:
        reason = parts[0][1].reason if parts else "no scene has windows"
        return BlockDecoding(None, None, f"{reason} (every scene)" if parts else reason, patch_size, 0, False)
    found = [p.image for _, p in measured if p.image is not None]
    first = measured[0][1]
    note = f" ({len(parts) - len(measured)} scene(s) not measured)" if len(measured) < len(parts) else ""
    same = {(f.layout, f.minimum, f.planes) for f in found} == {(found[0].layout, found[0].minimum, found[0].planes)}
    if same and len({p.image_width for _, p in measured}) == 1:
        windows = sum(f.windows for f in found)
        image = attrs.evolve(
            found[0],
            windows=windows,
            mean_blocks=sum(f.mean_blocks * f.windows for f in found) / windows,
            above_minimum=sum(f.above_minimum for f in found),
            decoded_pixels=sum(f.decoded_pixels * f.windows for f in found) / windows,
        )
        alignable = all(p.alignable for _, p in measured)
        return BlockDecoding(image, None, "", patch_size, first.image_width, alignable, f"{len(measured)} scenes{note}")
    k, worst = max(measured, key=lambda item: item[1].amplification)
    return attrs.evolve(worst, mask=None, scope=f"scene {k}, the worst of {len(measured)}{note}")


def survey(sampler: Any, positions: Iterable[int] | None = None, *, max_windows: int = SURVEY_WINDOWS) -> ValueSurvey:
    """Survey ``positions`` of a `PatchSampler` (default: up to ``max_windows`` spread evenly).

    Reads each window's image and mask once; deterministic (no random choice).
    """
    n = len(sampler)
    if positions is None:
        chosen = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(np.int64))
    else:
        chosen = np.asarray(list(positions), dtype=np.int64)
    check_classes = isinstance(sampler.decoder, ClassIndexDecoder) and not sampler.decoder.binarise
    invalid_image = 0
    found: dict[float, int] = {}
    scenes = getattr(sampler, "opened", None)  # a SceneSampler: read through the window's scene
    for position in chosen:
        row_off, col_off = int(sampler.row_off[position]), int(sampler.col_off[position])
        with scenes(int(sampler.scene[position])) if scenes is not None else nullcontext(sampler) as source:
            _, image_valid = source.read_image(row_off, col_off)
            invalid_image += int(image_valid.size - np.count_nonzero(image_valid))
            if check_classes:
                bands, invalid = source.read_mask_bands(row_off, col_off)
                bad = out_of_range_pixels(bands[0], sampler.n_classes, invalid)
                if bad is not None:
                    values, counts = np.unique(bands[0][bad], return_counts=True)
                    for value, count in zip(values.tolist(), counts.tolist()):
                        found[value] = found.get(value, 0) + int(count)
    windows = len(chosen)
    return ValueSurvey(
        windows=windows,
        pixels=windows * sampler.patch_size**2,
        invalid_image_pixels=invalid_image,
        out_of_range=found,
        n_classes=sampler.n_classes,
    )


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- image sources

SOURCE_OVERVIEW_SIDE = 256
"""Longest side in pixels of the coarse reference grid `survey_sources` measures each source on."""


@attrs.frozen
class BandStatistics:
    """One band of a source over the reference pixels where the source has data (NaN when it has none)."""

    band: int
    """1-based band of the source file."""
    minimum: float
    maximum: float
    mean: float
    std: float


@attrs.frozen
class SourceSurvey:
    """One image source as `survey_sources` measured it on a coarse overview of the reference grid."""

    name: str
    path: str
    crs: str
    resolution: tuple[float, float]
    """Pixel width and height in its CRS units."""
    coverage: float
    """Share of the reference grid's pixels whose centre lies on the source (its extent, whatever its values)."""
    nodata_share: float
    """Share of the covered pixels where it has no data (its nodata, own or given; alpha 0; mask band 0)."""
    pixels: int
    """Overview pixels measured (the coarse reference grid's)."""
    bands: tuple[BandStatistics, ...]

    def describe(self) -> str:
        """One line: CRS, pixel size, coverage and nodata share."""
        res = f"{self.resolution[0]:g} x {self.resolution[1]:g}"
        return (
            f"{self.path}: {self.crs}, {res} pixels; covers {self.coverage:.1%} of the reference grid, no data on "
            f"{self.nodata_share:.2%} of that"
        )


def _crs_text(raster: RasterInfo) -> str:
    crs = raster.crs
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else str(crs)


def survey_sources(image: ImageInfo, max_side: int = SOURCE_OVERVIEW_SIDE) -> tuple[SourceSurvey, ...]:
    """Each image source (one for a single-path image) measured on the reference grid coarsened to ``max_side``.

    Every source is warped nearest-neighbour onto the coarse grid (`crossgeo.io.read_mask_overview`,
    GDAL reading overviews where the source has them); coverage is where the coarse pixel centres lie
    on the source, the nodata share is the part of that where it has no data, and each band's
    statistics are over the pixels where it has data. A time series' sources are its dates.
    """
    grid = image.grid.coarsened(max_side)
    if image.sources:
        parts = [(s.name, s.raster, s.bands, s.nodata) for s in image.sources]
    else:
        parts = [(image.channels[0][0], image.raster, image.bands, image.raster.nodata)]
    out = []
    for name, raster, bands, nodata in parts:
        covered = covered_pixels(raster, grid)
        data, valid = read_mask_overview(
            raster.path, image.grid, list(bands), max_side, nodata=nodata, option=f"{image.option} source {name!r}"
        )
        valid &= covered
        n_covered = int(covered.sum())
        stats = []
        for band, values in zip(bands, data):
            picked = values[valid].astype(np.float64)
            picked = picked[np.isfinite(picked)]
            if picked.size:
                stats.append(
                    BandStatistics(
                        band, float(picked.min()), float(picked.max()), float(picked.mean()), float(picked.std())
                    )
                )
            else:
                stats.append(BandStatistics(band, *([float("nan")] * 4)))
        out.append(
            SourceSurvey(
                name=name,
                path=raster.path,
                crs=_crs_text(raster),
                resolution=(float(raster.res[0]), float(raster.res[1])),
                coverage=n_covered / covered.size,
                nodata_share=(n_covered - int(valid.sum())) / n_covered if n_covered else 0.0,
                pixels=int(covered.size),
                bands=tuple(stats),
            )
        )
    return tuple(out)
