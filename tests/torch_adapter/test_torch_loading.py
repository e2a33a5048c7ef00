"""The torch adapter follows the framework-free loader plan (`crossgeo.loading.plan_loader`).

A plan built from the same sampler and options, with no torch, predicts the window order of
every epoch, the weighted draw, the compact mask type and the window of every item of a pass
(``samples_per_epoch``); tests/tf_adapter/test_loading_adapters.py checks tf.data and Keras
against the same plan, so the three adapters agree through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch_scene import WINDOWS

from crossgeo.loading import plan_loader
from crossgeo.torch import PatchDataset, make_dataloader


def _windows(loader: Any) -> list[tuple[int, int]]:
    return [(int(r), int(c)) for b in loader for r, c in zip(b["metadata"]["row_off"], b["metadata"]["col_off"])]


def test_the_loader_order_is_the_plans(make_dataset: Any) -> None:
    dataset = make_dataset(seed=5, return_metadata=True, data_loader={"shuffle": True, "batch_size": 3})
    plan = plan_loader(dataset.sampler, where="plan", shuffle=True, seed=5)
    loader = make_dataloader(dataset)
    for epoch in range(3):
        assert _windows(loader) == [WINDOWS[i] for i in plan.order(epoch)], f"epoch {epoch}"


def test_the_weighted_draw_is_the_plans(make_dataset: Any) -> None:
    weights = [float(i % 3) for i in range(len(WINDOWS))]
    dataset = make_dataset(seed=9, return_metadata=True, data_loader={"batch_size": 4})
    plan = plan_loader(dataset.sampler, where="plan", seed=9, weights=weights)
    loader = make_dataloader(dataset, weights=weights)
    for epoch in range(2):
        assert _windows(loader) == [WINDOWS[i] for i in plan.order(epoch)], f"epoch {epoch}"


def test_the_compact_mask_type_and_the_items_of_a_pass_are_the_plans(make_dataset: Any) -> None:
    dataset = make_dataset(return_metadata=True, samples_per_epoch=5)
    plan = plan_loader(dataset.sampler, where="plan", samples_per_epoch=5)
    compact = PatchDataset(dataset.sampler, compact=True)
    assert compact[0]["mask"].numpy().dtype == plan.mask_type == dataset.mask_type
    for visit in range(3):  # a plain pass over the items, as a DataLoader without set_epoch makes
        for index in range(len(dataset)):
            item = dataset[index]
            window, _ = plan.served(index, visit)
            assert (item["metadata"]["row_off"], item["metadata"]["col_off"]) == WINDOWS[window]
    assert np.array_equal(plan.order(0), np.arange(len(WINDOWS)))
