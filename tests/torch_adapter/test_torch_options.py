"""The torch adapter's entry points raise the same class for the same mistake as the core (tests/core/test_options.py).

A wrong type is `OptionTypeError`, a value out of range `ConfigError`, an unknown name `OptionError`
(the drop-in class warns instead, as the original accepts any key); each message names the option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from torch_scene import COLOR_MAP, PATCH

from crossgeo import ConfigError, OptionError, OptionTypeError, PatchSampler
from crossgeo.options import SEED_MAX
from crossgeo.torch import EpochOrderSampler, PatchDataset, make_dataloader


@pytest.fixture(scope="module")
def sampler(scene: Any) -> PatchSampler:
    return PatchSampler(scene.image_tif, scene.mask_vrt, scene.windows_csv, PATCH, color_map=COLOR_MAP)


CASES: list[tuple[str, Callable[[PatchSampler, Any], Any], type[Exception], str]] = [
    ("PatchDataset seed negative", lambda s, m: PatchDataset(s, seed=-1), ConfigError, "seed"),
    ("PatchDataset seed 2**64", lambda s, m: PatchDataset(s, seed=SEED_MAX + 1), ConfigError, "seed"),
    ("PatchDataset seed text", lambda s, m: PatchDataset(s, seed="42"), OptionTypeError, "seed"),
    ("PatchDataset seed bool", lambda s, m: PatchDataset(s, seed=True), OptionTypeError, "seed"),
    ("PatchDataset flag", lambda s, m: PatchDataset(s, return_metadata="yes"), OptionTypeError, "return_metadata"),
    ("set_epoch negative", lambda s, m: PatchDataset(s).set_epoch(-1), ConfigError, "epoch"),
    ("set_epoch bool", lambda s, m: PatchDataset(s).set_epoch(True), OptionTypeError, "epoch"),
    ("EpochOrderSampler seed", lambda s, m: EpochOrderSampler(PatchDataset(s), seed=-1), ConfigError, "seed"),
    ("EpochOrderSampler rank", lambda s, m: EpochOrderSampler(PatchDataset(s, seed=0), rank=-1), ConfigError, "rank"),
    (
        "make_dataloader flag",
        lambda s, m: make_dataloader(PatchDataset(s), compact_transfer=1),
        OptionTypeError,
        "compact_transfer",
    ),
    ("drop-in seed negative", lambda s, m: m(seed=-1), ConfigError, "seed"),
    ("drop-in seed text", lambda s, m: m(seed="42"), OptionTypeError, "seed"),
    ("drop-in bool for int", lambda s, m: m(patch_size=True), OptionTypeError, "patch_size"),
    ("drop-in negative", lambda s, m: m(mask_fill_value=-1), ConfigError, "mask_fill_value"),
    ("drop-in choice", lambda s, m: m(on_read_error="ignore"), ConfigError, "on_read_error"),
    ("drop-in samples_per_epoch", lambda s, m: m(samples_per_epoch="10"), OptionTypeError, "samples_per_epoch"),
    ("drop-in data_loader", lambda s, m: m(data_loader=4), OptionTypeError, "data_loader"),
]


@pytest.mark.parametrize(("build", "error", "option"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_same_mistake_raises_the_same_class(
    sampler: PatchSampler, make_dataset: Any, build: Callable[..., Any], error: type[Exception], option: str
) -> None:
    with pytest.raises(Exception) as raised:
        build(sampler, make_dataset)
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert option in str(raised.value)


def test_an_unknown_name_is_an_option_error_in_patch_dataset(sampler: PatchSampler) -> None:
    with pytest.raises(TypeError) as raised:
        PatchDataset(sampler, sed=1)  # type: ignore[call-arg]
    assert not isinstance(raised.value, ValueError)
    with pytest.raises(OptionError) as unknown:
        make_dataloader(PatchDataset(sampler), data_loader=None, btch_size=2)
    assert not isinstance(unknown.value, ConfigError)
