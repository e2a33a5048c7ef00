"""Using planned windows: the ``split`` option, the ``weight`` column and the weighted epoch order."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from crossgeo import ConfigError, OptionError, PatchSampler, WindowError
from crossgeo import testing as T
from crossgeo.loading import check_weights, epoch_order, resolve_weights
from crossgeo.testing import CoordinateScene

SIZE = 64


def _table(scene: CoordinateScene) -> pd.DataFrame:
    """Nine windows on a 3 x 3 grid: splits train/val/test by column, weights 1..9."""
    rows, cols = np.meshgrid([0, 128, 256], [0, 128, 256], indexing="ij")
    return pd.DataFrame(
        {
            "row_off": rows.ravel(),
            "col_off": cols.ravel(),
            "split": np.array(["train", "val", "test"])[np.arange(9) % 3],
            "weight": np.arange(1, 10, dtype=np.float64),
        }
    )


def _sampler(scene: CoordinateScene, crops: object, **options: object) -> PatchSampler:
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8), n_classes=2)
    return PatchSampler(scene.image, mask, crops, SIZE, **options)


@pytest.mark.parametrize("form", ["csv", "parquet", "dataframe", "arrow"])
def test_split_keeps_only_its_rows(scene: CoordinateScene, form: str, caplog: pytest.LogCaptureFixture) -> None:
    table = _table(scene)
    crops: object = table
    if form == "csv":
        crops = scene.path("w.csv")
        table.to_csv(crops, index=False)
    elif form == "parquet":
        crops = scene.path("w.parquet")
        table.to_parquet(crops, index=False)
    elif form == "arrow":
        import pyarrow as pa

        crops = pa.Table.from_pandas(table, preserve_index=False)
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        sampler = _sampler(scene, crops, split="val")
    expected = table[table.split == "val"]
    assert sampler.row_off.tolist() == expected.row_off.tolist()
    assert sampler.col_off.tolist() == expected.col_off.tolist()
    assert sampler.index.weight is not None and sampler.index.weight.tolist() == expected.weight.tolist()
    assert sampler.index.report.kept == 3 and sampler.index.report.split_left_out == 6
    assert "other splits left out 6" in sampler.index.report.describe()
    assert "split 'val': kept 3 rows, left out 6" in caplog.text
    # Each patch comes from its own window (coordinate-encoding image).
    for i in range(len(sampler)):
        rows, cols = T.decode_coordinates(sampler[i].image)
        assert (int(rows[0, 0]), int(cols[0, 0])) == (expected.row_off.iloc[i], expected.col_off.iloc[i])


def test_without_split_every_row_and_the_weight_column(scene: CoordinateScene) -> None:
    sampler = _sampler(scene, _table(scene))
    assert len(sampler) == 9 and sampler.split is None
    assert sampler.index.weight is not None and sampler.index.weight.tolist() == list(range(1, 10))
    plain = _sampler(scene, _table(scene)[["row_off", "col_off"]])
    assert plain.index.weight is None


def test_missing_split_column_is_a_clear_error(scene: CoordinateScene) -> None:
    path = scene.path("plain.csv")
    _table(scene)[["row_off", "col_off"]].to_csv(path, index=False)
    with pytest.raises(WindowError, match=r"plain\.csv: split is 'train' but the table has no 'split' column.*spatial"):
        _sampler(scene, path, split="train")
    with pytest.raises(WindowError, match="no 'split' column"):
        _sampler(scene, _table(scene)[["row_off", "col_off"]], split="train")
    with pytest.raises(OptionError, match="split must be a string"):
        _sampler(scene, _table(scene), split=1)
    with pytest.raises(ConfigError, match="split must name a split"):
        _sampler(scene, _table(scene), split="")


def test_split_is_part_of_the_cache_fingerprint(scene: CoordinateScene) -> None:
    path = scene.path("w.parquet")
    _table(scene).to_parquet(path, index=False)
    cache = scene.path("index.csv")
    train = _sampler(scene, path, split="train", window_index_cache=cache)
    assert not train.windows_info.from_cache
    again = _sampler(scene, path, split="train", window_index_cache=cache)
    assert again.windows_info.from_cache and again.row_off.tolist() == train.row_off.tolist()
    assert again.index.weight is not None and again.index.weight.tolist() == [1.0, 4.0, 7.0]
    val = _sampler(scene, path, split="val", window_index_cache=cache)
    assert not val.windows_info.from_cache
    assert val.col_off.tolist() == [128, 128, 128] and val.index.report.split_left_out == 6


def test_split_in_a_configuration_mapping(scene: CoordinateScene) -> None:
    from crossgeo.config import sampler_from_config

    path = scene.path("w.csv")
    _table(scene).to_csv(path, index=False)
    mask = scene.aligned_mask(np.zeros((1, scene.size, scene.size), np.uint8), n_classes=2)
    config = {"image_mbtiles_path": str(scene.image), "mask_path": str(mask), "crops_path": str(path)}
    sampler, _ = sampler_from_config({**config, "patch_size": SIZE, "split": "test"})
    assert sampler.col_off.tolist() == [256, 256, 256]
    with pytest.raises(OptionError, match="Did you mean 'split'"):
        sampler_from_config({**config, "patch_size": SIZE, "splt": "test"})


# --------------------------------------------------------------------------- weighted order


def test_weighted_epoch_order_is_proportional_and_reproducible() -> None:
    weights = np.array([0.0, 1.0, 2.0, 0.0, 5.0, 2.0])
    order = epoch_order(6, 7, 0, weights=weights)
    assert order.dtype == np.int64 and order.shape == (6,)
    assert np.array_equal(order, epoch_order(6, 7, 0, weights=weights.tolist()))
    assert not np.array_equal(order, epoch_order(6, 7, 1, weights=weights))
    draws = np.concatenate([epoch_order(6, 7, e, weights=weights) for e in range(4000)])
    counts = np.bincount(draws, minlength=6)
    assert counts[0] == counts[3] == 0  # weight 0: never drawn
    shares = counts / counts.sum()
    np.testing.assert_allclose(shares, weights / weights.sum(), atol=0.01)
    # Inverse-CDF of the same seeded uniforms: the documented rule, recomputed here.
    sequence = np.random.SeedSequence([7, 3], spawn_key=(0x0D3E,))
    uniforms = np.random.default_rng(sequence).random(6)
    cdf = np.cumsum(weights) / weights.sum()
    assert epoch_order(6, 7, 3, weights=weights).tolist() == [int(np.argmax(cdf > u)) for u in uniforms]


def test_unweighted_epoch_order_unchanged_by_the_new_argument() -> None:
    order = epoch_order(10, 3, 2)
    assert sorted(order.tolist()) == list(range(10))
    assert np.array_equal(order, epoch_order(10, 3, 2, weights=None))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, 2.0], "weights has 2 values but there are 3 windows"),
        ([1.0, -1.0, 2.0], "weights holds 1 negative value"),
        ([0.0, 0.0, 0.0], "weights are all zero"),
        ([1.0, np.nan, 2.0], "weights holds NaN"),
        ([1.0, np.inf, 2.0], "weights holds NaN or infinite"),
        (np.ones((3, 1)), "weights must be a 1-D sequence"),
        (["a", "b", "c"], "weights must hold numbers"),
    ],
)
def test_bad_weights_are_named(weights: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_weights(weights, 3)
    with pytest.raises(ConfigError, match=match):
        epoch_order(3, 0, 0, weights=weights)


def test_resolve_weights_reads_the_weight_column(scene: CoordinateScene) -> None:
    sampler = _sampler(scene, _table(scene), split="train")
    assert resolve_weights("weight", sampler, "here").tolist() == [1.0, 4.0, 7.0]
    assert resolve_weights(None, sampler, "here") is None
    assert resolve_weights([1, 2, 3], sampler, "here").dtype == np.float64
    with pytest.raises(OptionError, match="a string names the windows table's 'weight' column"):
        resolve_weights("wieght", sampler, "here")
    plain = _sampler(scene, _table(scene)[["row_off", "col_off"]])
    with pytest.raises(ConfigError, match=r"have no 'weight' column.*window_weights"):
        resolve_weights("weight", plain, "make_dataset")
    with pytest.raises(ConfigError, match="weights has 2 values but there are 9 windows"):
        resolve_weights([1, 2], plain, "make_dataset")


def test_split_on_a_vector_file_is_refused(scene: CoordinateScene) -> None:
    x, y = scene.transform * (100, 100)
    points = T.write_points(scene.path("points.gpkg"), [x], [y], crs=scene.crs)
    assert len(_sampler(scene, points)) == 1
    with pytest.raises(WindowError, match=r"points\.gpkg is a vector file, but split \('train'\)"):
        _sampler(scene, points, split="train")
