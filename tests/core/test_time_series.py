"""Time series: one place written at several dates, each date's pixels encoding (row, col) and its day of year.

A catalogue with a ``time`` column and ``group_by`` gives one scene per place whose patches are
(T, C, H, W): the dates in time order, every date on the grid of the group's first row (one date
is written on a grid shifted by whole pixels, so its coordinate bands prove it was brought onto
the reference grid), shorter groups padded and flagged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from testkit import DATES_A, DATES_B, SHIFT, SIZE, Series, day_of_year, multi_source_dates

from crossgeo import SceneSampler
from crossgeo import testing as T
from crossgeo.augment import to_compact_inputs, to_model_inputs
from crossgeo.catalogue import inspect_catalogue
from crossgeo.errors import CatalogueError, ConfigError


@pytest.fixture
def series(tmp_path: Path) -> Series:
    return Series(tmp_path)


def test_dates_in_time_order_on_the_reference_grid_padded_and_flagged(series: Series) -> None:
    sampler = SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=5)
    assert sampler.scenes == 2 and len(sampler) == 6
    assert sampler.patch_shape == (5, 4, SIZE, SIZE)
    assert [s.where.split()[1] for s in sampler.catalogue] == ["'a'", "'b'"]
    for i in range(len(sampler)):
        patch = sampler[i]
        place = "a" if patch.scene == 0 else "b"
        dates = sorted(DATES_A if place == "a" else DATES_B)
        assert patch.image.shape == (5, 4, SIZE, SIZE) and patch.image.dtype == np.uint16
        assert patch.index == i
        # The dates in time order, the padding flagged and NaT.
        n = len(dates)
        assert patch.time_valid.tolist() == [True] * n + [False] * (5 - n)
        assert patch.times[:n].tolist() == [np.datetime64(d, "s").item() for d in dates]
        assert np.isnat(patch.times[n:]).all()
        assert (patch.image[n:] == 0).all()
        # Every date holds its own day of year, and each pixel its coordinates on the reference grid.
        rows, cols = T.window_coordinates(patch.row_off, patch.col_off, SIZE)
        for t, date in enumerate(dates):
            assert (patch.image[t, 3] == day_of_year(date)).all(), (place, date)
            got_rows, got_cols = T.decode_coordinates(patch.image[t])
            np.testing.assert_array_equal(got_rows, rows)
            np.testing.assert_array_equal(got_cols, cols)
        # The mask is the group's, on its reference grid.
        np.testing.assert_array_equal(patch.mask, (rows // 16 + cols // 16) % 2)
    # Windows per group, from the group's first row.
    assert sampler.windows_per_scene().tolist() == [4, 2]
    assert sampler.row_off[:4].tolist() == series.windows["a"][0]
    assert sampler.col_off[4:].tolist() == series.windows["b"][1]


def test_default_time_steps_is_the_longest_group(series: Series) -> None:
    sampler = SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place")
    assert sampler.time_steps == 4
    assert sampler[0].image.shape == (4, 4, SIZE, SIZE)
    assert sampler[5].time_valid.tolist() == [True, True, False, False]


def test_latest_keeps_the_latest_dates_and_reports_the_others(series: Series, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        sampler = SceneSampler(
            series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=2, time_selection="latest"
        )
    assert sampler.skipped_dates == 2
    assert "2 date(s) of the time series are not used" in caplog.text
    patch = sampler[0]
    latest = sorted(DATES_A)[-2:]
    assert patch.times.tolist() == [np.datetime64(d, "s").item() for d in latest]
    assert [int(patch.image[t, 3, 0, 0]) for t in range(2)] == [day_of_year(d) for d in latest]
    # The first row's date (2021-03-05) was left out: the earliest kept date is the grid; the shifted
    # date still reads the reference coordinates.
    rows, cols = T.window_coordinates(patch.row_off, patch.col_off, SIZE)
    for t in range(2):
        np.testing.assert_array_equal(T.decode_coordinates(patch.image[t])[0], rows)
        np.testing.assert_array_equal(T.decode_coordinates(patch.image[t])[1], cols)


def test_random_is_seeded_per_epoch_and_window_and_kept_in_time_order(series: Series) -> None:
    sampler = SceneSampler(
        series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=2, time_selection="random"
    )
    patch = sampler[0]
    assert patch.image.shape == (4, 4, SIZE, SIZE)  # every date of the group; the draw is a model-input step
    assert patch.time_steps == 2
    days = {day_of_year(d) for d in (*DATES_A, *DATES_B)}

    def drawn(seed: int | None, epoch: int, window: int = 0) -> list[int]:
        image, _ = to_model_inputs(sampler[window], seed=seed, epoch=epoch)
        assert image.shape == (2, 4, SIZE, SIZE) and image.dtype == np.float32
        picked = [round(float(image[t, 3, 0, 0]) * 65535) for t in range(2)]
        assert picked == sorted(picked) and set(picked) <= set(days)
        return picked

    assert drawn(7, 0) == drawn(7, 0)
    per_epoch = {tuple(drawn(7, epoch)) for epoch in range(12)}
    assert len(per_epoch) > 1
    # The compact path (tf.data, Keras) draws the same dates, channels last too.
    image, _ = to_compact_inputs(sampler[0], seed=7, epoch=3, channels_last=True)
    assert image.shape == (2, SIZE, SIZE, 4)
    assert [int(image[t, 0, 0, 3]) for t in range(2)] == drawn(7, 3)
    # Group b has 2 dates = time_steps: nothing to draw.
    assert drawn(7, 0, window=4) == sorted(day_of_year(d) for d in DATES_B)


def test_one_spatial_transform_for_every_date(series: Series) -> None:
    sampler = SceneSampler(series.rows, SIZE, image_dtype="float32", group_by="place", time_steps=4)
    patch = sampler[1]
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    image, mask = to_model_inputs(patch, flip, seed=0)
    assert image.shape == (4, 4, SIZE, SIZE)
    np.testing.assert_array_equal(image, patch.image[..., ::-1])
    np.testing.assert_array_equal(mask, patch.mask[:, ::-1])
    # A random pipeline: whatever it draws, all dates and the mask move together.
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0)])
    for epoch in range(4):
        image, mask = to_model_inputs(patch, pipeline, seed=3, epoch=epoch, channels_last=True)
        assert image.shape == (4, SIZE, SIZE, 4)
        rows, cols = image[0, ..., 0], image[0, ..., 1]
        for t in range(1, 4):
            np.testing.assert_array_equal(image[t, ..., 0], rows)
            np.testing.assert_array_equal(image[t, ..., 1], cols)
        expected = (rows.astype(int) // 16 + cols.astype(int) // 16) % 2
        np.testing.assert_array_equal(mask, expected)


def test_inspection_records_the_groups(series: Series) -> None:
    inspection = inspect_catalogue(series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=4)
    assert inspection.ok and inspection.time_steps == 4
    group = inspection.scenes[0]
    assert group.dates == tuple(str(series.folder / f"a_{d}.tif") for d in sorted(DATES_A))
    assert group.rows == (1, 3, 0, 2) and group.reference == 2
    sampler = SceneSampler.from_inspection(inspection)
    assert sampler[0].image.shape == (4, 4, SIZE, SIZE)


def test_a_catalogue_table_with_a_time_column(series: Series, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {k: [row.get(k) for row in series.rows] for k in ("image_path", "mask_path", "crops_path", "time", "place")}
    )
    pacsv.write_csv(table, tmp_path / "scenes.csv")
    sampler = SceneSampler(tmp_path / "scenes.csv", SIZE, image_dtype="uint16", group_by="place")
    assert sampler[0].times[0] == np.datetime64(sorted(DATES_A)[0], "s")


@pytest.mark.parametrize(
    ("change", "options", "expected"),
    [
        ({"time": "not a date"}, {}, ["scene 0", "'not a date' is not a date", "ISO date"]),
        ({"time": None}, {}, ["scene 0", "has no 'time' value"]),
        ({"place": None}, {}, ["scene 0", "has no 'place' value"]),
        ({"time": DATES_A[1]}, {}, ["group 'a'", "two rows at time 2021-01-10"]),
        ({}, {"time_steps": 3}, ["group 'a'", "has 4 dates but time_steps is 3", "time_selection: latest"]),
    ],
)
def test_bad_rows_and_groups_fail_at_construction(series: Series, change: dict, options: dict, expected: list) -> None:
    rows = [dict(row) for row in series.rows]
    rows[0].update(change)
    with pytest.raises(CatalogueError) as caught:
        SceneSampler(rows, SIZE, image_dtype="uint16", group_by="place", **options)
    for text in expected:
        assert text in str(caught.value)


def test_bad_time_options(series: Series) -> None:
    with pytest.raises(ConfigError, match="no 'plac' column"):
        SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="plac")
    with pytest.raises(ConfigError, match="set group_by"):
        SceneSampler(series.rows, SIZE, image_dtype="uint16", time_steps=3)
    with pytest.raises(ConfigError, match="time_selection must be one of"):
        SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place", time_selection="newest")
    with pytest.raises(ConfigError, match="time_steps must be an integer"):
        SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place", time_steps=0)


def test_time_cells_iso_dates_datetimes_and_offsets() -> None:
    import datetime

    from crossgeo.catalogue import parse_time

    assert parse_time("2021-06-30") == np.datetime64("2021-06-30T00:00:00")
    assert parse_time("2021-06-30T10:42:00Z") == np.datetime64("2021-06-30T10:42:00")
    assert parse_time("2021-06-30T10:42:00+02:00") == np.datetime64("2021-06-30T08:42:00")
    assert parse_time(datetime.date(2021, 6, 30)) == np.datetime64("2021-06-30")
    for bad in ("2021-13-45", "30/06/2021", "", 5):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_a_configuration_with_scenes_builds_the_time_series(series: Series) -> None:
    from crossgeo.config import sampler_from_config
    from crossgeo.errors import OptionError

    config = {"scenes": series.rows, "patch_size": SIZE, "image_dtype": "uint16", "group_by": "place"}
    sampler, _ = sampler_from_config({**config, "time_steps": 4})
    assert isinstance(sampler, SceneSampler) and sampler.patch_shape == (4, 4, SIZE, SIZE)
    with pytest.raises(OptionError, match="sets group_by without scenes"):
        sampler_from_config(
            {"image_path": "a.tif", "mask_path": "m.tif", "crops_path": "w.csv", "patch_size": 8, "group_by": "place"}
        )


def test_planning_per_group_on_the_reference_grid(series: Series) -> None:
    from crossgeo.planning import class_fractions

    sampler = SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place")
    for group, first in ((0, 0), (1, 4)):
        fractions = class_fractions(sampler.samplers[group])  # the group's windows and mask
        for k in range(len(fractions)):
            mask = sampler[first + k].mask
            assert fractions["class_1"][k] == pytest.approx(mask.mean())


def test_reference_names_the_date_whose_grid_every_group_uses(series: Series) -> None:
    rows = [dict(row) for row in series.rows if row["place"] == "a"]
    # The shifted date as the reference: the others are brought onto its grid.
    sampler = SceneSampler(rows, SIZE, image_dtype="uint16", group_by="place", reference="2021-06-20")
    patch = sampler[0]
    shift_rows, shift_cols = SHIFT
    rows_expected, cols_expected = T.window_coordinates(patch.row_off + shift_rows, patch.col_off + shift_cols, SIZE)
    for t in range(4):
        got_rows, got_cols = T.decode_coordinates(patch.image[t])
        valid = patch.image[t, 3] > 0  # dates not covering the shifted grid's edge hold the fill there
        # uint16 coordinates: the shifted date's negative rows/cols are stored modulo 2**16
        np.testing.assert_array_equal(got_rows[valid], rows_expected[valid] % 65536)
        np.testing.assert_array_equal(got_cols[valid], cols_expected[valid] % 65536)
    with pytest.raises(CatalogueError, match=r"reference '2020-01-01' is no date of group 'a'"):
        SceneSampler(rows, SIZE, image_dtype="uint16", group_by="place", reference="2020-01-01")


def test_a_time_series_sampler_pickles_without_handles(series: Series) -> None:
    import pickle

    sampler = SceneSampler(series.rows, SIZE, image_dtype="uint16", group_by="place")
    before = sampler[5]
    copy = pickle.loads(pickle.dumps(sampler))
    after = copy[5]
    np.testing.assert_array_equal(after.image, before.image)
    np.testing.assert_array_equal(after.times, before.times)
    np.testing.assert_array_equal(after.time_valid, before.time_valid)


# --------------------------------------------------------------------------- a date of several sources


def test_a_date_of_several_sources_gives_each_channel_from_its_own_date_and_file(series: Series) -> None:
    """Issue 24.4: each row's image_path a mapping of two band files at 1x and 2x pixel size; per date and
    channel the values prove their date (day of year) and their pixel (coordinates on the reference grid)."""
    rows = multi_source_dates(series)
    sampler = SceneSampler(rows, SIZE, image_dtype="uint16", image_resampling="nearest", group_by="place", time_steps=5)
    assert sampler.patch_shape == (5, 3, SIZE, SIZE)
    assert sampler.samplers[0].channels[:4] == (
        ("2021-01-10/coords", 2), ("2021-01-10/coords", 1), ("2021-01-10/day", 1), ("2021-02-14/coords", 2),
    )  # fmt: skip
    for i in range(len(sampler)):
        patch = sampler[i]
        dates = sorted(DATES_A if patch.scene == 0 else DATES_B)
        n = len(dates)
        assert patch.image.shape == (5, 3, SIZE, SIZE)
        assert patch.time_valid.tolist() == [True] * n + [False] * (5 - n)
        assert patch.times[:n].tolist() == [np.datetime64(d, "s").item() for d in dates]
        rows_, cols = T.window_coordinates(patch.row_off, patch.col_off, SIZE)
        for t, date in enumerate(dates):
            np.testing.assert_array_equal(patch.image[t, 0], cols)  # coords band 2 first
            np.testing.assert_array_equal(patch.image[t, 1], rows_)
            assert (patch.image[t, 2] == 1000 + day_of_year(date)).all(), (patch.scene, date)
        assert (patch.image[n:] == 0).all()


def test_the_dates_of_a_group_must_list_the_same_sources(series: Series) -> None:
    rows = multi_source_dates(series)
    rows[1] = {**rows[1], "image_path": {"coords": rows[1]["image_path"]["coords"]}}  # type: ignore[index]
    with pytest.raises(CatalogueError, match=r"same sources.*'day'"):
        SceneSampler(rows, SIZE, image_dtype="uint16", group_by="place", time_steps=5)
