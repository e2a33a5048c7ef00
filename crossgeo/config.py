"""Configuration mappings with the original ``MBTilesCropsGeoTifMaskDataset`` keys (``image_mbtiles_path``, ...).

The same keys work for every entry point: ``crossgeo.torch.MBTilesCropsGeoTifMaskDataset``
(Hydra), ``crossgeo.tensorflow.make_dataset(mapping)``, ``crossgeo.keras.PatchPyDataset``
and the CLI. Unknown keys are an error with a "did you mean" suggestion, never swallowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from crossgeo.errors import ConfigError, OptionError, OptionTypeError
from crossgeo.options import ADAPTER_OPTIONS, ALIASES, SCENE_OPTIONS, AdapterOptions, check_names, sampler_option_names
from crossgeo.options import check_seed as _check_seed
from crossgeo.options import to_plain as to_plain  # moved to the leaf `crossgeo.options`; kept importable here

if TYPE_CHECKING:
    from crossgeo.sampler import PatchSampler
    from crossgeo.scenes import SceneSampler

__all__ = [
    "ADAPTER_KEYS",
    "ALIASES",
    "DATA_LOADER_IGNORED",
    "DATA_LOADER_USED",
    "HYDRA_KEYS",
    "SAMPLER_KEYS",
    "SCENE_KEYS",
    "build_sampler",
    "check_keys",
    "check_seed",
    "plain_mapping",
    "resolve_source",
    "sampler_from_config",
    "split_config",
    "to_plain",
]

ADAPTER_KEYS = tuple(o.name for o in ADAPTER_OPTIONS if not o.dataset_only)
"""Keys consumed by the adapters rather than the sampler (from `crossgeo.options.ADAPTER_OPTIONS`)."""
HYDRA_KEYS = ("_target_", "_recursive_", "_convert_", "_partial_", "_args_")
"""Hydra's own keys, ignored."""
SAMPLER_KEYS = sampler_option_names()
"""The sampler's options (from `crossgeo.options.SAMPLER_OPTIONS`)."""
SCENE_KEYS = tuple(o.name for o in SCENE_OPTIONS)
"""Options of a catalogue of scenes (``scenes``, ``max_open``; `crossgeo.options.SCENE_OPTIONS`)."""
ORIGINAL_SPELLING = {"image_path": "image_mbtiles_path"}
"""How the original's configurations name options (used in messages about missing keys)."""


def check_seed(seed: Any) -> int | None:
    """The ``seed`` option: None or an integer in ``0..2**64-1`` (`crossgeo.options.check_seed`, as planning's)."""
    return None if seed is None else _check_seed(seed)


def plain_mapping(config: Any) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf ``DictConfig``."""
    config = to_plain(config)
    if not isinstance(config, Mapping):
        raise OptionTypeError(f"A configuration must be a mapping of options, got {type(config).__name__}.")
    return dict(config)


def check_keys(keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise `OptionError` for the first unknown key, suggesting the closest known one."""
    check_names(keys, known, where)


def split_config(config: Any, *, where: str = "the configuration") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a mapping of the original's keys into (PatchSampler keyword arguments, adapter options).

    The sampler's keyword arguments keep the user's spelling (``image_mbtiles_path``), so
    the sampler's messages name the key the user wrote.
    """
    mapping = {k: v for k, v in plain_mapping(config).items() if k not in HYDRA_KEYS}
    if "allowed_targets" in mapping:
        raise ConfigError(
            f"allowed_targets cannot be set in {where}: a shared configuration file must not widen what "
            "crossgeo may instantiate. Remove the key; allow your own transform modules with the environment "
            "variable CROSSGEO_ALLOWED_TRANSFORMS=mypkg.transforms (Hydra runs, the CLI) or allowed_targets=[...] "
            "in code (PatchDataset, make_dataset, PatchPyDataset; crossgeo validate --allow-target MODULE)."
        )
    check_keys(mapping, (*SAMPLER_KEYS, *SCENE_KEYS, *ADAPTER_KEYS, *ALIASES), where)
    sampler = {k: v for k, v in mapping.items() if k in SAMPLER_KEYS or k in SCENE_KEYS or k in ALIASES}
    rest = {k: v for k, v in mapping.items() if k in ADAPTER_KEYS}
    given = {ALIASES.get(k, k) for k in sampler}
    if sampler.get("chips_path") is not None:  # a chip store serves the patches (crossgeo.chips)
        return sampler, rest
    sampler.pop("chips_path", None)
    if sampler.get("scenes") is not None:
        image = [k for k in sampler if ALIASES.get(k, k) == "image_path"]
        if image:
            raise OptionError(
                f"{where} sets both scenes and {image[0]}: with scenes, every scene names its own image_path "
                f"(in the scenes list or table); remove {image[0]}."
            )
        required: tuple[str, ...] = ("patch_size",)
    else:
        if "max_open" in sampler:
            raise OptionError(f"{where} sets max_open without scenes; max_open bounds the open scenes of a catalogue.")
        ordered = [k for k in ("order", "block_scenes") if k in sampler]
        if ordered:
            raise OptionError(
                f"{where} sets {ordered[0]} without scenes; it orders the windows of a catalogue of scenes: "
                "give scenes or remove it."
            )
        timed = [k for k in ("group_by", "time_steps", "time_selection") if k in sampler]
        if timed:
            raise OptionError(
                f"{where} sets {timed[0]} without scenes; a time series is a catalogue of scenes with a time column: "
                "give scenes (one row per place and date) or remove it."
            )
        sampler.pop("scenes", None)
        required = ("image_path", "mask_path", "crops_path", "patch_size")
    missing = [ORIGINAL_SPELLING.get(k, k) for k in required if k not in given]
    if missing:
        raise OptionError(f"{where} is missing the required option(s) {', '.join(missing)}.")
    AdapterOptions(**rest)  # the adapters' values checked here too, before any file is opened
    return sampler, rest


def build_sampler(kwargs: Mapping[str, Any]) -> PatchSampler | SceneSampler:
    """A `SceneSampler` when ``kwargs`` (from `split_config`) has ``scenes``, else a `PatchSampler`."""
    kwargs = {k: to_plain(v) for k, v in kwargs.items()}
    if kwargs.get("chips_path") is not None:
        from crossgeo.chips import chip_sampler_from_config

        return chip_sampler_from_config(kwargs)  # type: ignore[return-value]
    if kwargs.get("scenes") is not None:
        from crossgeo.scenes import SceneSampler

        return SceneSampler(**kwargs)
    from crossgeo.sampler import PatchSampler

    return PatchSampler(**kwargs)


def sampler_from_config(
    config: Any, *, where: str = "the configuration"
) -> tuple[PatchSampler | SceneSampler, dict[str, Any]]:
    """A `PatchSampler` (or `SceneSampler`, with ``scenes``) from a mapping of the original's keys, and the
    adapter options left over."""
    sampler_kwargs, rest = split_config(config, where=where)
    return build_sampler(sampler_kwargs), rest


DATA_LOADER_USED = ("batch_size", "shuffle", "drop_last")
"""``data_loader`` keys that the tf.data and Keras adapters take over ..."""
DATA_LOADER_IGNORED = (
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "timeout",
    "multiprocessing_context",
    "in_order",
    "pin_memory_device",
    "collate_fn",
    "worker_init_fn",
    "generator",
)
"""... and torch DataLoader keys that have no meaning there (accepted, ignored)."""


def resolve_source(source: Any, where: str) -> tuple[PatchSampler | SceneSampler, dict[str, Any]]:
    """The sampler and adapter options of a `PatchSampler` or a mapping of the original's keys.

    For a mapping, the options are those it sets among ``augmentation_list``,
    ``seed``, ``return_metadata`` and, from its ``data_loader``,
    ``batch_size``, ``shuffle``, ``drop_last`` (the tf.data and Keras adapters' view).
    """
    from crossgeo.sampler import WindowSequence

    if isinstance(source, WindowSequence):  # PatchSampler, SceneSampler, ChipSampler
        return source, {}  # type: ignore[return-value]
    if not isinstance(source, Mapping) and type(source).__name__ != "DictConfig":
        raise OptionTypeError(
            f"{where}: source must be a crossgeo.PatchSampler, SceneSampler, ChipSampler or a mapping of configuration "
            f"keys (image_mbtiles_path, mask_path, crops_path, patch_size... or scenes), got {type(source).__name__}."
        )
    sampler, rest = sampler_from_config(source, where=where)
    loader = dict(rest.pop("data_loader", None) or {})
    check_keys(loader, (*DATA_LOADER_USED, *DATA_LOADER_IGNORED), f"{where} data_loader")
    rest.update({k: loader[k] for k in DATA_LOADER_USED if k in loader})
    return sampler, rest
