"""The loader plan (`crossgeo.loading`): options, seed, order, weights, mask types, items of a pass.

The adapters' suites prove that torch, tf.data and Keras follow the plan
(tests/torch_adapter/test_torch_loading.py, tests/tf_adapter/test_loading_adapters.py);
these tests pin what the plan itself decides, on a real coordinate-encoding scene.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from crossgeo import ConfigError, OptionError, OptionTypeError, PatchSampler, WindowError
from crossgeo import testing as T
from crossgeo.loading import (
    SkipTally,
    check_epoch,
    check_replicas,
    epoch_order,
    plan_loader,
    require_shared_seed,
)
from crossgeo.testing import CoordinateScene as Scene

SIZE = 32
ROWS = [0, 32, 64, 96, 128, 160, 192, 224, 256]
COLS = [0, 40, 80, 120, 160, 200, 240, 280, 320]
FLIP = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]


def _config(scene: Scene, **options: object) -> dict[str, object]:
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8))
    config: dict[str, object] = {
        "image_mbtiles_path": str(scene.image),
        "mask_path": str(mask),
        "crops_path": str(scene.windows(ROWS, COLS)),
        "patch_size": SIZE,
    }
    return config | options


def _sampler(scene: Scene, **options: object) -> PatchSampler:
    config = _config(scene)
    return PatchSampler(config["image_mbtiles_path"], config["mask_path"], config["crops_path"], SIZE, **options)


def test_a_mapping_gives_its_options_and_keywords_win(scene: Scene) -> None:
    config = _config(
        scene,
        seed=3,
        augmentation_list=FLIP,
        return_metadata=True,
        data_loader={"batch_size": 4, "shuffle": True, "drop_last": True},
    )
    plan = plan_loader(config, where="here")
    assert isinstance(plan.sampler, PatchSampler) and plan.n_windows == len(ROWS)
    assert (plan.seed, plan.base_seed, plan.batch_size) == (3, 3, 4)
    assert plan.shuffle and plan.drop_remainder and plan.with_metadata and plan.augmentation is not None
    assert plan.batches() == len(ROWS) // 4 and plan.samples_per_epoch == len(ROWS)
    keyword = plan_loader(config, where="here", seed=8, batch_size=2)
    assert (keyword.seed, keyword.batch_size, keyword.batches()) == (8, 2, 4)
    assert plan_loader(_config(scene), where="here", batch_size=4).batches() == 3  # the last batch is kept


def test_the_order_of_an_epoch(scene: Scene) -> None:
    sampler = _sampler(scene)
    n = len(ROWS)
    assert plan_loader(sampler, where="here").order(5).tolist() == list(range(n))
    shuffled = plan_loader(sampler, where="here", shuffle=True, seed=7)
    for epoch in range(3):
        order = shuffled.order(epoch)
        np.testing.assert_array_equal(order, epoch_order(n, 7, epoch))
        # Replicas' shares are disjoint and together are the whole order.
        shares = [shuffled.order(epoch, rank=r, replicas=3) for r in range(3)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(n))
        np.testing.assert_array_equal(shares[1], order[1::3])
    assert shuffled.order(0).tolist() != shuffled.order(1).tolist()
    weights = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    weighted = plan_loader(sampler, where="here", seed=7, weights=weights)  # shuffling implied
    np.testing.assert_array_equal(weighted.order(2), epoch_order(n, 7, 2, weights=weights))
    assert not {0, 3, 6} & set(weighted.order(2).tolist())


def test_an_unseeded_plan_draws_its_seed_once(scene: Scene) -> None:
    sampler = _sampler(scene)
    plan = plan_loader(sampler, where="here", shuffle=True)
    assert plan.seed is None and 0 <= plan.base_seed < 2**32
    np.testing.assert_array_equal(plan.order(1), plan.order(1))  # every thread/replica computes this order
    np.testing.assert_array_equal(plan.order(1), epoch_order(len(ROWS), plan.base_seed, 1))
    others = {plan_loader(sampler, where="here").base_seed for _ in range(4)}
    assert len(others | {plan.base_seed}) > 1


@pytest.mark.parametrize(
    ("n_classes", "fill", "expected"),
    [(2, 0, np.uint8), (256, 0, np.uint8), (2, 255, np.uint8), (2, 300, np.uint16), (300, 0, np.uint16)],
)
def test_the_compact_mask_type_holds_every_class_and_the_fill(
    scene: Scene, n_classes: int, fill: int, expected: type
) -> None:
    plan = plan_loader(_sampler(scene, n_classes=n_classes, mask_fill_value=fill), where="here")
    assert plan.mask_type == np.dtype(expected)
    assert plan.decode_type(compact=True) == np.dtype(expected)
    assert plan.decode_type(compact=False) == np.dtype(np.int64)
    augmented = plan_loader(plan.sampler, where="here", augmentation_list=FLIP)
    assert augmented.decode_type(compact=True) == np.dtype(np.int64)  # the augmentation sees the float path's mask


def test_items_of_a_pass_walk_through_the_windows(scene: Scene) -> None:
    sampler = _sampler(scene)
    n = len(ROWS)
    short = plan_loader(sampler, where="here", samples_per_epoch=4)
    assert short.samples_per_epoch == 4 and short.passes_differ
    walk = [short.served(j, k) for k in range(5) for j in range(4)]
    assert [w for w, _ in walk] == [i % n for i in range(20)]
    assert [d for _, d in walk] == [i // n for i in range(20)]
    one_each = plan_loader(sampler, where="here", samples_per_epoch=0)  # <= 0: one item per window
    assert one_each.samples_per_epoch == n and not one_each.passes_differ
    assert one_each.served(3, 2) == (3, 2)
    assert plan_loader(sampler, where="here", seed=1, augmentation_list=FLIP).passes_differ
    assert not plan_loader(sampler, where="here", augmentation_list=FLIP).passes_differ  # unseeded: random anyway


def test_the_blank_patch_gives_the_output_shapes(scene: Scene) -> None:
    sampler = _sampler(scene)
    plan = plan_loader(sampler, where="here")
    assert plan.output_shapes(channels_last=True) == ((SIZE, SIZE, 3), (SIZE, SIZE))
    assert plan.output_shapes(channels_last=False) == ((3, SIZE, SIZE), (SIZE, SIZE))
    crop = [{"_target_": "albumentations.CenterCrop", "height": 16, "width": 16}]
    assert plan_loader(sampler, where="here", augmentation_list=crop).output_shapes(True) == ((16, 16, 3), (16, 16))


def test_bad_options(scene: Scene) -> None:
    sampler = _sampler(scene)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        plan_loader(sampler, where="here", batch_size=0)
    with pytest.raises(OptionTypeError, match="batch_size must be an integer, got str"):
        plan_loader(sampler, where="here", batch_size="4")
    with pytest.raises(OptionError, match="Keras needs batch_size"):
        plan_loader(sampler, where="Keras", need_batch_size=True)
    with pytest.raises(OptionError, match="seed must be an integer"):
        plan_loader(sampler, where="here", seed=True)
    with pytest.raises(OptionError, match="samples_per_epoch must be an integer"):
        plan_loader(sampler, where="here", samples_per_epoch="many")
    with pytest.raises(OptionError, match=r"source must be a crossgeo\.PatchSampler"):
        plan_loader("windows.csv", where="here")
    with pytest.raises(ConfigError, match="epoch must be >= 0, got -1"):
        check_epoch(-1)
    with pytest.raises(ConfigError, match="rank must be <= 1, got 2"):
        check_replicas(2, 2)
    assert check_replicas(np.int64(2), 1) == (2, 1)
    require_shared_seed(None, 1, "here", "fix")
    require_shared_seed(5, 4, "here", "fix")
    with pytest.raises(ConfigError, match=r"here needs a seed.*Pass seed"):
        require_shared_seed(None, 2, "here", "Pass seed=<int>.")


def test_an_empty_window_set_is_refused_unless_allowed(scene: Scene) -> None:
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8))
    empty = T.write_windows_table(scene.path("empty.csv"), [], [])
    sampler = PatchSampler(scene.image, mask, empty, SIZE)
    with pytest.raises(WindowError, match="here: there are no windows to iterate"):
        plan_loader(sampler, where="here")
    assert plan_loader(sampler, where="here", allow_empty=True).n_windows == 0


def test_the_skip_tally_reports_an_epoch_once_its_last_window_is_done(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    sampler = _sampler(scene)
    tally = SkipTally(sampler, per_epoch=3)
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        for window in range(3):
            tally.started(0)
            sampler.skipped += window  # the sampler counts replacements as it serves them: 0 + 1 + 2
            tally.finished(0)
            assert ("epoch 0: 3 sample(s)" in caplog.text) == (window == 2)
        for _ in range(3):
            tally.started(1)
            tally.finished(1)
    assert "epoch 1" not in caplog.text  # nothing skipped: nothing said


def test_features_outside_the_image_are_refused_naming_both_bounds_crss_and_the_fix(scene: Scene) -> None:
    """Points written in lon/lat but labelled EPSG:3857 land near (0, 0), far from the image: the sampler
    is empty (a warning, as in the original), and iterating it names the image's and the features' bounds
    and CRSs and what to do, instead of torch's ``num_samples=0``."""
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8))
    west, south, east, north = scene.lonlat_bounds
    points = T.write_points(
        scene.path("points.gpkg"), [west + 0.001, east - 0.001], [south + 0.001, north - 0.001], crs="EPSG:3857"
    )
    sampler = PatchSampler(scene.image, mask, points, SIZE)
    assert len(sampler) == 0 and sampler.index.report.outside_dropped == 2
    with pytest.raises(WindowError) as caught:
        plan_loader(sampler, where="here")
    text = " ".join(str(caught.value).split())
    assert "here: there are no windows to iterate" in text
    assert f"The image {scene.image} covers (" in text and "in EPSG:3857" in text
    bounds = tuple(round(v, 6) for v in (west + 0.001, south + 0.001, east - 0.001, north - 0.001))
    features = f"The 2 feature(s) of {points} cover {bounds} (left, bottom, right, top) in EPSG:3857."
    assert features in text, text
    assert "all outside the image (2 dropped)" in text
    assert "reproject the features" in text and "crops_layer" in text


def test_the_features_extent_survives_the_window_index_cache(scene: Scene) -> None:
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8))
    west, south, east, north = scene.lonlat_bounds
    points = T.write_points(scene.path("points.gpkg"), [west, east], [south, north], crs="EPSG:4326")
    cache = scene.path("windows.parquet")
    built = PatchSampler(scene.image, mask, points, SIZE, window_index_cache=cache)
    reused = PatchSampler(scene.image, mask, points, SIZE, window_index_cache=cache)
    assert reused.windows_info.from_cache and not built.windows_info.from_cache
    extent = built.index.report.features
    assert extent is not None and extent.count == 2 and extent.crs == "EPSG:4326"
    assert extent.bounds == tuple(round(v, 6) for v in (west, south, east, north))
    assert reused.index.report.features == extent
