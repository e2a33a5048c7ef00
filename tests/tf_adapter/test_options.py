"""The tf.data and Keras entry points raise the same class for the same mistake as the core and torch.

A wrong type is `OptionTypeError`, a value out of range `ConfigError`, an unknown name `OptionError`;
each message names the option (tests/core/test_options.py, tests/torch_adapter/test_torch_options.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tf_scene import Scene

from crossgeo import ConfigError, OptionError, OptionTypeError, PatchSampler
from crossgeo.keras import PatchPyDataset
from crossgeo.options import SEED_MAX
from crossgeo.tensorflow import make_dataset

CASES: list[tuple[str, Callable[[PatchSampler, Scene], Any], type[Exception], str]] = [
    ("make_dataset seed negative", lambda s, c: make_dataset(s, seed=-1), ConfigError, "seed"),
    ("make_dataset seed 2**64", lambda s, c: make_dataset(s, seed=SEED_MAX + 1), ConfigError, "seed"),
    ("make_dataset seed text", lambda s, c: make_dataset(s, seed="1"), OptionTypeError, "seed"),
    ("make_dataset batch_size zero", lambda s, c: make_dataset(s, batch_size=0), ConfigError, "batch_size"),
    ("make_dataset batch_size bool", lambda s, c: make_dataset(s, batch_size=True), OptionTypeError, "batch_size"),
    ("make_dataset epoch negative", lambda s, c: make_dataset(s, epoch=-1), ConfigError, "epoch"),
    ("make_dataset epoch bool", lambda s, c: make_dataset(s, epoch=True), OptionTypeError, "epoch"),
    ("make_dataset flag", lambda s, c: make_dataset(s, compact="yes"), OptionTypeError, "compact"),
    ("make_dataset config seed", lambda s, c: make_dataset(c.config(seed=-1)), ConfigError, "seed"),
    ("make_dataset config bool", lambda s, c: make_dataset(c.config(n_classes=True)), OptionTypeError, "n_classes"),
    ("make_dataset config choice", lambda s, c: make_dataset(c.config(out_of_range="x")), ConfigError, "out_of_range"),
    ("make_dataset config unknown", lambda s, c: make_dataset(c.config(n_clases=3)), OptionError, "n_clases"),
    ("PatchPyDataset batch_size zero", lambda s, c: PatchPyDataset(s, batch_size=0), ConfigError, "batch_size"),
    (
        "PatchPyDataset batch_size bool",
        lambda s, c: PatchPyDataset(s, batch_size=True),
        OptionTypeError,
        "batch_size",
    ),
    ("PatchPyDataset epoch negative", lambda s, c: PatchPyDataset(s, batch_size=2, epoch=-1), ConfigError, "epoch"),
    ("PatchPyDataset seed negative", lambda s, c: PatchPyDataset(s, batch_size=2, seed=-1), ConfigError, "seed"),
    ("PatchPyDataset seed text", lambda s, c: PatchPyDataset(s, batch_size=2, seed="1"), OptionTypeError, "seed"),
    ("PatchPyDataset config unknown", lambda s, c: PatchPyDataset(c.config(sed=1)), OptionError, "sed"),
]


@pytest.mark.parametrize(("build", "error", "option"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_same_mistake_raises_the_same_class(
    sampler: PatchSampler, scene: Scene, build: Callable[..., Any], error: type[Exception], option: str
) -> None:
    with pytest.raises(Exception) as raised:
        build(sampler, scene)
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert option in str(raised.value)
