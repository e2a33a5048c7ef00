"""What every ``crossgeo`` command shares: configuration loading, class display, progress, warnings.

A configuration is a YAML file with the original ``MBTilesCropsGeoTifMaskDataset`` keys,
either flat or under ``train_dataset:`` (``_target_`` is ignored; ``--section`` picks another
block). Relative paths are looked up in the working directory first, then next to the
configuration file. One key is the command's own: ``class_names`` (a list, or a mapping of
class to name, inside the block or at the file's top level) labels classes in ``preview`` and
``stats``; it is taken out before the sampler is built.

The command's own dependencies (PyYAML, tqdm, Pillow) are imported by `require` when a
command needs them, so ``crossgeo --help`` always works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

__all__ = [
    "DISPLAY_KEYS",
    "PALETTE",
    "PATH_KEYS",
    "CliError",
    "Options",
    "add_config_arguments",
    "class_colours",
    "class_count",
    "class_label",
    "dataset_values",
    "declared_classes",
    "ignore_index",
    "load_config",
    "make_sampler",
    "one_line",
    "parse_class_names",
    "progress",
    "read_with_validity",
    "readable_warnings",
    "require",
    "split_options",
]

PATH_KEYS = ("image_mbtiles_path", "image_path", "mask_path", "crops_path")
"""Keys holding input paths (resolved against the config's folder when not found in the cwd), also inside
each mapping of a ``scenes`` list; ``scenes`` itself may be a path."""
DISPLAY_KEYS = ("class_names",)
"""Keys only the command reads (how classes are shown); never passed to the sampler."""
PALETTE = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
)
"""Class colours for single-band masks (class 0, background, is never tinted)."""
EXAMPLE_CONFIG = """\
configuration (YAML with the original MBTilesCropsGeoTifMaskDataset keys, flat or under
train_dataset:; _target_ is ignored; class_names, optional, names the classes for display):
  train_dataset:
    image_mbtiles_path: imagery.mbtiles
    mask_path: masks/mask.vrt
    crops_path: crops/windows.csv
    patch_size: 256
    selected_bands: [1, 2, 3]
    color_map: [[255, 0, 0, 1], [0, 255, 0, 2]]
  class_names: [background, buildings, trees]
"""
"""The configuration example every command's ``--help`` ends with."""


class CliError(Exception):
    """A failure the command reports as one line (no traceback)."""


# --------------------------------------------------------------------------- small helpers


def require(module: str, package: str) -> Any:
    """Import ``module`` or fail with the pip line that installs ``package``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CliError(
            f"this command needs {package} ({error}); install the command's extras: "
            "in a clone of crossgeo: pip install '.[cli]'"
        ) from error


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown only when stderr is a terminal."""
    tqdm = require("tqdm", "tqdm").tqdm
    kwargs.setdefault("disable", None)  # no bar when stderr is not a terminal
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def readable_warnings() -> Iterator[None]:
    """Show warnings as ``warning: message`` lines instead of file:line dumps."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        original = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            text = one_line(message if isinstance(message, Warning) else Warning(message))
            print(f"warning: {text}", file=sys.stderr)

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``CONFIG`` and ``--section`` arguments of the commands that read a configuration."""
    parser.add_argument("config", help="YAML configuration with the original MBTilesCropsGeoTifMaskDataset keys")
    parser.add_argument(
        "--section", metavar="NAME", help="the block of the YAML file to use (default: the top level or train_dataset)"
    )


# --------------------------------------------------------------------------- configuration


def _resolve_paths(mapping: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Relative paths: the working directory first, then the configuration file's folder."""
    from crossgeo.io import is_remote

    out = dict(mapping)
    base: Path | None = None
    for key in PATH_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or not value or is_remote(value) or Path(value).is_absolute():
            continue
        if not Path(value).exists() and (config_dir / value).exists():
            out[key] = str(config_dir / value)
            if key == "crops_path":
                base = config_dir
    scenes = out.get("scenes")
    if isinstance(scenes, str) and scenes and not Path(scenes).is_absolute():
        if not Path(scenes).exists() and (config_dir / scenes).exists():
            out["scenes"] = str(config_dir / scenes)
    elif isinstance(scenes, list):
        out["scenes"] = [_resolve_paths(s, config_dir) if isinstance(s, dict) else s for s in scenes]
    cache = out.get("window_index_cache")
    if isinstance(cache, str) and cache and not Path(cache).is_absolute() and base is not None:
        out["window_index_cache"] = str(base / cache)
    return out


def load_config(path: str | os.PathLike[str], section: str | None = None) -> dict[str, Any]:
    """The dataset options of a YAML file: flat, under ``train_dataset:`` or ``section``.

    A top-level ``class_names`` applies to whichever block is chosen (the block's own wins).
    """
    yaml = require("yaml", "PyYAML")
    file = Path(path)
    if not file.is_file():
        raise CliError(f"configuration file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise CliError(f"{file} is not valid YAML: {one_line(error)}") from error
    with contextlib.suppress(ImportError, Exception):
        from omegaconf import OmegaConf  # resolve ${...} interpolations when OmegaConf is around

        data = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    if not isinstance(data, dict):
        raise CliError(f"{file} must hold a mapping of options, not {type(data).__name__}")
    top = data
    if section is not None:
        block = data.get(section)
        if not isinstance(block, dict):
            blocks = [k for k, v in data.items() if isinstance(v, dict)]
            raise CliError(f"{file} has no {section!r} block; its blocks are {blocks or 'none'}")
        data = block
    elif not any(k in data for k in ("image_mbtiles_path", "image_path", "scenes")):
        if isinstance(data.get("train_dataset"), dict):
            data = data["train_dataset"]
        else:
            blocks = [
                k
                for k, v in data.items()
                if isinstance(v, dict) and any(key in v for key in ("image_mbtiles_path", "image_path", "scenes"))
            ]
            if len(blocks) == 1:
                data = data[blocks[0]]
            elif len(blocks) > 1:
                raise CliError(
                    f"{file} has several dataset blocks ({', '.join(blocks)}); choose one with --section NAME"
                )
            else:
                raise CliError(
                    f"{file} has no image_mbtiles_path (or scenes), neither at the top level nor under train_dataset: "
                    "see the example in 'crossgeo validate --help'"
                )
    options = {str(k): v for k, v in data.items()}
    if data is not top and "class_names" in top and "class_names" not in options:
        options["class_names"] = top["class_names"]
    return _resolve_paths(options, file.resolve().parent)


def parse_class_names(value: Any, where: str) -> dict[int, str]:
    """``class_names`` as {class: name}: a list (class = position) or a mapping of class to name."""
    from crossgeo.errors import ConfigError

    example = "class_names: [background, water, forest] or class_names: {1: water, 2: forest}"
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = list(enumerate(value))
    else:
        raise ConfigError(f"class_names in {where} must be a list or a mapping, got {value!r}. Example: {example}")
    names: dict[int, str] = {}
    for key, name in items:
        try:
            cls = int(key)
        except (TypeError, ValueError):
            cls = -1
        if cls < 0 or isinstance(key, bool) or (isinstance(key, float) and key != cls):
            raise ConfigError(
                f"class_names in {where}: {key!r} is not a class number (0, 1, 2, ...). Example: {example}"
            )
        if not isinstance(name, (str, int, float)) or isinstance(name, bool) or not str(name).strip():
            raise ConfigError(f"class_names in {where}: the name of class {cls} is {name!r}; give a non-empty text")
        names[cls] = str(name).strip()
    return names


@attrs.frozen
class Options:
    """A configuration split by who reads it."""

    sampler: dict[str, Any]
    """`crossgeo.PatchSampler` keyword arguments."""
    adapter: dict[str, Any]
    """Options of the framework adapters (``augmentation_list``, ``data_loader``, ``seed``, ...)."""
    class_names: dict[int, str]
    """Display names of classes (``class_names``; empty when not set)."""


def split_options(config: dict[str, Any], where: str) -> Options:
    """Split a loaded configuration; unknown keys are an error with a did-you-mean suggestion."""
    from crossgeo.config import split_config

    mapping = dict(config)
    display = {key: mapping.pop(key) for key in DISPLAY_KEYS if key in mapping}
    sampler, adapter = split_config(mapping, where=where)
    return Options(sampler, adapter, parse_class_names(display.get("class_names"), where))


def make_sampler(args: argparse.Namespace, **overrides: Any) -> tuple[Any, Options]:
    """The sampler of the command's CONFIG (``args.config``, ``args.section``) and its options.

    A `crossgeo.PatchSampler`, or a `crossgeo.SceneSampler` when the configuration has ``scenes``.
    """
    from crossgeo.config import build_sampler

    options = split_options(load_config(args.config, args.section), str(args.config))
    options.sampler.update(overrides)
    return build_sampler(options.sampler), options


def dataset_values(options: Options, where: str) -> dict[str, Any]:
    """Every sampler option of a configuration by its own name (``image_path`` for ``image_mbtiles_path``), defaults
    filled in: for commands that use the configuration without building a sampler (``predict``, ``evaluate``)."""
    from crossgeo.options import resolve_sampler_options

    return resolve_sampler_options(options.sampler, where)[0]


def class_count(values: Mapping[str, Any]) -> int:
    """K, the number of model outputs a configuration trains: its colour map's largest class + 1, else n_classes."""
    color_map = values.get("color_map")
    if color_map:
        return max(int(entry[3]) for entry in color_map) + 1
    return int(values["n_classes"])


# --------------------------------------------------------------------------- reading and classes


def read_with_validity(
    sampler: Any, index: int, *, image: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(image, mask, invalid)`` of window ``index``: the patch plus where the mask had no data.

    ``mask`` equals ``sampler[index].mask``; ``invalid`` is True where the mask does not cover
    the window or marks nodata (those pixels hold ``sampler.mask_fill_value``). With
    ``image=False`` only the mask is read (`PatchSampler.read_mask`).
    """
    if image:
        patch = sampler[index]
        return patch.image, patch.mask, ~patch.mask_valid
    from crossgeo.scenes import SceneSampler

    where = {"scene": int(sampler.scene[index])} if isinstance(sampler, SceneSampler) else {}
    mask, valid = sampler.read_mask(int(sampler.row_off[index]), int(sampler.col_off[index]), **where)
    return None, mask, ~valid


def declared_classes(sampler: Any) -> list[int]:
    """The classes the configuration can produce (0 always included)."""
    if sampler.color_map is not None:
        return sorted({0, *(int(entry[3]) for entry in sampler.color_map)})
    return [0, 1] if sampler.n_classes == 2 else list(range(sampler.n_classes))


def class_colours(sampler: Any, classes: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """Display colour per class: the colour map's own colours, else `PALETTE`."""
    colours: dict[int, tuple[int, int, int]] = {}
    if sampler.color_map is not None:
        for r, g, b, c in sampler.color_map:
            colours.setdefault(int(c), (int(r), int(g), int(b)))
    for c in classes:
        colours.setdefault(int(c), PALETTE[int(c) % len(PALETTE)] if c else (0, 0, 0))
    return colours


def ignore_index(sampler: Any) -> int | None:
    """The fill value when it is not one of the declared classes (an ignore index)."""
    fill = int(sampler.mask_fill_value)
    return fill if fill not in declared_classes(sampler) else None


def class_label(sampler: Any, cls: int, class_names: Mapping[int, str] | None = None) -> str:
    """``cls``, its name from ``class_names`` and, for colour-coded masks, its colour(s)."""
    name = (class_names or {}).get(cls)
    label = f"{cls} {name}" if name else str(cls)
    if sampler.color_map is not None:
        rgb = [list(e[:3]) for e in sampler.color_map if int(e[3]) == cls]
        if rgb:
            return f"{label} {rgb[0]}" + (f" +{len(rgb) - 1}" if len(rgb) > 1 else "")
        return f"{label} (unmapped colours)" if cls == 0 else label
    return label
