"""A time-series SceneSampler through torch: float32 (T, C, H, W) images, the dates the shared definition draws.

The definition every adapter is held to: item ``i`` of epoch ``e`` is
``to_model_inputs(sampler[i], augmentation, seed=seed, epoch=e)``, ``time_selection="random"``'s
draw included (tests/tf_adapter/test_tf_time_series.py holds tf.data and Keras to the same).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from testkit import SIZE, Series

from crossgeo import SceneSampler
from crossgeo.augment import build_augmentation, to_model_inputs
from crossgeo.torch import PatchDataset, make_dataloader

AUGMENT = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.RandomRotate90", "p": 1.0},
]


@pytest.mark.parametrize("compact", [False, True])
def test_torch_gives_float32_t_c_h_w_with_the_shared_draw(tmp_path: Path, compact: bool) -> None:
    pytest.importorskip("albumentations")
    series = Series(tmp_path)
    sampler = SceneSampler(
        series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=3, time_selection="random"
    )
    dataset = PatchDataset(sampler, augmentation_list=AUGMENT, seed=11, compact=compact)
    augmentation = build_augmentation(AUGMENT)
    drawn = set()
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(sampler)):
            image, mask = to_model_inputs(sampler[i], augmentation, seed=11, epoch=epoch)
            item = dataset[i]
            got = item["image"] if not compact else torch.from_numpy(np.asarray(item["image"], np.float32) / 65535)
            assert tuple(got.shape) == (3, 4, SIZE, SIZE)
            np.testing.assert_array_equal(got.numpy(), image)
            np.testing.assert_array_equal(item["mask"].numpy(), mask)
            if i == 0:
                drawn.add(tuple(np.round(image[:, 3, 0, 0] * 65535).astype(int).tolist()))
    assert len(drawn) > 1  # a different draw in some epoch


def test_torch_loader_batches_time_series(tmp_path: Path) -> None:
    series = Series(tmp_path)
    sampler = SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=4)
    loader = make_dataloader(PatchDataset(sampler, seed=3), batch_size=3, shuffle=False)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    assert images.dtype == torch.float32 and tuple(images.shape) == (6, 4, 4, SIZE, SIZE)
    for i in range(len(sampler)):
        expected, _ = to_model_inputs(sampler[i])
        np.testing.assert_array_equal(images[i].numpy(), expected)
    # Group b's padded dates are zeros.
    assert (images[4:, 2:] == 0).all()


def test_torch_batches_dates_of_several_band_files(tmp_path: Path) -> None:
    """Issue 24.4: each date two band files (10 m coordinates, 20 m day of year): batches (B, T, C, H, W) whose
    channel 2 is each date's own day of year, padded dates flagged and zero."""
    from testkit import DATES_A, day_of_year, multi_source_dates

    series = Series(tmp_path)
    sampler = SceneSampler(
        multi_source_dates(series), SIZE, image_dtype="uint16", image_resampling="nearest", group_by="place",
        time_steps=5,
    )  # fmt: skip
    loader = make_dataloader(PatchDataset(sampler, seed=3), batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].dtype == torch.float32 and tuple(batch["image"].shape) == (4, 5, 3, SIZE, SIZE)
    days = np.round(batch["image"][:, :, 2].numpy() * 65535).astype(int)
    expected = [1000 + day_of_year(d) for d in sorted(DATES_A)] + [0]  # place a: 4 dates, then padding
    assert (days == np.array(expected)[None, :, None, None]).all()
    for i in range(4):
        np.testing.assert_array_equal(batch["image"][i].numpy(), to_model_inputs(sampler[i])[0])
