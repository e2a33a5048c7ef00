"""SceneSampler: a catalogue cut from one coordinate-encoding raster reads, window for window, what the raster holds."""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import rasterio
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from crossgeo import PatchSampler, SceneSampler
from crossgeo import testing as T
from crossgeo.catalogue import inspect_catalogue
from crossgeo.errors import (
    CatalogueError,
    ConfigError,
    LayerNotFoundError,
    NoOverlapError,
    OptionError,
    RasterError,
    WindowError,
)

ZOOM, TILE_COL, TILE_ROW = 12, 2176, 1460
CELL, N_CLASSES = 0.01, 4
SIZE = 64


class Catalogue:
    """One 512 x 512 coordinate raster (EPSG:3857), cut into overlapping scenes, one warped to UTM 32N."""

    #: (row_off, col_off, height, width) of each same-CRS scene on the full raster.
    BLOCKS = ((0, 0, 256, 512), (200, 0, 312, 256), (200, 256, 312, 256))

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        transform = T.web_mercator_transform(ZOOM, TILE_COL, TILE_ROW)
        self.full = T.write_raster(
            folder / "full.tif", T.coordinate_bands(512, 512, "uint16"), crs="EPSG:3857", transform=transform
        )
        with rasterio.open(self.full) as src:
            left, bottom, right, top = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        self.mask = T.write_lonlat_mask(
            folder / "mask4326.tif",
            (left - 0.05, bottom - 0.05, right + 0.05, top + 0.05),
            0.0003,
            cell=CELL,
            n_classes=N_CLASSES,
        )
        self.cuts = [
            T.write_scene_cut(self.full, folder / f"scene{i}.tif", *block) for i, block in enumerate(self.BLOCKS)
        ]
        self.warped = T.write_scene_cut(self.full, folder / "scene_utm.tif", 300, 300, 200, 200, crs="EPSG:32632")

    def scenes(self, **extra: object) -> list[dict[str, object]]:
        return [{"image_path": str(p), **extra} for p in [*self.cuts, self.warped]]


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path)


def _grid_windows(height: int, width: int, step: int) -> tuple[list[int], list[int]]:
    rows, cols = np.mgrid[0 : height - SIZE + 1 : step, 0 : width - SIZE + 1 : step]
    return rows.ravel().tolist(), cols.ravel().tolist()


def test_cut_catalogue_reads_the_single_rasters_pixels_window_for_window(catalogue: Catalogue) -> None:
    scenes = []
    for i, (_, _, height, width) in enumerate(Catalogue.BLOCKS):
        rows, cols = _grid_windows(height, width, 40)
        scenes.append(
            {
                "image_path": str(catalogue.cuts[i]),
                "crops_path": str(T.write_windows_table(catalogue.folder / f"w{i}.csv", rows, cols)),
            }
        )
    with rasterio.open(catalogue.warped) as warped:
        rows, cols = _grid_windows(warped.height, warped.width, 30)
    scenes.append(
        {
            "image_path": str(catalogue.warped),
            "crops_path": str(T.write_windows_table(catalogue.folder / "w3.csv", rows, cols)),
        }
    )
    sampler = SceneSampler(
        scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", n_classes=N_CLASSES, max_open=2
    )
    single = PatchSampler(
        catalogue.full, catalogue.mask, np.zeros((1, 2), np.int64), SIZE, image_dtype="uint16", n_classes=N_CLASSES
    )
    assert len(sampler) == sum(sampler.windows_per_scene()) > 40
    with rasterio.open(catalogue.warped) as warped, rasterio.open(catalogue.full) as full:
        warped_crs, warped_transform, full_transform = warped.crs, warped.transform, full.transform
    for i in range(len(sampler)):
        patch = sampler[i]
        assert patch.index == i and patch.scene == sampler.scene[i]
        if patch.scene < 3:  # a pixel block: the single raster's window moved by the block's offset
            row0, col0 = Catalogue.BLOCKS[patch.scene][:2]
            truth = single.read(patch.row_off + row0, patch.col_off + col0)
            np.testing.assert_array_equal(patch.image, truth.image)
            np.testing.assert_array_equal(patch.mask, truth.mask)
            np.testing.assert_array_equal(patch.mask_valid, truth.mask_valid)
        else:  # warped to UTM: each pixel holds the full raster's pixel under its centre (nearest)
            rows, cols = T.decode_coordinates(patch.image)
            r, c = np.mgrid[patch.row_off : patch.row_off + SIZE, patch.col_off : patch.col_off + SIZE]
            xs, ys = warped_transform @ (c.ravel() + 0.5, r.ravel() + 0.5)
            mx, my = warp_transform(warped_crs, "EPSG:3857", xs, ys)
            fc, fr = ~full_transform @ (np.asarray(mx), np.asarray(my))
            valid = (patch.image[0] > 0).ravel()
            assert abs(fr[valid] - (rows.ravel()[valid] + 0.5)).max() <= 1.0
            assert abs(fc[valid] - (cols.ravel()[valid] + 0.5)).max() <= 1.0
            lon, lat = warp_transform(warped_crs, "EPSG:4326", xs, ys)
            expected = T.lonlat_classes(np.asarray(lon), np.asarray(lat), CELL, N_CLASSES).reshape(SIZE, SIZE)
            assert np.mean(expected == patch.mask) > 0.97  # nearest warp: only cell-edge pixels may differ


def test_shared_features_are_assigned_once_to_the_first_scene_holding_their_window(catalogue: Catalogue) -> None:
    # Points at pixel centres of the full raster; a window is centred on its point's pixel.
    centres = [(40, 40), (100, 300), (230, 100), (300, 100), (300, 300), (240, 250), (500, 500), (220, 256)]
    with rasterio.open(catalogue.full) as full:
        xs, ys = zip(*(full.transform @ (c + 0.5, r + 0.5) for r, c in centres))
    points = T.write_points(catalogue.folder / "points.gpkg", xs, ys, crs="EPSG:3857")
    sampler = SceneSampler(
        catalogue.scenes()[:3], SIZE, mask_path=catalogue.mask, crops_path=points, image_dtype="uint16"
    )
    expected: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    unassigned = 0
    for r, c in centres:
        top, left = r + 1 - SIZE // 2, c + 1 - SIZE // 2  # even size: centred on the pixel's lower-right corner
        for scene, (row0, col0, height, width) in enumerate(Catalogue.BLOCKS):
            if row0 <= top and top + SIZE <= row0 + height and col0 <= left and left + SIZE <= col0 + width:
                expected[scene].append((top - row0, left - col0))
                break
        else:
            unassigned += 1
    assert unassigned == 3  # (500, 500) reaches past the raster; (240, 250) and (220, 256) straddle scenes
    assert sampler.windows_info.unassigned == unassigned
    assert sampler.windows_info.shared_features == len(centres)
    got = {s: [] for s in expected}
    for i in range(len(sampler)):
        patch = sampler[i]
        got[patch.scene].append((patch.row_off, patch.col_off))
        rows, cols = T.decode_coordinates(patch.image)
        row0, col0 = Catalogue.BLOCKS[patch.scene][:2]
        assert rows[SIZE // 2 - 1, SIZE // 2 - 1] - (SIZE // 2 - 1) - row0 == patch.row_off
        assert cols[SIZE // 2 - 1, SIZE // 2 - 1] - (SIZE // 2 - 1) - col0 == patch.col_off
    assert got == expected
    assert len(sampler) == len(centres) - unassigned


def test_catalogue_table_with_relative_paths_and_per_scene_masks(catalogue: Catalogue, tmp_path: Path) -> None:
    sub = tmp_path / "tables"
    sub.mkdir()
    T.write_windows_table(tmp_path / "w.csv", [0, 64], [0, 64])
    table = pa.table(
        {
            "image_path": [os.path.relpath(p, sub) for p in catalogue.cuts[:2]],
            "mask_path": [os.path.relpath(catalogue.mask, sub), None],
            "crops_path": ["../w.csv", "../w.csv"],
            "date": ["2024-01-01", "2024-02-01"],  # extra columns are metadata, ignored
        }
    )
    pacsv.write_csv(table, sub / "scenes.csv")
    from_csv = SceneSampler(sub / "scenes.csv", SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    import pyarrow.parquet as pq

    pq.write_table(table, sub / "scenes.parquet")
    from_parquet = SceneSampler(str(sub / "scenes.parquet"), SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    assert len(from_csv) == len(from_parquet) == 4
    for i in range(4):
        np.testing.assert_array_equal(from_csv[i].image, from_parquet[i].image)
    assert from_csv.samplers[0].image_path == str(sub.resolve() / os.path.relpath(catalogue.cuts[0], sub))


def test_open_scenes_stay_bounded_and_reads_survive_eviction(catalogue: Catalogue) -> None:
    rows, cols = [0, 60, 120], [0, 60, 120]
    crops = T.write_windows_table(catalogue.folder / "w.csv", rows, cols)
    scenes = catalogue.scenes(crops_path=str(crops))
    sampler = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", max_open=2)
    reference = [sampler[i].image.copy() for i in range(len(sampler))]
    order = np.random.default_rng(0).permutation(len(sampler))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in order:
                np.testing.assert_array_equal(sampler[int(i)].image, reference[int(i)])
                assert len(sampler.open_scenes) <= 2 + 4  # max_open, plus scenes busy in the 4 threads
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(sampler.open_scenes) <= 2
    open_readers = sum(len(s._readers) for s in sampler.samplers)
    assert open_readers <= 2 * 4  # 2 scenes, one reader per thread each
    sampler.close()
    assert sampler.open_scenes == ()
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.open_scenes == ()
    np.testing.assert_array_equal(clone[5].image, reference[5])


def _read_in_child(sampler: SceneSampler, out: object) -> None:
    inherited = sampler.open_scenes
    images = [sampler[i].image for i in range(len(sampler))]
    made = [s._readers.created for s in sampler.samplers]
    out.put((inherited, sampler.open_scenes, made, images))  # type: ignore[attr-defined]


def test_a_forked_child_opens_its_own_scenes_and_leaves_the_parents_open(catalogue: Catalogue) -> None:
    import multiprocessing

    crops = T.write_windows_table(catalogue.folder / "w.csv", [0, 60], [0, 60])
    scenes = catalogue.scenes(crops_path=str(crops))
    sampler = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", max_open=2)
    reference = [sampler[i].image.copy() for i in range(len(sampler))]
    parents = sampler.open_scenes
    readers = [len(s._readers) for s in sampler.samplers]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_read_in_child, args=(sampler, out))
    child.start()
    inherited, child_open, made, images = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert inherited == () and len(child_open) == 2  # the child starts with no scene open, and keeps its bound
    assert made == [1, 1, 1, 1]  # it opened every scene itself (once each: 2 windows per scene, in order)
    for image, expected in zip(images, reference):
        np.testing.assert_array_equal(image, expected)
    assert sampler.open_scenes == parents and [len(s._readers) for s in sampler.samplers] == readers
    np.testing.assert_array_equal(sampler[len(sampler) - 1].image, reference[-1])  # the parent's handles still work


def test_file_descriptors_bounded_over_a_shuffled_epoch(tmp_path: Path) -> None:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.exists():
        pytest.skip("needs /proc/self/fd")
    transform = T.web_mercator_transform(ZOOM, TILE_COL, TILE_ROW)
    full = T.write_raster(tmp_path / "full.tif", T.coordinate_bands(256, 1280), crs="EPSG:3857", transform=transform)
    mask = T.write_raster(
        tmp_path / "mask.tif", np.ones((1, 256, 1280), np.uint8), crs="EPSG:3857", transform=transform
    )
    crops = T.write_windows_table(tmp_path / "w.csv", [0, 100], [0, 50])
    scenes = [
        {
            "image_path": str(T.write_scene_cut(full, tmp_path / f"s{i}.tif", 0, 64 * i, 256, 128)),
            "crops_path": str(crops),
        }
        for i in range(18)
    ]
    before = len(os.listdir(fd_dir))
    sampler = SceneSampler(scenes, SIZE, mask_path=mask, image_dtype="uint16", max_open=3)
    peak = 0
    for i in np.random.default_rng(1).permutation(len(sampler)):
        sampler[int(i)]
        peak = max(peak, len(os.listdir(fd_dir)) - before)
    assert peak <= 3 * 2 + 16
    assert len(sampler.open_scenes) == 3
    # The open scenes' images and masks: each open scene has its own handle on the shared mask
    # (a GDAL-shared handle is unsafe once readers move between threads, see crossgeo.io.open_raster).
    targets = []
    for name in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / name))
        except OSError:
            continue
    assert sorted(Path(t).name for t in targets if t.startswith(str(tmp_path))) == sorted(
        [*(Path(sampler.catalogue[k].image_path).name for k in sampler.open_scenes), *["mask.tif"] * 3]
    )
    sampler.close()


def test_window_index_cache_covers_every_scene(catalogue: Catalogue, caplog: pytest.LogCaptureFixture) -> None:
    crops = T.write_windows_table(catalogue.folder / "w.csv", [0, 60], [0, 60])
    cache = catalogue.folder / "index.parquet"
    scenes = catalogue.scenes(crops_path=str(crops))
    first = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=cache)
    again = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=cache)
    assert not first.windows_info.from_cache and again.windows_info.from_cache
    np.testing.assert_array_equal(again.scene, first.scene)
    np.testing.assert_array_equal(again.row_off, first.row_off)
    # Rewriting one scene (new file identity) makes the cache stale.
    T.write_scene_cut(catalogue.full, catalogue.cuts[1], *Catalogue.BLOCKS[1])
    os.utime(catalogue.cuts[1], ns=(1, 1))
    third = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=cache)
    assert not third.windows_info.from_cache
    csv_cache = catalogue.folder / "index.csv"
    SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=csv_cache)
    fourth = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=csv_cache)
    assert fourth.windows_info.from_cache
    np.testing.assert_array_equal(fourth.scene, first.scene)


def test_zero_window_scene_is_reported_and_skipped(catalogue: Catalogue, caplog: pytest.LogCaptureFixture) -> None:
    empty = catalogue.folder / "empty.csv"
    empty.write_text("row_off,col_off\n")
    crops = T.write_windows_table(catalogue.folder / "w.csv", [0], [0])
    scenes = [
        {"image_path": str(catalogue.cuts[0]), "crops_path": str(crops)},
        {"image_path": str(catalogue.cuts[1]), "crops_path": str(empty)},
        {"image_path": str(catalogue.cuts[2]), "crops_path": str(crops)},
    ]
    with caplog.at_level(logging.WARNING, logger="crossgeo"):
        sampler = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    assert sampler.empty_scenes == (1,)
    assert [sampler[i].scene for i in range(len(sampler))] == [0, 2]
    assert "1 of 3 scene(s) have no valid windows" in caplog.text and "scene 1" in caplog.text


# --------------------------------------------------------------------------- bad input


def test_bad_catalogues_fail_at_construction_naming_row_file_and_fix(catalogue: Catalogue, tmp_path: Path) -> None:
    crops = str(T.write_windows_table(tmp_path / "w.csv", [0], [0]))
    mask = catalogue.mask
    with pytest.raises(ConfigError, match="empty"):
        SceneSampler([], SIZE, mask_path=mask, crops_path=crops)
    table = tmp_path / "noimage.csv"
    table.write_text("image,mask_path\na.tif,b.tif\n")
    with pytest.raises(ConfigError, match=r"noimage.csv has no image_path column.*\['image', 'mask_path'\]"):
        SceneSampler(table, SIZE, mask_path=mask)
    table.write_text("image_path,mask\na.tif,b.tif\n")
    with pytest.raises(ConfigError, match=r"scene 0 \(line 2 of .*noimage.csv\).*unknown key 'mask'.*'mask_path'"):
        SceneSampler(table, SIZE, mask_path=mask)
    scenes = catalogue.scenes(crops_path=crops)
    with pytest.raises(ConfigError, match="scene 2 repeats scene 0's image"):
        SceneSampler([scenes[0], scenes[1], scenes[0]], SIZE, mask_path=mask, image_dtype="uint16")
    missing = [
        scenes[0],
        {"image_path": str(tmp_path / "gone.tif"), "crops_path": crops},
        {"image_path": str(tmp_path / "gone2.tif"), "crops_path": crops},
    ]
    with pytest.raises(ConfigError, match=r"(?s)2 problem.*scene 1, .*gone.tif.*does not exist.*scene 2, .*gone2.tif"):
        SceneSampler(missing, SIZE, mask_path=mask, image_dtype="uint16")
    two_bands = T.write_raster(
        tmp_path / "two.tif",
        np.ones((2, 128, 128), np.uint16),
        crs="EPSG:3857",
        transform=rasterio.open(catalogue.cuts[0]).transform,
    )
    with pytest.raises(
        ConfigError, match=r"scene 1, .*two.tif: reads 2 band\(s\).*scene 0.*3 band\(s\).*selected_bands"
    ):
        SceneSampler(
            [scenes[0], {"image_path": str(two_bands), "crops_path": crops}], SIZE, mask_path=mask, image_dtype="uint16"
        )
    no_crs = T.write_raster(
        tmp_path / "nocrs.tif",
        np.ones((3, 128, 128), np.uint16),
        crs=None,
        transform=rasterio.open(catalogue.cuts[0]).transform,
    )
    with pytest.raises(ConfigError, match=r"scene 1, .*nocrs.tif: has no CRS.*a_srs"):
        SceneSampler(
            [scenes[0], {"image_path": str(no_crs), "crops_path": crops}], SIZE, mask_path=mask, image_dtype="uint16"
        )
    far = T.write_lonlat_mask(tmp_path / "far.tif", (100.0, 10.0, 101.0, 11.0), 0.01, cell=CELL, n_classes=2)
    with pytest.raises(ConfigError, match=r"shared mask_path .*far.tif overlaps none of the 4 scene"):
        SceneSampler(scenes, SIZE, mask_path=far, image_dtype="uint16")
    with pytest.raises(ConfigError, match="max_open must be >= 1"):
        SceneSampler(scenes, SIZE, mask_path=mask, image_dtype="uint16", max_open=0)
    with pytest.raises(ConfigError, match=r"scene 0, .*no mask_path and no shared mask_path"):
        SceneSampler(scenes, SIZE, image_dtype="uint16")
    with pytest.raises(ConfigError, match="no scene has a crops_path and no shared crops_path"):
        SceneSampler(catalogue.scenes(), SIZE, mask_path=mask, image_dtype="uint16")
    with pytest.raises(OptionError, match="Did you mean 'image_dtype'"):
        SceneSampler(scenes, SIZE, mask_path=mask, image_dtyp="uint16")
    with pytest.raises(OptionError, match="takes image_path from each scene"):
        SceneSampler(scenes, SIZE, mask_path=mask, image_path="x.tif")
    with pytest.raises(OptionError, match=r"mask_path must be a path \(str or os.PathLike\), got int: 3"):
        SceneSampler(scenes, SIZE, mask_path=3)


def _broken_catalogue(catalogue: Catalogue, folder: Path) -> list[dict[str, object]]:
    """A good scene, then a missing file, a scene whose own mask lies far away and a crops table without offsets."""
    crops = str(T.write_windows_table(folder / "w.csv", [0, 60], [0, 60]))
    far = T.write_lonlat_mask(folder / "far.tif", (100.0, 10.0, 101.0, 11.0), 0.01, cell=CELL, n_classes=2)
    (folder / "bad.csv").write_text("x,y\n1,2\n")
    return [
        {"image_path": str(catalogue.cuts[0]), "crops_path": crops},
        {"image_path": str(folder / "gone.tif"), "crops_path": crops},
        {"image_path": str(catalogue.cuts[1]), "mask_path": str(far), "crops_path": crops},
        {"image_path": str(catalogue.cuts[2]), "crops_path": str(folder / "bad.csv")},
    ]


def test_inspect_catalogue_records_every_scenes_problem_without_raising(catalogue: Catalogue, tmp_path: Path) -> None:
    scenes = _broken_catalogue(catalogue, tmp_path)
    cache = tmp_path / "index.parquet"
    record = inspect_catalogue(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=cache)
    assert not record.ok
    found = [(p.step, p.scene, type(p.error)) for p in record.problems]
    assert found == [("image", 1, ConfigError), ("mask", 2, NoOverlapError), ("windows", 3, WindowError)]
    messages = [p.message for p in record.problems]
    assert re.fullmatch(r"scene 1, .*gone.tif: image_path .*gone.tif' does not exist\..*", messages[0])
    assert re.fullmatch(
        r"scene 2, .*far.tif: The mask .*far.tif does not overlap the image .*scene1.tif.*", messages[1]
    )
    assert re.fullmatch(r"scene 3, .*bad.csv: .*missing required columns.*", messages[2])
    # Each scene's own record: what its steps found, and its own problems.
    good, gone, far, bad = record.inspections
    assert good.image is not None and good.mask is not None and not good.problems
    assert gone.image is None and [p.error for p in gone.problems] == [record.problems[0].error]
    assert far.image is not None and far.mask is None and far.problems[0].step == "mask"
    assert bad.mask is not None and bad.problems[0].step == "windows"
    assert record.windows is None and not cache.exists()  # a catalogue with problems writes no cache
    # Construction raises them all at once, as one CatalogueError (a ConfigError) carrying the same records.
    with pytest.raises(CatalogueError) as raised:
        SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    assert [p.message for p in raised.value.problems] == messages
    assert str(raised.value).splitlines()[1:] == [f"  - {m}" for m in messages]
    with pytest.raises(CatalogueError):
        SceneSampler.from_inspection(record)
    # Without the broken scenes the record is a sampler's.
    fine = inspect_catalogue(scenes[:1], SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    assert fine.ok and fine.windows_per_scene().tolist() == [2]
    sampler = SceneSampler.from_inspection(fine, max_open=1)
    again = SceneSampler(scenes[:1], SIZE, mask_path=catalogue.mask, image_dtype="uint16")
    np.testing.assert_array_equal(sampler[1].image, again[1].image)


def test_inspect_catalogue_options_and_shared_files_are_records_too(catalogue: Catalogue, tmp_path: Path) -> None:
    crops = str(T.write_windows_table(tmp_path / "w.csv", [0], [0]))
    scenes = catalogue.scenes(crops_path=crops)
    record = inspect_catalogue(scenes, SIZE, mask_path=catalogue.mask, image_dtyp="uint16", collect=True)
    assert [(p.step, type(p.error)) for p in record.problems] == [("options", OptionError)]
    assert "Did you mean 'image_dtype'" in record.problems[0].message
    with pytest.raises(OptionError, match="Did you mean 'image_dtype'"):  # construction raises the first one
        inspect_catalogue(scenes, SIZE, mask_path=catalogue.mask, image_dtyp="uint16")
    rows = inspect_catalogue([scenes[0], scenes[0]], SIZE, mask_path=catalogue.mask, collect=True)
    assert [(p.step, p.scene) for p in rows.problems] == [("catalogue", 1)]
    # The shared mask overlapping no scene is one problem of the catalogue, not one per scene.
    far = T.write_lonlat_mask(tmp_path / "far.tif", (100.0, 10.0, 101.0, 11.0), 0.01, cell=CELL, n_classes=2)
    nowhere = inspect_catalogue(scenes, SIZE, mask_path=far, image_dtype="uint16")
    assert [(p.step, p.scene, type(p.error)) for p in nowhere.problems] == [("mask", None, NoOverlapError)]
    # A shared crops file without the layer asked for.
    points = T.write_points(tmp_path / "points.gpkg", [1.0], [2.0], crs="EPSG:3857")
    layered = inspect_catalogue(
        catalogue.scenes()[:2],
        SIZE,
        mask_path=catalogue.mask,
        crops_path=points,
        crops_layer="nope",
        image_dtype="uint16",
    )
    assert [(p.step, p.scene, type(p.error)) for p in layered.problems] == [("windows", None, LayerNotFoundError)]
    with pytest.raises(CatalogueError, match=r"points.gpkg: no layer 'nope' \(crops_layer\)"):
        SceneSampler(
            catalogue.scenes()[:2],
            SIZE,
            mask_path=catalogue.mask,
            crops_path=points,
            crops_layer="nope",
            image_dtype="uint16",
        )


def test_errors_by_condition_keep_their_builtin_and_parent_classes() -> None:
    assert issubclass(NoOverlapError, RasterError) and issubclass(NoOverlapError, ValueError)
    assert issubclass(LayerNotFoundError, WindowError) and issubclass(CatalogueError, ConfigError)
    error = pickle.loads(pickle.dumps(CatalogueError("two problems", ("a", "b"))))
    assert error.problems == ("a", "b") and str(error) == "two problems"


# --------------------------------------------------------------------------- real data


def test_real_mbtiles_as_two_scenes_over_world_mask(real_data: Path, tmp_path: Path) -> None:
    cities = real_data / "naturalearth_cities.shp"
    # plain_3 (Europe, zoom 8) first: its cities are its own; plain_1 (the world, zoom 4) takes the rest.
    names = ["plain_3.mbtiles", "plain_1.mbtiles"]
    scenes = [{"image_path": str(real_data / name)} for name in names]
    sampler = SceneSampler(
        scenes, 256, mask_path=real_data / "world.byte.tif", crops_path=cities, selected_bands=[1, 2, 3], max_open=1
    )
    counts = sampler.windows_per_scene()
    assert counts[0] > 0 and counts[1] > 0
    assert counts.sum() + sampler.windows_info.unassigned == sampler.windows_info.shared_features
    # Each scene's windows equal a PatchSampler on that file alone, reading the same offsets.
    for position, name in enumerate(names):
        picked = np.flatnonzero(sampler.scene == position)[:5]
        offsets = np.stack([sampler.row_off[picked], sampler.col_off[picked]], axis=1)
        single = PatchSampler(real_data / name, real_data / "world.byte.tif", offsets, 256, selected_bands=[1, 2, 3])
        for k, i in enumerate(picked):
            patch, truth = sampler[int(i)], single[k]
            assert patch.scene == position
            np.testing.assert_array_equal(patch.image, truth.image)
            np.testing.assert_array_equal(patch.mask, truth.mask)
    land = np.mean([sampler[i].mask.mean() for i in range(0, len(sampler), max(1, len(sampler) // 20))])
    assert 0.05 < land < 1.0  # cities sit mostly on land; the world mask says so


# --------------------------------------------------------------------------- the command line


def test_cli_accepts_a_scenes_config(catalogue: Catalogue, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("yaml")
    pytest.importorskip("PIL")
    import json

    import yaml

    from crossgeo.cli import main

    T.write_windows_table(tmp_path / "w.csv", [0, 64, 128], [0, 64, 128])
    config = tmp_path / "conf" / "scenes.yaml"
    config.parent.mkdir()
    scenes = [{"image_path": os.path.relpath(p, config.parent), "crops_path": "../w.csv"} for p in catalogue.cuts]
    config.write_text(
        yaml.safe_dump(
            {
                "train_dataset": {
                    "scenes": scenes,
                    "mask_path": str(catalogue.mask),
                    "patch_size": SIZE,
                    "image_dtype": "uint16",
                    "n_classes": N_CLASSES,
                    "max_open": 2,
                    "window_index_cache": str(tmp_path / "index.parquet"),
                }
            }
        )
    )
    assert main(["validate", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ok    scene 2" in out and "9 window(s) in 3 scene(s)" in out
    assert main(["stats", str(config), "--json", str(tmp_path / "stats.json")]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    sampler = SceneSampler(
        [{"image_path": str(p), "crops_path": str(tmp_path / "w.csv")} for p in catalogue.cuts],
        SIZE,
        mask_path=catalogue.mask,
        image_dtype="uint16",
        n_classes=N_CLASSES,
    )
    expected = np.zeros(N_CLASSES, np.int64)
    for i in range(len(sampler)):
        expected += np.bincount(sampler[i].mask.ravel(), minlength=N_CLASSES)
    assert [row["pixels"] for row in stats["classes"]] == expected.tolist()
    assert [row["windows"] for row in stats["scenes"]] == [3, 3, 3]
    per_scene = sum(np.array([row["pixels"].get(str(c), 0) for c in range(N_CLASSES)]) for row in stats["scenes"])
    assert per_scene.tolist() == expected.tolist()
    assert main(["index", str(config)]) == 0
    assert "reused" in capsys.readouterr().out  # stats built it; the catalogue's fingerprint still matches
    assert main(["preview", str(config), "-n", "4", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0
    # A bad scene: validate lists it by row and file.
    scenes.append({"image_path": "missing.tif", "crops_path": "../w.csv"})
    data = yaml.safe_load(config.read_text())
    data["train_dataset"]["scenes"] = scenes
    config.write_text(yaml.safe_dump(data))
    assert main(["validate", str(config)]) == 1
    assert re.search(r"FAIL  scenes .*scene 3, .*missing.tif", capsys.readouterr().out)


def test_whole_grid_mask_views_only_when_every_scene_fits_the_cache(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An epoch visits every scene: whole-grid views (`mask_view_for`) must fit GDAL's cache together."""
    import crossgeo.io

    budget = 2**19  # 512 KiB of warped mask (one uint8 band and its alpha band: 2 bytes a pixel)
    monkeypatch.setattr(
        crossgeo.io, "GRID_VIEW_CACHE_SHARE", budget / int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
    )
    monkeypatch.setattr(crossgeo.io.mask_blocks, "max_bytes", 0)  # no warped block cache: grid or window
    monkeypatch.setattr(crossgeo.io, "LOOKUP_VIEW", False)  # (the lookup and table views need no cache)
    monkeypatch.setattr(crossgeo.io, "TABLE_VIEW", False)
    scenes = catalogue.scenes(crops_path=str(T.write_windows_table(catalogue.folder / "w.csv", [0, 8], [0, 8])))
    alone = [
        PatchSampler(s["image_path"], catalogue.mask, np.zeros((1, 2), np.int64), SIZE, image_dtype="uint16").mask_view
        for s in scenes
    ]
    assert alone == ["grid"] * 4  # each scene's warped grid fits by itself (256 x 512 x 2 bytes at most)
    sampler = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, n_classes=N_CLASSES, image_dtype="uint16")
    sizes = [s.grid.height * s.grid.width * 2 for s in sampler.samplers]
    expected = ["grid" if 4 * size <= budget else "window" for size in sizes]
    assert [s.mask_view for s in sampler.samplers] == expected
    assert expected.count("grid") == 1  # the 200 x 200 UTM scene: four of it fit, four of the others do not


def test_window_index_cache_may_be_no_input_of_the_catalogue(catalogue: Catalogue) -> None:
    """A scene's own crops file or the catalogue file as the cache is refused, and left as it was (#21.2)."""
    crops = T.write_windows_table(catalogue.folder / "w.csv", [0, 60], [0, 60])
    before = crops.read_bytes()
    scenes = catalogue.scenes(crops_path=str(crops))
    with pytest.raises(ConfigError, match=r"window_index_cache .*w.csv is the crops_path"):
        SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=crops)
    assert crops.read_bytes() == before
    listing = catalogue.folder / "scenes.csv"
    pacsv.write_csv(pa.Table.from_pylist(scenes), listing)
    listed = listing.read_bytes()
    with pytest.raises(ConfigError, match=r"window_index_cache .*scenes.csv is the scenes"):
        SceneSampler(listing, SIZE, mask_path=catalogue.mask, image_dtype="uint16", window_index_cache=listing)
    assert listing.read_bytes() == listed


def test_validate_prints_every_problem_of_a_broken_catalogue(
    catalogue: Catalogue, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``crossgeo validate`` prints the inspection's problem records: one FAIL line each, the bad crops included."""
    yaml = pytest.importorskip("yaml")
    from crossgeo.cli import main

    config = tmp_path / "scenes.yaml"
    settings = {"scenes": _broken_catalogue(catalogue, tmp_path), "mask_path": str(catalogue.mask)}
    config.write_text(yaml.safe_dump({"train_dataset": {**settings, "patch_size": SIZE, "image_dtype": "uint16"}}))
    assert main(["validate", str(config)]) == 1
    out = capsys.readouterr().out
    failed = [line.split("FAIL  scenes", 1)[1].strip() for line in out.splitlines() if "FAIL  scenes" in line]
    assert len(failed) == 3, out
    assert re.fullmatch(r"scene 1, .*gone.tif: image_path .* does not exist\..*", failed[0])
    assert re.fullmatch(r"scene 2, .*far.tif: The mask .*far.tif does not overlap the image .*", failed[1])
    assert re.fullmatch(r"scene 3, .*bad.csv: .*missing required columns.*", failed[2])
    assert "3 problem(s) in" in out
    # A bad max_open is reported too, without inspecting anything.
    config.write_text(
        yaml.safe_dump({"train_dataset": {**settings, "patch_size": SIZE, "image_dtype": "uint16", "max_open": 0}})
    )
    assert main(["validate", str(config)]) == 1
    assert "FAIL  scenes        max_open must be >= 1" in capsys.readouterr().out


def test_a_binarised_class_mask_warns_once_per_catalogue_not_once_per_scene(catalogue: Catalogue) -> None:
    """Without n_classes every scene's mask of classes 0..N is binarised: one warning says so, not one per scene."""
    scenes = []
    for i, (_, _, height, width) in enumerate(Catalogue.BLOCKS):
        rows, cols = _grid_windows(height, width, 100)
        table = T.write_windows_table(catalogue.folder / f"b{i}.csv", rows, cols)
        scenes.append({"image_path": str(catalogue.cuts[i]), "crops_path": str(table)})
    sampler = SceneSampler(scenes, SIZE, mask_path=catalogue.mask, image_dtype="uint16", max_open=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(len(sampler)):
            sampler[i]
    binarised = [w for w in caught if "n_classes is 2" in str(w.message)]
    assert len({int(s) for s in sampler.scene}) == 3 and len(binarised) == 1, [str(w.message) for w in binarised]
