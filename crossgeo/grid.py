"""Pure pixel-grid maths: the reference grid, windows, bbox-snap and clamping.

Pixel convention (the same as rasterio's): a grid's affine ``transform`` maps
(col, row) pixel *corner* coordinates to map coordinates, so pixel ``(row, col)``
covers ``[col, col + 1) x [row, row + 1)`` in pixel space and its centre is at
``(col + 0.5, row + 0.5)``. A window is ``(row_off, col_off, size)``: the square of
pixels ``row_off <= row < row_off + size``, ``col_off <= col < col_off + size``.

Nothing here opens a file; functions take plain numbers or numpy arrays.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from affine import Affine

GRID_TOLERANCE = 1e-6
"""Transforms whose coefficients differ by less than this fraction of a pixel are treated as the same grid."""


@attrs.frozen
class Grid:
    """A pixel grid: shape, affine transform (pixel corners -> map) and CRS.

    ``crs`` is whatever the raster library gives (compared with ``==``); the grid
    itself never opens a file.
    """

    height: int
    width: int
    transform: Affine
    crs: Any

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset (or anything with the same attributes)."""
        return cls(int(dataset.height), int(dataset.width), dataset.transform, dataset.crs)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS (north-up or not)."""
        corners = [self.transform @ (col, row) for col in (0, self.width) for row in (0, self.height)]
        xs, ys = zip(*corners)
        return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))

    def window_transform(self, row_off: int, col_off: int) -> Affine:
        """The affine transform of a window whose top-left pixel is ``(row_off, col_off)``."""
        return self.transform @ Affine.translation(col_off, row_off)

    def coarsened(self, max_side: int) -> Grid:
        """The same footprint with at most ``max_side`` pixels along its longer side (itself if already smaller).

        Coarse pixel (i, j) covers this grid's pixels ``[i * height / h, (i + 1) * height / h)`` x
        ``[j * width / w, (j + 1) * width / w)``: the grid of an overview or thumbnail.
        """
        scale = max(1.0, max(self.width, self.height) / max(1, max_side))
        width, height = max(1, round(self.width / scale)), max(1, round(self.height / scale))
        transform = self.transform @ Affine.scale(self.width / width, self.height / height)
        return Grid(height, width, transform, self.crs)

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-able description, used to tell whether a cached index still fits."""
        crs = self.crs.to_wkt() if hasattr(self.crs, "to_wkt") else str(self.crs)
        return {
            "height": self.height,
            "width": self.width,
            "transform": [round(float(v), 9) for v in tuple(self.transform)[:6]],
            "crs": crs,
        }


def pixel_offset(reference: Grid, other: Grid) -> tuple[int, int] | None:
    """``(row, col)`` of ``reference``'s pixel (0, 0) on ``other``'s grid, if the grids coincide.

    Two grids coincide when they share the CRS and pixel size/orientation and their
    origins differ by a whole number of pixels; then a window on ``reference`` is a
    plain window on ``other`` (no warp). Returns None otherwise.
    """
    if reference.crs != other.crs:
        return None
    ra, rb, rc, rd, re, rf = tuple(reference.transform)[:6]
    oa, ob, _, od, oe, _ = tuple(other.transform)[:6]
    pixel = max(abs(ra), abs(rb), abs(rd), abs(re))
    if any(abs(x - y) > GRID_TOLERANCE * pixel for x, y in ((ra, oa), (rb, ob), (rd, od), (re, oe))):
        return None
    col, row = ~other.transform @ (rc, rf)
    if abs(col - round(col)) > GRID_TOLERANCE or abs(row - round(row)) > GRID_TOLERANCE:
        return None
    return round(row), round(col)


def scaled_offset(reference: Grid, other: Grid) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """How ``other`` covers ``reference`` when its pixels are whole blocks of reference pixels, else None.

    That is: the same CRS, north-up and unrotated both, ``other``'s pixel exactly ``k`` reference
    pixels high and ``m`` wide (whole numbers, not both 1: that is `pixel_offset`), and its pixel
    edges on reference pixel edges. Returns ``((row, col), (k, m))``: reference pixel (0, 0) is
    reference pixel ``(row, col)`` counted from ``other``'s origin, so reference pixel ``(r, c)``
    lies in ``other``'s pixel ``((r + row) // k, (c + col) // m)`` - exactly the pixel holding its
    centre (a centre never falls on an edge of ``other``'s pixels), which is what a nearest
    neighbour warp gives it (a 20 m band on a 10 m grid: ``k = m = 2``).
    """
    if reference.crs != other.crs:
        return None
    ra, rb, rc, rd, re, rf = tuple(reference.transform)[:6]
    oa, ob, oc, od, oe, of = tuple(other.transform)[:6]
    if rb or rd or ob or od or ra <= 0 or re >= 0 or oa <= 0 or oe >= 0:
        return None
    k, m = oe / re, oa / ra
    if abs(k - round(k)) > GRID_TOLERANCE or abs(m - round(m)) > GRID_TOLERANCE or (round(k), round(m)) == (1, 1):
        return None
    row, col = (rf - of) / re, (rc - oc) / ra
    if abs(row - round(row)) > GRID_TOLERANCE or abs(col - round(col)) > GRID_TOLERANCE:
        return None
    return (round(row), round(col)), (round(k), round(m))


def centred_offsets(centre: np.ndarray, size: int) -> np.ndarray:
    """Offsets of ``size``-pixel windows centred on continuous pixel coordinates.

    The result is ``floor(centre - size / 2 + 0.5)`` (ties round up), computed without
    float error: an odd window is centred on the pixel containing ``centre``, an even
    one on the pixel corner nearest to it.
    """
    centre = np.asarray(centre, dtype=np.float64)
    if size % 2:
        return np.floor(centre).astype(np.int64) - size // 2
    return np.floor(centre + 0.5).astype(np.int64) - size // 2


def clamp_offsets(offsets: np.ndarray, size: int, extent: int) -> np.ndarray:
    """Move windows of ``size`` pixels so they lie inside ``[0, extent)``.

    A raster smaller than the window keeps offset 0 (the window is padded instead).
    """
    upper = max(extent - size, 0)
    return np.clip(np.asarray(offsets, dtype=np.int64), 0, upper)


def axis_offsets(extent: int, patch_size: int, stride: int) -> np.ndarray:
    """Window offsets along one axis: ``0, stride, 2 * stride, ...`` plus one flush with the far edge.

    Offsets stay inside ``[0, extent - patch_size]``; when the stride does not land on
    ``extent - patch_size`` a last window is added there. An extent no larger than a patch
    gives the single offset 0 (the window is padded). Both `crossgeo.planning.grid_windows`
    and `crossgeo.predict.predict_raster` (stride ``patch_size - overlap``) lay windows so.
    """
    if extent <= patch_size:
        return np.zeros(1, dtype=np.int64)
    offsets = np.arange(0, extent - patch_size + 1, stride, dtype=np.int64)
    if offsets[-1] != extent - patch_size:
        offsets = np.append(offsets, extent - patch_size)
    return offsets


def outside(row_off: np.ndarray, col_off: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """True for windows that share no pixel with a ``height x width`` raster."""
    row_off = np.asarray(row_off)
    col_off = np.asarray(col_off)
    return (row_off >= height) | (col_off >= width) | (row_off + size <= 0) | (col_off + size <= 0)


def overlap(off: int, size: int, extent: int) -> tuple[int, int]:
    """Along one axis: ``(start, stop)`` of a window ``[off, off + size)`` inside ``[0, extent)``.

    ``start >= stop`` means no overlap. Subtract ``off`` to get positions in the window.
    """
    return max(off, 0), min(off + size, extent)


def outside_pixels(
    row_off: int, col_off: int, size: int, height: int, width: int, *, width_size: int | None = None
) -> np.ndarray | None:
    """(size, size) bool, True where a window's pixels fall outside a ``height x width`` raster.

    ``width_size`` makes the window ``size`` rows by ``width_size`` columns. None when the
    window lies wholly inside (the common case costs no allocation).
    """
    cols = size if width_size is None else width_size
    if row_off >= 0 and col_off >= 0 and row_off + size <= height and col_off + cols <= width:
        return None  # checked first: it is the case of nearly every patch
    r0, r1 = overlap(row_off, size, height)
    c0, c1 = overlap(col_off, cols, width)
    if (r0, c0, r1, c1) == (row_off, col_off, row_off + size, col_off + cols):
        return None
    result = np.ones((size, cols), dtype=bool)
    if r0 < r1 and c0 < c1:
        result[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = False
    return result


# --------------------------------------------------------------------------- nearest-neighbour tables

TABLE_STEP = 32
"""Reference pixels between the exact transforms of `nearest_table`'s lattice.

Measured on the Sentinel-2-like benchmark (256^2 windows of a 10 m UTM grid, a ~13 m EPSG:4326 mask),
points moved exactly per window (lattice + pixels near an edge) and CPU ms on a loaded machine:
16: 1,089 + ~30, 4.5 ms; 32: 289 + ~120, 2.4 ms; 64: 81 + ~500, 2.6 ms."""
TABLE_SAFETY = 4.0
"""`nearest_table` recomputes every pixel whose interpolated source coordinate lies within this many times
the largest interpolation error measured on the window (plus `TABLE_EPSILON`) of a source pixel edge.

For a smooth transform the bilinear error at ``(s, t)`` in a cell is ``s(1-s) A + t(1-t) B`` (second
derivatives; the mixed term is interpolated exactly); the edge midpoints measure ``A/4`` and ``B/4``, so no
point errs by more than twice the largest measured error: 4 leaves a factor of 2 for higher orders."""
TABLE_EPSILON = 1e-6
"""Source pixels added to `nearest_table`'s margin: far above float rounding of the interpolation (and GDAL's
1e-10 nearest epsilon), far below the share of pixels it sends to the exact transform."""
NEAREST_EPSILON = 1e-10
"""GDAL's nearest-neighbour warp kernel reads source pixel ``int(x + 1e-10)`` for a source coordinate ``x >= 0``."""


def nearest_index(at: np.ndarray, size: int) -> np.ndarray:
    """The source pixel (intp) GDAL's nearest-neighbour kernel reads for source coordinates ``at`` along an axis
    of ``size`` pixels: ``floor(at + 1e-10)`` (`NEAREST_EPSILON`), -1 where ``at < 0``, past the size or not finite."""
    with np.errstate(invalid="ignore"):
        index = np.floor(at + NEAREST_EPSILON)
        return np.where((at >= 0) & (index < size), index, -1).astype(np.intp)


WORK_ELEMENTS = 1 << 21
"""Elements of the largest array `work_array` keeps per thread and slot (16 MiB of float64: a 1024^2 window's x
and y); a larger one is allocated per call."""
_work = threading.local()


def work_array(slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array this thread reuses from call to call under ``slot`` (fresh past `WORK_ELEMENTS`).

    A fresh whole-window array per call costs page faults when several are alive at once (malloc gives their
    pages back on free): ~130 per 256^2 float64 array, measured at ~4 us each on a loaded machine, more than
    the arithmetic done in them. The caller owns the array until its next call with the same slot.
    """
    size = math.prod(shape)
    if size > WORK_ELEMENTS:
        return np.empty(shape, dtype=dtype)
    kept: dict[tuple[str, Any], np.ndarray] | None = getattr(_work, "arrays", None)
    if kept is None:
        kept = _work.arrays = {}
    key = (slot, np.dtype(dtype))
    array = kept.get(key)
    if array is None or array.size < size:
        array = kept[key] = np.empty(size, dtype=dtype)
    return array[:size].reshape(shape)


SourcePixels = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Map coordinates ``(x, y)`` on the reference grid's CRS -> source pixel coordinates ``(col, row)`` (floats)."""


def _halves(nodes: np.ndarray) -> np.ndarray:
    """``nodes`` with the midpoint of each pair of neighbours between them."""
    out = np.empty(2 * nodes.size - 1)
    out[::2] = nodes
    out[1::2] = (nodes[:-1] + nodes[1:]) / 2
    return out


def _node_span(offset: int, size: int, step: int) -> tuple[int, int]:
    """Along one axis, the lattice nodes (every ``step``-th pixel counted from the grid's origin) around the
    pixels ``offset ... offset + size - 1``: the node at or before the first one and how many cells from there
    reach past the last one (a pixel on a node lies in the cell that starts at it)."""
    return offset // step, (offset % step + size - 1) // step + 1


MOVE_CHUNK = 1 << 16
"""Points `TableLattice.build` moves per transform call (rasterio hands back Python lists: ~4 MB per call)."""


@attrs.frozen(eq=False)
class TableLattice:
    """Exact moves of part of a reference grid's lattice for `nearest_table`: the centres of the pixels on every
    ``step``-th row and column counted from the grid's origin (the nodes) in source pixel coordinates, and per
    lattice cell the largest error of their bilinear interpolation, measured on exact moves of the cell's edge
    midpoints and centre (where a bilinear error peaks).

    A window's lattice is a slice of a grid's (`part`): `crossgeo.io.table_lattice` moves a whole grid's once
    per process (one transform for every window), `nearest_table` a window's own cells when it has none. The
    values are the same either way: a node's move depends on where it lies on the grid, not on the window.
    """

    step: int
    first: tuple[int, int]
    """The node (row, column) of ``nodes[:, 0, 0]``, counted in nodes from the grid's origin."""
    nodes: np.ndarray
    """(2, rows, columns) float64, read-only: ``x`` then ``y`` of the nodes."""
    errors: np.ndarray
    """(rows - 1, columns - 1): per cell, the largest finite difference between an exact move and the bilinear value."""
    unsure: np.ndarray | None
    """(rows - 1, columns - 1): the cells with a move that was not finite (None: none)."""

    @classmethod
    def build(
        cls, transform: Affine, source_pixels: SourcePixels, first: tuple[int, int], cells: tuple[int, int], step: int
    ) -> TableLattice:
        """The lattice of ``cells`` (rows, columns) cells from node ``first``: its nodes, edge midpoints and cell
        centres moved together (one transform call per `MOVE_CHUNK` points)."""
        rows, cols = (
            _halves(np.arange(start, start + n + 1, dtype=np.float64) * step) for start, n in zip(first, cells)
        )
        grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
        centres: Any = transform  # (affine's annotations take floats; it maps numpy arrays element by element)
        xs, ys = centres @ (grid_c.ravel() + 0.5, grid_r.ravel() + 0.5)
        chunks = (source_pixels(xs[i : i + MOVE_CHUNK], ys[i : i + MOVE_CHUNK]) for i in range(0, xs.size, MOVE_CHUNK))
        moves = np.concatenate([np.asarray(chunk, dtype=np.float64) for chunk in chunks], axis=1)
        moves = moves.reshape(2, rows.size, cols.size)
        nodes = np.ascontiguousarray(moves[:, ::2, ::2])
        # The bilinear value at each midpoint and centre is the mean of its neighbouring nodes.
        interpolated = np.empty_like(moves)
        interpolated[:, ::2, ::2] = nodes
        with np.errstate(invalid="ignore"):  # inf - inf where moves failed
            interpolated[:, ::2, 1::2] = (nodes[:, :, :-1] + nodes[:, :, 1:]) / 2
            interpolated[:, 1::2] = (interpolated[:, :-1:2] + interpolated[:, 2::2]) / 2
            misses = np.abs(moves - interpolated)
        finite = np.isfinite(misses)
        unsure = None if finite.all() else _cells(~np.logical_and(*np.isfinite(moves)), np.logical_or)
        errors = _cells(np.where(finite, misses, 0.0).max(axis=0), np.maximum)
        for array in (nodes, errors, unsure):
            if array is not None:
                array.flags.writeable = False  # shared by every window
        return cls(step, first, nodes, errors, unsure)

    @property
    def nbytes(self) -> int:
        return self.nodes.nbytes + self.errors.nbytes + (self.unsure.nbytes if self.unsure is not None else 0)

    @staticmethod
    def grid_cells(height: int, width: int, step: int) -> tuple[int, int]:
        """The cells from node (0, 0) that hold every window on a ``height`` x ``width`` grid (`_node_span`)."""
        return _node_span(0, height, step)[1], _node_span(0, width, step)[1]

    def part(self, first: tuple[int, int], cells: tuple[int, int]) -> TableLattice | None:
        """The ``cells`` cells from node ``first`` (views); None where this lattice does not hold them."""
        row, col = first[0] - self.first[0], first[1] - self.first[1]
        if row < 0 or col < 0 or row + cells[0] >= self.nodes.shape[1] or col + cells[1] >= self.nodes.shape[2]:
            return None
        if (row, col, *cells) == (0, 0, *self.errors.shape):
            return self
        inside = (slice(row, row + cells[0]), slice(col, col + cells[1]))
        nodes = self.nodes[:, row : row + cells[0] + 1, col : col + cells[1] + 1]
        unsure = self.unsure[inside] if self.unsure is not None and self.unsure[inside].any() else None
        return TableLattice(self.step, first, nodes, self.errors[inside], unsure)


def _cells(flags: np.ndarray, combine: Any) -> np.ndarray:
    """Per lattice cell: ``combine`` (``np.logical_or``, ``np.maximum``) of the half lattice's ``flags`` on its
    corners, edges and centre."""
    cells_r, cells_c = flags.shape[0] // 2, flags.shape[1] // 2
    out = flags[: 2 * cells_r : 2, : 2 * cells_c : 2].copy()
    for a in range(3):
        for b in range(3):
            combine(out, flags[a : a + 2 * cells_r : 2, b : b + 2 * cells_c : 2], out=out)
    return out


@attrs.frozen(eq=False)
class _AxisLayout:
    """Along one axis of a window whose first pixel lies ``phase`` pixels past a lattice node (`_axis_layout`,
    cached): ``cells`` lattice cells from that node, each pixel's cell and its weight there (0 at the cell's
    first node, up to 1 at the next) and one minus it."""

    phase: int
    cells: int
    cell: np.ndarray
    weight: np.ndarray
    keep: np.ndarray


@functools.lru_cache(maxsize=256)
def _axis_layout(size: int, step: int, phase: int) -> _AxisLayout:
    """`_AxisLayout` of ``size`` pixels from ``phase`` past a node (a sampler's windows share a few sizes; a
    size has ``step`` phases)."""
    at = np.arange(size) + phase
    cell = at // step
    weight = (at - cell * step) / step
    arrays = (cell, weight, 1 - weight)
    for array in arrays:
        array.flags.writeable = False  # shared by every call
    return _AxisLayout(phase, _node_span(phase, size, step)[1], *arrays)


@functools.lru_cache(maxsize=16)
def _band_weights(step: int) -> np.ndarray:
    """The row weights of every band of ``step`` rows between two lattice rows: ``arange(step) / step``."""
    weights = np.arange(step) / step
    weights.flags.writeable = False
    return weights


def _across(nodes: np.ndarray, cols: _AxisLayout) -> tuple[np.ndarray, np.ndarray]:
    """Both coordinates' values on every lattice row (``nodes``: (2, rows, columns)) interpolated to every column
    of the window, (2, rows, width), and their steps to the next lattice row."""
    across: np.ndarray = nodes[:, :, cols.cell] * cols.keep + nodes[:, :, cols.cell + 1] * cols.weight
    return across, np.diff(across, axis=1)


def _interpolate(out: np.ndarray, across: np.ndarray, steps: np.ndarray, weights: np.ndarray, shift: float) -> None:
    """``out`` (2, bands * step, width) = the bilinear ``x`` and ``y`` (`_across`) + ``shift`` of every
    row of the ``bands`` bands between lattice rows, the window's rows among them: per coordinate two passes
    over a contiguous (bands, step, width) view (one view of both coordinates makes numpy copy the operand of
    an in-place add)."""
    step, width = weights.size, out.shape[2]
    for plane, lines, moves in zip(out, across, steps):
        bands = plane.reshape(-1, step, width)
        np.multiply(moves[:, None, :], weights[:, None], out=bands)
        np.add(bands, (lines[:-1] + shift)[:, None, :], out=bands)


def nearest_table(
    transform: Affine,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    source_pixels: SourcePixels,
    source_shape: tuple[int, int],
    *,
    step: int = TABLE_STEP,
    safety: float = TABLE_SAFETY,
    fix_up: bool = True,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    lattice: TableLattice | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The source pixel of each pixel of a window, as an exact per-pixel nearest-neighbour warp picks it,
    with exact transforms on a lattice only (the ``"table"`` view, for warps that do not separate).

    The exact answer moves each pixel centre ``transform @ (col + 0.5, row + 0.5)`` to source pixel
    coordinates ``(x, y)`` (``source_pixels``) and takes pixel ``(floor(y + 1e-10), floor(x + 1e-10))``
    (`NEAREST_EPSILON`), none where ``x < 0``, ``y < 0``, past the source's size or not finite - the rule
    of `crossgeo.io.lookup_axes`. Here (1) the centres of every ``step``-th row and column counted from the
    grid's origin (the lattice nodes around the window) are moved exactly - taken from ``lattice`` (a
    `TableLattice` of the grid, ``step`` the same) where it holds them, else moved for this window, (2) every
    pixel gets the bilinear interpolation of its cell's corners, (3) the interpolation error is measured on
    exact moves of every cell's edge midpoints and centre (where a bilinear error peaks), and (4) every
    pixel whose interpolated ``x`` or ``y`` lies within ``safety`` times the largest error (plus
    `TABLE_EPSILON`) of a whole number - a source pixel edge, the source's own edges included - is moved
    exactly; so are the pixels of cells where a move was not finite. Only a pixel far from every edge keeps
    its interpolated coordinates, and those pick the pixel the exact ones pick. ``fix_up=False`` skips (4)
    (tests show it is needed).

    Returns ``(rows, cols)``, (height, width) int arrays of source pixels, both -1 where the centre
    falls outside the source: ``out`` if given (two int arrays of that shape, int32 for sources of fewer than
    2^31 pixels a side), else fresh intp arrays. About 1 ms for a 256^2 window with a grid's lattice (a
    window's own adds one transform of ~300 points): the per-pixel work is a dozen whole-window numpy
    passes over per-thread work arrays (`work_array`), the axes' layouts cached (`_axis_layout`).
    """
    rows, cols = _axis_layout(height, step, row_off % step), _axis_layout(width, step, col_off % step)
    first, cells = (row_off // step, col_off // step), (rows.cells, cols.cells)
    part = lattice.part(first, cells) if lattice is not None and lattice.step == step else None
    if part is None:
        part = TableLattice.build(transform, source_pixels, first, cells, step)
    across, steps = _across(part.nodes, cols)
    unsure = part.unsure
    margin = safety * float(part.errors.max()) + TABLE_EPSILON
    # Every interpolated value is a convex combination of lattice values: when those lie inside the source by
    # more than the margin, so does every pixel, and no pixel needs the outside test (nor a floor: they are > 0).
    all_inside = unsure is None and all(
        float(values.min()) > margin and float(values.max()) + margin < size
        for values, size in zip(across, (source_shape[1], source_shape[0]))
    )
    shift = margin if fix_up else NEAREST_EPSILON
    row, col = out if out is not None else (np.empty((height, width), dtype=np.intp) for _ in range(2))
    bands = work_array("table", (2, rows.cells * step, width), np.float64)
    # nan (in a cell next to a failed transform) only where `unsure` sends every pixel to the exact move.
    with np.errstate(invalid="ignore"):
        _interpolate(bands, across, steps, _band_weights(step), shift)
        both = bands[:, rows.phase : rows.phase + height]  # the window's rows
        for value, index, size in zip(both, (col, row), (source_shape[1], source_shape[0])):
            # The source pixel index of v is floor(v + margin), and another lies within the margin (v near an
            # edge) where floor(v - margin) differs: where v + margin is less than 2 * margin past floor(v +
            # margin). Away from every edge, floor(v + margin) is floor(v + 1e-10) and v >= 0 is that floor >= 0.
            if all_inside:  # 0 < v < size: a cast is the floor
                np.copyto(index, value, casting="unsafe")
                if fix_up:
                    np.subtract(value, index, out=value)  # how far v + margin lies past its floor
                continue
            floor = np.floor(value, out=work_array("table-floor", (height, width), np.float64))
            if fix_up:
                np.subtract(value, floor, out=value)
            # Clipped before the cast: a value far past the source must not wrap round into an index.
            np.copyto(index, np.clip(floor, -1, size, out=floor), casting="unsafe")
        if fix_up:
            redo = np.less(np.minimum(both[0], both[1], out=both[0]), 2 * margin)
        else:
            redo = np.zeros((height, width), dtype=bool)
    if not all_inside:
        outside = (col < 0) | (col >= source_shape[1]) | (row < 0) | (row >= source_shape[0])
        col[outside] = -1
        row[outside] = -1
    if unsure is not None:
        redo |= unsure[rows.cell][:, cols.cell]
    at_r, at_c = np.divmod(np.flatnonzero(redo), width)  # (a 2-D nonzero costs ~10x a flat one)
    if at_r.size:
        centres: Any = transform  # (affine's annotations take floats; it maps numpy arrays element by element)
        xs, ys = centres @ (at_c + (col_off + 0.5), at_r + (row_off + 0.5))
        x, y = (np.asarray(v, dtype=np.float64) for v in source_pixels(xs, ys))
        fixed_c, fixed_r = nearest_index(x, source_shape[1]), nearest_index(y, source_shape[0])
        outside = (fixed_c < 0) | (fixed_r < 0)
        fixed_c[outside] = fixed_r[outside] = -1
        col[at_r, at_c], row[at_r, at_c] = fixed_c, fixed_r
    return row, col


# --------------------------------------------------------------------------- internal blocks (tiles, strips)


@attrs.frozen
class BlockLayout:
    """How a raster file is cut into blocks (GeoTIFF tiles or strips, MBTiles tiles): the unit GDAL decodes.

    ``height`` x ``width`` pixels per block (a strip is as wide as the raster); ``interleave``
    is ``"pixel"`` (one block holds every band) or ``"band"`` (one block plane per band, so
    reading k bands decodes k blocks per block position).
    """

    height: int
    width: int
    interleave: str = "pixel"

    @classmethod
    def of(cls, dataset: Any) -> BlockLayout | None:
        """The layout of an open rasterio dataset (its first band's block shape), None if it declares none."""
        shapes = getattr(dataset, "block_shapes", None)
        if not shapes:
            return None
        height, width = (int(v) for v in shapes[0])
        interleave = getattr(getattr(dataset, "interleaving", None), "value", None)
        return cls(height, width, "band" if str(interleave).lower() == "band" else "pixel")

    def planes(self, bands: int) -> int:
        """Block planes decoded per block position when ``bands`` bands are read."""
        return max(1, bands) if self.interleave == "band" else 1

    def describe(self, width: int) -> str:
        """``256 x 256 tiles`` or ``16-row strips`` (``width``: the raster's, to tell strips from tiles)."""
        shape = f"{self.height}-row strips" if self.width >= width else f"{self.height} x {self.width} tiles"
        return shape + (", band-interleaved" if self.interleave == "band" else "")


def align_step(size: int, block: int, extent: int) -> int | None:
    """Along one axis: the offset step that makes every ``size``-pixel window touch the fewest blocks.

    A window starting on a block origin touches ``ceil(size / block)`` blocks, the minimum,
    whatever its size; so for ``size >= block`` the step is ``block`` (a size that is not a
    multiple of it makes aligned grid windows overlap rather than leave gaps). A smaller
    window inside one block needs ``offset % block <= block - size``: when ``size`` divides
    ``block`` the step is ``size``, otherwise no step keeps windows both minimal and free of
    gaps, and the answer is None. 1 (no constraint) when one block spans the axis (a strip's
    width) or blocks are one pixel.
    """
    if block >= extent or block == 1:
        return 1
    if size >= block:
        return block
    if block % size == 0:
        return size
    return None


def aligned_offsets(extent: int, size: int, stride: int, step: int) -> np.ndarray:
    """Along one axis: grid offsets on multiples of ``step`` (`align_step`), all windows inside ``[0, extent)``.

    ``0, s, 2 * s, ...`` with ``s`` = ``stride`` rounded down to a multiple of ``step`` (at
    least ``step``), so a stride up to the window size still leaves no gap between windows
    (``step <= size``, `align_step`).
    Unlike the unaligned grid there is no last offset flush with the far edge: the remainder
    past the last window (narrower than ``s``) is in no window. 0 when ``extent <= size``.
    """
    if extent <= size:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, extent - size + 1, max(step, stride // step * step), dtype=np.int64)


def blocks_touched(offsets: np.ndarray, size: int, block: int, extent: int) -> np.ndarray:
    """Along one axis: blocks of ``block`` pixels a window ``[off, off + size)`` touches inside ``[0, extent)``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    start = np.clip(offsets, 0, extent)
    stop = np.clip(offsets + size, 0, extent)
    first = start // block
    last = (stop - 1) // block
    return np.where(stop > start, last - first + 1, 0)


def min_blocks(size: int, block: int, extent: int) -> int:
    """Along one axis: the fewest blocks a ``size``-pixel window inside ``[0, extent)`` can touch."""
    return -(-min(size, extent) // block)


@attrs.frozen
class DecodeAmplification:
    """Blocks a set of windows decodes against the fewest a window of their size can (`decode_amplification`)."""

    layout: BlockLayout
    windows: int
    mean_blocks: float
    """Mean block positions touched per window (x ``planes`` = blocks decoded)."""
    minimum: int
    """``ceil(size / block_height) * ceil(size / block_width)`` (sizes clipped to the raster)."""
    above_minimum: int
    """Windows touching more blocks than ``minimum``."""
    planes: int
    """Block planes per block position (bands read when band-interleaved, else 1)."""
    decoded_pixels: float
    """Mean pixels decoded per window pixel (blocks touched x block area / window area)."""

    @property
    def amplification(self) -> float:
        """Mean blocks per window / minimum (1.0: every window decodes the fewest blocks possible)."""
        return self.mean_blocks / self.minimum if self.minimum else 1.0

    @property
    def share_above(self) -> float:
        """Share of the windows touching more blocks than the minimum."""
        return self.above_minimum / self.windows if self.windows else 0.0


def decode_amplification(
    row_off: np.ndarray, col_off: np.ndarray, size: int, layout: BlockLayout, height: int, width: int, bands: int = 1
) -> DecodeAmplification:
    """Blocks decoded by windows of ``size`` on a ``height`` x ``width`` raster cut into ``layout`` blocks.

    Windows are clipped to the raster (pixels outside it decode nothing). The amplification
    is per block shape: for strips (blocks as wide as the raster) a window always touches one
    strip across, and ``decoded_pixels`` shows what a strip costs instead.
    """
    rows = blocks_touched(row_off, size, layout.height, height)
    cols = blocks_touched(col_off, size, layout.width, width)
    touched = rows * cols
    minimum = min_blocks(size, layout.height, height) * min_blocks(size, layout.width, width)
    n = int(touched.size)
    mean = float(touched.mean()) if n else 0.0
    area = size * size
    return DecodeAmplification(
        layout=layout,
        windows=n,
        mean_blocks=mean,
        minimum=minimum,
        above_minimum=int(np.count_nonzero(touched > minimum)),
        planes=layout.planes(bands),
        decoded_pixels=mean * layout.height * min(layout.width, width) / area if area else 0.0,
    )
