"""The original ``MBTilesCropsGeoTifMaskDataset``'s configuration keys, read with no framework.

`crossgeo.torch.MBTilesCropsGeoTifMaskDataset` is a thin torch class over this module:
`read_dropin` sorts the keyword arguments Hydra hands it (every YAML key) into the
sampler's options, the dataset's options and the original pipeline's extra keys
(`crossgeo.options.DROPIN_OPTIONS`), and warns about the rest with the closest known key,
as the original accepts unknown keys (``**kwargs``) where `crossgeo.PatchSampler` and the CLI
refuse them. `check_weighted_sampler`, `configured_weights` and `windows_frame` carry the
original's ``data_loader.weighted_sampler`` and its model's ``df.sampler_weight``.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from crossgeo.config import ADAPTER_KEYS, ALIASES, HYDRA_KEYS, SAMPLER_KEYS, SCENE_KEYS, split_config, to_plain
from crossgeo.errors import ConfigError, OptionError
from crossgeo.loading import LoaderPlan, resolve_weights
from crossgeo.options import DROPIN_DATA_LOADER_OPTIONS, DROPIN_OPTIONS, IGNORED_DROPIN_OPTIONS, IgnoredOptionWarning
from crossgeo.windows import WEIGHT_COLUMN

__all__ = [
    "DROPIN_DATA_LOADER_KEYS",
    "WORKER_ONLY_KEYS",
    "DropinConfig",
    "check_data_loader",
    "check_weighted_sampler",
    "configured_weights",
    "loader_options",
    "read_dropin",
    "windows_frame",
]

log = logging.getLogger("crossgeo")

WHERE = "MBTilesCropsGeoTifMaskDataset"

DROPIN_DATA_LOADER_KEYS = tuple(o.name for o in DROPIN_DATA_LOADER_OPTIONS)
"""``data_loader`` keys the original's Lightning model reads beyond the DataLoader's (``weighted_sampler``, ...)."""


@attrs.frozen
class DropinConfig:
    """The drop-in's keyword arguments, sorted (`read_dropin`)."""

    sampler_options: dict[str, Any]
    """The sampler's options (`crossgeo.config.build_sampler` builds a PatchSampler or SceneSampler)."""
    augmentation_list: Any
    return_metadata: Any
    seed: Any
    samples_per_epoch: Any
    read_threads: Any
    """Threads reading ahead at ``num_workers: 0`` (`crossgeo.options.AdapterOptions.read_threads`)."""
    data_loader: dict[str, Any]
    """The ``data_loader`` mapping for `crossgeo.torch.make_dataloader`, unknown keys dropped with a warning."""
    gpu_augmentation_list: Any
    """The original's GPU (kornia) augmentations: its Lightning model applies them, not the dataset."""


def read_dropin(config: Mapping[str, Any], data_loader_keys: Sequence[str]) -> DropinConfig:
    """Sort the drop-in's keyword arguments; unknown keys (also in ``data_loader``) warn and are dropped.

    ``data_loader_keys``: the keywords of the framework's loader (``torch.utils.data.DataLoader``).
    ``allowed_targets`` is refused (`crossgeo.config.split_config`): a configuration must not widen
    what ``_target_`` may name.
    """
    config = dict(config)
    dropin = {o.name: to_plain(config.pop(o.name)) for o in DROPIN_OPTIONS if o.name in config}
    known = (*SAMPLER_KEYS, *SCENE_KEYS, *ADAPTER_KEYS, *ALIASES, *HYDRA_KEYS, "allowed_targets")
    for name in [k for k in config if k not in known]:
        _warn_ignored(name, config.pop(name), (*known, *dropin, *(o.name for o in DROPIN_OPTIONS)), "")
    for name in IGNORED_DROPIN_OPTIONS:
        if name in dropin:
            warnings.warn(
                f"{WHERE} ignores {name}={dropin[name]!r}: crossgeo's windows come from crops_path.",
                IgnoredOptionWarning,
                stacklevel=3,
            )
    sampler_options, rest = split_config(config, where=WHERE)
    return DropinConfig(
        sampler_options=sampler_options,
        augmentation_list=rest.get("augmentation_list"),
        return_metadata=rest.get("return_metadata", False),
        seed=rest.get("seed"),
        samples_per_epoch=dropin.get("samples_per_epoch"),
        read_threads=rest.get("read_threads"),
        data_loader=check_data_loader(rest.get("data_loader"), (*data_loader_keys, *DROPIN_DATA_LOADER_KEYS)),
        gpu_augmentation_list=dropin.get("gpu_augmentation_list"),
    )


def _warn_ignored(name: str, value: Any, known: Iterable[str], where: str) -> bool:
    """Warn that the drop-in drops an unknown option, naming the closest known one; returns False (keep it out)."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    warnings.warn(
        f"{WHERE} ignores the unknown option {where}{name}={value!r}.{hint}",
        IgnoredOptionWarning,
        stacklevel=5,
    )
    return False


def check_data_loader(data_loader: Any, known: Sequence[str]) -> dict[str, Any]:
    """A ``data_loader`` mapping, checked; keys not in ``known`` warn (with the closest one) and are dropped."""
    data_loader = to_plain(data_loader)
    if data_loader is None:
        return {}
    if not isinstance(data_loader, Mapping):
        raise OptionError(f"data_loader must be a mapping of DataLoader options, got {data_loader!r}.")
    return {k: v for k, v in data_loader.items() if k in known or _warn_ignored(k, v, known, "data_loader.")}


WORKER_ONLY_KEYS = ("prefetch_factor", "persistent_workers", "timeout", "multiprocessing_context")
"""DataLoader options that only exist with worker processes."""


def loader_options(configured: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A ``data_loader`` mapping's options under a loader's keyword ``overrides``.

    A passed ``sampler`` / ``batch_sampler`` drops a configured ``shuffle`` (and a ``batch_sampler``
    the configured ``batch_size`` / ``drop_last``), which the DataLoader refuses beside them;
    with ``num_workers: 0`` the configured worker-only options (`WORKER_ONLY_KEYS`) are dropped.
    """
    configured = dict(configured or {})
    if any(k in overrides for k in ("sampler", "batch_sampler")) and "shuffle" not in overrides:
        configured.pop("shuffle", None)
    if "batch_sampler" in overrides:
        for key in ("batch_size", "drop_last"):
            if key not in overrides:
                configured.pop(key, None)
    options = {**configured, **overrides}
    if not options.get("num_workers"):
        dropped = [k for k in WORKER_ONLY_KEYS if k in options and k not in overrides]
        for key in dropped:
            del options[key]
        if dropped:
            log.debug("crossgeo: num_workers is 0, so %s do not apply and were dropped", ", ".join(dropped))
    return options


def check_weighted_sampler(data_loader: Mapping[str, Any], plan: LoaderPlan) -> None:
    """``data_loader.weighted_sampler: true`` needs one item per window and a ``weight`` column: errors now."""
    if not data_loader.get("weighted_sampler"):
        return
    if plan.samples_per_epoch != plan.n_windows:
        raise ConfigError(
            f"{WHERE}: data_loader.weighted_sampler draws windows by weight, one item "
            "per window, and cannot be combined with samples_per_epoch; remove samples_per_epoch (the "
            "original's model draws data_loader.weighted_sampler_num_samples windows per epoch)."
        )
    resolve_weights(WEIGHT_COLUMN, plan.sampler, "data_loader.weighted_sampler")  # no weight column: an error now


def configured_weights(weighted: Mapping[str, Any], count: int, where: str = "make_dataloader") -> str:
    """``data_loader.weighted_sampler: true`` -> ``weights="weight"``; its sampler's other keys, where they
    differ from crossgeo's draw (``count`` windows with replacement), are ignored with a warning."""
    wanted = weighted.get("weighted_sampler_num_samples")
    if wanted is not None and wanted != count:
        warnings.warn(
            f"{where} draws len(dataset) = {count} windows per epoch; "
            f"data_loader.weighted_sampler_num_samples={wanted!r} is ignored.",
            IgnoredOptionWarning,
            stacklevel=3,
        )
    if weighted.get("weighted_sampler_replacement", True) is not True:
        warnings.warn(
            f"{where} draws weighted windows with replacement; data_loader.weighted_sampler_replacement="
            f"{weighted['weighted_sampler_replacement']!r} is ignored.",
            IgnoredOptionWarning,
            stacklevel=3,
        )
    return WEIGHT_COLUMN


def windows_frame(sampler: Any) -> Any:
    """The windows as a pandas DataFrame: ``row_off``, ``col_off`` and, when the windows table has
    weights, ``sampler_weight`` (what the original's model reads for ``data_loader.weighted_sampler``)."""
    import pandas as pd

    index = getattr(sampler, "index", None)
    if index is None:
        raise AttributeError("df: a catalogue of scenes has no single windows table")
    frame = pd.DataFrame({"row_off": np.asarray(index.row_off), "col_off": np.asarray(index.col_off)})
    if index.weight is not None:
        frame["sampler_weight"] = np.asarray(index.weight, dtype=np.float64)
    return frame
