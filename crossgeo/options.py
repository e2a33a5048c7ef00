"""The one declared list of options: name, type, default and a one-line description.

`PatchSampler`, the drop-in ``MBTilesCropsGeoTifMaskDataset``, configuration mappings and
YAML files, ``crossgeo validate`` and the generated configuration reference all read
`SAMPLER_OPTIONS` and `ADAPTER_OPTIONS`; nothing is derived from function signatures.
Unknown names are a `TypeError` (`OptionError`) with a "did you mean" suggestion, in
Python calls and in files alike.

This module is pure Python: importing it loads neither rasterio nor a framework.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from crossgeo.errors import OptionError

__all__ = [
    "ADAPTER_OPTIONS",
    "ALIASES",
    "DROPIN_DATA_LOADER_OPTIONS",
    "DROPIN_OPTIONS",
    "GDAL_DEFAULTS",
    "IGNORED_DROPIN_OPTIONS",
    "IMAGE_SOURCE_OPTIONS",
    "REQUIRED",
    "SAMPLER_OPTIONS",
    "SCENE_OPTIONS",
    "TIME_SELECTIONS",
    "TIME_SERIES_OPTIONS",
    "IgnoredOptionWarning",
    "Option",
    "check_names",
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


@attrs.frozen
class Option:
    """One configuration option as users write it (in Python, mappings and YAML)."""

    name: str
    type: str
    """The type as the reference page shows it (``int``, ``path``, ``list of int``...)."""
    default: Any
    doc: str
    aliases: tuple[str, ...] = ()
    """Other names accepted for it (the original's ``image_mbtiles_path``)."""
    dataset_only: bool = False
    """Set in code only where a dataset is built (``allowed_targets``)."""


SAMPLER_OPTIONS: tuple[Option, ...] = (
    Option(
        "image_path",
        "path",
        REQUIRED,
        "Image raster (GeoTIFF, MBTiles, VRT, remote `/vsi...` path, ...): its pixel grid is the reference grid. "
        "`image_mbtiles_path` (the original's name) is accepted for it. Also a list of paths or a mapping "
        "`name -> path` or `name -> {path, bands, resampling, nodata, scale, offset}`: the sources are stacked "
        "into one image (docs/howto/sources.md).",
        aliases=("image_mbtiles_path",),
    ),
    Option(
        "mask_path",
        "path",
        REQUIRED,
        "Mask raster in any CRS/resolution; read with plain windows when its grid coincides with the image's, "
        "else warped nearest-neighbour per window.",
    ),
    Option(
        "crops_path",
        "path or table",
        REQUIRED,
        "Windows: a CSV/Parquet table of pixel offsets or a vector file whose features' bounding-box centres "
        "become centred windows; in Python also a `WindowIndex`, a pandas DataFrame, a pyarrow Table or a "
        "numpy (N, 2) array of `row_off, col_off`.",
    ),
    Option(
        "patch_size",
        "int",
        REQUIRED,
        "Window height and width in pixels; every patch has exactly this size. Refused before anything is "
        "allocated when one patch (image bands, int64 mask, validity) would take more than 2 GiB, or more than "
        "256 MiB while larger than the image.",
    ),
    Option(
        "color_map",
        "list of `[R, G, B, class]`",
        None,
        "Colour-coded RGB(A) masks: exact RGB match on the first three bands; unknown colours are class 0. "
        "Required for masks with more than one (non-alpha) band.",
    ),
    Option("n_classes", "int", 2, "Single-band masks: values are class indices; `2` binarises non-zero to 1."),
    Option(
        "selected_bands",
        "list of int",
        None,
        "1-based image bands to read (`None`: all). `[1, 2, 3]` drops an MBTiles alpha band.",
    ),
    Option(
        "image_dtype",
        "str",
        "uint8",
        '`"uint8"`, `"uint16"`, `"float32"` or `"native"`; a cast that could lose values is refused.',
    ),
    Option(
        "image_resampling",
        "str",
        "bilinear",
        "rasterio resampling name used when the image itself is warped (`target_crs` / `target_resolution`). "
        "Masks are always nearest-neighbour.",
    ),
    Option("crops_layer", "str", None, "Layer of a multi-layer vector file (GeoPackage)."),
    Option("col_off_key", "str", "col_off", "Table column holding the column offset."),
    Option("row_off_key", "str", "row_off", "Table column holding the row offset."),
    Option(
        "split",
        "str",
        None,
        "Keep only the table rows whose `split` column equals this (e.g. `train`), so one windows file from "
        "`spatial_split` / `crossgeo windows --split` serves the train and validation configs; the rows left out "
        "are counted in the window report. Tables only (CSV/Parquet or in memory).",
    ),
    Option(
        "window_index_cache",
        "path",
        None,
        "`.csv` / `.parquet` file keeping the planned windows (a plain `row_off`,`col_off` table the original "
        "reads too); rebuilt when the source or the settings change. Never an input; crossgeo only overwrites "
        "a cache it wrote.",
    ),
    Option(
        "target_crs",
        "CRS",
        None,
        'Warp the image onto this CRS (e.g. `"EPSG:3857"`); the reference grid becomes the image\'s footprint there.',
    ),
    Option("target_resolution", "number or `[x, y]`", None, "Pixel size of that warped grid, in target CRS units."),
    Option(
        "mask_fill_value",
        "int",
        0,
        "Class of pixels the mask does not cover, mask nodata and alpha 0 (e.g. `255` for an ignore index).",
    ),
    Option(
        "out_of_range",
        "str",
        "error",
        'Class-index masks with `n_classes` > 2, for values outside `0..n_classes-1`: `"error"` raises '
        '`ClassRangeError` naming the window and the values; `"fill"` gives them `mask_fill_value` and '
        "`mask_valid` False.",
    ),
    Option(
        "ignore_invalid_image",
        "bool",
        False,
        "Where the image has no data (`Patch.image_valid` False: alpha 0, nodata, mask band, outside the image) set "
        "the mask to `mask_fill_value`, so an ignore index keeps holes (e.g. MBTiles' missing tiles) out of the loss.",
    ),
    Option(
        "on_read_error",
        "str",
        "raise",
        '`"raise"`: a failed read raises `ReadError` naming file and window. `"skip"`: the next readable window '
        "is returned instead; unreadable windows are logged, replaced samples counted in `sampler.skipped`.",
    ),
)
"""Options of `crossgeo.PatchSampler` (and of every configuration that builds one)."""

# Several sources per image (issue #24.1): `image_path` may list sources; these options go with it.
IMAGE_SOURCE_OPTIONS: tuple[Option, ...] = (
    Option(
        "reference",
        "str",
        None,
        "With several image sources (`image_path` a list or a mapping): the name of the source whose grid is the "
        "reference grid (default: the first). Names are the mapping's keys, else the files' stems.",
    ),
    Option(
        "missing",
        "str",
        "error",
        'With several image sources, a source with no pixel in a window: `"error"` refuses it at construction; '
        '`"fill"` fills its channels and flags it False in `Patch.source_valid`.',
    ),
)
"""Options of a stacked image (several sources); part of `SAMPLER_OPTIONS`."""
SAMPLER_OPTIONS = SAMPLER_OPTIONS + IMAGE_SOURCE_OPTIONS

SCENE_OPTIONS: tuple[Option, ...] = (
    Option(
        "scenes",
        "list of mappings or path",
        None,
        "A catalogue of scenes (`crossgeo.SceneSampler`) instead of one `image_path`: a list of mappings or a "
        "CSV/Parquet table with `image_path` and optional per-scene `mask_path` / `crops_path` (relative paths "
        "start at the table's folder). `mask_path` and `crops_path` are then shared by the scenes without their "
        "own; shared vector features go to the first scene holding their whole window.",
    ),
    Option(
        "max_open",
        "int",
        32,
        "With `scenes`: at most this many scenes keep open file handles per process (least recently used "
        "closed first), so thousands of scenes never exhaust file descriptors.",
    ),
)
"""Options of `crossgeo.SceneSampler` besides the sampler's (a configuration with ``scenes`` builds one)."""

# Time series (issue #24.2): a catalogue whose rows are one place at several dates.
TIME_SERIES_OPTIONS: tuple[Option, ...] = (
    Option(
        "group_by",
        "str",
        None,
        "With `scenes`: the catalogue column naming a place; the rows of one group (one place at several dates, "
        "each with a `time` column) make one scene whose patches are (T, C, H, W), every date on the grid of the "
        "group's first row. `None`: every row is its own scene.",
    ),
    Option(
        "time_steps",
        "int",
        None,
        "With `group_by`: T, the dates per patch. Shorter groups are padded (zeros, `Patch.time_valid` False). "
        "`None`: the largest group's date count.",
    ),
    Option(
        "time_selection",
        "str",
        "all",
        'With `group_by`: which dates fill T. `"all"`: every date in time order (a group with more dates than '
        '`time_steps` is an error); `"latest"`: the latest `time_steps` dates (earlier ones are counted and '
        'reported); `"random"`: `time_steps` dates drawn per sample from (seed, epoch, window) in the model-input '
        "step every adapter shares, kept in time order.",
    ),
)
"""Options of a time-series catalogue; part of `SCENE_OPTIONS`."""
SCENE_OPTIONS = SCENE_OPTIONS + TIME_SERIES_OPTIONS
TIME_SELECTIONS = ("all", "latest", "random")
"""The values of ``time_selection``."""

ADAPTER_OPTIONS: tuple[Option, ...] = (
    Option(
        "augmentation_list",
        "list",
        None,
        "albumentations transforms or `_target_` dicts, applied to image and mask together; `[]` and `None` mean "
        "none; `ToTensorV2` is accepted and skipped.",
    ),
    Option(
        "data_loader",
        "mapping",
        None,
        "`torch.utils.data.DataLoader` options (`batch_size`, `shuffle`, `num_workers`, ...) used by "
        "`make_dataloader`; tf.data and Keras use `batch_size`, `shuffle`, `drop_last`.",
    ),
    Option("return_metadata", "bool", False, 'Add `"metadata": {"row_off", "col_off"}` to each sample.'),
    Option(
        "seed",
        "int",
        None,
        "Shuffling and augmentation depend only on `(seed, epoch, window)`, the same for any number of workers "
        "and in every framework.",
    ),
    Option(
        "allowed_targets",
        "list of str",
        (),
        "Module prefixes of your own transform classes (albumentations `BasicTransform` subclasses) that "
        "`_target_` in `augmentation_list` may name besides albumentations' own. A keyword argument in code only "
        "(`PatchDataset`, `make_dataset`, `PatchPyDataset`; `crossgeo validate --allow-target MODULE`) or the "
        "environment variable `CROSSGEO_ALLOWED_TRANSFORMS=mypkg.transforms,other.mod` (Hydra runs, the CLI); "
        "every configuration mapping (YAML, Hydra, the drop-in class) refuses it.",
        dataset_only=True,
    ),
)
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
    Option("VSI_CACHE", "bool", True, "Cache recently read blocks of `/vsi...` files in memory."),
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
