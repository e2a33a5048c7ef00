"""Inspecting a catalogue of scenes: every scene through `crossgeo.inspection`'s steps, then one record.

`inspect_catalogue` -> `CatalogueInspection` -> `crossgeo.SceneSampler.from_inspection`, as
`crossgeo.inspection.inspect_sources` -> `Inspection` -> `PatchSampler.from_inspection` for
one image. The record holds each scene's own `Inspection` (image, mask, decoder, windows),
the windows of the whole catalogue with the shared features' assignment, and every problem
as a `SceneProblem` (step, scene, file, error): ``crossgeo validate`` prints them and
`SceneSampler` raises one `CatalogueError` carrying them. No decision reads an error's text.

What a catalogue adds to the single-image steps:

* a shared mask (one GeoTIFF/VRT over the whole region, any CRS) for every scene without its
  own, opened once for all of them;
* a shared vector file of crops whose features go to the first scene, in catalogue order,
  that holds their whole window (each feature once; features in no scene are counted);
* one window index over all scenes, cached as a whole (``window_index_cache``);
* every bad scene reported at once, each named by its position (and line) and file.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np

from crossgeo import windows as winsrc
from crossgeo.errors import (
    CatalogueError,
    ConfigError,
    CrossgeoError,
    LayerNotFoundError,
    NoOverlapError,
    OptionError,
    RasterError,
)
from crossgeo.inspection import (
    SOURCE_KEYS,
    ImageInfo,
    Inspection,
    MaskInfo,
    Problem,
    WindowsInfo,
    _check_scalar_options,
    _inspect_any_image,
    _outside_share,
    _source_entries,
    check_patch_size,
    check_path,
    inspect_image_sources,
    inspect_mask,
    inspect_windows,
    is_multi_source,
    window_warnings,
)
from crossgeo.io import is_remote, open_raster
from crossgeo.masks import MaskDecoder
from crossgeo.options import (
    REQUIRED,
    SAMPLER_OPTIONS,
    TIME_SELECTIONS,
    check_names,
    check_pathlike,
    resolve_sampler_options,
)

__all__ = [
    "COVERAGE_SAMPLES",
    "ID_COLUMN",
    "SCENE_COLUMNS",
    "CatalogueInspection",
    "Scene",
    "SceneProblem",
    "SceneWindows",
    "inspect_catalogue",
    "read_catalogue",
    "write_catalogue",
]

log = logging.getLogger("crossgeo")

SCENE_COLUMNS = ("image_path", "mask_path", "crops_path", "time")
"""What a scene of the catalogue may set (``image_path`` is required; ``time`` dates it for ``group_by``)."""
TIME_COLUMN = "time"
"""The column dating each row of a time-series catalogue (ISO date or datetime)."""
ID_COLUMN = "id"
"""An optional column naming each scene in messages (`crossgeo.stac_scenes` writes the STAC item id there)."""
COVERAGE_SAMPLES = 32
"""Pixel centres per axis measuring each scene's mask coverage (the single-image default is 128)."""
_PER_SCENE = ("image_path", "image_mbtiles_path", "mask_path", "crops_path", "patch_size")
"""Sampler options a catalogue takes elsewhere than ``**options`` (from its scenes, or as its own arguments)."""

T = TypeVar("T")
_CAUGHT = (CrossgeoError, OSError, ValueError, TypeError)
"""What a step records as a problem instead of raising (as `crossgeo.inspection.inspect_sources` does)."""


# --------------------------------------------------------------------------- records


@attrs.frozen
class Scene:
    """One row of the catalogue, with its paths resolved."""

    position: int
    """The scene's position in the catalogue (`Patch.scene`)."""
    image_path: Any
    """One path, or several sources (a list of paths/mappings or a mapping ``name -> path | mapping``)."""
    mask_path: str | None
    """Its own mask, or None for the shared one."""
    crops_path: str | None
    """Its own windows, or None for the shared vector features."""
    where: str
    """How messages name it: ``scene 3 (line 5 of scenes.csv)``, ``scene 0 (id 'S2A_1', ...)``."""
    dates: tuple[str, ...] = ()
    """A time-series group (``group_by``): the image of each date, in time order (empty otherwise)."""
    times: tuple[np.datetime64, ...] = ()
    """The date of each of `dates` (datetime64[s])."""
    rows: tuple[int, ...] = ()
    """The catalogue rows of each of `dates`."""
    reference: int = 0
    """Which of `dates` gives the group's reference grid (the group's first row)."""

    @property
    def source_names(self) -> tuple[str, ...]:
        """The image source name of each date (its ISO time): `Patch.source_valid` follows this order."""
        return tuple(str(np.datetime_as_string(t, unit="auto")) for t in self.times)

    @property
    def image_label(self) -> str:
        """The image for messages: its path, or its sources ``B04=a.tif, B08=b.tif``."""
        return describe_image(self.image_path)


def describe_image(value: Any) -> str:
    """An ``image_path`` value for messages: the path, or ``name=path`` per source."""
    if not is_multi_source(value):
        return str(value)
    items = value.items() if isinstance(value, Mapping) else [(None, v) for v in value]
    parts = []
    for name, spec in items:
        path = spec.get("path") if isinstance(spec, Mapping) else spec
        name = name if name is not None else spec.get("name") if isinstance(spec, Mapping) else None
        parts.append(f"{name}={path}" if name else str(path))
    return ", ".join(parts)


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
    cache_state: str = "none"
    """What happened to ``window_index_cache`` (one of `crossgeo.windows.CACHE_STATES`)."""


@attrs.frozen
class SceneProblem:
    """One thing that stops a catalogue from working: the step, the scene, and the error raised for it."""

    step: str
    """``options``, ``catalogue``, ``image``, ``mask`` or ``windows``."""
    error: Exception
    scene: int | None = None
    """The scene's position, or None for the catalogue as a whole (options, the shared files)."""
    prefix: str = ""
    """What `message` puts before the error's text: the scene and its file (``scene 1, a.tif: ``)."""

    @property
    def message(self) -> str:
        return self.prefix + (" ".join(str(self.error).split()) or type(self.error).__name__)


@attrs.frozen(eq=False)
class CatalogueInspection:
    """Every scene's inspection, the catalogue's windows and all problems and warnings, at once.

    ``inspections`` has one `Inspection` per scene (catalogue order); a step that could not
    run for a scene leaves its record None and the scene's own problems in it. ``windows``
    holds the windows of every scene whose image is usable (None when they could not be
    planned); a record is `ok` - a sampler can be built from it - without any problem.
    """

    source: str
    """The catalogue, for messages (its file, or ``the list of scenes``)."""
    options: dict[str, Any]
    """The checked options every scene shares."""
    scenes: tuple[Scene, ...] = ()
    inspections: tuple[Inspection, ...] = ()
    shared_mask_path: str | None = None
    shared_crops_path: str | None = None
    windows: SceneWindows | None = None
    problems: tuple[SceneProblem, ...] = ()
    warnings: tuple[str, ...] = ()
    """Per-scene warnings (`crossgeo.inspection.window_warnings`), each naming its scene."""
    group_by: str | None = None
    """The column grouping rows into time series (None: every row is its own scene)."""
    time_steps: int | None = None
    """T of a time-series catalogue (resolved: the largest group when not given)."""
    time_selection: str = "all"
    skipped_dates: int = 0
    """Dates of the catalogue not used (``time_selection="latest"`` keeps the latest ``time_steps``)."""

    @property
    def ok(self) -> bool:
        return not self.problems and self.windows is not None

    def windows_per_scene(self) -> np.ndarray:
        """Window count of every scene (int64, catalogue order; zeros before the windows are planned)."""
        if self.windows is None or self.windows.index.scene is None:
            return np.zeros(len(self.scenes), np.int64)
        return np.bincount(self.windows.index.scene, minlength=len(self.scenes)).astype(np.int64)

    def describe_problems(self) -> str:
        """The problems as one message: a title and one line per problem (what `CatalogueError` says)."""
        where = f"{len(self.scenes)} scene(s) of {self.source}" if self.scenes else self.source
        return _listing(
            f"{len(self.problems)} problem(s) in {where} (fix or remove these rows)",
            [p.message for p in self.problems],
        )


# --------------------------------------------------------------------------- the catalogue table


def _fix_hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _resolve_image(value: Any, base: Path | None) -> Any:
    """An ``image_path`` cell: one path, or several sources (a list/mapping, or its JSON text in a table cell).

    A string starting with ``[`` or ``{`` is JSON (a CSV/Parquet cell holding a list or mapping
    of sources). Relative paths of the sources start at ``base`` like single paths; remote
    hrefs and the sources' other keys are kept as given.
    """
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise TypeError(
                f"image_path holds a list/mapping of sources as JSON that cannot be parsed ({error}); write the cell "
                'as JSON, e.g. {"B04": "B04.tif", "B08": {"path": "B08.tif", "scale": 0.0001}}'
            ) from None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays from pandas/Parquet
        value = value.tolist()
    if not is_multi_source(value):
        return _resolve(value, base)
    if isinstance(value, Mapping):
        return {key: _resolve_source(spec, base) for key, spec in value.items()}
    return [_resolve_source(spec, base) for spec in value]


def _resolve_source(spec: Any, base: Path | None) -> Any:
    if isinstance(spec, Mapping):
        spec = {k: v for k, v in spec.items() if v is not None or k not in SOURCE_KEYS}  # Parquet structs: unset
        if "path" in spec:
            spec["path"] = _resolve(spec["path"], base)
        return spec
    return _resolve(spec, base)


def _scene_key(value: Any) -> str:
    """What identifies a scene's image (duplicate rows): its path(s), local ones made absolute."""
    if is_multi_source(value):
        specs = value.values() if isinstance(value, Mapping) else value
        paths = [s.get("path") if isinstance(s, Mapping) else s for s in specs]
        return json.dumps([_scene_key(p) for p in paths])
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else repr(value)
    return text if is_remote(text) else os.path.abspath(text)


def _resolve(value: Any, base: Path | None) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"a path (str) was expected, got {type(value).__name__}: {value!r}")
    path = os.fspath(value)
    if base is not None and not is_remote(path) and not Path(path).is_absolute():
        return str(base / path)
    return path


def _catalogue_rows(scenes: Any) -> tuple[list[Any], str, Path | None, int]:
    """The rows of a catalogue, how messages name it, the folder relative paths start at, the first row's line.

    Raises `ConfigError` for what makes the whole catalogue unusable (no such file, an empty
    table, no ``image_path`` column).
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
    return rows, described, base, first_line


def _scenes_of(
    rows: Sequence[Any], described: str, base: Path | None, first_line: int
) -> tuple[list[Scene], list[SceneProblem]]:
    """The scenes of the catalogue's rows, and a problem for each unusable row (named by position and line)."""
    out: list[Scene] = []
    problems: list[SceneProblem] = []
    seen: dict[str, int] = {}

    def bad(position: int, text: str) -> None:
        problems.append(SceneProblem("catalogue", ConfigError(text), position))

    for position, row in enumerate(rows):
        named = row.get(ID_COLUMN) if isinstance(row, Mapping) else None
        details = ([f"id {named!r}"] if named not in (None, "") else []) + (
            [f"line {position + first_line} of {described}"] if first_line else []
        )
        where = f"scene {position}" + (f" ({', '.join(details)})" if details else "")
        if not isinstance(row, Mapping):
            bad(position, f"{where} is a {type(row).__name__}, not a mapping with image_path.")
            continue
        for key in row:
            # Extra columns are kept (ids, STAC properties such as a "tile"); a near miss of a path column is a typo.
            if key not in SCENE_COLUMNS and _fix_hint(str(key), SCENE_COLUMNS[:3]):
                bad(
                    position,
                    f"{where} has the unknown key {key!r}.{_fix_hint(str(key), SCENE_COLUMNS[:3])} A scene sets "
                    f"{', '.join(SCENE_COLUMNS)}.",
                )
        if row.get("image_path") in (None, ""):
            bad(
                position,
                f"{where} has no image_path"
                + ("" if position else f" ({described} has the columns/keys {sorted(map(str, row))})")
                + ". Every scene needs an image_path column/key.",
            )
            continue
        try:
            scene = Scene(
                position=position,
                image_path=_resolve_image(row["image_path"], base) or "",
                mask_path=_resolve(row.get("mask_path"), base),
                crops_path=_resolve(row.get("crops_path"), base),
                where=where,
            )
        except TypeError as error:
            bad(position, f"{where}: {error}.")
            continue
        key = _scene_key(scene.image_path)
        if key in seen:
            bad(
                position,
                f"{where} repeats scene {seen[key]}'s image {scene.image_label}; each scene must appear once "
                "(remove the duplicate row).",
            )
        seen.setdefault(key, position)
        out.append(scene)
    return out, problems


def read_catalogue(scenes: Any) -> tuple[list[Scene], str]:
    """The scenes of a list of mappings or a CSV/Parquet table (path, pandas DataFrame, pyarrow Table).

    Relative paths in a table file start at the table's folder; in a list they start at the
    working directory. Returns the scenes and a description of the catalogue for messages.
    Raises `ConfigError` for an empty catalogue or a missing ``image_path`` column/key, and a
    `CatalogueError` listing each row that is not a mapping, misspells a column, has no
    image path or repeats a scene.
    """
    rows, described, base, first_line = _catalogue_rows(scenes)
    out, problems = _scenes_of(rows, described, base, first_line)
    if problems:
        raise _rows_error(described, problems)
    return out, described


def write_catalogue(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> str:
    """Write a catalogue (a list of mappings, e.g. `crossgeo.stac_scenes`) as a CSV or Parquet table.

    A list or mapping of sources in ``image_path`` is written as JSON text, which
    `read_catalogue` parses back; other list/mapping cells are JSON too. Columns are the union
    of the rows' keys in first-seen order (a row without a key leaves it empty). Returns the path.
    """
    import pyarrow as pa

    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"The catalogue {str(out)!r} must be written as .csv or .parquet (give that suffix).")
    names = list(dict.fromkeys(str(k) for row in rows for k in row))

    def cell(value: Any) -> Any:
        if isinstance(value, (Mapping, list, tuple)):
            return json.dumps(value)
        return value

    columns = {name: [cell(row.get(name)) for row in rows] for name in names}
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    return str(out)


def _rows_error(described: str, problems: Sequence[SceneProblem]) -> CatalogueError:
    title = f"{described}: {len(problems)} problem(s) with the catalogue"
    return CatalogueError(_listing(title, [p.message for p in problems]), tuple(problems))


def _listing(title: str, problems: Sequence[str], limit: int = 50) -> str:
    shown = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"  ... and {len(problems) - limit} more")
    return f"{title}:\n" + "\n".join(shown)


def _shared_options(patch_size: Any, mask_path: Any, crops_path: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler options every scene shares, checked (`OptionError` / `ConfigError` for the first bad one)."""
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
    resolved, names = resolve_sampler_options(
        {"image_path": "", "mask_path": mask_path, "crops_path": crops_path, "patch_size": patch_size, **options},
        "SceneSampler",
    )
    for option in ("mask_path", "crops_path"):  # the shared files: paths (whether they exist is a scene step)
        value = resolved[option]
        resolved[option] = None if value is None else check_pathlike(value, option)
    return _check_scalar_options(resolved, names)


# --------------------------------------------------------------------------- time series


def check_time_options(group_by: Any, time_steps: Any, time_selection: Any) -> tuple[str | None, int | None, str]:
    """``group_by``, ``time_steps`` and ``time_selection`` checked (`OptionError` / `ConfigError` for a bad one)."""
    if group_by is not None and (not isinstance(group_by, str) or not group_by):
        raise OptionError(f"group_by must be the name of a catalogue column (str) or None, got {group_by!r}.")
    if time_steps is not None and (
        isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1
    ):
        raise ConfigError(f"time_steps must be an integer >= 1 (the dates per patch) or None, got {time_steps!r}.")
    if time_selection not in TIME_SELECTIONS:
        raise ConfigError(
            f"time_selection must be one of {', '.join(map(repr, TIME_SELECTIONS))}, got {time_selection!r}."
            + _fix_hint(str(time_selection), TIME_SELECTIONS)
        )
    if group_by is None and (time_steps is not None or time_selection != "all"):
        raise ConfigError(
            "time_steps / time_selection apply to a time series: set group_by=<column naming each place> (and a "
            f"{TIME_COLUMN!r} column dating each row), or remove them."
        )
    if time_selection == "latest" and time_steps is None:
        raise ConfigError('time_selection="latest" keeps the latest time_steps dates: set time_steps (e.g. 6).')
    return group_by, None if time_steps is None else int(time_steps), str(time_selection)


def parse_time(value: Any) -> np.datetime64:
    """A ``time`` cell as datetime64[s]: an ISO 8601 date/datetime string, a date/datetime, or a datetime64.

    A time with a UTC offset (``Z``, ``+02:00``, an aware datetime) is converted to UTC. Raises
    `ValueError` for anything else (the caller names the row and the fix).
    """
    import datetime

    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError as error:
            raise ValueError(f"{value!r} is not an ISO date or datetime") from error
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if not isinstance(value, (datetime.date, np.datetime64)) or (isinstance(value, np.datetime64) and np.isnat(value)):
        raise ValueError(f"{value!r} is not a date")
    parsed: Any = np.asarray(value, dtype="datetime64[s]")[()]
    return parsed


def _dated_rows(
    rows: Sequence[Any], catalogue: Sequence[Scene], group_by: str
) -> tuple[dict[str, list[tuple[np.datetime64, Scene]]], list[SceneProblem]]:
    """The catalogue's scenes by ``group_by`` value, each with its parsed ``time``; a problem per undated row."""
    problems: list[SceneProblem] = []
    groups: dict[str, list[tuple[np.datetime64, Scene]]] = {}
    for scene in catalogue:
        row = rows[scene.position]
        key = row.get(group_by)
        if key is None or key == "" or (isinstance(key, float) and np.isnan(key)):
            problems.append(
                SceneProblem(
                    "catalogue",
                    ConfigError(f"{scene.where} ({scene.image_path}) has no {group_by!r} value (group_by); fill it."),
                    scene.position,
                )
            )
            continue
        if row.get(TIME_COLUMN) in (None, ""):
            problems.append(
                SceneProblem(
                    "catalogue",
                    ConfigError(
                        f"{scene.where} ({scene.image_path}) has no {TIME_COLUMN!r} value; a time series dates every "
                        f"row: add a {TIME_COLUMN!r} column with ISO dates (2021-06-30 or 2021-06-30T10:42:00)."
                    ),
                    scene.position,
                )
            )
            continue
        try:
            when = parse_time(row[TIME_COLUMN])
        except ValueError as error:
            problems.append(
                SceneProblem(
                    "catalogue",
                    ConfigError(
                        f"{scene.where} ({scene.image_path}): the {TIME_COLUMN!r} value {row[TIME_COLUMN]!r} is not "
                        f"a date ({error}); write it as an ISO date or datetime (2021-06-30 or 2021-06-30T10:42:00)."
                    ),
                    scene.position,
                )
            )
            continue
        groups.setdefault(str(key), []).append((when, scene))
    return groups, problems


def _group_error(
    where: str, ordered: Sequence[tuple[np.datetime64, Scene]], first: Scene, steps: int, selection: str
) -> ConfigError | None:
    """Why a group (its dates ``ordered`` in time; ``first`` its first row, whose mask and crops it uses) cannot be
    one time-series scene, or None."""
    count = len(ordered)
    times = [t for t, _ in ordered]
    repeated = [str(a) for a, b in itertools.pairwise(times) if a == b]
    if repeated:
        return ConfigError(
            f"{where} has two rows at {TIME_COLUMN} {repeated[0]}; each date of a place appears once "
            "(remove the duplicate row, or give the rows different group values)."
        )
    disagree = [
        s
        for _, s in ordered
        if s.mask_path not in (None, first.mask_path) or s.crops_path not in (None, first.crops_path)
    ]
    if disagree:
        return ConfigError(
            f"{where}: {disagree[0].where} sets mask_path/crops_path {disagree[0].mask_path!r}/"
            f"{disagree[0].crops_path!r} but the group's first row sets {first.mask_path!r}/"
            f"{first.crops_path!r}; a group has one mask and one set of windows (on its first row's "
            "grid): give them on the first row only, or make the rows agree."
        )
    if count > steps and selection == "all":
        return ConfigError(
            f"{where} has {count} dates but time_steps is {steps} and time_selection is 'all'; "
            f"raise time_steps to {count}, or set time_selection: latest (the latest {steps}) "
            "or random (drawn per sample)."
        )
    return None


def _time_groups(
    rows: Sequence[Any], catalogue: Sequence[Scene], group_by: str, time_steps: int | None, selection: str
) -> tuple[list[Scene], list[SceneProblem], int, int]:
    """The time-series scenes of a catalogue: its rows grouped by ``group_by``, each group's dates in time order.

    Returns the groups (positions 0.., in order of their first row), a problem per bad row or
    group (a ``time`` that is not a date, a missing group value, two rows at one time, a group
    longer than ``time_steps`` under ``"all"``, rows disagreeing on mask/crops), how many dates
    ``"latest"`` left out, and T.
    """
    problems: list[SceneProblem] = []
    if all(group_by not in row for row in rows if isinstance(row, Mapping)):
        keys = sorted({str(k) for row in rows if isinstance(row, Mapping) for k in row})
        raise ConfigError(
            f"group_by={group_by!r} but the catalogue has no {group_by!r} column (it has {keys})."
            f"{_fix_hint(group_by, keys)} Name the column that says which place each row shows."
        )
    groups, found = _dated_rows(rows, catalogue, group_by)
    problems += found
    longest = max((len(members) for members in groups.values()), default=0)
    steps = time_steps if time_steps is not None else longest
    out: list[Scene] = []
    skipped = 0
    for name, members in groups.items():
        first = members[0][1]  # the group's first row: its reference grid, mask and crops
        where = f"group {name!r} ({group_by}; rows {', '.join(str(s.position) for _, s in members)})"
        ordered = sorted(members, key=lambda m: m[0])
        error = _group_error(where, ordered, first, steps, selection)
        if error is not None:
            problems.append(SceneProblem("catalogue", error, first.position))
            continue
        reference = first
        if selection == "latest" and len(ordered) > steps:
            skipped += len(ordered) - steps
            ordered = ordered[-steps:]
            if first not in [s for _, s in ordered]:  # the first row's date was left out: the earliest kept one
                reference = ordered[0][1]
        out.append(
            Scene(
                position=len(out),
                image_path=reference.image_path,
                mask_path=first.mask_path,
                crops_path=first.crops_path,
                where=where,
                dates=tuple(s.image_path for _, s in ordered),
                times=tuple(t for t, _ in ordered),
                rows=tuple(s.position for _, s in ordered),
                reference=[s for _, s in ordered].index(reference),
            )
        )
    return out, problems, skipped, steps


# --------------------------------------------------------------------------- the steps


def inspect_catalogue(
    scenes: Any,
    patch_size: Any = REQUIRED,
    *,
    mask_path: Any = None,
    crops_path: Any = None,
    collect: bool = False,
    group_by: Any = None,
    time_steps: Any = None,
    time_selection: Any = "all",
    **options: Any,
) -> CatalogueInspection:
    """Inspect every scene of a catalogue (`crossgeo.SceneSampler`'s arguments, without ``max_open``).

    The options and the catalogue table are checked first; ``collect=False`` raises their
    first problem (construction; bad rows raise one `CatalogueError`), ``collect=True``
    records it and returns (``crossgeo validate``). Then every scene's image and mask are
    inspected and the windows of every usable image planned; problems of these steps are
    always recorded, never raised, so every bad scene is reported at once. The windows go
    through ``window_index_cache`` only when nothing else is wrong (the cache covers the
    whole catalogue, so a catalogue with problems neither reads nor writes it).

    With ``group_by`` the rows of one group (one place at several dates, each dated by its
    ``time`` column) become one scene (`_time_groups`): its image is one source per date, in
    time order, each brought onto the grid of the group's first row; its mask and windows are
    the first row's.
    """
    problems: list[SceneProblem] = []

    def step(name: str, run: Callable[[], T]) -> T | None:
        if not collect:
            return run()
        try:
            return run()
        except _CAUGHT as error:
            problems.append(SceneProblem(name, error))
            return None

    shared = step("options", lambda: _shared_options(patch_size, mask_path, crops_path, options))
    timed = step("options", lambda: check_time_options(group_by, time_steps, time_selection))
    if shared is None or timed is None:
        return CatalogueInspection(source="the catalogue", options=shared or dict(options), problems=tuple(problems))
    table = step("catalogue", lambda: _catalogue_rows(scenes))
    if table is None:
        return CatalogueInspection(source="the catalogue", options=shared, problems=tuple(problems))
    catalogue, bad_rows = _scenes_of(*table)
    source, shared_mask, shared_crops = table[1], shared["mask_path"], shared["crops_path"]
    group_by, steps, selection = timed
    skipped_dates = 0
    if group_by is not None and not bad_rows:
        grouped = step("catalogue", lambda: _time_groups(table[0], catalogue, group_by, steps, selection))
        if grouped is None:
            return CatalogueInspection(source=source, options=shared, problems=tuple(problems))
        catalogue, bad_rows, skipped_dates, steps = grouped
        if skipped_dates:
            log.info("crossgeo: %s: %d date(s) left out by time_selection='latest'", source, skipped_dates)
    if bad_rows:
        if not collect:
            raise _rows_error(source, bad_rows)
        return CatalogueInspection(source=source, options=shared, problems=tuple(bad_rows))
    images = _inspect_images(catalogue, shared, problems)
    masks = _inspect_masks(catalogue, images, shared, problems)
    windows: SceneWindows | None = None
    if not any(s.crops_path for s in catalogue) and shared_crops is None:
        nowhere = ConfigError(
            f"{source}: no scene has a crops_path and no shared crops_path was given; add a crops_path column "
            "(offset tables or vector files) or pass crops_path=<vector file> for all scenes."
        )
        problems.append(SceneProblem("windows", nowhere))
    elif images:
        # Planned for every usable image, so a scene's bad crops show up next to the other scenes'
        # problems; cached only for a catalogue without problems (the cache is the whole catalogue's).
        windows, found = _plan_windows(catalogue, images, shared, source=source, use_cache=not problems)
        problems += found
    inspections, warned = _scene_inspections(catalogue, shared, images, masks, windows, problems)
    return CatalogueInspection(
        source=source,
        options=shared,
        scenes=tuple(catalogue),
        inspections=inspections,
        shared_mask_path=shared_mask,
        shared_crops_path=shared_crops,
        windows=windows,
        problems=tuple(problems),
        warnings=warned,
        group_by=group_by,
        time_steps=steps,
        time_selection=selection,
        skipped_dates=skipped_dates,
    )


def _bad(scene: Scene, path: str | None, step: str, error: Exception) -> SceneProblem:
    """A problem of one scene, named by its position (and line) and the file at fault."""
    return SceneProblem(step, error, scene.position, f"{scene.where}, {path}: ")


def _inspect_images(
    catalogue: Sequence[Scene], options: Mapping[str, Any], problems: list[SceneProblem]
) -> dict[int, ImageInfo]:
    """Each scene's image step (grid, bands, dtype) plus a CRS to place it; the scenes must agree on bands and dtype."""
    images: dict[int, ImageInfo] = {}
    for scene in _progress(catalogue, "inspecting scene images"):
        try:
            image = _inspect_scene_image(scene, options)
            check_patch_size(options["patch_size"], image)
        except _CAUGHT as error:
            problems.append(_bad(scene, scene.image_label, "image", error))
            continue
        if image.grid.crs is None:
            no_crs = RasterError(
                "has no CRS, so it cannot be placed among the other scenes or the shared mask/crops; give the file "
                "a CRS (e.g. gdal_edit.py -a_srs EPSG:...)."
            )
            problems.append(_bad(scene, scene.image_label, "image", no_crs))
            continue
        images[scene.position] = image
    if not images:
        return images
    head = min(images)
    first = images[head]

    def bands(position: int) -> int:  # a time series' bands per date
        return len(images[position].bands) // max(1, len(catalogue[position].dates))

    agree = {p: i for p, i in images.items() if bands(p) == bands(head) and i.dtype == first.dtype}
    for position in sorted(images.keys() - agree.keys()):
        image, scene = images[position], catalogue[position]
        disagree = RasterError(
            f"reads {bands(position)} band(s) as {np.dtype(image.dtype)} but scene {head} "
            f"({catalogue[head].image_label}) reads {bands(head)} band(s) as {np.dtype(first.dtype)}; scenes "
            "must agree after selected_bands / image_dtype (set selected_bands to bands every scene has, or "
            "image_dtype: float32 / native)."
        )
        problems.append(_bad(scene, scene.image_label, "image", disagree))
    return agree


def _inspect_scene_image(scene: Scene, options: Mapping[str, Any]) -> ImageInfo:
    """A scene's image step; a time-series group's image is one source per date, on its reference date's grid."""
    if not scene.dates:  # one path, or a list/mapping of sources
        return _inspect_any_image({**options, "image_path": scene.image_path}, {"image_path": "image_path"})
    names = scene.source_names
    reference = names[scene.reference]
    if options["reference"] is not None:  # a date every group has, as the reference grid of every group
        try:
            wanted = parse_time(options["reference"])
        except ValueError as error:
            raise ConfigError(
                f"reference {options['reference']!r} must be a date of the time series (ISO, e.g. 2021-06-30): {error}."
            ) from error
        if wanted not in scene.times:
            raise ConfigError(
                f"reference {options['reference']!r} is no date of {scene.where} (its dates are {list(names)}); "
                "give a date every group has, or leave reference unset (each group's first row is its reference)."
            )
        reference = names[scene.times.index(wanted)]
    option = f"image_path (the dates of {scene.where})"
    sources, reference = _date_sources(scene, names, reference, options["selected_bands"], option)
    image = inspect_image_sources(
        sources,
        option=option,
        image_dtype=options["image_dtype"],
        resampling=options["image_resampling"],
        reference=reference,
        target_crs=options["target_crs"],
        target_resolution=options["target_resolution"],
    )
    per = len(image.sources) // len(names)  # sources per date
    counts = {tuple(len(s.bands) for s in image.sources[t * per : (t + 1) * per]) for t in range(len(names))}
    if len(counts) > 1:
        per_date = ", ".join(f"{s.name}: {len(s.bands)}" for s in image.sources)
        raise RasterError(
            f"the dates of a time series must have the same bands, but they read different band counts ({per_date}); "
            "set selected_bands to bands every date has."
        )
    return image


def _date_sources(
    scene: Scene, names: Sequence[str], reference: str, bands: Any, option: str
) -> tuple[dict[str, Any], str]:
    """A time series' image sources: one per date named by its time, or, where each date's ``image_path`` is a
    list/mapping of sources, each of them named ``<time>/<source>`` (dates in time order, each date's sources in
    its order); and the reference source (the reference date's, its first source).

    Every date must list the same sources (names and order), so channel c of each date is the same band.
    """
    if not any(is_multi_source(path) for path in scene.dates):
        one = {
            name: {"path": path} if bands is None else {"path": path, "bands": bands}
            for name, path in zip(names, scene.dates)
        }
        return one, reference
    if bands is not None:
        raise ConfigError(
            f"selected_bands applies to one image per date; the dates of {scene.where} list several sources: give "
            "each source its bands (e.g. {B11: {path: B11.tif, bands: [1]}}) and remove selected_bands."
        )
    out: dict[str, Any] = {}
    first: list[str] | None = None
    for name, path in zip(names, scene.dates):
        entries = _source_entries(path if is_multi_source(path) else [path], f"{option} at {name}")
        listed = [source for source, _ in entries]
        if first is None:
            first = listed
        elif listed != first:
            raise ConfigError(
                f"{option}: every date must list the same sources in the same order (each channel is one band of "
                f"every date), but {names[0]} lists {first} and {name} lists {listed}; give every row of the group "
                "the same source names."
            )
        out.update({f"{name}/{source}": spec for source, spec in entries})
    assert first is not None
    return out, f"{reference}/{first[0]}"


def _inspect_masks(
    catalogue: Sequence[Scene],
    images: Mapping[int, ImageInfo],
    options: Mapping[str, Any],
    problems: list[SceneProblem],
) -> dict[int, tuple[MaskInfo, MaskDecoder]]:
    """Each scene's mask step (`crossgeo.inspection.inspect_mask`) on its own mask or the shared one.

    The shared mask is opened once for all the scenes using it. When it overlaps none of
    them, that is one problem of the catalogue rather than one per scene.
    """
    shared_path: str | None = options["mask_path"]
    shared, shared_failed = None, False
    if shared_path is not None and any(s.mask_path is None for s in catalogue):
        try:
            shared = open_raster(check_path(shared_path, "mask_path"), "mask_path")
        except _CAUGHT as error:
            shared_failed = True
            problems.append(SceneProblem("mask", error, None, "the shared "))
    masks: dict[int, tuple[MaskInfo, MaskDecoder]] = {}
    no_overlap: set[int] = set()
    try:
        for scene in _progress(catalogue, "inspecting scene masks"):
            path = scene.mask_path or shared_path
            if path is None:
                missing = ConfigError(
                    "has no mask_path and no shared mask_path was given; add a mask_path column or pass "
                    "mask_path=... for all scenes."
                )
                problems.append(_bad(scene, scene.image_label, "mask", missing))
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
            except _CAUGHT as error:
                if scene.mask_path is None and isinstance(error, NoOverlapError):
                    no_overlap.add(scene.position)
                problems.append(_bad(scene, path, "mask", error))
    finally:
        if shared is not None:
            shared.close()
    if no_overlap and len(no_overlap) == len(images):
        example = catalogue[min(no_overlap)]
        problems[:] = [p for p in problems if p.scene not in no_overlap or not isinstance(p.error, NoOverlapError)]
        nowhere = NoOverlapError(
            f"The shared mask_path {shared_path} overlaps none of the {len(images)} scene(s) (e.g. {example.where}, "
            f"{example.image_label}). Check that the mask and the scenes carry the right CRS and cover the same region."
        )
        problems.append(SceneProblem("mask", nowhere))
    return masks


def _plan_windows(
    catalogue: Sequence[Scene],
    images: Mapping[int, ImageInfo],
    options: Mapping[str, Any],
    *,
    source: Any,
    use_cache: bool,
) -> tuple[SceneWindows | None, list[SceneProblem]]:
    """The windows of the scenes in ``images`` (through ``window_index_cache`` with ``use_cache``), or their problems.

    A scene without its own ``crops_path`` takes its share of the shared vector features
    (`_assign_features`). The cache is written only for windows without problems.
    """
    size: int = options["patch_size"]
    layer, shared_crops = options["crops_layer"], options["crops_path"]
    keys = {"row_off_key": options["row_off_key"], "col_off_key": options["col_off_key"]}
    needs_shared = {p: images[p] for p in images if not catalogue[p].crops_path}
    if needs_shared and shared_crops is None:
        missing = ConfigError(
            "has no crops_path and no shared crops_path was given; add its crops_path or pass crops_path=<vector file>."
        )
        return None, [_bad(catalogue[p], catalogue[p].image_label, "windows", missing) for p in sorted(needs_shared)]
    counts = {"features": 0, "unassigned": 0}

    def build() -> winsrc.WindowIndex:
        shared: dict[int, winsrc.WindowIndex] = {}
        problems: list[SceneProblem] = []
        if needs_shared:
            try:
                shared, counts["features"], counts["unassigned"] = _assign_features(
                    shared_crops, layer, needs_shared, size
                )
            except _CAUGHT as error:
                problems.append(SceneProblem("windows", error))
                raise CatalogueError(problems[0].message, problems) from error
        parts: list[winsrc.WindowIndex] = []
        for position in sorted(images):
            scene = catalogue[position]
            if scene.crops_path is None:
                parts.append(shared[position])
                continue
            try:
                parts.append(inspect_windows(scene.crops_path, images[position], size, crops_layer=layer, **keys).index)
            except _CAUGHT as error:
                problems.append(_bad(scene, scene.crops_path, "windows", error))
        if problems:  # raised, so that no cache is written; caught below
            raise CatalogueError(_listing("problems with the scenes' windows", [p.message for p in problems]), problems)
        return _concatenate(sorted(images), parts)

    def fingerprint() -> dict[str, Any]:
        return {
            "version": winsrc.CACHE_VERSION,
            "scenes": [
                {
                    "image": [_identity(d) for d in catalogue[p].dates]
                    or _image_identity(catalogue[p].image_path, images[p]),
                    "grid": images[p].grid.fingerprint(),
                    "crops": _identity(catalogue[p].crops_path),
                }
                for p in sorted(images)
            ],
            "shared_crops": _identity(shared_crops),
            "layer": layer,
            "patch_size": size,
            **keys,
        }

    cache = options["window_index_cache"] if use_cache else None
    inputs = {  # the cache may be none of these (crossgeo.windows.check_cache_not_input)
        "scenes": source,
        "image_path": [path for s in catalogue for path in (s.dates or (s.image_path,))],
        "mask_path": [options["mask_path"], *(s.mask_path for s in catalogue)],
        "crops_path": [shared_crops, *(s.crops_path for s in catalogue)],
    }
    try:
        index, state = winsrc.cached_window_index(cache, fingerprint, build, inputs)
    except CatalogueError as error:  # from build: the scenes' own problems
        return None, list(error.problems)
    except _CAUGHT as error:  # the cache file itself
        return None, [SceneProblem("windows", error)]
    return SceneWindows(index, state == "reused", counts["features"], counts["unassigned"], state), []


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
            raise LayerNotFoundError(f"crops_path {path}: no layer {layer!r} (crops_layer); the layers are {layers}.")
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


def _scene_inspections(
    catalogue: Sequence[Scene],
    options: Mapping[str, Any],
    images: Mapping[int, ImageInfo],
    masks: Mapping[int, tuple[MaskInfo, MaskDecoder]],
    windows: SceneWindows | None,
    problems: Sequence[SceneProblem],
) -> tuple[tuple[Inspection, ...], tuple[str, ...]]:
    """One `Inspection` per scene (its windows cut from the catalogue's), and the warnings naming their scene."""
    size: int = options["patch_size"]
    counts = np.zeros(len(catalogue), np.int64)
    if windows is not None and windows.index.scene is not None:
        counts = np.bincount(windows.index.scene, minlength=len(catalogue))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    inspections: list[Inspection] = []
    warned: list[str] = []
    for scene in catalogue:
        p = scene.position
        image = images.get(p)
        mask, decoder = masks.get(p, (None, None))
        info = None
        if windows is not None and image is not None:
            local = winsrc.WindowIndex(
                windows.index.row_off[starts[p] : starts[p + 1]],
                windows.index.col_off[starts[p] : starts[p + 1]],
                winsrc.WindowReport(kept=int(counts[p])),
            )
            info = _windows_info(local, scene, size, image, windows.from_cache, options["crops_path"])
        texts = window_warnings(image, mask, info, size, options["mask_fill_value"]) if image is not None else []
        warned += [f"{scene.where}: {text}" for text in texts]
        own = {
            "image_path": scene.image_path,
            "mask_path": mask.path if mask is not None else scene.mask_path or options["mask_path"],
            "crops_path": info.source if info is not None else scene.crops_path or options["crops_path"],
        }
        inspections.append(
            Inspection(
                options={**options, **own},
                names={},
                image=image,
                mask=mask,
                decoder=decoder,
                windows=info,
                problems=tuple(Problem(q.step, q.error) for q in problems if q.scene == p),
                warnings=tuple(texts),
            )
        )
    return tuple(inspections), tuple(dict.fromkeys(warned))


# --------------------------------------------------------------------------- helpers


def _identity(path: str | None) -> Any:
    """A file's identity for the cache fingerprint: resolved path, size, mtime, ``-wal`` (remote: the path)."""
    if path is None:
        return None
    if is_remote(path):
        return path
    return winsrc.file_identity(path)


def _image_identity(value: Any, image: ImageInfo) -> Any:
    """The image's part of the cache fingerprint: its file, or with sources the reference source's (windows
    are planned on its grid; the other sources do not change them)."""
    return _identity(image.raster.path if is_multi_source(value) else value)


def _concatenate(positions: Sequence[int], parts: Sequence[winsrc.WindowIndex]) -> winsrc.WindowIndex:
    if not parts:
        empty = np.zeros(0, np.int64)
        return winsrc.WindowIndex(empty, empty.copy(), winsrc.WindowReport(), empty.copy())
    scene = np.concatenate([np.full(len(p), s, dtype=np.int64) for s, p in zip(positions, parts)])
    report = winsrc.WindowReport(**{name: sum(getattr(p.report, name) for p in parts) for name in winsrc.REPORT_COUNTS})
    return winsrc.WindowIndex(
        np.concatenate([p.row_off for p in parts]).astype(np.int64),
        np.concatenate([p.col_off for p in parts]).astype(np.int64),
        report,
        scene,
    )


def _windows_info(
    index: winsrc.WindowIndex, scene: Scene, size: int, image: ImageInfo, from_cache: bool, shared: str | None
) -> WindowsInfo:
    share, partly = _outside_share(index, size, image.grid)
    source = scene.crops_path or f"{shared} (features assigned to {scene.where})"
    return WindowsInfo(index=index, source=source, from_cache=from_cache, outside_share=share, partly_outside=partly)


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
