"""Damaged tiles under tf.data and Keras: replaced, counted, reported at the end of the epoch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.keras import PatchPyDataset
from crossgeo.tensorflow import make_dataset


def _unreadable(mbtiles: Path, mask: Path, windows: Path) -> list[int]:
    strict = PatchSampler(mbtiles, mask, windows, 64, selected_bands=[1, 2, 3])
    failing = []
    for i in range(len(strict)):
        try:
            strict[i]
        except OSError:
            failing.append(i)
    assert 0 < len(failing) < len(strict) / 2
    return failing


@pytest.mark.parametrize("calls", [1, 4])
def test_make_dataset_replaces_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture, calls: int) -> None:
    mbtiles, mask, windows = T.write_damaged_mbtiles_scene(tmp_path)
    failing = _unreadable(mbtiles, mask, windows)
    sampler = PatchSampler(mbtiles, mask, windows, 64, selected_bands=[1, 2, 3], on_read_error="skip")
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        elements = list(make_dataset(sampler, with_metadata=True, num_parallel_calls=calls))
    assert len(elements) == len(sampler)  # nothing lost: every unreadable window was replaced
    served = {(int(m["row_off"]), int(m["col_off"])) for _, _, m in elements}
    bad = {(int(sampler.row_off[i]), int(sampler.col_off[i])) for i in failing}
    assert not served & bad
    assert sampler.skipped == len(failing) and sampler.unreadable == set(failing)
    assert f"epoch 0: {len(failing)} sample(s) came from a replacement window" in caplog.text


def test_pydataset_reports_at_epoch_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mbtiles, mask, windows = T.write_damaged_mbtiles_scene(tmp_path)
    failing = _unreadable(mbtiles, mask, windows)
    sampler = PatchSampler(mbtiles, mask, windows, 64, selected_bands=[1, 2, 3], on_read_error="skip")
    dataset = PatchPyDataset(sampler, 8)
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        dataset.on_epoch_begin()
        batches = [dataset[i] for i in range(len(dataset))]
        dataset.on_epoch_end()
    assert sum(x.shape[0] for x, _ in batches) == len(sampler)
    assert f"epoch 0: {len(failing)} sample(s) came from a replacement window" in caplog.text
