"""Chip stores: written once from a live sampler, served back with the live sampler's exact numbers (#25)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from crossgeo import PatchSampler, SceneSampler
from crossgeo import testing as T
from crossgeo.errors import ConfigError, ReadError, WriteError

zarr = pytest.importorskip("zarr", minversion="3")

from crossgeo.chips import (  # noqa: E402
    FORMAT_VERSION,
    ChipSampler,
    ChipStoreError,
    verify_chips,
    write_chips,
)

SIZE = 32
FIELDS = ("image", "mask", "mask_valid", "image_valid")


def _windows(scene, name="windows.csv", **extra):
    # Inside, on the edges and partly outside the 512 x 512 image: filled pixels and invalid masks.
    rows = [0, 40, 100, 480, 500, -10, 250, 250, 12, 300, 7]
    cols = [0, 60, 100, 480, 10, -12, 250, 251, 400, 3, 77]
    return T.write_windows_table(scene.folder / name, rows, cols, **extra)


@pytest.fixture
def live(scene):
    """A sampler whose mask is warped from EPSG:4326 (nearest), with windows reaching past the edges."""
    return PatchSampler(scene.image, scene.lonlat_mask(), _windows(scene), SIZE, n_classes=4)


def assert_same(a, b):
    for name in FIELDS:
        got, want = getattr(a, name), getattr(b, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert (a.row_off, a.col_off, a.index, a.scene) == (b.row_off, b.col_off, b.index, b.scene)


@pytest.mark.parametrize("cache_bytes", [2 << 30, 0], ids=["whole-shards", "per-chip"])
def test_chips_give_the_live_samplers_patches(live, tmp_path, cache_bytes):
    store = write_chips(live, tmp_path / "chips", shard_size=4, progress=False)
    chips = ChipSampler(store, cache_bytes=cache_bytes)
    assert chips.whole_shards == bool(cache_bytes)
    assert len(chips) == len(live) == 11
    for i in range(len(live)):
        assert_same(chips[i], live[i])
        # Narrow mask types as the compact loaders ask for them.
        assert_same(chips.get(i, mask_dtype=np.uint8), live.get(i, mask_dtype=np.uint8))
    assert chips[-1].index == len(live) - 1
    # Some windows reach past the image: the store keeps their fill and validity, not only the image.
    assert not chips[4].image_valid.all() and not chips[4].mask_valid.all()
    for attribute in ("patch_size", "n_classes", "mask_fill_value", "image_dtype", "selected_bands"):
        assert getattr(chips, attribute) == getattr(live, attribute), attribute
    np.testing.assert_array_equal(chips.row_off, live.row_off)


def test_patches_do_not_share_memory_with_the_cache(live, tmp_path):
    chips = ChipSampler(write_chips(live, tmp_path / "chips", progress=False))
    first = chips[0]
    first.image[:] = 7
    first.mask[:] = 3
    assert_same(chips[0], live[0])


def test_scene_sampler_chips_keep_scene_and_window_transform(tmp_path):
    scenes, mask = T.write_scene_catalogue(tmp_path / "cat", 3, size=64, windows=((0, 0), (32, 16), (40, 40)))
    live = SceneSampler(scenes, SIZE, mask_path=mask, n_classes=4)
    store = write_chips(live, tmp_path / "chips", shard_size=2, progress=False)
    chips = ChipSampler(store)
    assert len(chips) == len(live) == 9
    for i in range(len(live)):
        assert_same(chips[i], live[i])
    table = pq.read_table(store / "chips.parquet").to_pylist()
    assert [row["scene"] for row in table] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for row in table:
        grid = live.samplers[row["scene"]].grid
        assert row["transform"] == list(grid.window_transform(row["row_off"], row["col_off"]))[:6]
        assert row["crs"] == str(grid.crs)


def test_splits_weights_and_fractions_come_from_the_windows_table(scene, tmp_path):
    splits = ["train", "val"] * 5 + ["test"]
    crops = _windows(scene, "split.csv", split=splits, weight=[float(k) for k in range(11)], class_1=[0.5] * 11)
    mask = scene.lonlat_mask()
    live_all = PatchSampler(scene.image, mask, crops, SIZE, n_classes=4)
    store = write_chips(live_all, tmp_path / "chips", shard_size=3, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["counts"]["splits"] == {"train": 5, "val": 5, "test": 1}
    for split in ("train", "val", "test"):
        live = PatchSampler(scene.image, mask, crops, SIZE, n_classes=4, split=split)
        chips = ChipSampler(store, split=split)
        assert len(chips) == len(live)
        for i in range(len(live)):
            assert_same(chips[i], live[i])
        np.testing.assert_array_equal(chips.index.weight, live.index.weight)
    table = pq.read_table(store / "chips.parquet")
    assert table.column("class_1").to_pylist() == [0.5] * 11
    with pytest.raises(ChipStoreError, match=r"split='tain'.*\['test', 'train', 'val'\]"):
        ChipSampler(store, split="tain")


def test_weights_column_drives_the_adapters_weights(scene, tmp_path):
    from crossgeo.loading import resolve_weights

    crops = _windows(scene, "weights.csv", weight=[float(k) for k in range(11)])
    live = PatchSampler(scene.image, scene.lonlat_mask(), crops, SIZE, n_classes=4)
    chips = ChipSampler(write_chips(live, tmp_path / "chips", progress=False))
    np.testing.assert_array_equal(resolve_weights("weight", chips, "test"), resolve_weights("weight", live, "test"))


def test_store_is_readable_without_crossgeo(live, tmp_path):
    store = write_chips(live, tmp_path / "chips", shard_size=4, progress=False)
    group = zarr.open_group(str(store), mode="r")
    image = group["image"]
    assert image.shape == (11, 3, SIZE, SIZE) and image.dtype == np.uint8
    assert image.chunks == (1, 3, SIZE, SIZE) and image.shards == (4, 3, SIZE, SIZE)
    np.testing.assert_array_equal(image[5], live[5].image)
    np.testing.assert_array_equal(group["mask"][5], live[5].mask)
    assert group["mask"].dtype == np.uint8  # the narrowest type holding the classes and the fill value
    table = pq.read_table(store / "chips.parquet")
    assert table.column("row_off").to_pylist() == live.row_off.tolist()
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["counts"]["chips"] == 11
    assert len(manifest["shards"]) == 3 and manifest["fingerprint"]
    assert verify_chips(store)["problems"] == []


def test_pickled_chip_sampler_reads_the_same(live, tmp_path):
    chips = ChipSampler(write_chips(live, tmp_path / "chips", progress=False))
    chips[0]
    copy = pickle.loads(pickle.dumps(chips))
    assert copy._cache == {}
    assert_same(copy[3], live[3])


def test_existing_store_needs_overwrite_or_resume(live, tmp_path):
    store = write_chips(live, tmp_path / "chips", progress=False)
    with pytest.raises(ChipStoreError, match=r"already exists.*overwrite=True.*resume=True"):
        write_chips(live, store, progress=False)
    write_chips(live, store, overwrite=True, progress=False)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ChipStoreError, match="not a chip store"):
        write_chips(live, other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="shard_size"):
        write_chips(live, tmp_path / "x", shard_size=0, progress=False)


def test_resume_refuses_a_store_of_other_windows(live, scene, tmp_path):
    store = write_chips(live, tmp_path / "chips", progress=False)
    other = PatchSampler(
        scene.image, scene.lonlat_mask("m2.tif"), T.write_windows_table(scene.folder / "o.csv", [1], [1]), SIZE
    )
    with pytest.raises(ChipStoreError, match="other windows, options"):
        write_chips(other, store, resume=True, progress=False)


def test_unknown_format_version_is_refused(live, tmp_path):
    store = write_chips(live, tmp_path / "chips", progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChipStoreError, match=f"format version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"):
        ChipSampler(store)


def test_damaged_shard_is_a_read_error_and_resume_rewrites_it(live, tmp_path):
    store = write_chips(live, tmp_path / "chips", shard_size=4, progress=False)
    shard = store / "image" / "c" / "1" / "0" / "0" / "0"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    shard.write_bytes(bytes(blob))
    chips = ChipSampler(store)
    assert_same(chips[0], live[0])  # shard 0 is whole
    with pytest.raises(ReadError, match=r"shard 1 file .*image/c/1/0/0/0 does not match its sha256"):
        chips[5]
    with pytest.raises(ReadError, match="shard 1"):
        ChipSampler(store, cache_bytes=0)[4]
    assert any("shard 1" in p and "damaged" in p for p in verify_chips(store)["problems"])
    write_chips(live, store, shard_size=4, resume=True, progress=False)
    repaired = ChipSampler(store)
    for i in range(len(live)):
        assert_same(repaired[i], live[i])
    assert verify_chips(store)["problems"] == []


def test_incomplete_store_says_resume(live, tmp_path):
    store = write_chips(live, tmp_path / "chips", progress=False)
    (store / "manifest.json").unlink()
    with pytest.raises(ChipStoreError, match=r"incomplete.*resume=True"):
        ChipSampler(store)


@pytest.mark.parametrize("storage", ["zarr", "webdataset"])
def test_encoding_in_the_reading_thread_writes_the_same_files(live, tmp_path, storage):
    """``encode_behind=False`` (Ray's tasks: encode where the chips were read, only the files' writes behind)
    writes byte for byte the files and records of ``engine=None``'s pipeline (encode and write behind)."""
    import shutil

    from crossgeo.chips import Layout, write_shards_here

    store = write_chips(live, tmp_path / "local", shard_size=4, format=storage, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    layout = Layout.from_json(manifest)
    again = tmp_path / "again"
    shutil.copytree(store, again)
    for shard in manifest["shards"]:
        for relative in shard["files"]:
            (again / relative).unlink()
        (again / "shards" / f"{shard['shard']:06d}.json").unlink()
    records = list(write_shards_here(live, again, layout, range(layout.shards), encode_behind=False))
    assert [r["shard"] for r in records] == list(range(layout.shards)) == [s["shard"] for s in manifest["shards"]]
    assert [r["files"] for r in records] == [s["files"] for s in manifest["shards"]]
    for shard in manifest["shards"]:
        for relative in shard["files"]:
            assert (again / relative).read_bytes() == (store / relative).read_bytes()
        name = f"shards/{shard['shard']:06d}.json"
        assert json.loads((again / name).read_text()) == json.loads((store / name).read_text())


@pytest.mark.parametrize(
    ("pending", "cpus", "sizes"),
    [
        (list(range(29)), 2, [8, 6, 4, 3, 2, 2, 1, 1, 1, 1]),  # the benchmark's 7,200 chips on two CPUs
        (list(range(13)), 2, [4, 3, 2, 1, 1, 1, 1]),
        ([2, 3, 7, 8, 9], 1, [3, 1, 1]),  # resume: the shards still to write, whatever their numbers
        ([5], 8, [1]),
        ([], 2, []),
    ],
)
def test_ray_tasks_are_contiguous_shards_largest_first_single_shards_last(pending, cpus, sizes):
    """``engine="ray"``'s tasks (`task_groups`): every pending shard once, in order, in runs that shrink to one
    shard, so that the CPUs end together (a CPU finishing early takes a short task)."""
    from crossgeo.chips import task_groups

    groups = task_groups(pending, cpus)
    assert [len(g) for g in groups] == sizes
    assert [s for g in groups for s in g] == pending


WRITER = textwrap.dedent(
    """
    import sys, time
    from crossgeo import PatchSampler
    from crossgeo import chips

    real = chips.store_shard

    def slow(path, layout, record, arrays):
        record = real(path, layout, record, arrays)
        print(record["shard"], flush=True)
        time.sleep(30 if record["shard"] == 1 else 0)
        return record

    chips.store_shard = slow
    sampler = PatchSampler(sys.argv[1], sys.argv[2], sys.argv[3], 32, n_classes=4)
    chips.write_chips(sampler, sys.argv[4], shard_size=4, progress=False)
    """
)


def test_killed_writer_resumes_to_the_same_arrays(live, scene, tmp_path):
    reference = write_chips(live, tmp_path / "reference", shard_size=4, progress=False)
    store = tmp_path / "killed"
    args = [str(live.image_path), str(live.mask_path), str(live.crops_path), str(store)]
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(2)]
        assert lines == ["0", "1"]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert not (store / "manifest.json").exists() and not (store / "chips.parquet").exists()
    assert not (store / "image" / "c" / "2").exists()  # the third shard was never started
    with pytest.raises(ChipStoreError, match="incomplete"):
        ChipSampler(store)
    write_chips(live, store, shard_size=4, resume=True, progress=False)
    got, want = ChipSampler(store), ChipSampler(reference)
    for i in range(len(live)):
        assert_same(got[i], want[i])
    for name in FIELDS:
        np.testing.assert_array_equal(zarr.open_array(str(store / name))[:], zarr.open_array(str(reference / name))[:])
    assert [s["files"] for s in json.loads((store / "manifest.json").read_text())["shards"]] == [
        s["files"] for s in json.loads((reference / "manifest.json").read_text())["shards"]
    ]


def test_full_disk_leaves_no_shard_under_its_final_name(live, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        big = PatchSampler(
            live.image_path, live.mask_path, T.write_windows_table(tmp_path / "many.csv", [0] * 400, [0] * 400), 64
        )
        with pytest.raises(WriteError) as caught:
            write_chips(big, folder / "chips", shard_size=16, progress=False)
        assert "disk full" in str(caught.value)
        store = folder / "chips"
        assert not (store / "manifest.json").exists()
        records = {int(p.stem) for p in (store / "shards").glob("*.json")}
        for path in store.rglob("*"):
            assert ".partial-" not in path.name, path
        shard_files = [p.relative_to(store).parts for p in store.rglob("*") if p.is_file() and "c" in p.parts]
        assert shard_files  # some shards were finished before the disk filled
        for parts in shard_files:
            assert int(parts[2]) in records, parts  # every shard file under its final name is a finished shard
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_webdataset_shards_hold_npy_and_json(live, tmp_path):
    store = write_chips(live, tmp_path / "wds", shard_size=4, format="webdataset", progress=False)
    tars = sorted(store.glob("chips-*.tar"))
    assert len(tars) == 3
    with tarfile.open(tars[1]) as tar:
        names = tar.getnames()
        assert names[:5] == [
            "000000004.image.npy",
            "000000004.mask.npy",
            "000000004.mask_valid.npy",
            "000000004.image_valid.npy",
            "000000004.json",
        ]
        import io

        image = np.load(io.BytesIO(tar.extractfile("000000004.image.npy").read()))
        meta = json.loads(tar.extractfile("000000004.json").read())
    np.testing.assert_array_equal(image, live[4].image)
    assert meta == {"position": 4, "row_off": 500, "col_off": 10}
    assert verify_chips(store)["problems"] == []
    with pytest.raises(ChipStoreError, match="webdataset"):
        ChipSampler(store)


def test_a_shard_is_decoded_once_per_process(live, tmp_path):
    chips = ChipSampler(write_chips(live, tmp_path / "chips", shard_size=4, progress=False))
    for _ in range(3):
        for i in range(4):
            chips[i]
    assert list(chips._cache) == [0]
    chips.close()
    assert chips._cache == {}


def test_cli_writes_resumes_and_validates_a_store(live, tmp_path, capsys):
    import yaml

    from crossgeo.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "image_mbtiles_path": str(live.image_path),
                "mask_path": str(live.mask_path),
                "crops_path": str(live.crops_path),
                "patch_size": SIZE,
                "n_classes": 4,
            }
        )
    )
    out = tmp_path / "chips"
    assert main(["chips", str(config), str(out), "--shard-size", "4"]) == 0
    assert "wrote 11 chip(s) in 3 shard(s)" in capsys.readouterr().out
    chips = ChipSampler(out)
    for i in range(len(live)):
        assert_same(chips[i], live[i])
    assert main(["chips", str(config), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["validate", str(out)]) == 0
    assert "11 chip(s)" in capsys.readouterr().out
    shard = out / "image" / "c" / "2" / "0" / "0" / "0"
    shard.write_bytes(b"\0" + shard.read_bytes()[1:])
    assert main(["validate", str(out)]) == 1
    assert "shard 2: image/c/2/0/0/0 does not match its sha256 (damaged)" in capsys.readouterr().out
    assert main(["chips", str(config), str(out), "--shard-size", "4", "--resume"]) == 0
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0
    # A configuration with chips_path is validated through its store.
    config.write_text(config.read_text() + f"chips_path: {out}\n")
    assert main(["validate", str(config)]) == 0
    assert "validating the chip store" in capsys.readouterr().out


def test_webdataset_shards_have_the_same_bytes_on_every_write(live, tmp_path):
    """The second write reads the masks from the warped-mask cache (C order), the first from the lookup view
    (Fortran order): the tar's .npy files were different bytes for the same arrays; now C order always."""
    first = write_chips(live, tmp_path / "a", shard_size=4, format="webdataset", progress=False)
    second = write_chips(live, tmp_path / "b", shard_size=4, format="webdataset", progress=False)
    for shard in json.loads((first / "manifest.json").read_text())["shards"]:
        for relative in shard["files"]:
            assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
