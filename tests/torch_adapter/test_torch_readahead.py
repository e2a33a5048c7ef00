"""Read-ahead at ``num_workers: 0`` (``read_threads``) and reused conversion buffers: the sequential batches, in order.

Each new path is compared with the one-reader loader (``read_threads=0``), batch by batch and bit
for bit: float and compact items, seeded and unseeded augmentation, an epoch length other than
the windows, damaged tiles under ``on_read_error="skip"`` (same replacements, same count), fork
and spawn workers, and many epochs whose pools' threads come and go (thread idents are reused).
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch_scene import gdal_options_now

from crossgeo import ConfigError, OptionTypeError, PatchSampler, testing
from crossgeo.augment import seed_augmentation
from crossgeo.torch import MBTilesCropsGeoTifMaskDataset, PatchDataset, make_dataloader
from crossgeo.torch.batches import OutputBuffers, finish_batch

SIZE = 32
FLIPS = [
    {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    {"_target_": "albumentations.VerticalFlip", "p": 0.5},
    {"_target_": "albumentations.Normalize", "p": 0.3},
]


@pytest.fixture(autouse=True)
def _no_handles_left() -> Any:
    """Collect each test's samplers (the churn test's patched ``get`` is a cycle): workers forked by later
    tests must not inherit their open rasters (tests/torch_adapter/test_torch_scenes.py counts them)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def coordinate_scene(tmp_path_factory: pytest.TempPathFactory) -> testing.CoordinateScene:
    return testing.CoordinateScene(tmp_path_factory.mktemp("readahead"), 512)


def _sampler(scene: testing.CoordinateScene, n: int = 37, **options: Any) -> PatchSampler:
    rows, cols = np.random.default_rng(7).integers(-SIZE // 2, scene.size - SIZE // 2, (2, n))
    return PatchSampler(scene.image, scene.lonlat_mask(), scene.windows(rows, cols), SIZE, n_classes=4, **options)


def _epochs(dataset: PatchDataset, epochs: int = 2, **options: Any) -> list[dict[str, Any]]:
    """Every batch of ``epochs`` passes (cloned: a later batch must not change an earlier one)."""
    loader = make_dataloader(dataset, batch_size=5, **options)
    out = []
    for _ in range(epochs):
        out += [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in loader]
    return out


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a["image"].dtype == b["image"].dtype == torch.float32 and a["mask"].dtype == torch.int64
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        if "metadata" in b:
            assert torch.equal(a["metadata"]["row_off"], b["metadata"]["row_off"])
            assert torch.equal(a["metadata"]["col_off"], b["metadata"]["col_off"])


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("threads", [2, 3])
def test_read_ahead_gives_the_one_reader_batches_in_order(
    coordinate_scene: testing.CoordinateScene, compact: bool, threads: int
) -> None:
    sampler = _sampler(coordinate_scene)
    options = {"augmentation_list": FLIPS, "seed": 11, "return_metadata": True, "compact": compact}
    want = _epochs(PatchDataset(sampler, **options), shuffle=True, read_threads=0)
    before = threading.active_count()
    got = _epochs(PatchDataset(sampler, **options), shuffle=True, read_threads=threads)
    _assert_same(got, want)
    assert threading.active_count() == before  # each pass's pool ended with it


def test_default_reads_ahead_on_two_cores_and_not_with_workers(coordinate_scene: testing.CoordinateScene) -> None:
    from crossgeo.readahead import resolve_read_threads

    dataset = PatchDataset(_sampler(coordinate_scene, n=12))
    assert make_dataloader(dataset, batch_size=4)._pool_size(dataset) == resolve_read_threads(None)
    assert make_dataloader(dataset, batch_size=4, num_workers=2)._pool_size(dataset) == 0
    assert make_dataloader(dataset, batch_size=4, read_threads=3)._pool_size(dataset) == 3
    one_reader = PatchDataset(dataset.sampler, read_threads=0)
    assert make_dataloader(one_reader, batch_size=4)._pool_size(one_reader) == 0
    assert make_dataloader(dataset, batch_size=None)._pool_size(dataset) == 0  # unbatched: torch's own loop


def test_unseeded_augmentation_draws_as_one_reader_does(coordinate_scene: testing.CoordinateScene) -> None:
    """Augmentation stays in the loop's thread, in order: an unseeded pipeline draws the same numbers."""
    sampler = _sampler(coordinate_scene, n=20)
    runs = []
    for threads in (0, 2):
        dataset = PatchDataset(sampler, augmentation_list=FLIPS)
        seed_augmentation(dataset.augmentation, 99)
        runs.append(_epochs(dataset, read_threads=threads))
    _assert_same(runs[1], runs[0])


def test_an_epoch_length_other_than_the_windows(coordinate_scene: testing.CoordinateScene) -> None:
    sampler = _sampler(coordinate_scene, n=9)
    options = {"augmentation_list": FLIPS, "seed": 3, "samples_per_epoch": 14, "return_metadata": True}
    want = _epochs(PatchDataset(sampler, **options), epochs=3, read_threads=0)
    _assert_same(_epochs(PatchDataset(sampler, **options), epochs=3, read_threads=2), want)


@pytest.mark.parametrize("compact", [False, True])
def test_damaged_tiles_are_replaced_and_counted_as_one_reader_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, compact: bool
) -> None:
    mbtiles, mask, windows = testing.write_damaged_mbtiles_scene(tmp_path)
    options: dict[str, Any] = {"selected_bands": [1, 2, 3], "return_metadata": True, "on_read_error": "skip"}
    runs, skipped = [], []
    for threads in (0, 2):
        dataset = MBTilesCropsGeoTifMaskDataset(mbtiles, mask, windows, 64, **options)
        dataset.compact = compact
        caplog.clear()
        runs.append(_epochs(dataset, epochs=1, read_threads=threads))
        skipped.append(dataset.skipped)
        assert f"epoch 0: {dataset.skipped} sample(s) came from a replacement window" in caplog.text
    _assert_same(runs[1], runs[0])
    assert skipped[0] == skipped[1] > 0


def test_stopping_early_ends_the_pool(coordinate_scene: testing.CoordinateScene) -> None:
    dataset = PatchDataset(_sampler(coordinate_scene))
    before = threading.active_count()
    loader = make_dataloader(dataset, batch_size=4, read_threads=2)
    iterator = iter(loader)
    next(iterator)
    assert threading.active_count() > before  # reading ahead
    iterator.close()  # type: ignore[attr-defined]
    assert threading.active_count() == before


def test_thread_churn_keeps_handles_bounded_and_batches_identical(coordinate_scene: testing.CoordinateScene) -> None:
    """A pool per epoch: threads end and new ones (often with a dead thread's ident) adopt their handles."""
    sampler = _sampler(coordinate_scene, n=15)
    options = {"augmentation_list": FLIPS, "seed": 5}
    want = _epochs(PatchDataset(sampler, **options), epochs=12, read_threads=0)
    sampler[0]
    crossgeo_options = gdal_options_now()  # what a thread that read has in force (crossgeo's GDAL options)
    reads: list[tuple[int, str]] = []
    original = sampler.get

    def get(index: int, **kw: Any) -> Any:
        patch = original(index, **kw)
        reads.append((threading.get_ident(), gdal_options_now()))
        return patch

    sampler.get = get  # type: ignore[method-assign]
    got = _epochs(PatchDataset(sampler, **options), epochs=12, read_threads=2)
    _assert_same(got, want)
    assert {ident for ident, _ in reads} - {threading.get_ident()}  # read by pool threads, not the test's
    assert {in_force for _, in_force in reads} == {crossgeo_options}  # every churned thread entered crossgeo's env
    assert sampler._readers.created <= 3, sampler._readers.created  # the main thread's + two pool threads'


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_give_what_zero_workers_reading_ahead_give(
    coordinate_scene: testing.CoordinateScene, context: str
) -> None:
    sampler = _sampler(coordinate_scene, n=17)
    options = {"augmentation_list": FLIPS, "seed": 2, "return_metadata": True, "read_threads": 2}
    want = _epochs(PatchDataset(sampler, **options), shuffle=True)
    for compact_transfer in (None, True):
        got = _epochs(
            PatchDataset(sampler, **options),
            shuffle=True,
            num_workers=2,
            multiprocessing_context=context,
            compact_transfer=compact_transfer,
        )
        _assert_same(got, want)


@pytest.mark.parametrize("workers", [0, 2])
def test_reused_buffers_never_change_a_batch_you_hold(coordinate_scene: testing.CoordinateScene, workers: int) -> None:
    """Compact batches (from workers too, the default) are converted into reused buffers, never one still held."""
    dataset = PatchDataset(_sampler(coordinate_scene, n=40), augmentation_list=FLIPS[:2], seed=1)  # integer images
    want = _epochs(dataset, epochs=1, compact_transfer=False, read_threads=0)
    dataset.set_epoch(0)
    loader = make_dataloader(dataset, batch_size=5, num_workers=workers)
    held, arrays, slices, pointers = [], [], [], set()
    for n, batch in enumerate(loader):
        # Without workers each item is converted into its row of a buffer of the collate_fn (ConvertingCollate).
        buffers = loader.collate_fn.buffers if workers == 0 else loader._buffers
        assert buffers is not None
        assert any(batch["image"].data_ptr() == t.data_ptr() for t in buffers._tensors)
        pointers.add(batch["image"].data_ptr())
        if n == 1:
            held.append(batch)  # the whole batch
        if n == 3:
            arrays.append(batch["image"].numpy())  # only a numpy view of its memory
            slices.append(batch["mask"][2:4])  # only a view of the mask
        del batch
    assert len(pointers) < 8  # the buffers nobody held were reused ...
    _assert_same(held, [want[1]])  # ... and the ones held kept their values
    np.testing.assert_array_equal(arrays[0], want[3]["image"].numpy())
    assert torch.equal(slices[0], want[3]["mask"][2:4])


def test_output_buffers_reuse_only_what_nobody_holds() -> None:
    buffers = OutputBuffers(slots=2)
    batch = {"image": torch.arange(12, dtype=torch.uint8).reshape(1, 3, 2, 2), "mask": torch.zeros(1, 2, 2).byte()}
    first = finish_batch(batch, buffers=buffers)
    pointer = first["image"].data_ptr()
    second = finish_batch(batch, buffers=buffers)
    assert second["image"].data_ptr() != pointer  # the first is still held
    expected = batch["image"].to(torch.float32).div_(255)
    assert torch.equal(first["image"], expected) and torch.equal(second["image"], expected)
    del first
    third = finish_batch(batch, buffers=buffers)
    assert third["image"].data_ptr() == pointer and torch.equal(third["image"], expected)


def test_read_threads_is_checked_everywhere(coordinate_scene: testing.CoordinateScene, tmp_path: Path) -> None:
    sampler = _sampler(coordinate_scene, n=4)
    with pytest.raises(ConfigError, match="read_threads must be >= 0"):
        PatchDataset(sampler, read_threads=-1)
    with pytest.raises(OptionTypeError, match="read_threads must be an integer"):
        make_dataloader(PatchDataset(sampler), read_threads="2")  # type: ignore[arg-type]
    config = {
        "image_mbtiles_path": str(coordinate_scene.image),
        "mask_path": str(coordinate_scene.lonlat_mask()),
        "crops_path": str(coordinate_scene.windows([0, 8], [0, 8])),
        "patch_size": SIZE,
        "read_threads": 3,
    }
    dataset = MBTilesCropsGeoTifMaskDataset(**yaml.safe_load(yaml.safe_dump(config)))
    assert dataset.read_threads == 3
    with pytest.raises(OptionTypeError, match="read_threads must be an integer"):
        MBTilesCropsGeoTifMaskDataset(**{**config, "read_threads": 1.5})


def test_picklable_with_read_threads(coordinate_scene: testing.CoordinateScene) -> None:
    import pickle

    dataset = PatchDataset(_sampler(coordinate_scene, n=4), read_threads=2)
    assert pickle.loads(pickle.dumps(dataset)).read_threads == 2
