"""What every ``crossgeo`` command shares: configuration loading, class display, progress, warnings.

A configuration is a YAML file with the original ``MBTilesCropsGeoTifMaskDataset`` keys,
either flat or under ``train_dataset:`` (``_target_`` is ignored; ``--section`` picks another
block). Relative paths are looked up in the working directory first, then next to the
configuration file. One key is the command's own: ``class_names`` (a list, or a mapping of
class to name, inside the block or at the file's top level) labels classes in ``preview`` and
``stats``; it is taken out before the sampler is built.

A configuration may come from someone else, so loading it is bounded (`load_config`):
duplicate keys are an error naming the key and its line; YAML aliases may add at most
`MAX_ALIAS_VALUES` values (a kilobyte "billion laughs" file fails at once instead of
expanding for minutes); plain references to other keys of the file (``${train.patch_size}``,
``${.sibling}``) are resolved, within the same bound; resolver interpolations
(``${oc.env:HOME}``, ``${oc.decode:...}``, any ``${name:...}``) run only with ``--allow-env``,
so a shared file cannot put an environment secret into a URL that a command fetches or prints.

The command's own dependencies (PyYAML, tqdm, Pillow) are imported by `require` when a
command needs them, so ``crossgeo --help`` always works.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

__all__ = [
    "DISPLAY_KEYS",
    "MAX_ALIAS_VALUES",
    "MAX_REFERENCE_VALUES",
    "PALETTE",
    "PATH_KEYS",
    "CliError",
    "Options",
    "add_config_arguments",
    "class_colours",
    "class_count",
    "class_label",
    "config_of",
    "dataset_values",
    "declared_classes",
    "ignore_index",
    "install_hint",
    "load_config",
    "load_yaml",
    "make_sampler",
    "one_line",
    "parse_class_names",
    "progress",
    "read_with_validity",
    "readable_warnings",
    "require",
    "require_cli_extra",
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


CLI_EXTRA = {"yaml": "PyYAML", "tqdm": "tqdm", "PIL": "Pillow"}
"""The modules of the ``cli`` extra (module: package) every command may need."""
EXTRAS = {"albumentations": "augment", "torch": "torch", "tensorflow": "tensorflow", "keras": "tensorflow"}
"""The crossgeo extra that installs a missing optional module (`install_hint`)."""


def require_cli_extra() -> None:
    """Fail, before a command writes anything, when a package of the ``cli`` extra is not installed."""
    missing = [package for module, package in CLI_EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise CliError(
            f"the crossgeo command needs its cli extra ({', '.join(missing)} not installed); install it: "
            "in a clone of crossgeo: pip install '.[cli]'"
        )


def install_hint(error: ImportError) -> str:
    """The pip line that installs the module ``error`` names (its crossgeo extra), or the module to install."""
    module = (error.name or "").split(".")[0]
    if module in EXTRAS:
        return f"in a clone of crossgeo: pip install '.[{EXTRAS[module]}]'"
    return f"install {module}" if module else "install the missing package"


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
    """The ``CONFIG``, ``--section`` and ``--allow-env`` arguments of the commands that read a configuration."""
    parser.add_argument(
        "config",
        help="YAML configuration: image_mbtiles_path (or image_path), mask_path, crops_path, patch_size and the "
        "other keys of the original MBTilesCropsGeoTifMaskDataset (example below)",
    )
    parser.add_argument(
        "--section", metavar="NAME", help="the block of the YAML file to use (default: the top level or train_dataset)"
    )
    parser.add_argument(
        "--allow-env",
        action="store_true",
        help="resolve OmegaConf resolver interpolations of the configuration, such as ${oc.env:VAR} (environment "
        "variables) and ${oc.decode:...}; without it they are an error (plain ${key} references always work)",
    )


# --------------------------------------------------------------------------- configuration


def _resolve_paths(mapping: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Relative paths: the working directory first, then the configuration file's folder."""
    from crossgeo.io import is_remote

    out = dict(mapping)
    base: Path | None = None
    for key in ("image_mbtiles_path", "image_path"):  # several image sources: each source's path
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [_resolve_source(item, config_dir) for item in value]
        elif isinstance(value, dict):
            out[key] = {name: _resolve_source(item, config_dir) for name, item in value.items()}
    for key in PATH_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or not value or is_remote(value) or Path(value).is_absolute():
            continue
        if not Path(value).exists() and (config_dir / value).exists():
            out[key] = str(config_dir / value)
            if key == "crops_path":
                base = config_dir
        elif not Path(value).exists():  # in neither: name it next to the config, where the file says it is
            out[key] = str(config_dir / value)
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


def _resolve_path(value: Any, config_dir: Path) -> Any:
    """One relative path: as given when it exists in the working directory, else next to the configuration."""
    from crossgeo.io import is_remote

    if not isinstance(value, str) or not value or is_remote(value) or Path(value).is_absolute() or Path(value).exists():
        return value
    return str(config_dir / value)


def _resolve_source(item: Any, config_dir: Path) -> Any:
    """One image source of a list or mapping: a path, or a mapping with ``path``."""
    if isinstance(item, dict) and "path" in item:
        return {**item, "path": _resolve_path(item["path"], config_dir)}
    return _resolve_path(item, config_dir)


MAX_ALIAS_VALUES = 100_000
"""How many values YAML aliases (``*name``) may add to a configuration, counted as if expanded."""
MAX_REFERENCE_VALUES = 100_000
"""How many values, or kilobytes of text, plain ``${key}`` references may produce when resolved."""
_INTERPOLATION = re.compile(r"\$\{")
_PLAIN_REFERENCE = re.compile(r"\$\{(\.*[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+|\[\d+\])*)\}")
"""A reference to another key of the file (``${a.b}``, ``${.sibling}``, ``${a[0]}``): no resolver, no nesting."""


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def _yaml_loader(yaml: Any, file: Path) -> type:
    """A ``yaml.SafeLoader`` that refuses duplicate keys and alias expansion beyond `MAX_ALIAS_VALUES`.

    PyYAML shares an aliased node instead of copying it, so a "billion laughs" file loads in
    microseconds and explodes later, in whatever walks or copies it (OmegaConf, the option
    checks, a printout). The loader counts the values the document would have with every
    alias expanded (memoised per node, so counting is as cheap as the file) before any
    Python object is built.
    """
    from crossgeo.errors import ConfigError

    class BoundedLoader(yaml.SafeLoader):
        def construct_document(self, node: Any) -> Any:
            sizes: dict[int, int] = {}
            active: set[int] = set()

            def expanded(node: Any) -> int:
                key = id(node)
                if key in sizes:
                    return sizes[key]
                if key in active:
                    raise ConfigError(
                        f"{file} line {_line(node)}: a YAML alias refers to a block that contains it (a recursive "
                        "structure); a configuration must be a tree. Remove the alias."
                    )
                active.add(key)
                total = 1
                if isinstance(node, yaml.MappingNode):
                    seen: dict[tuple[str, str], int] = {}
                    for key_node, value_node in node.value:
                        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                            name = (key_node.tag, key_node.value)
                            if name in seen:
                                raise ConfigError(
                                    f"{file} line {_line(key_node)}: the key {key_node.value!r} is given twice (first "
                                    f"on line {seen[name]}); YAML would silently keep the last one. Keep one of them."
                                )
                            seen[name] = _line(key_node)
                        total += expanded(key_node) + expanded(value_node)
                elif isinstance(node, yaml.SequenceNode):
                    total += sum(expanded(item) for item in node.value)
                active.discard(key)
                sizes[key] = total
                if total - len(sizes) > MAX_ALIAS_VALUES:
                    raise ConfigError(
                        f"{file}: YAML aliases (*name) expand this configuration to more than "
                        f"{MAX_ALIAS_VALUES:,} extra values (a 'billion laughs' file?); crossgeo refuses it before "
                        "expanding it. Write the values out, or use fewer nested aliases."
                    )
                return total

            expanded(node)
            return super().construct_document(node)

    return BoundedLoader


def load_yaml(file: Path) -> Any:
    """The YAML document of ``file``, loaded safely and within bounds (see `_yaml_loader`)."""
    yaml = require("yaml", "PyYAML")
    loader = _yaml_loader(yaml, file)(file.read_text())
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise CliError(f"{file} is not valid YAML: {one_line(error)}") from error
    finally:
        loader.dispose()


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _step(container: Any, part: str) -> tuple[bool, Any, Any]:
    """``container[part]`` for a reference part (text): (found, key, value)."""
    if isinstance(container, dict):
        for key in (part, int(part) if part.isdigit() else None):
            if key is not None and key in container:
                return True, key, container[key]
    elif isinstance(container, list) and part.isdigit() and int(part) < len(container):
        return True, int(part), container[int(part)]
    return False, None, None


def _check_interpolations(data: Any, start: tuple[Any, ...], file: Path, allow_env: bool) -> bool:
    """Check the ``${...}`` interpolations the value at ``start`` uses; True when it uses any.

    Only that value and what its references reach are looked at, so a resolver in a part of
    the file the command does not use (a Hydra ``${now:...}`` elsewhere) does not matter.
    Without ``allow_env``, any resolver (``${oc.env:VAR}``, ``${oc.decode:...}``,
    ``${name:...}``) or anything that is not a plain reference is an error naming the key and
    ``--allow-env``. Plain references must not refer to themselves, nor expand beyond
    `MAX_REFERENCE_VALUES`: the "billion laughs" of YAML aliases can be written with them too
    (``b: ["${a}", "${a}", ...]``, ``c: ["${b}", ...]``), so the size each value would have once
    resolved is counted (memoised per key) before OmegaConf resolves anything. A reference the
    count cannot follow is left to OmegaConf, which reports it.
    """
    from crossgeo.errors import ConfigError

    sizes: dict[tuple[Any, ...], tuple[int, int]] = {}
    active: set[tuple[Any, ...]] = set()
    used = False

    def target(path: tuple[Any, ...], reference: str) -> tuple[tuple[Any, ...], Any] | None:
        dots = len(reference) - len(reference.lstrip("."))
        base = path[: len(path) - dots] if dots else ()
        node: Any = data
        for part in base:
            node = node[part]
        keys = list(base)
        for part in re.findall(r"[^.\[\]]+", reference[dots:]):
            found, key, node = _step(node, part)
            if not found:
                return None
            keys.append(key)
        return tuple(keys), node

    def size(path: tuple[Any, ...], value: Any) -> tuple[int, int]:
        nonlocal used
        if path in sizes:
            return sizes[path]
        if path in active:
            raise ConfigError(f"{file}: the reference chain through {_dotted(path)} refers to itself; break the loop.")
        active.add(path)
        values, chars = 1, 0
        if isinstance(value, dict):
            for key, item in value.items():
                v, c = size((*path, key), item)
                values, chars = values + v, chars + c
        elif isinstance(value, list):
            for pos, item in enumerate(value):
                v, c = size((*path, pos), item)
                values, chars = values + v, chars + c
        elif isinstance(value, str) and _INTERPOLATION.search(value):
            used = True
            if not allow_env and _INTERPOLATION.search(_PLAIN_REFERENCE.sub("", value)):
                raise ConfigError(
                    f"{file}: {_dotted(path)} is {value!r}, a resolver interpolation (such as ${{oc.env:VAR}}, "
                    "which reads an environment variable); crossgeo resolves these only when you pass --allow-env, "
                    "so a shared configuration cannot read your environment. Write the value out, or pass "
                    "--allow-env if you trust this file."
                )
            chars = len(value)
            for reference in _PLAIN_REFERENCE.findall(value):
                found = target(path, reference)
                if found is not None:
                    v, c = size(*found)
                    values, chars = values + v, chars + c
        elif isinstance(value, str):
            chars = len(value)
        active.discard(path)
        sizes[path] = (values, chars)
        if values > MAX_REFERENCE_VALUES or chars > 1000 * MAX_REFERENCE_VALUES:
            raise ConfigError(
                f"{file}: resolving the ${{...}} references of {_dotted(path)} would produce more than "
                f"{MAX_REFERENCE_VALUES:,} values or {MAX_REFERENCE_VALUES // 1000:,} MB of text; crossgeo refuses "
                "it before resolving. Write the values out, or use fewer nested references."
            )
        return values, chars

    node: Any = data
    for key in start:
        node = node[key]
    size(start, node)
    return used


def _resolved(data: Any, path: tuple[Any, ...], file: Path, allow_env: bool) -> Any:
    """The value at ``path`` of a loaded document with its ``${...}`` interpolations resolved (OmegaConf).

    References may point anywhere in the file; see `_check_interpolations` for what is refused.
    """
    from crossgeo.errors import ConfigError

    value: Any = data
    for key in path:
        value = value[key]
    if not _check_interpolations(data, path, file, allow_env):
        return value
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError as error:
        raise CliError(
            f"{file} uses ${{...}} interpolations in {_dotted(path)}; resolving them needs omegaconf: "
            "pip install omegaconf, or write the values out"
        ) from error
    try:
        node: Any = OmegaConf.create(data)
        for key in path:
            node = node[key]
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    except Exception as error:  # omegaconf's errors have no common public base
        raise ConfigError(
            f"{file}: resolving the ${{...}} interpolations of {_dotted(path)} failed: {one_line(error)}"
        ) from error


def load_config(path: str | os.PathLike[str], section: str | None = None, *, allow_env: bool = False) -> dict[str, Any]:
    """The dataset options of a YAML file: flat, under ``train_dataset:`` or ``section``.

    A top-level ``class_names`` applies to whichever block is chosen (the block's own wins).
    The file is read within bounds (duplicate keys, alias and reference expansion; see the
    module docstring); ``${...}`` interpolations of the chosen block are resolved, resolvers
    such as ``${oc.env:VAR}`` only with ``allow_env``.
    """
    file = Path(path)
    if not file.is_file():
        raise CliError(f"configuration file {str(file)!r} does not exist")
    data = load_yaml(file)
    if not isinstance(data, dict):
        raise CliError(f"{file} must hold a mapping of options, not {type(data).__name__}")
    block: tuple[str, ...] = ()
    if section is not None:
        if not isinstance(data.get(section), dict):
            blocks = [k for k, v in data.items() if isinstance(v, dict)]
            raise CliError(f"{file} has no {section!r} block; its blocks are {blocks or 'none'}")
        block = (section,)
    elif not any(k in data for k in ("image_mbtiles_path", "image_path", "scenes")):
        if isinstance(data.get("train_dataset"), dict):
            block = ("train_dataset",)
        else:
            blocks = [
                k
                for k, v in data.items()
                if isinstance(v, dict) and any(key in v for key in ("image_mbtiles_path", "image_path", "scenes"))
            ]
            if len(blocks) == 1:
                block = (blocks[0],)
            elif len(blocks) > 1:
                raise CliError(
                    f"{file} has several dataset blocks ({', '.join(blocks)}); choose one with --section NAME"
                )
            else:
                raise CliError(
                    f"{file} has no image_mbtiles_path (or scenes), neither at the top level nor under train_dataset: "
                    "see the example in 'crossgeo validate --help'"
                )
    resolved = _resolved(data, block, file, allow_env)
    if not isinstance(resolved, dict):
        raise CliError(f"{file}: {_dotted(block)} must hold a mapping of options, not {type(resolved).__name__}")
    options = {str(k): v for k, v in resolved.items()}
    if block and "class_names" in data and "class_names" not in options:
        options["class_names"] = _resolved(data, ("class_names",), file, allow_env)
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


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """`load_config` of a command's arguments (``config``, ``section`` and ``allow_env``)."""
    return load_config(args.config, args.section, allow_env=bool(getattr(args, "allow_env", False)))


def make_sampler(args: argparse.Namespace, **overrides: Any) -> tuple[Any, Options]:
    """The sampler of the command's CONFIG (``args.config``, ``args.section``) and its options.

    A `crossgeo.PatchSampler`, or a `crossgeo.SceneSampler` when the configuration has ``scenes``.
    """
    from crossgeo.config import build_sampler

    options = split_options(config_of(args), str(args.config))
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
