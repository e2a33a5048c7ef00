"""A STAC catalogue served over HTTP trains an epoch in torch with the framework-free numbers.

tests/tf_adapter/test_tf_stac.py holds tf.data and Keras to the same definition and sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossgeo.torch import PatchDataset, make_dataloader

pytest.importorskip("pystac")

from testkit import STAC_EPOCH_SUMS, served_stac_sampler, stac_reference_epoch


def test_stac_catalogue_trains_one_epoch_with_the_reference_numbers(tmp_path: Path) -> None:
    with served_stac_sampler(tmp_path) as sampler:
        images, masks = stac_reference_epoch(sampler, 5, channels_last=False)
        loader = make_dataloader(PatchDataset(sampler, seed=5), batch_size=4, shuffle=True, num_workers=2)
        torch.manual_seed(0)
        model = torch.nn.Conv2d(4, 2, 1)
        optimiser = torch.optim.SGD(model.parameters(), lr=1e-5)
        got_images, got_masks, losses = [], [], []
        for batch in loader:  # one epoch
            got_images.append(batch["image"].numpy())
            got_masks.append(batch["mask"].numpy())
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["mask"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss))
    np.testing.assert_array_equal(np.concatenate(got_images), images)
    np.testing.assert_array_equal(np.concatenate(got_masks), masks)
    assert (float(images.astype(np.float64).sum()), int(masks.sum())) == STAC_EPOCH_SUMS
    assert len(losses) == 2 and all(np.isfinite(losses))
