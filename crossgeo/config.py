"""Configuration mappings with the original ``MBTilesCropsGeoTifMaskDataset`` keys (``image_mbtiles_path``, ...).

The same keys work for every entry point: ``crossgeo.torch.MBTilesCropsGeoTifMaskDataset``
(Hydra), ``crossgeo.tensorflow.make_dataset(mapping)``, ``crossgeo.keras.PatchPyDataset``
and the CLI. Unknown keys are an error with a "did you mean" suggestion, never swallowed.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from crossgeo.errors import OptionError
from crossgeo.sampler import PatchSampler

ALIASES = {"image_mbtiles_path": "image_path"}
"""The original ``MBTilesCropsGeoTifMaskDataset`` name for the image path."""
ADAPTER_KEYS = ("augmentation_list", "data_loader", "return_metadata", "seed")
"""Keys consumed by the adapters rather than the sampler."""
HYDRA_KEYS = ("_target_", "_recursive_", "_convert_", "_partial_", "_args_")
"""Hydra's own keys, ignored."""
SAMPLER_KEYS = tuple(inspect.signature(PatchSampler.__init__).parameters)[1:]


def to_plain(value: Any) -> Any:
    """OmegaConf containers (what Hydra passes) -> plain dicts/lists; anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_seed(seed: Any) -> int | None:
    """A seed option as an int (or None), refusing other types with a clear error."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise OptionError(f"seed must be an integer or None, got {type(seed).__name__}: {seed!r}.")
    return None if seed is None else int(seed)


def plain_mapping(config: Any) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf ``DictConfig``."""
    config = to_plain(config)
    if not isinstance(config, Mapping):
        raise OptionError(f"A configuration must be a mapping of options, got {type(config).__name__}.")
    return dict(config)


def check_keys(keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise `OptionError` for the first unknown key, suggesting the closest known one."""
    known = list(known)
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known options: {', '.join(sorted(known))}."
            raise OptionError(f"Unknown option {key!r} in {where}.{hint}")


def split_config(config: Any, *, where: str = "the configuration") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a mapping of the original ``MBTilesCropsGeoTifMaskDataset`` keys into (PatchSampler
    keyword arguments, adapter options)."""
    mapping = {k: v for k, v in plain_mapping(config).items() if k not in HYDRA_KEYS}
    mapping = {ALIASES.get(k, k): v for k, v in mapping.items()}
    if "allowed_targets" in mapping:
        raise OptionError(
            f"allowed_targets cannot be set in {where}: a shared configuration file must not widen what "
            "crossgeo may instantiate. Pass allowed_targets=[...] in code (PatchDataset, make_dataset, "
            "PatchPyDataset) or use crossgeo validate --allow-target MODULE."
        )
    check_keys(mapping, (*SAMPLER_KEYS, *ADAPTER_KEYS, *ALIASES), where)
    sampler = {k: v for k, v in mapping.items() if k in SAMPLER_KEYS}
    rest = {k: v for k, v in mapping.items() if k in ADAPTER_KEYS}
    missing = [k for k in ("image_path", "mask_path", "crops_path", "patch_size") if k not in sampler]
    if missing:
        names = ["image_mbtiles_path" if k == "image_path" else k for k in missing]
        raise OptionError(f"{where} is missing the required option(s) {', '.join(names)}.")
    return sampler, rest


def sampler_from_config(config: Any, *, where: str = "the configuration") -> tuple[PatchSampler, dict[str, Any]]:
    """A `PatchSampler` from a mapping of the original ``MBTilesCropsGeoTifMaskDataset`` keys, and the
    adapter options left over."""
    sampler_kwargs, rest = split_config(config, where=where)
    return PatchSampler(**sampler_kwargs), rest


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


def resolve_source(source: Any, where: str) -> tuple[PatchSampler, dict[str, Any]]:
    """The sampler and adapter options of a `PatchSampler` or a mapping of the original
    ``MBTilesCropsGeoTifMaskDataset`` keys.

    For a mapping, the options are those it sets among ``augmentation_list``,
    ``seed``, ``return_metadata`` and, from its ``data_loader``,
    ``batch_size``, ``shuffle``, ``drop_last`` (the tf.data and Keras adapters' view).
    """
    if isinstance(source, PatchSampler):
        return source, {}
    if not isinstance(source, Mapping) and type(source).__name__ != "DictConfig":
        raise OptionError(
            f"{where}: source must be a crossgeo.PatchSampler or a mapping of configuration keys "
            f"(image_mbtiles_path, mask_path, crops_path, patch_size, ...), got {type(source).__name__}."
        )
    sampler, rest = sampler_from_config(source, where=where)
    loader = dict(rest.pop("data_loader", None) or {})
    check_keys(loader, (*DATA_LOADER_USED, *DATA_LOADER_IGNORED), f"{where} data_loader")
    rest.update({k: loader[k] for k in DATA_LOADER_USED if k in loader})
    return sampler, rest
