"""The window-index cache never destroys an input, never trusts a cut or stale file, and stays
readable by the original `MBTilesCropsGeoTifMaskDataset` (issues #21.2, #21.7, #21.9, #22.4).

Every case runs on real files: GeoTIFFs and a GeoPackage written by GDAL, tables written by
pyarrow and pandas, a read-only tmpfs mount where the machine allows one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testkit import CliRun

from crossgeo import ConfigError, PatchSampler, WindowError
from crossgeo import testing as T
from crossgeo import windows as W
from crossgeo.testing import CoordinateScene

SIZE = 64


def sampler(scene: CoordinateScene, crops: Path, cache: Path | None, **kw: Any) -> PatchSampler:
    return PatchSampler(scene.image, scene.lonlat_mask(), crops, SIZE, window_index_cache=cache, n_classes=4, **kw)


def original_load(path: Path) -> list[dict[str, Any]]:
    """The original's ``_load_window_index_cache`` (pytorch_segmentation_models_trainer 1.4.0), verbatim in effect."""
    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    missing = {"row_off", "col_off"} - set(df.columns)
    if missing:
        raise ValueError(f"window_index_cache at '{path}' is missing columns: {sorted(missing)}")
    records = df.to_dict(orient="records")
    for rec in records:
        rec["row_off"] = int(rec["row_off"])
        rec["col_off"] = int(rec["col_off"])
    return records


def original_save(path: Path, records: list[dict[str, Any]]) -> None:
    """The original's ``_save_window_index_cache``: pandas, no index column, nothing else."""
    df = pd.DataFrame(records)
    if path.suffix.lower() == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


# ---------------------------------------------------------------- A: the cache is never an input


def split_table(scene: CoordinateScene, name: str = "w.csv") -> Path:
    path = scene.path(name)
    path.write_text("row_off,col_off,split,note\n1,2,train,a\n3,4,val,b\n5,6,train,c\n")
    return path


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_cache_equal_to_crops_path_is_refused_and_the_table_kept(scene: CoordinateScene, link: str) -> None:
    crops = split_table(scene)
    before = crops.read_bytes()
    cache = {"same": crops, "symlink": scene.path("link.csv"), "hardlink": scene.path("hard.csv")}[link]
    if link == "symlink":
        cache.symlink_to(crops)
    elif link == "hardlink":
        os.link(crops, cache)
    with pytest.raises(ConfigError, match=r"window_index_cache .* is the crops_path") as caught:
        sampler(scene, crops, cache, split="train")
    assert str(cache) in str(caught.value)
    assert crops.read_bytes() == before


def test_a_file_crossgeo_did_not_write_is_never_overwritten(scene: CoordinateScene) -> None:
    crops = scene.windows([1, 2], [3, 4])
    other = scene.path("labels.csv")
    other.write_text("name,value\na,1\nb,2\n")
    before = other.read_bytes()
    with pytest.raises(ConfigError, match=r"window_index_cache .*labels.csv.* not a window-index cache crossgeo"):
        sampler(scene, crops, other)
    assert other.read_bytes() == before
    garbage = scene.path("g.parquet")
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="window_index_cache"):
        sampler(scene, crops, garbage)
    assert garbage.read_bytes() == b"not parquet at all"


def write_config(path: Path, **options: Any) -> Path:
    yaml = pytest.importorskip("yaml")
    path.write_text(yaml.safe_dump({"train_dataset": {"_target_": "anything.Dataset", **options}}))
    return path


@pytest.mark.parametrize("command", [["validate"], ["index"], ["index", "--rebuild"]])
def test_cli_never_overwrites_or_deletes_the_windows_table(
    scene: CoordinateScene, command: list[str], cli: CliRun
) -> None:
    crops = split_table(scene)
    before = crops.read_bytes()
    options = {
        "image_mbtiles_path": str(scene.image),
        "mask_path": str(scene.lonlat_mask()),
        "crops_path": str(crops),
        "patch_size": SIZE,
        "n_classes": 4,
        "split": "train",
        "window_index_cache": str(crops),
    }
    config = write_config(scene.path("c.yaml"), **options)
    code, out, err = cli(command[0], config, *command[1:])
    assert code != 0, out
    assert "window_index_cache" in out + err
    assert crops.exists() and crops.read_bytes() == before


def test_index_rebuild_deletes_only_its_own_cache(scene: CoordinateScene, cli: CliRun) -> None:
    crops = scene.windows([1, 2], [3, 4])
    foreign = scene.path("mine.csv")
    foreign.write_text("row_off,col_off,comment\n9,9,keep me\n")
    options = {
        "image_mbtiles_path": str(scene.image),
        "mask_path": str(scene.lonlat_mask()),
        "crops_path": str(crops),
        "patch_size": SIZE,
        "n_classes": 4,
    }
    config = write_config(scene.path("c.yaml"), **options)
    code, out, err = cli("index", config, "--cache", foreign, "--rebuild")
    assert code != 0 and foreign.read_text() == "row_off,col_off,comment\n9,9,keep me\n"
    assert "not a window-index cache crossgeo wrote" in out + err
    own = scene.path("own.parquet")
    assert cli("index", config, "--cache", own)[0] == 0
    code, out, _ = cli("index", config, "--cache", own, "--rebuild")
    assert code == 0 and "built and written" in out


def test_cache_under_a_regular_file_is_a_warning(
    scene: CoordinateScene, caplog: pytest.LogCaptureFixture, cli: CliRun
) -> None:
    blocker = scene.path("plain-file")
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        found = sampler(scene, scene.windows([1, 2], [3, 4]), blocker / "cache.parquet")
    assert found.row_off.tolist() == [1, 2] and len(found) == 2
    assert "window_index_cache" in caplog.text and "not written" in caplog.text
    options = {
        "image_mbtiles_path": str(scene.image),
        "mask_path": str(scene.lonlat_mask()),
        "crops_path": str(scene.windows([1, 2], [3, 4])),
        "patch_size": SIZE,
        "n_classes": 4,
    }
    code, out, _ = cli("index", write_config(scene.path("c.yaml"), **options), "--cache", blocker / "i.csv")
    assert code == 0 and "built, NOT written" in out


def test_a_stray_file_at_the_sidecar_path_is_not_overwritten(scene: CoordinateScene) -> None:
    cache = scene.path("cache.csv")
    stray = W.sidecar_path(cache)
    stray.write_text("someone else's notes")
    with pytest.raises(ConfigError, match=r"window_index_cache .*cache.csv is not a window-index cache crossgeo"):
        sampler(scene, scene.windows([1], [2]), cache)
    assert stray.read_text() == "someone else's notes" and not cache.exists()


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Any:
    """A tmpfs mounted read-only (needs root and mount rights; skipped otherwise)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot remount a tmpfs read-only here")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_cache_on_a_read_only_mount_is_a_warning(
    scene: CoordinateScene, read_only_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        found = sampler(scene, scene.windows([1, 2], [3, 4]), read_only_folder / "cache.csv")
    assert found.col_off.tolist() == [3, 4] and found[1].row_off == 2
    assert "not written" in caplog.text and not list(read_only_folder.iterdir())


# ---------------------------------------------------------------- B: wrong results


def test_geopackage_edited_in_wal_mode_invalidates_the_cache(scene: CoordinateScene) -> None:
    """QGIS edits a GeoPackage in WAL mode: the main file keeps its size and mtime until a checkpoint."""
    import rasterio

    with rasterio.open(scene.image) as src:
        xs, ys = zip(*(src.xy(r, c) for r, c in [(100, 100), (300, 300)]))
        crs = src.crs.to_wkt()
    gpkg = T.write_points(scene.path("p.gpkg"), list(xs), list(ys), crs=crs, layer="p")
    cache = scene.path("cache.parquet")
    editor = sqlite3.connect(gpkg)
    try:
        assert editor.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        editor.execute("PRAGMA wal_autocheckpoint=0")
        first = sampler(scene, gpkg, cache)
        assert len(first) == 2
        stat = gpkg.stat()
        editor.execute("DELETE FROM p WHERE fid = (SELECT min(fid) FROM p)")
        editor.commit()
        assert (gpkg.stat().st_size, gpkg.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        again = sampler(scene, gpkg, cache)
        assert len(again) == 1 and (int(again.row_off[0]), int(again.col_off[0])) == (269, 269)  # the centre 300.5 - 32
    finally:
        editor.close()


def test_a_cut_csv_cache_is_rebuilt(scene: CoordinateScene, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(0, 400, 5000), rng.integers(0, 400, 5000)
    crops = scene.windows(rows, cols, "many.parquet")
    cache = scene.path("cache.csv")
    sampler(scene, crops, cache)
    text = cache.read_bytes()
    cut = text[: text.index(b"\n", len(text) // 2) + 1]  # an interrupted copy: whole lines, half of them
    cache.write_bytes(cut)
    with caplog.at_level(logging.INFO, logger="crossgeo"):
        again = sampler(scene, crops, cache)
    assert len(again) == 5000 and again.row_off.tolist() == rows.tolist()
    assert not again.windows_info.from_cache
    assert len(original_load(cache)) == 5000


def test_parquet_uint64_offsets_above_2_63_are_refused(scene: CoordinateScene) -> None:
    path = scene.path("u.parquet")
    pq.write_table(
        pa.table({"row_off": pa.array([1, 2**63 + 5], pa.uint64()), "col_off": pa.array([1, 2], pa.uint64())}), path
    )
    with pytest.raises(WindowError, match=r"u.parquet.*'row_off'.*9223372036854775813.*data row 2"):
        sampler(scene, path, None)


@pytest.mark.parametrize("text", ["9223372036854775808", "99999999999999999999999", "-9223372036854775809"])
def test_csv_int64_overflow_names_the_real_text(scene: CoordinateScene, text: str) -> None:
    path = scene.path("o.csv")
    path.write_text(f"row_off,col_off\n1,2\n3,{text}\n")
    with pytest.raises(
        WindowError, match=rf"'col_off' \(col_off_key\) is {text}, beyond the int64 range.* data row 2"
    ) as caught:
        sampler(scene, path, None)
    assert "-9223372036854775808" not in str(caught.value)


# ---------------------------------------------------------------- C: caches both can read


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_original_reads_crossgeo_caches(scene: CoordinateScene, suffix: str) -> None:
    crops = scene.windows([1, 2, 3], [4, 5, 6])
    cache = scene.path(f"cache{suffix}")
    sampler(scene, crops, cache)
    records = original_load(cache)
    assert [(r["row_off"], r["col_off"]) for r in records] == [(1, 4), (2, 5), (3, 6)]
    if suffix == ".csv":
        assert cache.read_text().splitlines()[0] == "row_off,col_off"
        assert W.sidecar_path(cache).exists()
    assert sampler(scene, crops, cache).windows_info.from_cache


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_original_cache_is_left_untouched(
    scene: CoordinateScene, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    crops = scene.windows([1, 2], [3, 4])
    cache = scene.path(f"cache{suffix}")
    original_save(cache, [{"row_off": 1, "col_off": 3}, {"row_off": 2, "col_off": 4}])
    before = cache.read_bytes()
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        found = sampler(scene, crops, cache)
    assert found.row_off.tolist() == [1, 2] and found.col_off.tolist() == [3, 4]
    assert "original" in caplog.text
    assert cache.read_bytes() == before and not W.sidecar_path(cache).exists()
    assert len(original_load(cache)) == 2


def test_an_old_format_crossgeo_cache_is_rebuilt_readable(scene: CoordinateScene) -> None:
    crops = scene.windows([1, 2], [3, 4])
    cache = scene.path("cache.csv")
    cache.write_text('# crossgeo-window-index {"fingerprint": {}, "report": {}}\n"row_off","col_off"\n9,9\n')
    found = sampler(scene, crops, cache)
    assert found.row_off.tolist() == [1, 2]
    assert [r["row_off"] for r in original_load(cache)] == [1, 2]
