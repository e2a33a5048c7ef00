"""A catalogue's ``order="scene-blocks"``: scenes shuffled, windows shuffled within blocks of ``block_scenes``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.config import split_config
from crossgeo.errors import ConfigError, OptionError
from crossgeo.loading import epoch_order, plan_loader

PATCH = 32
WINDOWS = ((0, 0), (40, 50), (96, 96))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, object]], Path]:
    return T.write_scene_catalogue(tmp_path_factory.mktemp("blocks"), 7, windows=WINDOWS)


def _blocks(scene: np.ndarray, order: np.ndarray) -> list[list[int]]:
    """The scenes of each maximal run of windows, in visiting order (a scene starts a new run once)."""
    runs: list[list[int]] = []
    for s in scene[order].tolist():
        if not runs or runs[-1][-1] != s:
            runs.append([s])
    return runs


@pytest.mark.parametrize("k", [1, 2, 3, 7, 50])
def test_every_window_once_each_block_contiguous_and_at_most_k_scenes(catalogue, k: int) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, order="scene-blocks", block_scenes=k)
    assert (sampler.order, sampler.block_scenes) == ("scene-blocks", k)
    plan = plan_loader(sampler, where="here", shuffle=True, seed=5)
    scene = np.asarray(sampler.scene)
    orders = [plan.order(epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(len(sampler)))  # every window exactly once
        blocks = [scene[part] for part in np.array_split(order, np.cumsum([k * 3] * (7 // k))) if len(part)]
        # blocks of k scenes (3 windows each): consecutive slices of k*3 windows hold k scenes, the last the rest
        for block in blocks:
            assert len(set(block.tolist())) <= k
        # a scene's windows are never split across blocks: each scene appears in exactly one slice
        assert sum(len(set(b.tolist())) for b in blocks) == 7
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    np.testing.assert_array_equal(plan.order(1), orders[1])  # a function of (seed, epoch) only
    np.testing.assert_array_equal(orders[0], epoch_order(len(sampler), 5, 0, blocks=(scene, k)))
    # shards as for the random order: every replicas-th entry from rank on
    np.testing.assert_array_equal(plan.order(2, rank=1, replicas=3), orders[2][1::3])
    if k == 1:  # one scene per block: every scene's windows in one run
        assert all(len(run) == 1 for run in _blocks(scene, orders[0])) and len(_blocks(scene, orders[0])) == 7


def test_windows_are_shuffled_within_blocks_and_scenes_across_epochs(catalogue) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, order="scene-blocks", block_scenes=7)
    plan = plan_loader(sampler, where="here", shuffle=True, seed=1)
    scene = np.asarray(sampler.scene)
    firsts = {tuple(scene[plan.order(e)][:3].tolist()) for e in range(8)}
    assert len(firsts) > 1  # the blocks' scene order changes between epochs
    # one block of every scene: windows of different scenes interleave (not scene after scene)
    assert any(len(_blocks(scene, plan.order(e))) > 7 for e in range(8))


def test_random_is_the_default_and_unchanged(catalogue) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4)
    assert (sampler.order, sampler.block_scenes) == ("random", 8)
    plan = plan_loader(sampler, where="here", shuffle=True, seed=5)
    assert plan.blocks is None
    np.testing.assert_array_equal(plan.order(0), epoch_order(len(sampler), 5, 0))


def test_without_shuffle_the_windows_own_order(catalogue) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, order="scene-blocks", block_scenes=2)
    np.testing.assert_array_equal(plan_loader(sampler, where="here").order(0), np.arange(len(sampler)))


def test_scene_blocks_with_weights_is_refused(catalogue) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    sampler = SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, order="scene-blocks", block_scenes=2)
    with pytest.raises(ConfigError, match=r"scene-blocks.*weights"):
        plan_loader(sampler, where="here", shuffle=True, seed=1, weights=np.ones(len(sampler)))


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"block_scenes": 0}, "block_scenes"),
        ({"block_scenes": "4"}, "block_scenes"),
        ({"order": "blocks"}, "order"),
        ({"order": None}, "order"),
    ],
)
def test_bad_order_options_raise_naming_the_option(catalogue, options: dict[str, object], name: str) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    with pytest.raises(ConfigError, match=name):
        SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, **options)  # type: ignore[arg-type]


def test_configurations_take_order_with_scenes_only(catalogue) -> None:  # type: ignore[no-untyped-def]
    scenes, mask = catalogue
    config = {"scenes": scenes, "mask_path": str(mask), "patch_size": PATCH, "n_classes": 4}
    plan = plan_loader({**config, "order": "scene-blocks", "block_scenes": 3}, where="here", shuffle=True, seed=2)
    assert plan.blocks is not None and plan.blocks[1] == 3
    single = {"image_path": "a.tif", "mask_path": "m.tif", "crops_path": "c.csv", "patch_size": PATCH}
    for key, value in (("order", "scene-blocks"), ("block_scenes", 3)):
        with pytest.raises(OptionError, match=f"{key} without scenes"):
            split_config({**single, key: value})
