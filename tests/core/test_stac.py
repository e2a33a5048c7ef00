"""STAC items -> a catalogue (`crossgeo.stac_scenes`), served over a loopback HTTP server, read pixel-exactly.

The items (written with pystac) have COG assets whose pixels encode their own coordinates
(`crossgeo.testing.write_stac_items`), so every patch proves which item, source and window it
came from; the ``elev`` asset's ``raster:bands`` scale/offset/nodata must reach the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossgeo import CatalogueError, MissingAssetError, SceneSampler, stac_scenes
from crossgeo import testing as T
from crossgeo.catalogue import read_catalogue, write_catalogue

pystac = pytest.importorskip("pystac")

from servers import FileServer, running  # noqa: E402
from testkit import run_cli  # noqa: E402

SIZE, PATCH = 64, 16
WINDOWS = ((0, 0), (8, 40), (48, 48))


def _crops(folder: Path) -> Path:
    return T.write_windows_table(folder / "windows.csv", [r for r, _ in WINDOWS], [c for _, c in WINDOWS])


def _check_pixels(sampler: SceneSampler, n_items: int = 2) -> None:
    """Every window of every scene: coords channels are the pixel's own (row, col), elev is scaled with nodata."""
    assert len(sampler) == n_items * len(WINDOWS)
    assert sampler.samplers[0].image_info.channels == (("coords", 1), ("coords", 2), ("coords", 3), ("elev", 1))
    for k in range(len(sampler)):
        patch = sampler[k]
        rows, cols = np.mgrid[patch.row_off : patch.row_off + PATCH, patch.col_off : patch.col_off + PATCH]
        cols = cols + patch.scene * SIZE  # the strip's columns continue from item to item
        np.testing.assert_array_equal(patch.image[0], rows)
        np.testing.assert_array_equal(patch.image[1], cols)
        raw = rows + cols
        corner = (rows == 0) & (cols == 0)
        np.testing.assert_array_equal(patch.image[3][~corner], (raw * T.STAC_SCALE + T.STAC_OFFSET)[~corner])
        assert patch.image_valid is not None
        np.testing.assert_array_equal(~patch.image_valid, corner)  # the elev nodata pixel, only there
        np.testing.assert_array_equal(patch.mask, (rows // 8 + cols // 8) % 2)


def _sampler(scenes: object) -> SceneSampler:
    return SceneSampler(scenes, PATCH, image_dtype="native", n_classes=2)


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running(FileServer(tmp_path)) as server:
        collection = T.write_stac_items(tmp_path, 2, size=SIZE, href_base=server.url)
        yield server, collection


def test_item_collection_over_http_gives_the_exact_pixels(served: tuple[FileServer, Path], tmp_path: Path) -> None:
    server, collection = served
    items = pystac.ItemCollection.from_file(str(collection))
    rows = stac_scenes(items, ["coords", "elev"], mask_path="labels", crops_path=_crops(tmp_path), group_by="tile")
    assert [r["id"] for r in rows] == ["scene-0", "scene-1"]
    assert [r["time"] for r in rows] == ["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]
    assert [r["tile"] for r in rows] == ["T1", "T1"]
    assert rows[1]["image_path"] == {
        "coords": {"path": f"{server.url}/scene1_coords.tif"},
        "elev": {"path": f"{server.url}/scene1_elev.tif", "scale": 0.5, "offset": 10.0, "nodata": 0.0},
    }
    assert rows[1]["mask_path"] == f"{server.url}/scene1_labels.tif"
    _check_pixels(_sampler(rows))


@pytest.mark.parametrize("form", ["dicts", "items", "generator", "path", "url"])
def test_every_form_of_items_gives_the_same_catalogue(
    served: tuple[FileServer, Path], tmp_path: Path, form: str
) -> None:
    server, collection = served
    expected = stac_scenes(
        pystac.ItemCollection.from_file(str(collection)),
        ["coords", "elev"],
        mask_path="labels",
        crops_path=_crops(tmp_path),
    )
    given = {
        "dicts": json.loads(collection.read_text())["features"],
        "items": list(pystac.ItemCollection.from_file(str(collection))),
        "generator": (item for item in pystac.ItemCollection.from_file(str(collection))),  # as search.items()
        "path": str(collection),
        "url": f"{server.url}/{collection.name}",
    }[form]
    rows = stac_scenes(given, ["coords", "elev"], mask_path="labels", crops_path=_crops(tmp_path))
    assert rows == expected
    if form == "url":
        _check_pixels(_sampler(rows))


def test_relative_hrefs_start_at_the_collection_file(tmp_path: Path) -> None:
    collection = T.write_stac_items(tmp_path / "stac", 2, size=SIZE, href_base=".")
    rows = stac_scenes(collection, ["coords", "elev"], mask_path="labels", crops_path=_crops(tmp_path))
    assert rows[0]["image_path"]["coords"]["path"] == str((tmp_path / "stac" / "scene0_coords.tif").resolve())
    _check_pixels(_sampler(rows))


def test_missing_asset_names_the_item_and_the_asset(served: tuple[FileServer, Path]) -> None:
    _, collection = served
    features = json.loads(collection.read_text())["features"]
    del features[1]["assets"]["elev"]
    with pytest.raises(MissingAssetError, match=r"item 'scene-1' lacks asset\(s\) \['elev'\].*List only asset keys"):
        stac_scenes(features, ["coords", "elev"])


def test_unopenable_href_is_a_construction_error_naming_item_and_asset(
    served: tuple[FileServer, Path], tmp_path: Path
) -> None:
    server, collection = served
    features = json.loads(collection.read_text())["features"]
    features[1]["assets"]["elev"]["href"] = f"{server.url}/gone_elev.tif"
    rows = stac_scenes(features, ["coords", "elev"], mask_path="labels", crops_path=_crops(tmp_path))
    with pytest.raises(CatalogueError) as caught:
        _sampler(rows)
    message = str(caught.value)
    assert "scene 1 (id 'scene-1')" in message and "source 'elev'" in message
    assert f"{server.url}/gone_elev.tif" in message and "cannot be opened" in message
    assert [p.scene for p in caught.value.problems] == [1]


def test_asset_bands_disagreeing_on_scale_become_one_source_per_band(tmp_path: Path) -> None:
    collection = T.write_stac_items(tmp_path, 1, size=SIZE)
    item = json.loads(collection.read_text())["features"][0]
    item["assets"]["coords"]["raster:bands"] = [{"scale": 1}, {"scale": 2}, {"scale": 1, "nodata": "nan"}]
    (row,) = stac_scenes([item], ["coords"])
    path = item["assets"]["coords"]["href"]
    assert row["image_path"] == {
        "coords_1": {"path": path, "bands": [1], "scale": 1.0},
        "coords_2": {"path": path, "bands": [2], "scale": 2.0},
        "coords_3": {"path": path, "bands": [3], "scale": 1.0, "nodata": float("nan")}
        | {"nodata": row["image_path"]["coords_3"]["nodata"]},
    }
    assert np.isnan(row["image_path"]["coords_3"]["nodata"])


def test_group_by_names_a_property_every_item_has(tmp_path: Path) -> None:
    collection = T.write_stac_items(tmp_path, 2, size=SIZE)
    assert [r["group"] for r in stac_scenes(collection, ["coords"], group_by=lambda item: item.id[-1])] == ["0", "1"]
    with pytest.raises(ValueError, match=r"group_by 'mgrs'.*item 'scene-0' has no such property"):
        stac_scenes(collection, ["coords"], group_by="mgrs")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_stac_command_writes_a_table_sampler_reads(
    served: tuple[FileServer, Path], tmp_path: Path, suffix: str
) -> None:
    server, collection = served
    out = tmp_path / f"scenes{suffix}"
    code, stdout, stderr = run_cli(
        "stac",
        f"{server.url}/{collection.name}",
        "--assets",
        "coords",
        "elev",
        "--mask-path",
        "labels",
        "--crops-path",
        _crops(tmp_path),
        "--out",
        out,
    )
    assert code == 0, stderr
    assert f"wrote {out}: 2 scene(s), source(s) coords, elev, 2024-01-01T00:00:00Z .. 2024-02-01T00:00:00Z" in stdout
    scenes, _ = read_catalogue(out)
    assert scenes[0].image_path["elev"]["scale"] == 0.5 and scenes[0].where.startswith("scene 0 (id 'scene-0'")
    _check_pixels(_sampler(out))
    code, _, stderr = run_cli("stac", collection, "--assets", "coords", "--out", out)
    assert code == 1 and "--overwrite" in stderr


# --------------------------------------------------------------------------- catalogue cells with several sources


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_cells_hold_lists_and_mappings_of_sources(tmp_path: Path, suffix: str) -> None:
    """JSON list/mapping cells; relative paths inside start at the table's folder, URLs stay as given."""
    T.write_stac_items(tmp_path / "data", 2, size=SIZE)
    _crops(tmp_path)
    rows = [
        {"image_path": {"coords": "data/scene0_coords.tif", "elev": {"path": "data/scene0_elev.tif", "scale": 0.5,
                                                                       "offset": 10, "nodata": 0}},
         "mask_path": "data/scene0_labels.tif", "crops_path": "windows.csv"},
        {"image_path": [{"path": "data/scene1_coords.tif", "name": "coords"},
                        {"path": "data/scene1_elev.tif", "name": "elev", "scale": 0.5, "offset": 10, "nodata": 0}],
         "mask_path": "data/scene1_labels.tif", "crops_path": "windows.csv"},
    ]  # fmt: skip
    table = write_catalogue(rows, tmp_path / f"scenes{suffix}")
    scenes, _ = read_catalogue(table)
    assert scenes[0].image_path["coords"] == str(tmp_path / "data" / "scene0_coords.tif")
    assert scenes[1].image_path[0] == {"path": str(tmp_path / "data" / "scene1_coords.tif"), "name": "coords"}
    _check_pixels(_sampler(table))


def test_list_of_mappings_takes_sources_directly_and_keeps_urls(tmp_path: Path) -> None:
    rows = [{"image_path": ["https://example.com/a.tif", {"path": "b.tif", "bands": [1]}]}]
    (scene,), _ = read_catalogue(rows)
    assert scene.image_path == ["https://example.com/a.tif", {"path": "b.tif", "bands": [1]}]
    assert scene.image_label == "https://example.com/a.tif, b.tif"


def test_bad_json_cell_and_repeated_sources_are_row_errors(tmp_path: Path) -> None:
    table = tmp_path / "scenes.csv"
    table.write_text('image_path\n"{""a"": ""x.tif"",}"\n"[""y.tif"", ""z.tif""]"\n"[""y.tif"", ""z.tif""]"\n')
    with pytest.raises(CatalogueError) as caught:
        read_catalogue(table)
    assert [p.scene for p in caught.value.problems] == [0, 2]
    assert "cannot be parsed" in str(caught.value) and "line 2 of" in str(caught.value)
    assert "repeats scene 1's image" in str(caught.value)


def test_validate_reports_every_source_of_every_scene(tmp_path: Path) -> None:
    """CRS, pixel size, share of windows covered and the nodata share per source (a catalogue table with JSON cells)."""
    yaml = pytest.importorskip("yaml")
    collection = T.write_stac_items(tmp_path, 2, size=SIZE)
    table = write_catalogue(
        stac_scenes(collection, ["coords", "elev"], mask_path="labels", crops_path=_crops(tmp_path)),
        tmp_path / "scenes.csv",
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"scenes": str(table), "patch_size": PATCH, "image_dtype": "native"}))
    code, out, err = run_cli("validate", config)
    assert code == 0, out + err
    # elev's nodata (raw 0) is the strip's pixel (0, 0) only: 1 of scene 0's 64 x 64 pixels, none of scene 1's.
    got = [" ".join(line.split()) for line in out.splitlines() if " source " in line]
    pixel = "38.2185 x 38.2185 pixels; covers 100.0% of the reference grid, no data on"
    windows = "(sampled); has pixels in 100% of 3 window(s)"
    assert got == [
        f"ok scene 0 source coords {tmp_path}/scene0_coords.tif: EPSG:3857, {pixel} 0.00% of that {windows}",
        f"ok scene 0 source elev {tmp_path}/scene0_elev.tif: EPSG:3857, {pixel} 0.02% of that {windows}",
        f"ok scene 1 source coords {tmp_path}/scene1_coords.tif: EPSG:3857, {pixel} 0.00% of that {windows}",
        f"ok scene 1 source elev {tmp_path}/scene1_elev.tif: EPSG:3857, {pixel} 0.00% of that {windows}",
    ]


def test_validate_reports_the_sources_of_one_image(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    T.write_stac_items(tmp_path, 1, size=SIZE)
    sources = {"coords": str(tmp_path / "scene0_coords.tif"), "elev": {"path": str(tmp_path / "scene0_elev.tif")}}
    options = {"image_path": sources, "mask_path": str(tmp_path / "scene0_labels.tif"), "patch_size": PATCH}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**options, "crops_path": str(_crops(tmp_path)), "image_dtype": "uint16"}))
    code, out, err = run_cli("validate", config)
    assert code == 0, out + err
    got = [" ".join(line.split()) for line in out.splitlines() if " source " in line]
    pixel = "38.2185 x 38.2185 pixels; covers 100.0% of the reference grid, no data on"
    windows = "(sampled); has pixels in 100% of 3 window(s)"
    assert got == [
        f"ok source coords {tmp_path}/scene0_coords.tif: EPSG:3857, {pixel} 0.00% of that {windows}",
        f"ok source elev {tmp_path}/scene0_elev.tif: EPSG:3857, {pixel} 0.02% of that {windows}",
    ]


def test_a_relative_path_for_every_scene_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows may be written to a table in another folder, where a relative path would start elsewhere."""
    collection = T.write_stac_items(tmp_path, 1, size=SIZE)
    monkeypatch.chdir(tmp_path)
    (row,) = stac_scenes(collection, ["coords"], mask_path="labels", crops_path="windows.csv")
    assert row["crops_path"] == str(tmp_path / "windows.csv")
    assert row["mask_path"] == str((tmp_path / "scene0_labels.tif").resolve())
    (row,) = stac_scenes(collection, ["coords"], crops_path={"scene-0": "https://example.com/w.csv"})
    assert row["crops_path"] == "https://example.com/w.csv"
