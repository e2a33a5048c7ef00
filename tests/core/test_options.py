"""Typed options: one set of checks, so the same mistake raises the same error class at every entry point.

A value of the wrong type is an `OptionTypeError` (a `ConfigError` and an `OptionError`), a value
of the right type out of range or not among the choices a plain `ConfigError`, an unknown name a
plain `OptionError`; the message names the option. The framework adapters' entry points are
checked the same way in ``tests/torch_adapter/test_torch_options.py`` and
``tests/tf_adapter/test_options.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from crossgeo import (
    ConfigError,
    OptionError,
    OptionTypeError,
    PatchSampler,
    SceneSampler,
    grid_windows,
    random_windows,
    spatial_split,
)
from crossgeo.cli.common import load_config
from crossgeo.config import check_seed, sampler_from_config
from crossgeo.inspection import inspect_sources
from crossgeo.options import (
    ADAPTER_OPTIONS,
    SAMPLER_OPTIONS,
    SCENE_OPTIONS,
    SEED_MAX,
    AdapterOptions,
    SamplerOptions,
    SceneOptions,
)
from crossgeo.testing import CoordinateScene as Scene

SIZE = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scene = Scene(tmp_path_factory.mktemp("options"), 512)
    return {"image_path": scene.image, "mask_path": scene.lonlat_mask(), "crops_path": scene.windows([0], [0])}


def _sampler(files: dict[str, Any], **options: Any) -> Any:
    return PatchSampler(**{**files, "patch_size": SIZE, **options})


def _scenes(files: dict[str, Any], **options: Any) -> Any:
    scenes = [{"image_path": files["image_path"], "crops_path": files["crops_path"]}]
    return SceneSampler(scenes, options.pop("patch_size", SIZE), mask_path=files["mask_path"], **options)


def _yaml(files: dict[str, Any], tmp_path: Path, text: str) -> Any:
    """A sampler through a YAML file, as ``crossgeo validate`` and the commands read it."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"image_mbtiles_path: {files['image_path']}\nmask_path: {files['mask_path']}\n"
        f"crops_path: {files['crops_path']}\npatch_size: {SIZE}\n{text}\n"
    )
    return sampler_from_config(load_config(config), where=str(config))


def _validated(files: dict[str, Any], **options: Any) -> Any:
    """``crossgeo validate``'s path: the inspection records the error as a problem instead of raising it."""
    inspection = inspect_sources({**files, "patch_size": SIZE, **options}, collect=True)
    assert inspection.problems, "validation found no problem"
    raise inspection.problems[0].error


Case = tuple[str, Callable[[dict[str, Any], Path], Any], type[Exception], str]

CASES: list[Case] = [
    # --- a negative integer (out of range): ConfigError
    ("PatchSampler negative", lambda f, t: _sampler(f, patch_size=-4), ConfigError, "patch_size"),
    ("PatchSampler negative fill", lambda f, t: _sampler(f, mask_fill_value=-1), ConfigError, "mask_fill_value"),
    ("SceneSampler negative", lambda f, t: _scenes(f, max_open=-1), ConfigError, "max_open"),
    ("SceneSampler negative patch", lambda f, t: _scenes(f, patch_size=-4), ConfigError, "patch_size"),
    ("grid_windows negative", lambda f, t: grid_windows(f["image_path"], -4), ConfigError, "patch_size"),
    ("YAML negative", lambda f, t: _yaml(f, t, "n_classes: -1"), ConfigError, "n_classes"),
    ("validate negative", lambda f, t: _validated(f, n_classes=-1), ConfigError, "n_classes"),
    # --- a bool for an integer (wrong type): OptionTypeError
    ("PatchSampler bool", lambda f, t: _sampler(f, patch_size=True), OptionTypeError, "patch_size"),
    ("SceneSampler bool", lambda f, t: _scenes(f, max_open=True), OptionTypeError, "max_open"),
    ("grid_windows bool", lambda f, t: grid_windows(f["image_path"], True), OptionTypeError, "patch_size"),
    ("random_windows bool", lambda f, t: random_windows(f["image_path"], 8, True, seed=0), OptionTypeError, "n"),
    ("YAML bool", lambda f, t: _yaml(f, t, "n_classes: true"), OptionTypeError, "n_classes"),
    ("YAML quoted int", lambda f, t: _yaml(f, t, "mask_fill_value: '255'"), OptionTypeError, "mask_fill_value"),
    ("validate bool", lambda f, t: _validated(f, n_classes=True), OptionTypeError, "n_classes"),
    # --- not among the choices: ConfigError
    ("PatchSampler choice", lambda f, t: _sampler(f, on_read_error="ignore"), ConfigError, "on_read_error"),
    ("PatchSampler dtype", lambda f, t: _sampler(f, image_dtype="int8"), ConfigError, "image_dtype"),
    ("SceneSampler choice", lambda f, t: _scenes(f, out_of_range="clip"), ConfigError, "out_of_range"),
    ("YAML choice", lambda f, t: _yaml(f, t, "on_read_error: ignore"), ConfigError, "on_read_error"),
    ("YAML choice type", lambda f, t: _yaml(f, t, "on_read_error: 1"), ConfigError, "on_read_error"),
    # --- a seed that is not an integer: OptionTypeError
    ("check_seed text", lambda f, t: check_seed("1"), OptionTypeError, "seed"),
    ("check_seed bool", lambda f, t: check_seed(True), OptionTypeError, "seed"),
    ("random_windows seed", lambda f, t: random_windows(f["image_path"], 8, 2, seed=1.5), OptionTypeError, "seed"),
    ("YAML seed", lambda f, t: _yaml(f, t, "seed: '7'"), OptionTypeError, "seed"),
    # --- a seed out of range: ConfigError (planning and the adapters agree)
    ("check_seed negative", lambda f, t: check_seed(-1), ConfigError, "seed"),
    ("check_seed 2**64", lambda f, t: check_seed(SEED_MAX + 1), ConfigError, "seed"),
    ("random_windows seed negative", lambda f, t: random_windows(f["image_path"], 8, 2, seed=-1), ConfigError, "seed"),
    (
        "spatial_split seed negative",
        lambda f, t: spatial_split(grid_windows(f["image_path"], 32), patch_size=32, block=64, seed=-1),
        ConfigError,
        "seed",
    ),
    ("YAML seed negative", lambda f, t: _yaml(f, t, "seed: -1"), ConfigError, "seed"),
    # --- other wrong types
    (
        "PatchSampler flag",
        lambda f, t: _sampler(f, ignore_invalid_image="yes"),
        OptionTypeError,
        "ignore_invalid_image",
    ),
    ("YAML flag", lambda f, t: _yaml(f, t, "return_metadata: 1"), OptionTypeError, "return_metadata"),
    ("YAML data_loader", lambda f, t: _yaml(f, t, "data_loader: 4"), OptionTypeError, "data_loader"),
    # --- an unknown name: OptionError, never a ConfigError
    ("PatchSampler unknown", lambda f, t: _sampler(f, n_clases=2), OptionError, "n_clases"),
    ("SceneSampler unknown", lambda f, t: _scenes(f, n_clases=2), OptionError, "n_clases"),
    ("YAML unknown", lambda f, t: _yaml(f, t, "n_clases: 2"), OptionError, "n_clases"),
]


@pytest.mark.parametrize(("build", "error", "option"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_same_mistake_raises_the_same_class_everywhere(
    files: dict[str, Any], tmp_path: Path, build: Callable[..., Any], error: type[Exception], option: str
) -> None:
    with pytest.raises(Exception) as raised:
        build(files, tmp_path)
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert option in str(raised.value)


def test_the_classes_say_which_builtin_to_catch() -> None:
    """A wrong type is both a bad value (ValueError) and a TypeError; an unknown name only a TypeError."""
    assert issubclass(OptionTypeError, ConfigError) and issubclass(OptionTypeError, OptionError)
    assert issubclass(OptionTypeError, ValueError) and issubclass(OptionTypeError, TypeError)
    assert not issubclass(OptionError, ValueError) and not issubclass(ConfigError, TypeError)


def test_the_option_tables_are_views_of_the_typed_classes() -> None:
    """The reference, the YAML keys and the signatures read the tables; the tables are the classes' fields."""
    for table, options in (
        (SAMPLER_OPTIONS, SamplerOptions),
        (SCENE_OPTIONS, SceneOptions),
        (ADAPTER_OPTIONS, AdapterOptions),
    ):
        fields = attrs.fields(options)
        assert [o.name for o in table] == [f.name for f in fields]
        for row, field in zip(table, fields):
            assert row.doc == field.metadata["doc"] and row.type == field.metadata["type"]
            assert row.doc.strip() and row.type.strip()


def test_the_typed_classes_normalise_the_values() -> None:
    """numpy integers and booleans become Python ones; the lists of bands a tuple; defaults are filled in."""
    import numpy as np

    options = SamplerOptions(
        image_path="i.tif",
        mask_path="m.tif",
        crops_path="w.csv",
        patch_size=np.int64(64),
        selected_bands=[np.int32(1), 2],
        ignore_invalid_image=np.bool_(True),
    )
    assert type(options.patch_size) is int and options.patch_size == 64
    assert options.selected_bands == (1, 2) and type(options.selected_bands[0]) is int
    assert options.ignore_invalid_image is True
    assert options.n_classes == 2 and options.on_read_error == "raise"
    assert AdapterOptions(seed=np.uint64(SEED_MAX)).seed == SEED_MAX
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.patch_size = 32  # type: ignore[misc]
