"""torch visits a catalogue's ``order="scene-blocks"`` exactly as the framework-free loader plan orders it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.errors import ConfigError
from crossgeo.loading import epoch_order, plan_loader
from crossgeo.torch import PatchDataset, make_dataloader

PATCH = 32
WINDOWS = ((0, 0), (40, 50), (96, 96))


class Indexed(PatchDataset):
    """Each item also names the window it was read from (the metadata has offsets only, equal across scenes)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["window"] = index
        return item


def _sampler(tmp_path: Path) -> SceneSampler:
    scenes, mask = T.write_scene_catalogue(tmp_path, 6, windows=WINDOWS)
    return SceneSampler(scenes, PATCH, mask_path=mask, n_classes=4, max_open=2, order="scene-blocks", block_scenes=2)


def test_the_dataloader_visits_the_plans_scene_blocks(tmp_path: Path) -> None:
    sampler = _sampler(tmp_path)
    plan = plan_loader(sampler, where="plan", shuffle=True, seed=5)
    dataset = Indexed(sampler, seed=5)
    loader = make_dataloader(dataset, batch_size=4, shuffle=True, num_workers=2)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        seen = [int(i) for batch in loader for i in batch["window"]]
        assert seen == plan.order(epoch).tolist(), f"epoch {epoch}"
        np.testing.assert_array_equal(seen, epoch_order(len(sampler), 5, epoch, blocks=(sampler.scene, 2)))
    # Without a seed the blocks are kept too (by the dataset's drawn seed), not a plain RandomSampler.
    unseeded = Indexed(sampler)
    seen = [int(i) for batch in make_dataloader(unseeded, batch_size=4, shuffle=True) for i in batch["window"]]
    assert seen == epoch_order(len(sampler), unseeded.plan.base_seed, 0, blocks=(sampler.scene, 2)).tolist()


def test_scene_blocks_with_weights_is_refused(tmp_path: Path) -> None:
    dataset = PatchDataset(_sampler(tmp_path), seed=1)
    with pytest.raises(ConfigError, match="scene-blocks"):
        make_dataloader(dataset, weights=np.ones(len(dataset)))
