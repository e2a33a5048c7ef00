"""SceneSampler: one sampler over a catalogue of scenes, with a bound on open files.

Each scene's image is its own reference grid (nothing is merged or re-warped between
scenes); a scene is read by its own `PatchSampler`, built from the same inspection steps
(`crossgeo.inspection`). The catalogue adds what one sampler cannot do alone:

* one global window order over all scenes (so a shuffle mixes scenes), each `Patch`
  carrying its ``scene`` (the scene's position in the catalogue);
* a shared mask (one GeoTIFF/VRT over the whole region, any CRS) and a shared vector file
  of crops whose features go to the first scene, in catalogue order, that holds their whole
  window (each feature once; features in no scene are counted and reported);
* at most ``max_open`` scenes with open handles per process (least recently used closed
  first), so thousands of scenes run in DataLoader workers without running out of file
  descriptors;
* inspection of every scene at construction, reporting all bad scenes at once, each named
  by its position and file.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from crossgeo import windows as winsrc
from crossgeo.errors import ConfigError, CrossgeoError, OptionError
from crossgeo.inspection import (
    ImageInfo,
    Inspection,
    MaskInfo,
    WindowsInfo,
    _check_scalar_options,
    check_patch_size,
    check_path,
    inspect_image,
    inspect_mask,
    inspect_windows,
    window_warnings,
)
from crossgeo.io import is_remote, open_raster
from crossgeo.masks import MaskDecoder
from crossgeo.options import REQUIRED, SAMPLER_OPTIONS, check_names, resolve_sampler_options
from crossgeo.sampler import Patch, PatchSampler, WindowSequence

__all__ = ["COVERAGE_SAMPLES", "SCENE_COLUMNS", "Scene", "SceneSampler", "SceneWindows", "read_catalogue"]

log = logging.getLogger("crossgeo")

SCENE_COLUMNS = ("image_path", "mask_path", "crops_path")
"""What a scene of the catalogue may set (``image_path`` is required)."""
COVERAGE_SAMPLES = 32
"""Pixel centres per axis measuring each scene's mask coverage (the single-image default is 128)."""
_PER_SCENE = ("image_path", "image_mbtiles_path", "mask_path", "crops_path", "patch_size")
"""Sampler options a SceneSampler takes elsewhere than ``**options``."""


@attrs.frozen
class Scene:
    """One row of the catalogue, with its paths resolved."""

    position: int
    """The scene's position in the catalogue (`Patch.scene`)."""
    image_path: str
    mask_path: str | None
    """Its own mask, or None for the shared one."""
    crops_path: str | None
    """Its own windows, or None for the shared vector features."""
    where: str
    """How messages name it: ``scene 3 (line 5 of scenes.csv)``."""


@attrs.frozen(eq=False)
class SceneWindows:
    """What planning the windows of the catalogue found (per scene and in total)."""

    index: winsrc.WindowIndex
    """All windows, scene by scene, with their ``scene`` column."""
    from_cache: bool
    shared_features: int
    """Features of the shared crops file (0 when there is none)."""
    unassigned: int
    """Shared features whose window lies wholly inside no scene (not used)."""


# --------------------------------------------------------------------------- the catalogue


def _fix_hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _resolve(value: Any, base: Path | None) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"a path (str) was expected, got {type(value).__name__}: {value!r}")
    path = os.fspath(value)
    if base is not None and not is_remote(path) and not Path(path).is_absolute():
        return str(base / path)
    return path


def read_catalogue(scenes: Any) -> tuple[list[Scene], str]:
    """The scenes of a list of mappings or a CSV/Parquet table (path, pandas DataFrame, pyarrow Table).

    Relative paths in a table file start at the table's folder; in a list they start at the
    working directory. Returns the scenes and a description of the catalogue for messages.
    Raises `ConfigError` naming the row for an empty catalogue, a missing ``image_path``
    column/key, a misspelt column and duplicate scenes.
    """
    base: Path | None = None
    first_line = 0  # a table row's line in its file (header on line 1)
    if isinstance(scenes, (str, os.PathLike)):
        path = Path(scenes)
        if not path.is_file():
            raise ConfigError(
                f"scenes {str(path)!r} does not exist. Give a CSV/Parquet table of scenes or a list of mappings "
                "with image_path (and optional mask_path, crops_path)."
            )
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(path).read().to_pylist()
        elif suffix in (".csv", ".txt"):
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(
                path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(SCENE_COLUMNS, "string"))
            )
            rows = table.to_pylist()
            first_line = 2
        else:
            raise ConfigError(f"scenes {str(path)!r} must be a .csv or .parquet table (or a list of mappings).")
        base, described = path.resolve().parent, str(path)
    elif hasattr(scenes, "to_pylist") or hasattr(scenes, "to_dict"):
        rows = scenes.to_pylist() if hasattr(scenes, "to_pylist") else scenes.to_dict("records")
        described = f"a {type(scenes).__name__} of scenes"
    elif isinstance(scenes, Sequence) and not isinstance(scenes, (str, bytes)):
        rows = list(scenes)
        described = "the list of scenes"
    else:
        raise OptionError(
            "scenes must be a list of mappings, a CSV/Parquet path or a table (pandas DataFrame, pyarrow Table), "
            f"got {type(scenes).__name__}."
        )
    if not rows:
        raise ConfigError(f"{described} is empty: give at least one scene with an image_path.")
    if all(isinstance(row, Mapping) and "image_path" not in row for row in rows):
        keys = sorted({str(k) for row in rows if isinstance(row, Mapping) for k in row})
        hint = next((_fix_hint(k, SCENE_COLUMNS) for k in keys if _fix_hint(k, SCENE_COLUMNS)), "")
        raise ConfigError(
            f"{described} has no image_path column/key (it has {keys}).{hint} Every scene needs an image_path; "
            "mask_path and crops_path are optional."
        )
    out: list[Scene] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for position, row in enumerate(rows):
        where = f"scene {position}" + (f" (line {position + first_line} of {described})" if first_line else "")
        if not isinstance(row, Mapping):
            problems.append(f"{where} is a {type(row).__name__}, not a mapping with image_path.")
            continue
        for key in row:
            if key not in SCENE_COLUMNS and _fix_hint(str(key), SCENE_COLUMNS):
                problems.append(
                    f"{where} has the unknown key {key!r}.{_fix_hint(str(key), SCENE_COLUMNS)} A scene sets "
                    f"{', '.join(SCENE_COLUMNS)}."
                )
        if row.get("image_path") in (None, ""):
            problems.append(
                f"{where} has no image_path"
                + ("" if position else f" ({described} has the columns/keys {sorted(map(str, row))})")
                + ". Every scene needs an image_path column/key."
            )
            continue
        try:
            scene = Scene(
                position=position,
                image_path=_resolve(row["image_path"], base) or "",
                mask_path=_resolve(row.get("mask_path"), base),
                crops_path=_resolve(row.get("crops_path"), base),
                where=where,
            )
        except TypeError as error:
            problems.append(f"{where}: {error}.")
            continue
        key = scene.image_path if is_remote(scene.image_path) else os.path.abspath(scene.image_path)
        if key in seen:
            problems.append(
                f"{where} repeats scene {seen[key]}'s image {scene.image_path}; each scene must appear once "
                "(remove the duplicate row)."
            )
        seen.setdefault(key, position)
        out.append(scene)
    if problems:
        raise ConfigError(_listing(f"{described}: {len(problems)} problem(s) with the catalogue", problems))
    return out, described


def _listing(title: str, problems: Sequence[str], limit: int = 50) -> str:
    shown = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"  ... and {len(problems) - limit} more")
    return f"{title}:\n" + "\n".join(shown)


# --------------------------------------------------------------------------- shared vector crops


def _assign_features(
    path: str, layer: str | None, images: dict[int, ImageInfo], patch_size: int
) -> tuple[dict[int, winsrc.WindowIndex], int, int]:
    """Windows of a shared vector file per scene: each feature goes to the first scene holding its whole window.

    Returns the windows per scene, the number of (non-empty) features and how many fit no scene.
    """
    import pyogrio

    if layer is not None:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        if layer not in layers:
            raise ConfigError(f"crops_path {path}: no layer {layer!r} (crops_layer); the layers are {layers}.")
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as error:
        raise ConfigError(
            f"The shared crops_path {path} could not be read as a vector file ({error}). A shared crops_path "
            "holds features (GeoPackage, GeoJSON, Shapefile, ...); per-scene offset tables go in the scenes' "
            "crops_path column."
        ) from error
    if frame.crs is None:
        raise ConfigError(f"The shared crops_path {path} has no CRS; set the layer's CRS so features can be placed.")
    geometry = frame.geometry
    empty = (geometry.isna() | geometry.is_empty).to_numpy()
    geometry = geometry[~empty]
    n = len(geometry)
    unassigned = np.ones(n, dtype=bool)
    out: dict[int, winsrc.WindowIndex] = {}
    projected: dict[str, np.ndarray | None] = {}
    for position, image in sorted(images.items()):
        grid = image.grid
        crs = grid.crs.to_wkt() if hasattr(grid.crs, "to_wkt") else str(grid.crs)
        if crs not in projected:
            projected[crs] = geometry.to_crs(crs).bounds.to_numpy(dtype=np.float64).reshape(-1, 4) if n else None
        bounds = projected[crs]
        if bounds is None or not unassigned.any():
            out[position] = winsrc.WindowIndex(np.zeros(0, np.int64), np.zeros(0, np.int64))
            continue
        # Only unassigned features whose box centre lies within the scene's bounds can fit in it.
        left, bottom, right, top = grid.bounds
        x, y = (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2
        near = np.flatnonzero(
            unassigned
            & (x >= min(left, right))
            & (x <= max(left, right))
            & (y >= min(bottom, top))
            & (y <= max(bottom, top))
        )
        row_off, col_off, _ = winsrc.feature_windows(bounds[near], grid, patch_size)
        fits = (
            (row_off >= 0)
            & (col_off >= 0)
            & (row_off + patch_size <= grid.height)
            & (col_off + patch_size <= grid.width)
        )
        unassigned[near[fits]] = False
        rows, cols = row_off[fits], col_off[fits]
        out[position] = winsrc.WindowIndex(rows, cols, winsrc.WindowReport(kept=int(rows.size)))
    return out, n, int(unassigned.sum())


# --------------------------------------------------------------------------- open-file bound


class _OpenScenes:
    """This process's scenes with open handles, least recently used first (guarded by a lock)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.order: OrderedDict[int, None] = OrderedDict()
        self.busy: dict[int, int] = {}


class SceneSampler(WindowSequence):
    """Fixed-size patches from a catalogue of scenes, each scene's image its own reference grid.

    Args:
        scenes: A list of mappings, or a CSV/Parquet table (path, pandas DataFrame, pyarrow
            Table), with ``image_path`` and optional ``mask_path`` / ``crops_path`` per scene.
            Relative paths in a table file start at the table's folder.
        patch_size: Window height and width in pixels.
        mask_path: The mask of every scene without its own (e.g. one GeoTIFF or VRT over the
            whole region, in any CRS).
        crops_path: A vector file of features for every scene without its own crops: each
            feature goes to the first scene (catalogue order) that holds its whole window.
        max_open: At most this many scenes keep open handles per process (least recently
            used closed first; they reopen on their next read).
        **options: The options of `crossgeo.PatchSampler` (``selected_bands``,
            ``image_dtype``, ``color_map``, ``window_index_cache``, ...), shared by all scenes.

    ``len`` is the total window count; ``sampler[i]`` is a `Patch` whose ``scene`` is the
    position of its scene and ``index`` is ``i``. Windows are numbered scene by scene in
    catalogue order; adapters shuffle over all of them. Scenes may differ in CRS, resolution
    and size but must agree on band count and dtype after ``selected_bands`` / ``image_dtype``.

    Construction inspects every scene (files, CRS, bands, dtypes, overlap with the mask,
    windows) and raises one `ConfigError` listing every bad scene by position and file. A
    scene with no windows is reported and skipped (`empty_scenes`).
    """

    def __init__(
        self,
        scenes: Any,
        patch_size: Any = REQUIRED,
        *,
        mask_path: Any = None,
        crops_path: Any = None,
        max_open: Any = 32,
        **options: Any,
    ) -> None:
        known = [o.name for o in SAMPLER_OPTIONS if o.name not in _PER_SCENE]
        check_names(options, (*known, *_PER_SCENE), "SceneSampler")
        given = [name for name in options if name in _PER_SCENE]
        if given:
            raise OptionError(
                f"SceneSampler takes {given[0]} from each scene (the scenes' {given[0]} column) or as its own "
                "argument, not as a shared option; remove it from the options."
            )
        if patch_size is REQUIRED:
            raise OptionError("SceneSampler is missing the required option patch_size.")
        if isinstance(max_open, bool) or not isinstance(max_open, (int, np.integer)) or max_open < 1:
            raise ConfigError(
                f"max_open must be an integer >= 1 (the number of scenes kept open per process), got {max_open!r}."
            )
        self.max_open = int(max_open)
        resolved, names = resolve_sampler_options(
            {"image_path": "", "mask_path": mask_path, "crops_path": crops_path, "patch_size": patch_size, **options},
            "SceneSampler",
        )
        self.options = _check_scalar_options(resolved, names)
        self.catalogue, self.source = read_catalogue(scenes)
        self.shared_mask_path = None if mask_path is None else os.fspath(mask_path)
        self.shared_crops_path = None if crops_path is None else os.fspath(crops_path)
        self._build()

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        options = self.options
        problems: list[str] = []
        scenes = self.catalogue

        def bad(scene: Scene, path: str | None, error: Any) -> None:
            text = " ".join(str(error).split()) or type(error).__name__
            problems.append(f"{scene.where}, {path}: {text}")

        # 1. images: grid, bands, dtype, CRS.
        images: dict[int, ImageInfo] = {}
        for scene in _progress(scenes, "inspecting scene images"):
            try:
                image = inspect_image(
                    scene.image_path,
                    option="image_path",
                    selected_bands=options["selected_bands"],
                    image_dtype=options["image_dtype"],
                    target_crs=options["target_crs"],
                    target_resolution=options["target_resolution"],
                )
                check_patch_size(options["patch_size"], image)
            except (CrossgeoError, OSError, ValueError, TypeError) as error:
                bad(scene, scene.image_path, error)
                continue
            if image.grid.crs is None:
                bad(
                    scene,
                    scene.image_path,
                    "has no CRS, so it cannot be placed among the other scenes or the "
                    "shared mask/crops; give the file a CRS (e.g. gdal_edit.py -a_srs EPSG:...).",
                )
                continue
            images[scene.position] = image
        if images:
            head = min(images)
            first = images[head]
            for position, image in images.items():
                if len(image.bands) != len(first.bands) or image.dtype != first.dtype:
                    scene = scenes[position]
                    bad(
                        scene,
                        scene.image_path,
                        f"reads {len(image.bands)} band(s) as {np.dtype(image.dtype)} but scene {head} "
                        f"({scenes[head].image_path}) reads {len(first.bands)} band(s) as "
                        f"{np.dtype(first.dtype)}; scenes must agree after selected_bands / image_dtype (set "
                        "selected_bands to bands every scene has, or image_dtype: float32 / native).",
                    )
            images = {p: i for p, i in images.items() if len(i.bands) == len(first.bands) and i.dtype == first.dtype}

        # 2. masks.
        masks: dict[int, tuple[MaskInfo, MaskDecoder]] = {}
        no_overlap: list[Scene] = []
        shared, shared_error = None, None
        if self.shared_mask_path is not None and any(s.mask_path is None for s in scenes):
            try:  # opened once for all the scenes that use it
                shared = open_raster(check_path(self.shared_mask_path, "mask_path"), "mask_path")
            except (CrossgeoError, OSError, ValueError, TypeError) as error:
                shared_error = " ".join(str(error).split())
                problems.append(f"the shared {shared_error}")
        try:
            self._inspect_masks(images, masks, no_overlap, shared, shared_error is not None, bad)
        finally:
            if shared is not None:
                shared.close()
        if no_overlap and len(no_overlap) == len(images) and self.shared_mask_path is not None:
            problems[:] = [p for p in problems if "does not overlap" not in p]
            problems.append(
                f"The shared mask_path {self.shared_mask_path} overlaps none of the {len(images)} scene(s) "
                f"(e.g. {no_overlap[0].where}, {no_overlap[0].image_path}). Check that the mask and the scenes "
                "carry the right CRS and cover the same region."
            )

        # 3. windows.
        windows: SceneWindows | None = None
        if not any(s.crops_path for s in scenes) and self.shared_crops_path is None:
            problems.append(
                f"{self.source}: no scene has a crops_path and no shared crops_path was given; add a crops_path "
                "column (offset tables or vector files) or pass crops_path=<vector file> for all scenes."
            )
        elif not problems:
            windows = self._plan_windows(images, problems)
        if problems:
            raise ConfigError(
                _listing(
                    f"{len(problems)} problem(s) in {len(scenes)} scene(s) of {self.source} (fix or remove these rows)",
                    problems,
                )
            )
        assert windows is not None
        self._setup(images, masks, windows)

    def _inspect_masks(
        self,
        images: dict[int, ImageInfo],
        masks: dict[int, tuple[MaskInfo, MaskDecoder]],
        no_overlap: list[Scene],
        shared: Any,
        shared_failed: bool,
        bad: Any,
    ) -> None:
        """Each scene's mask step (`crossgeo.inspection.inspect_mask`) on its own or the shared mask."""
        options = self.options
        for scene in _progress(self.catalogue, "inspecting scene masks"):
            path = scene.mask_path or self.shared_mask_path
            if path is None:
                bad(
                    scene,
                    scene.image_path,
                    "has no mask_path and no shared mask_path was given; add a mask_path "
                    "column or pass mask_path=... for all scenes.",
                )
                continue
            if scene.position not in images or (scene.mask_path is None and shared_failed):
                continue
            try:
                masks[scene.position] = inspect_mask(
                    path,
                    images[scene.position],
                    color_map=options["color_map"],
                    n_classes=options["n_classes"],
                    mask_fill_value=options["mask_fill_value"],
                    coverage_samples=COVERAGE_SAMPLES,
                    dataset=shared if scene.mask_path is None else None,
                )
            except (CrossgeoError, OSError, ValueError, TypeError) as error:
                if scene.mask_path is None and "does not overlap" in str(error):
                    no_overlap.append(scene)
                bad(scene, path, error)

    def _plan_windows(self, images: dict[int, ImageInfo], problems: list[str]) -> SceneWindows | None:
        options = self.options
        size: int = options["patch_size"]
        layer = options["crops_layer"]
        keys = {"row_off_key": options["row_off_key"], "col_off_key": options["col_off_key"]}
        cache = options["window_index_cache"]
        counts = {"features": 0, "unassigned": 0}

        def build() -> winsrc.WindowIndex:
            shared: dict[int, winsrc.WindowIndex] = {}
            needs_shared = {p: images[p] for p in images if not self.catalogue[p].crops_path}
            if needs_shared:
                if self.shared_crops_path is None:
                    problems.extend(
                        f"{self.catalogue[p].where}, {self.catalogue[p].image_path}: has no crops_path and no shared "
                        "crops_path was given; add its crops_path or pass crops_path=<vector file>."
                        for p in sorted(needs_shared)
                    )
                    raise _Abandon
                shared, counts["features"], counts["unassigned"] = _assign_features(
                    self.shared_crops_path, layer, needs_shared, size
                )
            parts: list[winsrc.WindowIndex] = []
            for position in sorted(images):
                scene = self.catalogue[position]
                if scene.crops_path is None:
                    parts.append(shared[position])
                    continue
                try:
                    parts.append(
                        inspect_windows(scene.crops_path, images[position], size, crops_layer=layer, **keys).index
                    )
                except (CrossgeoError, OSError, ValueError, TypeError) as error:
                    problems.append(f"{scene.where}, {scene.crops_path}: {' '.join(str(error).split())}")
            if problems:
                raise _Abandon
            return _concatenate(sorted(images), parts)

        def fingerprint() -> dict[str, Any]:
            return {
                "version": winsrc.CACHE_VERSION,
                "scenes": [
                    {
                        "image": _identity(self.catalogue[p].image_path),
                        "grid": images[p].grid.fingerprint(),
                        "crops": _identity(self.catalogue[p].crops_path),
                    }
                    for p in sorted(images)
                ],
                "shared_crops": _identity(self.shared_crops_path),
                "layer": layer,
                "patch_size": size,
                **keys,
            }

        try:
            index, from_cache = winsrc.cached_window_index(cache, fingerprint, build)
        except _Abandon:
            return None
        return SceneWindows(index, from_cache, counts["features"], counts["unassigned"])

    def _setup(
        self, images: dict[int, ImageInfo], masks: dict[int, tuple[MaskInfo, MaskDecoder]], windows: SceneWindows
    ) -> None:
        options = self.options
        size: int = options["patch_size"]
        index = windows.index
        assert index.scene is not None
        scene_of = index.scene
        counts = np.bincount(scene_of, minlength=len(self.catalogue))
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.samplers: list[PatchSampler] = []
        found_warnings: list[str] = []
        empty: list[int] = []
        for scene in self.catalogue:
            p = scene.position
            image, (mask, decoder) = images[p], masks[p]
            local = winsrc.WindowIndex(
                index.row_off[starts[p] : starts[p + 1]],
                index.col_off[starts[p] : starts[p + 1]],
                winsrc.WindowReport(kept=int(counts[p])),
            )
            info = _windows_info(local, scene, size, image, windows.from_cache, self.shared_crops_path)
            inspection = Inspection(
                options={**options, "image_path": image.path, "mask_path": mask.path, "crops_path": info.source},
                names={},
                image=image,
                mask=mask,
                decoder=decoder,
                windows=info,
            )
            # An epoch visits every scene: their warped masks share GDAL's block cache.
            sampler = PatchSampler.from_inspection(inspection, grid_views=len(self.catalogue))
            self.samplers.append(sampler)
            if not len(local):
                empty.append(p)
            found_warnings += [
                f"{scene.where}: {text}"
                for text in window_warnings(image, mask, info, size, options["mask_fill_value"])
            ]
        #: All windows: scene position, row and column offsets (int64, read-only).
        self.index = index
        self.windows_info = windows
        self._starts = starts
        #: Positions of scenes without any window (reported and skipped).
        self.empty_scenes: tuple[int, ...] = tuple(empty)
        first = self.samplers[0]
        #: Descriptions for reports: the catalogue, and the shared mask (or "per-scene masks").
        self.image_path = f"{len(self.catalogue)} scenes of {self.source}"
        self.mask_path = self.shared_mask_path or "per-scene masks"
        #: The first scene's image record (the scenes agree on its bands and dtype).
        self.image_info = first.image_info
        self.patch_size: int = size
        self.selected_bands = first.selected_bands
        self.image_dtype = first.image_dtype
        self.n_classes: int = options["n_classes"]
        self.mask_fill_value: int = options["mask_fill_value"]
        self.color_map = options["color_map"]
        self.decoder = first.decoder
        self.on_read_error: str = options["on_read_error"]
        self.window_index_cache = options["window_index_cache"]
        #: Samples this process served from a replacement window (``on_read_error="skip"``).
        self.skipped = 0
        #: Positions of the windows this process found unreadable (never read again here).
        self.unreadable: set[int] = set()
        self._open = _OpenScenes()
        for text in dict.fromkeys(found_warnings):
            warnings.warn(text, stacklevel=3)
        log.info(
            "crossgeo: %d window(s) in %d scene(s) of %s%s",
            len(index),
            len(self.catalogue),
            self.source,
            f" (cached in {self.window_index_cache})" if windows.from_cache else "",
        )
        if empty:
            log.warning(
                "crossgeo: %d of %d scene(s) have no valid windows and are skipped: %s%s",
                len(empty),
                len(self.catalogue),
                ", ".join(f"{self.catalogue[p].where} ({self.catalogue[p].image_path})" for p in empty[:10]),
                " ..." if len(empty) > 10 else "",
            )
        if windows.unassigned:
            log.warning(
                "crossgeo: %d of %d feature(s) of %s lie wholly inside no scene (their window would cross a scene "
                "edge or lie outside every scene) and are not used.",
                windows.unassigned,
                windows.shared_features,
                self.shared_crops_path,
            )
        if len(index) == 0:
            log.warning("crossgeo: %s: no valid windows in any scene; this sampler has length 0.", self.source)

    # ------------------------------------------------------------------ sequence

    def __len__(self) -> int:
        return len(self.index)

    @property
    def scenes(self) -> int:
        """The number of scenes in the catalogue (skipped empty ones included)."""
        return len(self.catalogue)

    @property
    def scene(self) -> np.ndarray:
        """Scene position of every window (int64)."""
        assert self.index.scene is not None
        return self.index.scene

    @property
    def row_off(self) -> np.ndarray:
        """Row offsets of all windows, each on its scene's grid (int64, read-only)."""
        return self.index.row_off

    @property
    def col_off(self) -> np.ndarray:
        """Column offsets of all windows, each on its scene's grid (int64, read-only)."""
        return self.index.col_off

    def windows_per_scene(self) -> np.ndarray:
        """Window count of every scene (int64, catalogue order)."""
        return np.diff(self._starts)

    def _read_window(self, position: int, mask_dtype: Any = np.int64) -> Patch:
        scene = int(self.scene[position])
        row_off, col_off = int(self.row_off[position]), int(self.col_off[position])
        with self.opened(scene) as sampler:
            patch = sampler.read(row_off, col_off, index=position, mask_dtype=mask_dtype)
        return attrs.evolve(patch, scene=scene)

    def read(self, scene: int, row_off: int, col_off: int, *, index: int = -1) -> Patch:
        """The patch of any window on scene ``scene``'s grid."""
        with self.opened(scene) as sampler:
            patch = sampler.read(row_off, col_off, index=index)
        return attrs.evolve(patch, scene=scene)

    def read_mask(self, row_off: int, col_off: int, *, scene: int) -> tuple[np.ndarray, np.ndarray]:
        """Only the mask of a window of scene ``scene``: (classes (H, W) int64, valid (H, W) bool)."""
        with self.opened(scene) as sampler:
            return sampler.read_mask(row_off, col_off)

    # ------------------------------------------------------------------ handles

    def _state(self) -> _OpenScenes:
        state = self._open
        if state.pid != os.getpid():  # a forked process: the parent's record means nothing here
            state = self._open = _OpenScenes()
        return state

    @contextmanager
    def opened(self, scene: int) -> Iterator[PatchSampler]:
        """Scene ``scene``'s `PatchSampler` to read from, within the ``max_open`` bound.

        While the block runs the scene counts as in use (never closed); entering it closes the
        least recently used idle scenes beyond ``max_open``.
        """
        if not 0 <= scene < len(self.samplers):
            raise IndexError(f"scene {scene} out of range for {len(self.samplers)} scenes.")
        state = self._state()
        with state.lock:
            state.busy[scene] = state.busy.get(scene, 0) + 1
            state.order[scene] = None
            state.order.move_to_end(scene)
            if len(state.order) > self.max_open:
                for victim in list(state.order):
                    if len(state.order) <= self.max_open:
                        break
                    if not state.busy.get(victim):
                        del state.order[victim]
                        self.samplers[victim].close()
        try:
            yield self.samplers[scene]
        finally:
            with state.lock:
                state.busy[scene] -= 1

    @property
    def open_scenes(self) -> tuple[int, ...]:
        """Scenes this process keeps open, least recently used first."""
        return tuple(self._state().order)

    def release_inherited_handles(self) -> None:
        """Forget the handles a forked process inherited from its parent (DataLoader workers call it)."""
        self._state()
        for sampler in self.samplers:
            sampler.release_inherited_handles()

    def close(self) -> None:
        """Close the handles this process opened (they reopen on the next read)."""
        state = self._state()
        with state.lock:
            for scene in list(state.order):
                if not state.busy.get(scene):
                    del state.order[scene]
                    self.samplers[scene].close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open = _OpenScenes()

    def __repr__(self) -> str:
        return (
            f"SceneSampler({self.source!r}, scenes={len(self.catalogue)}, patch_size={self.patch_size}, "
            f"windows={len(self)}, max_open={self.max_open})"
        )


# --------------------------------------------------------------------------- helpers


class _Abandon(Exception):
    """Planning found problems (already recorded): build no cache."""


def _identity(path: str | None) -> Any:
    """A file's identity for the cache fingerprint: resolved path, size, mtime (remote: the path)."""
    if path is None:
        return None
    if is_remote(path):
        return path
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def _concatenate(positions: Sequence[int], parts: Sequence[winsrc.WindowIndex]) -> winsrc.WindowIndex:
    if not parts:
        empty = np.zeros(0, np.int64)
        return winsrc.WindowIndex(empty, empty.copy(), winsrc.WindowReport(), empty.copy())
    scene = np.concatenate([np.full(len(p), s, dtype=np.int64) for s, p in zip(positions, parts)])
    report = winsrc.WindowReport(
        **{f.name: sum(getattr(p.report, f.name) for p in parts) for f in attrs.fields(winsrc.WindowReport)}
    )
    return winsrc.WindowIndex(
        np.concatenate([p.row_off for p in parts]).astype(np.int64),
        np.concatenate([p.col_off for p in parts]).astype(np.int64),
        report,
        scene,
    )


def _windows_info(
    index: winsrc.WindowIndex, scene: Scene, size: int, image: ImageInfo, from_cache: bool, shared: str | None
) -> WindowsInfo:
    rows = np.clip(index.row_off + size, 0, image.grid.height) - np.clip(index.row_off, 0, image.grid.height)
    cols = np.clip(index.col_off + size, 0, image.grid.width) - np.clip(index.col_off, 0, image.grid.width)
    inside = rows * cols / float(size * size)
    source = scene.crops_path or f"{shared} (features assigned to {scene.where})"
    return WindowsInfo(
        index=index,
        source=source,
        from_cache=from_cache,
        outside_share=float(1.0 - inside.mean()) if len(index) else 0.0,
        partly_outside=int(np.count_nonzero(inside < 1.0)),
    )


def _progress(items: Sequence[Scene], what: str) -> Any:
    """A tqdm bar when tqdm is installed (the ``cli`` extra) and the catalogue is large, else a log line."""
    if len(items) < 20:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        log.info("crossgeo: %s (%d scenes)", what, len(items))
        return items
    return tqdm(items, desc=what, unit="scene", disable=None, leave=False)
