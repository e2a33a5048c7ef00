"""Weighted sampling in the torch adapter: the shared seeded draw of `crossgeo.loading.epoch_order`.

tests/tf_adapter/test_weighted.py checks tf.data and Keras against the same function with the
same weights, seed and epochs, so all three adapters draw the same windows in the same order.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
from torch_scene import WINDOWS, assert_window

from crossgeo import ConfigError, OptionError
from crossgeo.loading import epoch_order
from crossgeo.torch import make_dataloader

#: One weight per window of torch_scene.WINDOWS (two never drawn); the tf/Keras test uses the same rule.
WEIGHTS = [float(i % 4) for i in range(len(WINDOWS))]
SEED = 11


def _offsets(loader: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for batch in loader:
        for image, row, col in zip(batch["image"], batch["metadata"]["row_off"], batch["metadata"]["col_off"]):
            assert_window(image, int(row), int(col))
            out.append((int(row), int(col)))
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_weighted_loader_follows_the_shared_draw(make_dataset: Any, num_workers: int) -> None:
    dataset = make_dataset(seed=SEED, return_metadata=True, data_loader={"batch_size": 3, "shuffle": False})
    loader = make_dataloader(dataset, weights=WEIGHTS, num_workers=num_workers)
    for epoch in range(3):
        expected = epoch_order(len(WINDOWS), SEED, epoch, weights=WEIGHTS)
        assert _offsets(loader) == [WINDOWS[i] for i in expected], f"epoch {epoch}"
        assert dataset.epoch == epoch
    drawn = {i for e in range(3) for i in epoch_order(len(WINDOWS), SEED, e, weights=WEIGHTS).tolist()}
    assert not drawn & {i for i, w in enumerate(WEIGHTS) if w == 0}


def test_weight_column_of_the_windows_table(make_dataset: Any, scene: types.SimpleNamespace) -> None:
    rows, cols = zip(*WINDOWS)
    table = pd.DataFrame({"row_off": rows, "col_off": cols, "weight": WEIGHTS})
    path = scene.root / "weighted.parquet"
    table.to_parquet(path, index=False)
    dataset = make_dataset(crops_path=str(path), seed=SEED, return_metadata=True, data_loader={"batch_size": 4})
    loader = make_dataloader(dataset, weights="weight")
    assert _offsets(loader) == [WINDOWS[i] for i in epoch_order(len(WINDOWS), SEED, 0, weights=WEIGHTS)]


def test_weighted_loader_bad_input(make_dataset: Any) -> None:
    dataset = make_dataset(seed=SEED)
    with pytest.raises(ConfigError, match="weights has 3 values but there are 8 windows"):
        make_dataloader(dataset, weights=[1, 2, 3])
    with pytest.raises(ConfigError, match="weights are all zero"):
        make_dataloader(dataset, weights=[0] * len(WINDOWS))
    with pytest.raises(ConfigError, match="weights holds 1 negative"):
        make_dataloader(dataset, weights=[-1] + [1] * (len(WINDOWS) - 1))
    with pytest.raises(ConfigError, match="weights holds NaN"):
        make_dataloader(dataset, weights=[np.nan] + [1] * (len(WINDOWS) - 1))
    with pytest.raises(ConfigError, match="no 'weight' column"):
        make_dataloader(dataset, weights="weight")
    with pytest.raises(OptionError, match="do not pass sampler"):
        make_dataloader(dataset, weights=WEIGHTS, sampler=range(len(WINDOWS)))


@pytest.mark.parametrize("replicas", [2, 3])
def test_epoch_order_sampler_shards_for_ranks(make_dataset: Any, replicas: int) -> None:
    """Explicit ranks: disjoint shares of the shared draw that interleave back into it, sizes as DDP expects."""
    from crossgeo.torch import EpochOrderSampler

    dataset = make_dataset(seed=SEED)
    dataset.set_epoch(2)
    shares = [list(EpochOrderSampler(dataset, weights=WEIGHTS, num_replicas=replicas, rank=r)) for r in range(replicas)]
    draw = epoch_order(len(WINDOWS), SEED, 2, weights=WEIGHTS).tolist()
    assert [len(s) for s in shares] == [len(range(r, len(WINDOWS), replicas)) for r in range(replicas)]
    assert [len(EpochOrderSampler(dataset, num_replicas=replicas, rank=r)) for r in range(replicas)] == [
        len(s) for s in shares
    ]
    merged = [shares[i % replicas][i // replicas] for i in range(len(draw))]
    assert merged == draw
    with pytest.raises(ConfigError, match=rf"rank must be <= {replicas - 1}"):  # out of range (was an OptionError)
        EpochOrderSampler(dataset, num_replicas=replicas, rank=replicas)
    with pytest.raises(OptionError, match="num_replicas must be an integer"):
        EpochOrderSampler(dataset, num_replicas="2", rank=0)
