"""The declared options, typed: one frozen attrs class per group, and the checks every entry point shares.

`SamplerOptions` (`crossgeo.PatchSampler`), `SceneOptions` (a catalogue of scenes) and
`AdapterOptions` (the framework adapters) declare each option once: its type, default,
one-line description (field metadata) and its check (the field's converter). The tables
`SAMPLER_OPTIONS`, `SCENE_OPTIONS` and `ADAPTER_OPTIONS` are views of those fields, and
`PatchSampler`, the drop-in ``MBTilesCropsGeoTifMaskDataset``, configuration mappings and
YAML files, ``crossgeo validate`` and the generated configuration reference read them;
nothing is derived from function signatures.

The checks (`check_int`, `check_seed`, `check_choice`, `check_bool`, `check_str`,
`check_pathlike`, `check_number`, `check_mapping`, `check_bands`) are the only ones: the
same mistake raises the same error class wherever it is made, in Python calls and in files:

* a value of the wrong type (``patch_size: "256"``, ``seed: true``): `OptionTypeError`,
  both a `ConfigError` (``ValueError``) and an `OptionError` (``TypeError``);
* a value of the right type out of range or not among the choices (``patch_size: 0``,
  ``seed: -1``, ``on_read_error: "ignore"``): `ConfigError` (``ValueError``);
* an unknown (or missing required) option name: `OptionError` (``TypeError``) with a
  "did you mean" suggestion.

Checks that need a file or rasterio (a path exists, a CRS parses, a colour map fits the
mask's bands) run in the inspection steps (`crossgeo.inspection`), which name the file.
This module is pure Python: importing it loads neither rasterio nor a framework.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs
import numpy as np

from crossgeo.errors import ConfigError, OptionError, OptionTypeError

__all__ = [
    "ADAPTER_OPTIONS",
    "ALIASES",
    "DROPIN_DATA_LOADER_OPTIONS",
    "DROPIN_OPTIONS",
    "GDAL_DEFAULTS",
    "IGNORED_DROPIN_OPTIONS",
    "IMAGE_DTYPES",
    "MISSING",
    "ON_READ_ERROR",
    "OUT_OF_RANGE",
    "REQUIRED",
    "SAMPLER_OPTIONS",
    "SCENE_OPTIONS",
    "SEED_MAX",
    "TIME_SELECTIONS",
    "AdapterOptions",
    "IgnoredOptionWarning",
    "Option",
    "SamplerOptions",
    "SceneOptions",
    "check_bands",
    "check_bool",
    "check_choice",
    "check_int",
    "check_mapping",
    "check_names",
    "check_number",
    "check_pathlike",
    "check_seed",
    "check_str",
    "option_rows",
    "resolve_sampler_options",
    "sampler_option_names",
    "to_plain",
]


class _Required:
    """Marks an option without a default."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()
"""The default of an option that must be given."""

IMAGE_DTYPES = ("uint8", "uint16", "float32", "native")
"""The choices of ``image_dtype``."""
ON_READ_ERROR = ("raise", "skip")
"""The choices of ``on_read_error``."""
MISSING = ("error", "fill")
"""``missing`` values."""
TIME_SELECTIONS = ("all", "latest", "random")
"""The values of ``time_selection``."""
SCENE_ORDERS = ("random", "scene-blocks")
"""The values of ``order`` (a catalogue's shuffled window order, `crossgeo.loading.epoch_order`)."""
"""``missing`` values: a window an image source has no pixel in is refused, or filled and flagged."""
OUT_OF_RANGE = ("error", "fill")
"""The choices of ``out_of_range``."""
SEED_MAX = 2**64 - 1
"""The largest seed: every framework takes seeds up to 64 bits (``torch.Generator.manual_seed``)."""

PathLike: TypeAlias = str | os.PathLike[str]
"""A file path: a string (local, or a remote ``/vsi...`` path) or a ``pathlib.Path``."""
ImageSource: TypeAlias = str | os.PathLike[str] | Sequence[Any] | Mapping[str, Any]
"""The image option: one path, or several sources (a list, or a mapping of names to sources)."""


# --------------------------------------------------------------------------- the checks


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _wrong_type(name: str, expected: str, value: Any) -> OptionTypeError:
    return OptionTypeError(f"{name} must be {expected}, got {type(value).__name__}: {value!r}.")


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer option (numpy integers too, never a bool) within ``minimum..maximum``."""
    if not _is_int(value):
        raise _wrong_type(name, "an integer", value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}.")
    return int(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer in ``0..SEED_MAX`` (numpy integers too, never a bool)."""
    if not _is_int(value):
        raise _wrong_type(name, "an integer in 0..2**64-1 (a random seed)", value)
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name} must be an integer in 0..2**64-1 (a random seed), got {value}.")
    return int(value)


def check_number(value: Any, name: str, low: float, high: float, *, high_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _wrong_type(name, "a number", value)
    number = float(value)
    if not np.isfinite(number) or number < low or number > high or (high_open and number == high):
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{name} must be a finite number in [{low:g}, {high:g}{bracket}, got {value!r}.")
    return number


def check_bool(value: Any, name: str) -> bool:
    """A flag: ``True`` or ``False`` (numpy booleans too; never ``0``/``1`` or a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise OptionTypeError(f"{name} must be true or false, got {value!r}.")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[str], hint: str = "") -> str:
    """One of ``choices`` (a value of another type is simply not one of them: `ConfigError`)."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(map(repr, choices))}.{hint}")
    return value


def check_str(value: Any, name: str, *, empty: bool = False, what: str = "a string") -> str:
    """A string; an empty one only with ``empty``. ``what`` says what the string is, for messages."""
    if not isinstance(value, str):
        raise _wrong_type(name, what, value)
    if not value and not empty:
        raise ConfigError(f"{name} must be {what}, not empty.")
    return value


def check_pathlike(value: Any, name: str) -> str:
    """A path (``str`` or ``os.PathLike``) as a string; whether it exists is checked where the file is read."""
    if not isinstance(value, (str, os.PathLike)):
        raise _wrong_type(name, "a path (str or os.PathLike)", value)
    return os.fspath(value)


def check_mapping(value: Any, name: str) -> dict[str, Any]:
    """A mapping of options (a plain dict copy)."""
    if not isinstance(value, Mapping):
        raise _wrong_type(name, "a mapping", value)
    return dict(value)


def check_bands(value: Any, name: str = "selected_bands") -> tuple[int, ...] | None:
    """``None`` or a non-empty list of integers; whether the image has those (1-based) bands is the image step's."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _wrong_type(name, "a non-empty list of 1-based band numbers or null", value)
    if not value:
        raise ConfigError(f"{name} must be a non-empty list of 1-based band numbers or null (all bands), got [].")
    for band in value:
        if not _is_int(band):
            raise OptionTypeError(f"{name} entries must be integers (1-based), got {band!r} in {list(value)}.")
    return tuple(int(b) for b in value)


Check = Callable[[Any, str], Any]
"""A field's check: ``(value, option name) -> the value, normalised``; raises as the module docstring says."""


def optional(check: Check) -> Check:
    """``check``, letting ``None`` through."""
    return lambda value, name: None if value is None else check(value, name)


def choice(choices: Sequence[str], hint: str = "") -> Check:
    """The check of a choice among ``choices``."""
    return lambda value, name: check_choice(value, name, choices, hint)


def at_least(minimum: int) -> Check:
    """The check of an integer ``>= minimum``."""
    return lambda value, name: check_int(value, name, minimum)


def _split_name(value: Any, name: str) -> str | None:
    if value == "":
        raise ConfigError(f"{name} must name a split (e.g. 'train'), got an empty string; remove it to keep every row.")
    return None if value is None else check_str(value, name)


positive_int = at_least(1)
non_negative_int = at_least(0)
optional_seed = optional(check_seed)


def optional_str(value: Any, name: str) -> str | None:
    return None if value is None else check_str(value, name, what="a string or null")


def column_name(value: Any, name: str) -> str:
    return check_str(value, name, what="a non-empty column name")


optional_mapping = optional(check_mapping)


def option(
    default: Any,
    type: str,
    doc: str,
    *,
    check: Check | None = None,
    aliases: tuple[str, ...] = (),
    dataset_only: bool = False,
) -> Any:
    """An attrs field declaring one option: ``check`` is its converter (called with the option's name).

    ``type`` is the type as the reference page shows it; ``aliases`` other accepted names;
    ``dataset_only`` marks an option set in code only where a dataset is built.
    """
    metadata = {"type": type, "doc": doc, "aliases": aliases, "dataset_only": dataset_only}
    converter = None if check is None else attrs.Converter(_named(check), takes_field=True)
    if default is REQUIRED:
        return attrs.field(converter=converter, metadata=metadata)
    return attrs.field(default=default, converter=converter, metadata=metadata)


def _named(check: Check) -> Callable[[Any, attrs.Attribute[Any]], Any]:
    return lambda value, field: check(value, field.name)


@attrs.frozen
class Option:
    """One configuration option as users write it (in Python, mappings and YAML): a row of the reference."""

    name: str
    type: str
    """The type as the reference page shows it (``int``, ``path``, ``list of int``...)."""
    default: Any
    doc: str
    aliases: tuple[str, ...] = ()
    """Other names accepted for it (the original's ``image_mbtiles_path``)."""
    dataset_only: bool = False
    """Set in code only where a dataset is built (``allowed_targets``)."""


def option_rows(options: type) -> tuple[Option, ...]:
    """The rows of an options class (`SamplerOptions`, ...): one `Option` per field, in order."""
    return tuple(
        Option(
            field.name,
            field.metadata["type"],
            REQUIRED if field.default is attrs.NOTHING else field.default,
            field.metadata["doc"],
            field.metadata["aliases"],
            field.metadata["dataset_only"],
        )
        for field in attrs.fields(options)
    )


# --------------------------------------------------------------------------- the option groups


@attrs.frozen(kw_only=True)
class SamplerOptions:
    """The options of `crossgeo.PatchSampler` (and of every configuration that builds one), checked.

    ``SamplerOptions(**values)`` checks and normalises every value that needs no file (types,
    ranges, choices); the files themselves, ``color_map``, ``image_resampling``,
    ``target_crs`` / ``target_resolution`` and ``window_index_cache`` are checked by the
    inspection steps, which name the file. See the configuration reference for each option.
    """

    image_path: ImageSource = option(
        REQUIRED,
        "path",
        "Image raster (GeoTIFF, MBTiles, VRT, remote `/vsi...` path, ...): its pixel grid is the reference grid. "
        "`image_mbtiles_path` (the original's name) is accepted for it. Also a list of paths or a mapping "
        "`name -> path` or `name -> {path, bands, resampling, nodata, scale, offset}`: the sources are stacked "
        "into one image (docs/howto/sources.md).",
        aliases=("image_mbtiles_path",),
    )
    mask_path: PathLike = option(
        REQUIRED,
        "path",
        "Mask raster in any CRS/resolution; read with plain windows when its grid coincides with the image's, "
        "else warped nearest-neighbour per window.",
    )
    crops_path: Any = option(
        REQUIRED,
        "path or table",
        "Windows: a CSV/Parquet table of pixel offsets or a vector file whose features' bounding-box centres "
        "become centred windows; in Python also a `WindowIndex`, a pandas DataFrame, a pyarrow Table or a "
        "numpy (N, 2) array of `row_off, col_off`.",
    )
    patch_size: int = option(
        REQUIRED,
        "int",
        "Window height and width in pixels; every patch has exactly this size. Refused before anything is "
        "allocated when one patch (image bands, int64 mask, validity) would take more than 2 GiB, or more than "
        "256 MiB while larger than the image.",
        check=positive_int,
    )
    color_map: Sequence[Sequence[int]] | None = option(
        None,
        "list of `[R, G, B, class]`",
        "Colour-coded RGB(A) masks: exact RGB match on the first three bands; unknown colours are class 0. "
        "Required for masks with more than one (non-alpha) band.",
    )
    n_classes: int = option(
        2,
        "int",
        "Single-band masks: values are class indices; `2` binarises non-zero to 1.",
        check=positive_int,
    )
    selected_bands: Sequence[int] | None = option(
        None,
        "list of int",
        "1-based image bands to read (`None`: all). `[1, 2, 3]` drops an MBTiles alpha band.",
        check=check_bands,
    )
    image_dtype: Literal["uint8", "uint16", "float32", "native"] = option(
        "uint8",
        "str",
        '`"uint8"`, `"uint16"`, `"float32"` or `"native"`; a cast that could lose values is refused.',
        check=choice(IMAGE_DTYPES),
    )
    image_resampling: str = option(
        "bilinear",
        "str",
        "rasterio resampling name used when the image itself is warped (`target_crs` / `target_resolution`). "
        "Masks are always nearest-neighbour.",
    )
    crops_layer: str | None = option(
        None,
        "str",
        "Layer of a multi-layer vector file (GeoPackage).",
        check=optional_str,
    )
    col_off_key: str = option(
        "col_off",
        "str",
        "Table column holding the column offset.",
        check=column_name,
    )
    row_off_key: str = option(
        "row_off",
        "str",
        "Table column holding the row offset.",
        check=column_name,
    )
    split: str | None = option(
        None,
        "str",
        "Keep only the table rows whose `split` column equals this (e.g. `train`), so one windows file from "
        "`spatial_split` / `crossgeo windows --split` serves the train and validation configs; the rows left out "
        "are counted in the window report. Tables only (CSV/Parquet or in memory).",
        check=_split_name,
    )
    window_index_cache: PathLike | None = option(
        None,
        "path",
        "`.csv` / `.parquet` file keeping the planned windows (a plain `row_off`,`col_off` table the original "
        "reads too); rebuilt when the source or the settings change. Never an input; crossgeo only overwrites "
        "a cache it wrote.",
    )
    target_crs: Any = option(
        None,
        "CRS",
        'Warp the image onto this CRS (e.g. `"EPSG:3857"`); the reference grid becomes the image\'s footprint there.',
    )
    target_resolution: float | tuple[float, float] | None = option(
        None,
        "number or `[x, y]`",
        "Pixel size of that warped grid, in target CRS units.",
    )
    mask_fill_value: int = option(
        0,
        "int",
        "Class of pixels the mask does not cover, mask nodata and alpha 0 (e.g. `255` for an ignore index).",
        check=non_negative_int,
    )
    out_of_range: Literal["error", "fill"] = option(
        "error",
        "str",
        'Class-index masks with `n_classes` > 2, for values outside `0..n_classes-1`: `"error"` raises '
        '`ClassRangeError` naming the window and the values; `"fill"` gives them `mask_fill_value` and '
        "`mask_valid` False.",
        check=choice(OUT_OF_RANGE, " 'error' stops at a mask value >= n_classes, 'fill' gives it mask_fill_value."),
    )
    ignore_invalid_image: bool = option(
        False,
        "bool",
        "Where the image has no data (`Patch.image_valid` False: alpha 0, nodata, mask band, outside the image) set "
        "the mask to `mask_fill_value`, so an ignore index keeps holes (e.g. MBTiles' missing tiles) out of the loss.",
        check=check_bool,
    )
    on_read_error: Literal["raise", "skip"] = option(
        "raise",
        "str",
        '`"raise"`: a failed read raises `ReadError` naming file and window. `"skip"`: the next readable window '
        "is returned instead; unreadable windows are logged, replaced samples counted in `sampler.skipped`.",
        check=choice(ON_READ_ERROR),
    )

    reference: str | None = option(
        None,
        "str",
        "With several image sources (`image_path` a list or a mapping): the name of the source whose grid is the "
        "reference grid (default: the first). Names are the mapping's keys, else the files' stems.",
        check=optional_str,
    )
    missing: Literal["error", "fill"] = option(
        "error",
        "str",
        'With several image sources, a source with no pixel in a window: `"error"` refuses it at construction; '
        '`"fill"` fills its channels and flags it False in `Patch.source_valid`.',
        check=choice(
            MISSING,
            " 'error' refuses a window that an image source has no pixel in, 'fill' fills that source's channels "
            "and flags it in Patch.source_valid.",
        ),
    )


@attrs.frozen(kw_only=True)
class SceneOptions:
    """The options of a catalogue of scenes (`crossgeo.SceneSampler`) besides the sampler's, checked."""

    scenes: Any = option(
        None,
        "list of mappings or path",
        "A catalogue of scenes (`crossgeo.SceneSampler`) instead of one `image_path`: a list of mappings or a "
        "CSV/Parquet table with `image_path` and optional per-scene `mask_path` / `crops_path` (relative paths "
        "start at the table's folder). `mask_path` and `crops_path` are then shared by the scenes without their "
        "own; shared vector features go to the first scene holding their whole window.",
    )
    max_open: int = option(
        32,
        "int",
        "With `scenes`: at most this many scenes keep open file handles per process (least recently used "
        "closed first), so thousands of scenes never exhaust file descriptors.",
        check=positive_int,
    )
    order: Literal["random", "scene-blocks"] = option(
        "random",
        "str",
        'With `scenes` and a shuffle: how an epoch orders the windows. `"random"`: one permutation of all '
        'windows (every scene mixed with every other). `"scene-blocks"`: the scenes are permuted, grouped into '
        "blocks of `block_scenes` scenes, and the windows are permuted within each block, one block after the "
        "other: a trade of randomness for locality (a block's scenes stay open and cached while they are read; "
        "keep `block_scenes` <= `max_open`). Seeded by (seed, epoch) as the random order, so every adapter, "
        "worker and replica computes the same order. Not combined with `weights`.",
        check=choice(SCENE_ORDERS),
    )
    block_scenes: int = option(
        8,
        "int",
        'With `order: "scene-blocks"`: the scenes per block; their windows are shuffled together. Larger mixes '
        "more scenes per stretch of the epoch, smaller reads fewer files at a time.",
        check=positive_int,
    )
    group_by: str | None = option(
        None,
        "str",
        "With `scenes`: the catalogue column naming a place; the rows of one group (one place at several dates, "
        "each with a `time` column) make one scene whose patches are (T, C, H, W), every date on the grid of the "
        "group's first row. `None`: every row is its own scene.",
        check=optional_str,
    )
    time_steps: int | None = option(
        None,
        "int",
        "With `group_by`: T, the dates per patch. Shorter groups are padded (zeros, `Patch.time_valid` False). "
        "`None`: the largest group's date count.",
        check=optional(positive_int),
    )
    time_selection: Literal["all", "latest", "random"] = option(
        "all",
        "str",
        'With `group_by`: which dates fill T. `"all"`: every date in time order (a group with more dates than '
        '`time_steps` is an error); `"latest"`: the latest `time_steps` dates (earlier ones are counted and '
        'reported); `"random"`: `time_steps` dates drawn per sample from (seed, epoch, window) in the model-input '
        "step every adapter shares, kept in time order.",
        check=choice(TIME_SELECTIONS),
    )
    chips_path: PathLike | None = option(
        None,
        "path",
        "A chip store written by `crossgeo.write_chips` (`crossgeo chips CONFIG OUT`): the patches are served "
        "from it (`crossgeo.ChipSampler`) with the numbers the rasters gave, instead of read from the rasters. "
        "`split` selects the store's chips of one split; `patch_size` and `n_classes`, when set, must match "
        "the store; the other raster options are those the store was written with.",
        check=optional(check_pathlike),
    )


@attrs.frozen(kw_only=True)
class AdapterOptions:
    """The options the framework adapters consume (the drop-in dataset takes them with the sampler's), checked.

    ``augmentation_list`` and ``allowed_targets`` are checked where the pipeline is built
    (`crossgeo.augment.build_augmentation`).
    """

    augmentation_list: Sequence[Any] | None = option(
        None,
        "list",
        "albumentations transforms or `_target_` dicts, applied to image and mask together; `[]` and `None` mean "
        "none; `ToTensorV2` is accepted and skipped.",
    )
    data_loader: Mapping[str, Any] | None = option(
        None,
        "mapping",
        "`torch.utils.data.DataLoader` options (`batch_size`, `shuffle`, `num_workers`, ...) used by "
        "`make_dataloader`; tf.data and Keras use `batch_size`, `shuffle`, `drop_last`.",
        check=optional_mapping,
    )
    return_metadata: bool = option(
        False,
        "bool",
        'Add `"metadata": {"row_off", "col_off"}` to each sample.',
        check=check_bool,
    )
    seed: int | None = option(
        None,
        "int",
        "Shuffling and augmentation depend only on `(seed, epoch, window)`, the same for any number of workers "
        "and in every framework.",
        check=optional_seed,
    )
    read_threads: int | None = option(
        None,
        "int",
        "Threads reading the next patches ahead, in order, while the loop works on this one (GDAL decodes "
        "without Python's lock), with the torch DataLoader at `num_workers: 0` (`make_dataloader`) and Keras' "
        "`PatchPyDataset` (each batch's patches). The items are those a single reader gives, in the same order. "
        "`null` (default), `0` or `1`: one reader. `2` pays where a core is idle (on a quiet two-core machine "
        "1.6-1.8x a direct loop), not when the cores are busy; for a tiled GeoTIFF or MBTiles image the threads "
        "share the decoded tiles of the windows ahead, so a patch costs no more CPU than with one reader. "
        "DataLoader worker processes and tf.data read in parallel already and do not use it.",
        check=optional(non_negative_int),
    )
    allowed_targets: Sequence[str] = option(
        (),
        "list of str",
        "Module prefixes of your own transform classes (albumentations `BasicTransform` subclasses) that "
        "`_target_` in `augmentation_list` may name besides albumentations' own. A keyword argument in code only "
        "(`PatchDataset`, `make_dataset`, `PatchPyDataset`; `crossgeo validate --allow-target MODULE`) or the "
        "environment variable `CROSSGEO_ALLOWED_TRANSFORMS=mypkg.transforms,other.mod` (Hydra runs, the CLI); "
        "every configuration mapping (YAML, Hydra, the drop-in class) refuses it.",
        dataset_only=True,
    )


SAMPLER_OPTIONS: tuple[Option, ...] = option_rows(SamplerOptions)
"""Options of `crossgeo.PatchSampler` (and of every configuration that builds one): `SamplerOptions`' fields."""

SCENE_OPTIONS: tuple[Option, ...] = option_rows(SceneOptions)
"""Options of `crossgeo.SceneSampler` besides the sampler's (a configuration with ``scenes`` builds one)."""

ADAPTER_OPTIONS: tuple[Option, ...] = option_rows(AdapterOptions)
"""Options the framework adapters consume (the drop-in dataset takes them with the sampler's)."""

GDAL_DEFAULTS: tuple[Option, ...] = (
    # ---- reads: GDAL configuration (crossgeo.io.GDAL_OPTIONS is built from these rows) ----
    Option(
        "GDAL_DISABLE_READDIR_ON_OPEN",
        "str",
        "EMPTY_DIR",
        "Do not list the folder of every file opened (slow on network file systems and object stores).",
    ),
    Option(
        "GDAL_HTTP_MAX_RETRY",
        "int",
        3,
        "Retries of an HTTP request after a transient error (429, 5xx, reset or timed-out connection).",
    ),
    Option(
        "GDAL_HTTP_RETRY_DELAY",
        "float",
        0.5,
        "Seconds before the first retry; GDAL multiplies the delay by 2 to 2.5 for each further one.",
    ),
    Option(
        "GDAL_HTTP_CONNECTTIMEOUT",
        "float",
        5,
        "Seconds a connection may take to open; a timed-out connection counts as a transient error (retried).",
    ),
    Option(
        "GDAL_HTTP_LOW_SPEED_TIME",
        "int",
        10,
        "Seconds a request may receive less than `GDAL_HTTP_LOW_SPEED_LIMIT` bytes/s before it fails "
        "(a server that accepts and never answers); GDAL does not retry it, so a stalled read ends with "
        "`ReadError` in bounded time (`crossgeo.io.remote_wait_bound`, 40 s with these values).",
    ),
    Option("GDAL_HTTP_LOW_SPEED_LIMIT", "int", 1, "The bytes/s below which `GDAL_HTTP_LOW_SPEED_TIME` counts."),
    Option(
        "VSI_CACHE",
        "bool",
        True,
        "Cache recently read blocks of remote (`/vsi...`) files in memory. Local files are opened without it "
        "(the OS page cache holds them once for all processes) unless this variable is set.",
    ),
    Option(
        "VRT_NUM_THREADS",
        "int",
        1,
        "Read a VRT's sources in the reading thread. GDAL 3.10 reads large VRT requests on a process-wide "
        "thread pool, which a forked DataLoader worker inherits without its threads: the worker's first large "
        "VRT read (a whole mask kept in memory) would wait forever. Parallelism comes from workers and "
        "`read_threads` instead.",
    ),
)
"""GDAL configuration options crossgeo sets in every thread that reads (`crossgeo.io.GDAL_OPTIONS`).

Not sampler options: GDAL's configuration is per thread and shared by every sampler. An
environment variable of the same name wins over an entry (``GDAL_HTTP_LOW_SPEED_TIME=30``)."""

ALIASES: dict[str, str] = {alias: option.name for option in SAMPLER_OPTIONS for alias in option.aliases}
"""Other accepted names -> the option's name (``image_mbtiles_path`` -> ``image_path``)."""


def sampler_option_names() -> tuple[str, ...]:
    """The names of `SAMPLER_OPTIONS`, in order."""
    return tuple(option.name for option in SAMPLER_OPTIONS)


def check_names(names: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise `OptionError` (a ``TypeError``) for the first unknown name, suggesting the closest known one."""
    known = list(known)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known options: {', '.join(sorted(known))}."
            raise OptionError(f"Unknown option {name!r} in {where}.{hint}")


def to_plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) -> plain dicts/lists; anything else unchanged.

    Interpolations are resolved (``resolve=True``), resolvers such as ``${oc.env:...}`` included:
    a ``DictConfig`` comes from the user's own Hydra application, which has decided what it
    resolves. Configuration files read by the ``crossgeo`` commands never get here unresolved:
    `crossgeo.cli.common.load_config` resolves them itself (resolvers only with ``--allow-env``)
    and hands on plain dicts, which this returns unchanged.

    A leaf (omegaconf is imported only when installed): `crossgeo.augment` and
    `crossgeo.config` both use it without importing each other.
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def resolve_sampler_options(
    given: Mapping[str, Any], where: str, *, spelling: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """All sampler options with defaults filled in, and the name the user gave each one.

    ``given`` holds the options the caller passed (aliases allowed). Unknown names and
    missing required options raise `OptionError`, naming the option as the user spells it.
    Returns ``(values, names)``: ``names["image_path"]`` is ``"image_mbtiles_path"``
    when that is what the user wrote, so messages can use the user's own key. ``spelling``
    sets the name used for an option the user did not give (the drop-in class says
    ``image_mbtiles_path`` when the image is missing).
    """
    check_names(given, (*sampler_option_names(), *ALIASES), where)
    names = {option.name: (spelling or {}).get(option.name, option.name) for option in SAMPLER_OPTIONS}
    values: dict[str, Any] = {}
    for key, value in given.items():
        name = ALIASES.get(key, key)
        if name in values:
            raise OptionError(f"{where} got both {names[name]!r} and {key!r}; they are the same option, give one.")
        values[name] = value
        names[name] = key
    missing = [names[o.name] for o in SAMPLER_OPTIONS if o.default is REQUIRED and o.name not in values]
    if missing:
        raise OptionError(f"{where} is missing the required option(s) {', '.join(missing)}.")
    for option in SAMPLER_OPTIONS:
        values.setdefault(option.name, option.default)
    return values, names


# ---------------------------------------------------------------------- the original pipeline's keys
# Keys the original `MBTilesCropsGeoTifMaskDataset`'s configuration dataclass and its Lightning model
# (pytorch_segmentation_models_trainer 1.4.0) put into a dataset config, which the drop-in accepts.

DROPIN_OPTIONS: tuple[Option, ...] = (
    Option(
        "samples_per_epoch",
        "int",
        None,
        "The epoch length (`len(dataset)`), as the original's model reads it for OneCycleLR's steps per epoch. "
        "Item `j` of pass `k` serves window `(j + k * samples_per_epoch) % n_windows`, so a shorter epoch walks "
        "through all windows over successive epochs and a longer one visits each window several times, each "
        "visit augmented differently. `None` or `<= 0`: the number of windows. Drop-in dataset only.",
    ),
    Option(
        "gpu_augmentation_list",
        "list",
        None,
        "Kornia transforms the original's Lightning model applies to whole batches on the GPU; the model reads "
        "them from the config, so they keep working. The dataset keeps them in `.gpu_augmentation_list` and "
        "does not apply them. Drop-in dataset only.",
    ),
    Option(
        "grid_mode",
        "bool",
        None,
        "The original's random-crop datasets' switch to grid tiles; crossgeo's windows always come from "
        "`crops_path`, so it is accepted and ignored with a warning. Drop-in dataset only.",
    ),
    Option(
        "input_csv_path",
        "path",
        None,
        "The original's CSV-backed datasets' image list; not used by `MBTilesCropsGeoTifMaskDataset` "
        "(windows come from `crops_path`): accepted and ignored with a warning. Drop-in dataset only.",
    ),
)
"""Keys of the original pipeline's dataset configs beyond the sampler's and adapters' options (torch drop-in)."""

DROPIN_DATA_LOADER_OPTIONS: tuple[Option, ...] = (
    Option(
        "weighted_sampler",
        "bool",
        False,
        "Draw each epoch's windows with replacement in proportion to the windows table's `weight` column "
        "(`crossgeo.window_weights`); the dataset also exposes it as `df['sampler_weight']`, which the original's "
        "Lightning model reads for its `WeightedRandomSampler`.",
    ),
    Option(
        "weighted_sampler_num_samples",
        "int",
        None,
        "Windows drawn per epoch by the original's model's `WeightedRandomSampler`; `make_dataloader` draws "
        "`len(dataset)` (set `samples_per_epoch` for another count) and warns when it differs.",
    ),
    Option(
        "weighted_sampler_replacement",
        "bool",
        True,
        "Draw with replacement (the original's model's `WeightedRandomSampler`); `make_dataloader` always does "
        "and warns for `false`.",
    ),
)
"""``data_loader`` keys of the original's Lightning model beyond ``torch.utils.data.DataLoader``'s (torch drop-in)."""

IGNORED_DROPIN_OPTIONS = ("grid_mode", "input_csv_path")
"""Drop-in keys that have no meaning for crossgeo: accepted with a warning."""


class IgnoredOptionWarning(UserWarning):
    """The drop-in dataset accepted an option it does not use (unknown, or without meaning for crossgeo)."""
