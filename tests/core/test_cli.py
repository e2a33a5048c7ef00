"""The ``crossgeo`` command on real rasters: the demo scene and ../shared/data/real/.

Every subcommand runs in-process through ``crossgeo.cli.main``; ``python -m crossgeo`` runs
once as a subprocess. Pictures and numbers are checked against the sampler's own patches.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

pytest.importorskip("yaml")
pytest.importorskip("PIL")
pytest.importorskip("tqdm")

import yaml
from PIL import Image
from testkit import CliRun, preview_title_shift

from crossgeo import PatchSampler
from crossgeo import testing as T
from crossgeo.cli import common, main, preview
from crossgeo.cli import demo as demo_command
from crossgeo.demo import CLASS_NAMES, COLOR_MAP


def write_config(path: Path, **options: Any) -> Path:
    path.write_text(yaml.safe_dump({"train_dataset": {"_target_": "anything.Dataset", **options}}))
    return path


def tile_config(
    folder: Path, image: np.ndarray, mask: np.ndarray, offsets: list[tuple[int, int]], patch_size: int, **options: Any
) -> Path:
    """``c.yaml`` over an image and a mask written on one Web Mercator tile's grid, and a windows table."""
    transform = T.web_mercator_transform(12, 2176, 1460)
    image_path = T.write_raster(folder / "image.tif", image, crs="EPSG:3857", transform=transform)
    mask_path = T.write_raster(folder / "mask.tif", mask, crs="EPSG:3857", transform=transform)
    windows = T.write_windows_table(folder / "w.csv", *zip(*offsets))
    return write_config(
        folder / "c.yaml",
        image_mbtiles_path=str(image_path),
        mask_path=str(mask_path),
        crops_path=str(windows),
        patch_size=patch_size,
        **options,
    )


def sampler_of(config: Path) -> PatchSampler:
    return PatchSampler(**common.split_options(common.load_config(config), str(config)).sampler)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, cli: CliRun) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("demo")
    code, out, err = cli("demo", "--framework", "none", "--out", folder)
    return {"code": code, "out": out, "err": err, "folder": folder, "config": folder / "config.yaml"}


def demo_options(demo: dict[str, Any]) -> dict[str, Any]:
    return dict(yaml.safe_load(demo["config"].read_text())["train_dataset"])


# --------------------------------------------------------------------------- command line


def test_python_m_crossgeo_help_and_lazy_imports() -> None:
    done = subprocess.run([sys.executable, "-m", "crossgeo", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("demo", "preview", "stats", "index", "validate", "predict", "evaluate"):
        assert command in done.stdout
    probe = (
        "import sys, crossgeo, crossgeo.cli; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'yaml', 'tqdm', 'PIL') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["demo", "preview", "stats", "index", "validate", "predict", "evaluate"])
def test_every_subcommand_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"crossgeo {command}" in text


def test_config_help_names_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "image_mbtiles_path (or image_path), mask_path, crops_path, patch_size and the other keys" in text


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "validate" in capsys.readouterr().err


def test_errors_are_one_readable_line(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    code, out, err = cli("stats", tmp_path / "missing.yaml")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("crossgeo stats: error:") and "does not exist" in err

    options = demo_options(demo)
    options["patch_szie"] = options.pop("patch_size")
    config = write_config(tmp_path / "typo.yaml", **options)
    code, _, err = cli("preview", config, "--out", tmp_path / "p.png")
    assert code == 1 and err.count("\n") == 1 and "Did you mean 'patch_size'" in err
    assert "Traceback" not in err
    with pytest.raises(Exception, match="patch_size"):
        cli("preview", config, "--debug")


def test_a_missing_relative_path_is_named_next_to_the_config(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    """The command looks for relative paths in the working directory, then next to the config: a file
    in neither is named where the config puts it, without a hint about the working directory."""
    options = {**demo_options(demo), "image_mbtiles_path": "nowhere.mbtiles"}
    (tmp_path / "sub").mkdir()
    code, out, err = cli("validate", write_config(tmp_path / "sub" / "config.yaml", **options))
    assert code == 1
    said = out + err
    assert str(tmp_path / "sub" / "nowhere.mbtiles") in said and "relative paths start at" not in said, said


def test_flat_config_and_relative_paths_next_to_the_config(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    folder = demo["folder"]
    config = folder / "flat-relative.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "image_mbtiles_path": "image.tif",
                "mask_path": "mask.tif",
                "crops_path": "windows.csv",
                "patch_size": 128,
                "color_map": COLOR_MAP,
            }
        )
    )
    loaded = common.load_config(config)
    assert loaded["image_mbtiles_path"] == str(folder.resolve() / "image.tif")
    code, out, _ = cli("validate", config)
    assert code == 0, out


# --------------------------------------------------------------------------- demo


def test_demo_without_framework_writes_the_scene(demo: dict[str, Any]) -> None:
    assert demo["code"] == 0, demo["err"]
    folder = demo["folder"]
    for name in (
        "image.tif",
        "image.mbtiles",
        "mask.tif",
        "windows.csv",
        "windows.gpkg",
        "config.yaml",
        "config-vector.yaml",
        "preview.png",
    ):
        assert (folder / name).is_file(), name
    assert "crossgeo preview" in demo["out"] and "crossgeo stats" in demo["out"]
    with rasterio.open(folder / "image.mbtiles") as mbtiles, rasterio.open(folder / "image.tif") as tif:
        assert mbtiles.count == 4 and mbtiles.transform.almost_equals(tif.transform)
        window = rasterio.windows.Window(300, 200, 64, 64)
        np.testing.assert_array_equal(mbtiles.read([1, 2, 3], window=window), tif.read(window=window))
    with rasterio.open(folder / "mask.tif") as mask:
        assert mask.crs.to_epsg() == 4326 and mask.count == 3
    sampler = sampler_of(demo["config"])
    assert len(sampler) == 64 and not sampler.aligned
    # The image was drawn from the same landscape as the mask: colours agree with classes.
    patch = max((sampler[i] for i in range(len(sampler))), key=lambda p: int((p.mask == 1).sum()))
    water = patch.mask == 1
    assert water.any() and patch.image[2][water].mean() > patch.image[0][water].mean() + 30


def test_demo_falls_back_when_the_framework_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a)
    )
    assert demo_command._framework("tensorflow") == "none"


@pytest.mark.parametrize("module", ["yaml", "PIL"])
def test_without_the_cli_extra_the_command_names_it_and_writes_nothing(tmp_path: Path, module: str) -> None:
    """Without PyYAML (or Pillow) `crossgeo demo` fails at once naming the extra, and leaves no half-written folder."""
    out = tmp_path / "demo"
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from crossgeo.cli import main\n"
        f"sys.exit(main(['demo', '--framework', 'none', '--out', {str(out)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    package = {"yaml": "PyYAML", "PIL": "Pillow"}[module]
    assert f"needs its cli extra ({package} not installed)" in run.stderr
    assert "pip install '.[cli]'" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def test_install_hint_names_the_extra() -> None:
    assert (
        common.install_hint(ImportError("x", name="albumentations"))
        == "in a clone of crossgeo: pip install '.[augment]'"
    )
    assert common.install_hint(ImportError("x", name="tensorflow.python")).endswith("pip install '.[tensorflow]'")


# --------------------------------------------------------------------------- preview


def expected_layout(
    sampler: PatchSampler,
    indices: list[int],
    tile: int,
    class_names: dict[int, str] | None = None,
    png: Path | None = None,
) -> preview.Layout:
    """The sheet's geometry with the legend of exactly these windows' patches (and the title ``png`` carries:
    a title wrapped to two lines moves the tiles down)."""
    patches = [sampler[i] for i in indices]
    key = preview.legend(sampler, [p.mask for p in patches], [~p.mask_valid for p in patches], class_names)
    title = "" if png is None else str(Image.open(png).info.get("Title", ""))
    return preview.sheet_layout(len(indices), tile, key, title=title)


def check_sheet(png: Path, sampler: PatchSampler, indices: list[int], tile: int, alpha: float) -> None:
    """Every tile shows its patch, tinted with its class colours exactly where the mask says."""
    sheet = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
    classes = sorted(set(common.declared_classes(sampler)))
    colours = common.class_colours(sampler, classes)
    shift = preview_title_shift(png)
    for (x, y), i in zip(((x, y + shift) for x, y in preview.layout(len(indices), tile, 1).tiles), indices):
        patch = sampler[i]
        shown = sheet[y : y + tile, x : x + tile]
        picture = np.repeat(patch.image[:1], 3, 0) if patch.image.shape[0] < 3 else patch.image[:3]
        picture = picture.transpose(1, 2, 0).astype(np.float64)
        background = patch.mask == 0
        np.testing.assert_array_equal(shown[background], picture[background])
        for cls in np.unique(patch.mask[~background]):
            where = patch.mask == cls
            expected = np.rint((1 - alpha) * picture[where] + alpha * np.array(colours[int(cls)]))
            np.testing.assert_array_equal(shown[where], expected)


def test_preview_draws_the_palette_where_the_mask_says(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    png = tmp_path / "sheet.png"
    code, out, _ = cli("preview", demo["config"], "-n", 4, "--seed", 0, "--alpha", 1, "--tile", 128, "--out", png)
    assert code == 0 and "wrote" in out
    sampler = sampler_of(demo["config"])
    indices = preview.choose_windows(len(sampler), 4, 0)
    geometry = expected_layout(sampler, indices, 128, CLASS_NAMES)  # the demo config names its classes
    assert Image.open(png).size == (geometry.width, geometry.height)
    check_sheet(png, sampler, indices, 128, 1.0)
    masks = [sampler[i].mask for i in indices]
    assert all(any((m == c).any() for m in masks) for c in (1, 2, 3))  # every class colour was checked


@pytest.mark.parametrize("bands", [1, 4])
def test_preview_single_band_uint16_and_four_band_images(tmp_path: Path, bands: int, cli: CliRun) -> None:
    transform = T.web_mercator_transform(12, 2176, 1460)
    data = (
        T.coordinate_bands(256, 256, "uint16")[:1] * 200
        if bands == 1
        else np.concatenate([T.coordinate_bands(256, 256, "uint8"), np.full((1, 256, 256), 255, np.uint8)])
    )
    image = T.write_raster(tmp_path / "image.tif", data, crs="EPSG:3857", transform=transform)
    mask = T.write_raster(
        tmp_path / "mask.tif",
        (np.indices((256, 256)).sum(0) % 97 < 40).astype(np.uint8)[None],
        crs="EPSG:3857",
        transform=transform,
    )
    windows = T.write_windows_table(tmp_path / "w.csv", [0, 64, 128], [0, 100, 128])
    config = write_config(
        tmp_path / "c.yaml",
        image_mbtiles_path=str(image),
        mask_path=str(mask),
        crops_path=str(windows),
        patch_size=64,
        image_dtype="native",
    )
    png = tmp_path / "p.png"
    code, _, err = cli("preview", config, "--out", png, "--tile", 64)
    assert code == 0, err
    sheet = np.asarray(Image.open(png).convert("RGB"))
    geometry = expected_layout(sampler_of(config), [0, 1, 2], 64, png=png)
    assert sheet.shape[:2] == (geometry.height, geometry.width)
    tiles = np.stack([sheet[y : y + 64, x : x + 64] for x, y in geometry.tiles])
    if bands == 1:
        assert tiles.min() < 10 and tiles.max() > 245  # uint16 (rows * 200) stretched to the full range
    else:
        check_sheet(png, sampler_of(config), [0, 1, 2], 64, 0.45)


# --------------------------------------------------------------------------- stats


def direct_counts(sampler: PatchSampler) -> tuple[np.ndarray, int]:
    counts = np.zeros(8, dtype=np.int64)
    empty = 0
    for i in range(len(sampler)):
        found = np.bincount(sampler[i].mask.ravel(), minlength=8)
        counts += found[:8]
        empty += int(not found[1:].any())
    return counts, empty


def check_stats(stats: dict[str, Any], sampler: PatchSampler) -> None:
    counts, empty = direct_counts(sampler)
    got = {row["class"]: row["pixels"] for row in stats["classes"]}
    assert all(got.get(c, 0) == counts[c] for c in range(8))
    assert stats["pixels"] == len(sampler) * sampler.patch_size**2 == counts.sum()
    assert stats["windows_without_foreground"] == empty
    for row in stats["classes"]:
        assert row["frequency"] == pytest.approx(counts[row["class"]] / counts.sum())


def test_stats_counts_equal_a_direct_count(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    out_json = tmp_path / "stats.json"
    code, out, _ = cli("stats", demo["config"], "--json", out_json)
    assert code == 0 and "median-frequency" in out
    stats = json.loads(out_json.read_text())
    sampler = sampler_of(demo["config"])
    check_stats(stats, sampler)
    assert stats["fill_pixels"] == 0
    # Median-frequency balancing from the direct numbers.
    masks = [sampler[i].mask for i in range(len(sampler))]
    freq = {}
    for c in range(4):
        with_c = [m for m in masks if (m == c).any()]
        freq[c] = sum(int((m == c).sum()) for m in with_c) / sum(m.size for m in with_c)
    median = np.median(list(freq.values()))
    for c in range(4):
        assert stats["class_weights"][str(c)] == pytest.approx(median / freq[c], rel=1e-5)


def test_stats_counts_pixels_without_mask_data(tmp_path: Path, cli: CliRun) -> None:
    left = np.full((1, 256, 64), 3, np.uint8)  # a mask over the left quarter of the image only
    offsets = [(0, 0), (0, 128), (128, 0), (128, 128)]
    config = tile_config(tmp_path, T.coordinate_bands(256, 256, "uint8"), left, offsets, 128, n_classes=4)
    code, out, err = cli("stats", config, "--json", tmp_path / "s.json")
    assert code == 0 and "no mask data" in out, err
    assert err.startswith("warning: ") and "covers only 25.0%" in err  # the sampler's warning, as one line
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["fill_fraction"] == 0.75 and stats["windows_without_foreground"] == 2
    assert {r["class"]: r["pixels"] for r in stats["classes"]} == {0: 192 * 256, 1: 0, 2: 0, 3: 64 * 256}


# --------------------------------------------------------------------------- index


def test_index_builds_then_reuses_the_cache(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    cache = tmp_path / "index.parquet"
    code, out, _ = cli("index", demo["config"], "--cache", cache)
    assert code == 0 and cache.is_file() and "built" in out and "kept 64" in out
    code, out, _ = cli("index", demo["config"], "--cache", cache)
    assert code == 0 and "reused" in out

    vector = demo["folder"] / "config-vector.yaml"
    code, out, _ = cli("index", vector, "--cache", tmp_path / "v.csv")
    report = sampler_of(vector).index.report
    assert code == 0 and report.outside_dropped == 1
    assert (
        f"kept {report.kept}   skipped (empty geometry) {report.empty_skipped}   "
        f"dropped (outside the image) {report.outside_dropped}   clamped {report.clamped}"
    ) in out


def test_index_needs_a_cache_path(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    options = demo_options(demo)
    del options["window_index_cache"]
    code, _, err = cli("index", write_config(tmp_path / "c.yaml", **options))
    assert code == 1 and "--cache" in err


# --------------------------------------------------------------------------- validate


def test_validate_accepts_the_demo_configs(demo: dict[str, Any], cli: CliRun) -> None:
    code, out, _ = cli("validate", demo["config"])
    assert code == 0, out
    assert "no problems" in out and "100.0% of the image" in out
    code, out, _ = cli("validate", demo["folder"] / "config-vector.yaml")
    assert code == 0 and "1 feature(s) outside the image dropped" in out


def test_validate_warns_when_the_default_n_classes_binarises_class_indices(tmp_path: Path, cli: CliRun) -> None:
    scene = T.CoordinateScene(tmp_path, size=128)
    classes = scene.aligned_mask((np.indices((128, 128))[0] % 4)[None].astype("uint8"), "classes.tif")
    options = {"image_path": str(scene.image), "mask_path": str(classes), "patch_size": 64}
    options["crops_path"] = str(scene.windows([0, 64], [0, 0]))
    code, out, _ = cli("validate", write_config(tmp_path / "classes.yaml", **options))
    assert code == 0, out
    assert "warn  values" in out and "n_classes is 2 (the default" in out and "set n_classes: 4" in out
    code, out, _ = cli("validate", write_config(tmp_path / "four.yaml", **options, n_classes=4))
    assert code == 0 and "warn  values" not in out, out


def test_validate_reports_a_wrong_colour_map_with_counts(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    options = demo_options(demo)
    options["color_map"] = [[31, 119, 180, 1], [44, 160, 44, 2], [214, 39, 40, 3]]  # another tool's palette
    code, out, _ = cli("validate", write_config(tmp_path / "palette.yaml", **options))
    assert code == 1
    problems = out.split("problem(s)")[1]
    assert "colours: none of the 3 color_map colours occurs" in problems
    assert all(colour in problems for colour in ("[0, 0, 255]", "[0, 255, 0]", "[255, 0, 0]", "[0, 0, 0]"))
    # One colour off by a little: the buildings' red is unknown and becomes class 0 by the
    # original's rule - a warning naming the colour and its share (exit 0), a failure with --strict.
    options["color_map"] = [[0, 0, 255, 1], [0, 255, 0, 2], [250, 0, 0, 3]]
    config = write_config(tmp_path / "off.yaml", **options)
    code, out, _ = cli("validate", config)
    assert code == 0, out
    warning = next(line for line in out.splitlines() if "not in color_map" in line)
    assert warning.startswith("  warn  colours") and "[255, 0, 0]" in warning and "px)" in warning and "%" in warning
    assert re.search(r"no problems \(\d+ warning\(s\)\)", out) and "no problems found" not in out
    code, out, _ = cli("validate", config, "--strict")
    assert code == 1 and "--strict: warnings count as problems" in out


def test_validate_reports_a_mask_that_does_not_overlap(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    far = T.write_lonlat_mask(
        tmp_path / "far.tif",
        (100.0, 0.0, 100.05, 0.05),
        0.0005,
        cell=0.01,
        n_classes=4,
        palette=[(0, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 0)],
    )
    options = demo_options(demo)
    options["mask_path"] = str(far)
    code, out, _ = cli("validate", write_config(tmp_path / "far.yaml", **options))
    assert code == 1
    assert re.search(r"mask: The mask .*far.tif does not overlap the image", out.split("problem(s)")[1])


def test_validate_reports_windows_outside_and_a_broken_augmentation(
    tmp_path: Path, demo: dict[str, Any], cli: CliRun
) -> None:
    options = demo_options(demo)
    options["crops_path"] = str(T.write_windows_table(tmp_path / "w.csv", [0, 5000], [0, 0]))
    code, out, _ = cli("validate", write_config(tmp_path / "outside.yaml", **options))
    assert code == 1 and "windows: " in out and "row_off=5000" in out

    options = demo_options(demo)
    options["augmentation_list"] = [{"_target_": "albumentations.NoSuchFlip"}]
    code, out, _ = cli("validate", write_config(tmp_path / "aug.yaml", **options))
    assert code == 1 and "augmentation:" in out.split("problem(s)")[1]


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_rgb(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Path:
    """RGB.byte.tif (UTM 18N) with the world.byte.tif land mask (EPSG:4326) and a grid of windows."""
    folder = tmp_path_factory.mktemp("real")
    rows, cols = np.meshgrid(np.arange(0, 718 - 128 + 1, 118), np.arange(0, 791 - 128 + 1, 131), indexing="ij")
    windows = T.write_windows_table(folder / "grid.csv", rows.ravel(), cols.ravel())
    return write_config(
        folder / "rgb.yaml",
        image_mbtiles_path=str(real_data / "RGB.byte.tif"),
        mask_path=str(real_data / "world.byte.tif"),
        crops_path=str(windows),
        patch_size=128,
        n_classes=2,
    )


def test_real_rgb_every_subcommand(tmp_path: Path, real_rgb: Path, cli: CliRun) -> None:
    sampler = sampler_of(real_rgb)
    code, out, _ = cli("validate", real_rgb)
    assert code == 0 and "values" in out, out

    png = tmp_path / "rgb.png"
    code, _, _ = cli("preview", real_rgb, "-n", 6, "--seed", 1, "--out", png)
    assert code == 0
    indices = preview.choose_windows(len(sampler), 6, 1)
    geometry = expected_layout(sampler, indices, 128)
    assert Image.open(png).size == (geometry.width, geometry.height)
    check_sheet(png, sampler, indices, 128, 0.45)  # uint8 shown unstretched: exact blend

    code, _, _ = cli("stats", real_rgb, "--json", tmp_path / "s.json")
    assert code == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    check_stats(stats, sampler)
    land = {r["class"]: r["frequency"] for r in stats["classes"]}[1]
    assert 0.05 < land < 0.4  # the Bahamas: mostly water

    code, out, _ = cli("index", real_rgb, "--cache", tmp_path / "i.csv")
    assert code == 0 and f"kept {len(sampler)}" in out


def test_real_vectors_and_mbtiles(tmp_path: Path, real_data: Path, cli: CliRun) -> None:
    box = write_config(
        tmp_path / "box.yaml",
        image_mbtiles_path=str(real_data / "RGB.byte.tif"),
        mask_path=str(real_data / "world.byte.tif"),
        crops_path=str(real_data / "box.shp"),
        patch_size=64,
    )
    code, out, _ = cli("index", box, "--cache", tmp_path / "box.parquet")
    assert code == 0 and "kept 1 " in out

    europe = write_config(
        tmp_path / "europe.yaml",
        image_mbtiles_path=str(real_data / "plain_3.mbtiles"),
        mask_path=str(real_data / "world.byte.tif"),
        crops_path=str(real_data / "naturalearth_cities.shp"),
        patch_size=64,
    )
    code, out, _ = cli("validate", europe)
    assert code == 0 and "192 feature(s) outside the image dropped" in out
    code, _, _ = cli("stats", europe, "--json", tmp_path / "e.json")
    assert code == 0
    check_stats(json.loads((tmp_path / "e.json").read_text()), sampler_of(europe))
    code, _, _ = cli("preview", europe, "-n", 4, "--out", tmp_path / "e.png")  # RGBA MBTiles, 4 bands
    windows = preview.choose_windows(len(sampler_of(europe)), 4, 0)
    geometry = expected_layout(sampler_of(europe), windows, 96, png=tmp_path / "e.png")
    assert code == 0 and Image.open(tmp_path / "e.png").size == (geometry.width, geometry.height)


def test_real_validate_reports_non_overlap_and_a_colour_map_on_a_class_mask(
    tmp_path: Path, real_data: Path, cli: CliRun
) -> None:
    # plain_3 covers Europe, RGB.byte.tif the Bahamas.
    apart = write_config(
        tmp_path / "apart.yaml",
        image_mbtiles_path=str(real_data / "RGB.byte.tif"),
        mask_path=str(real_data / "plain_3.mbtiles"),
        crops_path=str(real_data / "box.shp"),
        patch_size=64,
        color_map=[[237, 237, 237, 1]],
    )
    code, out, _ = cli("validate", apart)
    assert code == 1 and "does not overlap the image" in out
    wrong = write_config(
        tmp_path / "wrong.yaml",
        image_mbtiles_path=str(real_data / "plain_3.mbtiles"),
        mask_path=str(real_data / "world.byte.tif"),
        crops_path=str(real_data / "naturalearth_cities.shp"),
        patch_size=64,
        color_map=[[255, 0, 0, 1]],
    )
    code, out, _ = cli("validate", wrong)
    assert code == 1 and "needs an RGB(A) mask" in out


# --------------------------------------------------------------------------- package, texts, class names


@pytest.mark.parametrize("command", [None, "demo", "preview", "stats", "index", "validate", "predict", "evaluate"])
def test_help_texts_have_no_literal_percent_and_name_the_original(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"] if command else ["--help"])
    text = capsys.readouterr().out
    assert "%%" not in text and "%(" not in text
    assert "seed spec" not in text.lower() and "seed's" not in text.lower()
    if command not in (None, "demo"):
        assert "original MBTilesCropsGeoTifMaskDataset keys" in " ".join(text.split())


def test_cli_modules_say_the_original_not_seed() -> None:
    import importlib
    import pkgutil

    import crossgeo.cli
    import crossgeo.demo

    names = [m.name for m in pkgutil.iter_modules(crossgeo.cli.__path__, "crossgeo.cli.")]
    assert {"crossgeo.cli.main", "crossgeo.cli.common", "crossgeo.cli.validate"} <= set(names)
    for name in [*names, "crossgeo.demo"]:
        source = Path(importlib.import_module(name).__file__ or "").read_text().lower()
        assert "seed spec" not in source and "seed's" not in source, name


def test_no_command_module_opens_rasters_or_builds_a_warped_vrt() -> None:
    import ast

    folder = Path(common.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) >= 7
    for path in modules:
        source = path.read_text()
        for needle in ("rasterio.open", "WarpedVRT", "open_raster", "rasterio.vrt"):
            assert needle not in source, f"{path.name} uses {needle}"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "rasterio":
                assert all(alias.name not in ("open", "vrt") for alias in node.names), path.name


def direct_shares(sampler: PatchSampler, indices: list[int]) -> tuple[dict[int, float], float]:
    """Per class, its share of the valid pixels of these windows' patches, and the share without mask data."""
    patches = [sampler[i] for i in indices]
    total = sum(p.mask.size for p in patches)
    shares = {c: sum(int(((p.mask == c) & p.mask_valid).sum()) for p in patches) / total for c in range(8)}
    return shares, sum(int((~p.mask_valid).sum()) for p in patches) / total


def test_preview_legend_is_over_the_tiles_shown_and_uses_class_names(demo: dict[str, Any]) -> None:
    sampler = sampler_of(demo["config"])
    indices = preview.choose_windows(len(sampler), 5, 3)
    patches = [sampler[i] for i in indices]
    masks, invalids = [p.mask for p in patches], [~p.mask_valid for p in patches]
    shares, _ = direct_shares(sampler, indices)

    named = preview.legend(sampler, masks, invalids, CLASS_NAMES)
    assert named.heading == "legend: share of the pixels of the 5 tiles shown"
    assert named.texts[1:] == (
        f"class 0 background (not tinted)  {shares[0]:.1%}",
        f"class 1 water [0, 0, 255]  {shares[1]:.1%}",
        f"class 2 forest [0, 255, 0]  {shares[2]:.1%}",
        f"class 3 building [255, 0, 0]  {shares[3]:.1%}",
    )
    assert [colour for colour, _ in named.entries] == [None, (0, 0, 255), (0, 255, 0), (255, 0, 0)]
    plain = preview.legend(sampler, masks[:1], invalids[:1])
    one, _ = direct_shares(sampler, indices[:1])
    assert plain.heading.endswith("of the 1 tile shown")
    assert plain.texts[2] == f"class 1 [0, 0, 255]  {one[1]:.1%}"


def test_preview_legend_counts_pixels_without_mask_data(tmp_path: Path, cli: CliRun) -> None:
    transform = T.web_mercator_transform(12, 2176, 1460)
    image = T.write_raster(
        tmp_path / "image.tif", T.coordinate_bands(256, 256, "uint8"), crs="EPSG:3857", transform=transform
    )
    mask = T.write_raster(
        tmp_path / "left.tif", np.full((1, 256, 64), 2, np.uint8), crs="EPSG:3857", transform=transform
    )
    windows = T.write_windows_table(tmp_path / "w.csv", [0, 128], [0, 0])
    config = write_config(
        tmp_path / "c.yaml",
        image_mbtiles_path=str(image),
        mask_path=str(mask),
        crops_path=str(windows),
        patch_size=128,
        n_classes=3,
        class_names={1: "road", 2: "roof"},
    )
    with pytest.warns(UserWarning, match="covers only 25.0%"):
        sampler = sampler_of(config)
    patches = [sampler[i] for i in (0, 1)]
    key = preview.legend(sampler, [p.mask for p in patches], [~p.mask_valid for p in patches], {1: "road", 2: "roof"})
    assert key.texts[1:] == (
        "class 0 background (not tinted)  0.0%",
        "class 1 road  0.0%",
        "class 2 roof  50.0%",  # the mask covers the left 64 of 128 columns
        "no mask data (hatched)  50.0%",
    )
    png = tmp_path / "p.png"
    code, _, err = cli("preview", config, "--out", png, "--tile", 128)
    assert code == 0 and "covers only 25.0%" in err, err
    geometry = expected_layout(sampler, [0, 1], 128, {1: "road", 2: "roof"})
    assert Image.open(png).size == (geometry.width, geometry.height)


def test_class_names_are_a_display_key_as_list_mapping_or_top_level(
    tmp_path: Path, demo: dict[str, Any], cli: CliRun
) -> None:
    options = demo_options(demo)
    assert common.split_options(common.load_config(demo["config"]), "demo").class_names == CLASS_NAMES  # top level
    mapping = write_config(tmp_path / "m.yaml", **options, class_names={"1": "lake", 3: "house"})
    parts = common.split_options(common.load_config(mapping), "m.yaml")
    assert parts.class_names == {1: "lake", 3: "house"} and "class_names" not in parts.sampler
    code, out, err = cli("stats", mapping, "--json", tmp_path / "s.json")
    assert code == 0, err
    labels = {r["class"]: r["label"] for r in json.loads((tmp_path / "s.json").read_text())["classes"]}
    assert labels[1] == "1 lake [0, 0, 255]" and labels[3] == "3 house [255, 0, 0]" and labels[2] == "2 [0, 255, 0]"
    assert "1 lake [0, 0, 255]" in out
    code, out, _ = cli("validate", mapping)
    assert code == 0, out

    listed = write_config(tmp_path / "l.yaml", **options, class_names=["other", "water"])
    assert common.split_options(common.load_config(listed), "l.yaml").class_names == {0: "other", 1: "water"}
    for bad, message in (("water", "must be a list or a mapping"), ({"x": "water"}, "not a class number")):
        config = write_config(tmp_path / "bad.yaml", **options, class_names=bad)
        code, _, err = cli("preview", config, "--out", tmp_path / "p.png")
        assert code == 1 and "class_names" in err and message in err


def old_colour_check(rgb: np.ndarray, color_map: list[list[int]]) -> tuple[list[tuple[int, int]], int]:
    """The bit-packing `crossgeo validate` used before it called masks.py: (unknown (key, count), found)."""
    keys = (rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8) | rgb[2].astype(np.int64)
    values, counts = np.unique(keys, return_counts=True)
    known = {(r << 16) | (g << 8) | b for r, g, b, _ in color_map}
    unknown = sorted(((int(v), int(c)) for v, c in zip(values, counts) if int(v) not in known), key=lambda i: -i[1])
    return unknown, sum(1 for v in values if int(v) in known)


def test_validate_counts_colours_with_masks_py_as_before(
    tmp_path: Path, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch, cli: CliRun
) -> None:
    from crossgeo import masks
    from crossgeo.cli import validate
    from crossgeo.io import read_mask_overview

    sampler = sampler_of(demo["config"])
    data, valid = read_mask_overview(sampler.mask_path, sampler.grid, [1, 2, 3])
    assert valid.all() and data.shape == (3, 512, 512)
    color_map = [[0, 0, 255, 1], [0, 255, 0, 2], [250, 0, 0, 3]]
    counted = masks.colour_counts(data[:, valid], color_map)
    unknown, found = old_colour_check(data[:, valid], color_map)
    assert [((k >> 16, (k >> 8) & 255, k & 255), c) for k, c in unknown] == list(counted.unmapped)
    assert found == len(counted.mapped) == 2 and counted.pixels == 512 * 512
    # "Unmapped" is exactly what the decoder makes class 0.
    decoded = masks.ColorMapDecoder(color_map)(data, None)
    assert int((decoded == 0).sum()) == sum(c for _, c in counted.unmapped)

    calls: list[int] = []

    def spy(rgb: np.ndarray, cmap: Any) -> masks.ColourCounts:
        calls.append(rgb.shape[1])
        return masks.colour_counts(rgb, cmap)

    monkeypatch.setattr(validate, "colour_counts", spy)
    options = demo_options(demo)
    options["color_map"] = color_map
    code, out, _ = cli("validate", write_config(tmp_path / "off.yaml", **options))
    assert code == 0 and calls == [512 * 512]
    red = next(c for rgb, c in counted.unmapped if rgb == (255, 0, 0))
    assert f"[255, 0, 0] {red / counted.pixels:.1%} ({red:,} px)" in out


def test_colour_counts_keeps_values_that_are_not_colours_apart() -> None:
    from crossgeo import masks

    rgb = np.array([[255, 256, 255, 0.5], [0, 0, 0, 0], [0, 0, 0, 0]])
    counted = masks.colour_counts(rgb, [[255, 0, 0, 1]])
    assert counted.mapped == (((255, 0, 0), 2),)
    assert sorted(counted.unmapped) == [((0.5, 0, 0), 1), ((256, 0, 0), 1)]
    decoded = masks.ColorMapDecoder([[255, 0, 0, 1]])(rgb.reshape(3, 1, 4), None)
    assert decoded.ravel().tolist() == [1, 0, 1, 0]


def test_demo_prints_its_absolute_folder_and_follow_ups_that_run_there(
    demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch, cli: CliRun
) -> None:
    folder = Path(demo["folder"]).resolve()
    out = demo["out"]
    assert f"writing the demo scene to {folder} ..." in out
    listed = out.split(f" files in {folder}:")[1].split("next, try")[0].split()
    counted = int(out.split(f" files in {folder}:")[0].split()[-1])
    assert counted == len(listed) // 2 > 0  # the count printed is the files listed (name and file per line)
    lines = out.split("next, try")[1].splitlines()[1:]
    assert lines[0].strip() == f"cd {folder}"
    commands = [line.split() for line in lines[1:] if line.strip()]
    assert len(commands) == 7 and all(c[0] == "crossgeo" for c in commands)
    monkeypatch.chdir(folder)
    for command in commands:
        code, _, err = cli(*command[1:])
        assert code == 0, (command, err)
    assert (folder / "preview-seed1.png").is_file() and (folder / "stats.json").is_file()
    assert (folder / "windows-split.png").is_file() and (folder / "windows-split.parquet").is_file()


def test_validate_collects_every_problem_and_names_the_original_keys(
    tmp_path: Path, demo: dict[str, Any], cli: CliRun
) -> None:
    """validate reports the sampler's own inspection: every problem at once, in the user's key names."""
    options = demo_options(demo)
    options["image_mbtiles_path"] = str(tmp_path / "missing.mbtiles")
    options["crops_path"] = str(tmp_path / "missing.csv")
    options["n_classes"] = 0
    code, out, _ = cli("validate", write_config(tmp_path / "many.yaml", **options))
    problems = out.split("problem(s)")[1]
    assert code == 1 and "n_classes must be >= 1" in problems
    options["n_classes"] = 4
    code, out, _ = cli("validate", write_config(tmp_path / "two.yaml", **options))
    problems = out.split("problem(s)")[1]
    assert code == 1
    assert re.search(r"image: image_mbtiles_path .*missing.mbtiles' does not exist", problems)


def test_validate_fails_an_empty_window_set_that_construction_only_warns_about(
    tmp_path: Path, demo: dict[str, Any], cli: CliRun
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("row_off,col_off\n")
    options = demo_options(demo)
    options["crops_path"] = str(empty)
    code, out, _ = cli("validate", write_config(tmp_path / "empty.yaml", **options))
    assert code == 1 and "windows: " in out.split("problem(s)")[1] and "no valid windows" in out


def test_validate_warns_for_a_patch_larger_than_the_image(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    options = demo_options(demo)
    options["patch_size"] = 2048
    options["crops_path"] = str(T.write_windows_table(tmp_path / "w.csv", [0], [0]))
    code, out, _ = cli("validate", write_config(tmp_path / "big.yaml", **options))
    assert code == 0, out
    assert re.search(r"warn  warning .*patch_size 2048 is larger than the image", out)


def test_index_reports_whether_the_cache_was_reused(tmp_path: Path, demo: dict[str, Any], cli: CliRun) -> None:
    options = demo_options(demo) | {"window_index_cache": str(tmp_path / "cache.parquet")}
    config = write_config(tmp_path / "cached.yaml", **options)
    assert "built and written" in cli("index", config)[1]
    assert "reused (up to date)" in cli("index", config)[1]


def test_stats_reports_the_share_of_image_pixels_without_data(tmp_path: Path, cli: CliRun) -> None:
    """An MBTiles image with a deleted tile: stats names the share of image pixels without data."""
    from test_real_rasters import mbtiles_with_missing_tile

    mbtiles, tile_row, tile_col = mbtiles_with_missing_tile(tmp_path)
    mask = T.write_raster(
        tmp_path / "m.tif",
        np.full((1, 512, 512), 1, np.uint8),
        crs="EPSG:3857",
        transform=T.web_mercator_transform(12, 2176, 1460),
    )
    offsets = [(0, 0), (0, 256), (256, 0), (256, 256)]  # one window of four is the missing tile
    windows = T.write_windows_table(tmp_path / "w.csv", *zip(*offsets))
    config = write_config(
        tmp_path / "holes.yaml",
        image_mbtiles_path=str(mbtiles),
        mask_path=str(mask),
        crops_path=str(windows),
        patch_size=256,
        selected_bands=[1, 2, 3],
    )
    code, out, _ = cli("stats", config, "--json", tmp_path / "s.json")
    stats = json.loads((tmp_path / "s.json").read_text())
    assert code == 0 and (tile_row, tile_col) == (0, 256)
    assert stats["image_invalid_fraction"] == 0.25 and stats["image_invalid_sampled_windows"] == 4
    assert "image pixels without data" in out and "25.00%" in out and "ignore_invalid_image" in out


def _column_ends(line: str, columns: int) -> list[int]:
    """Where the last ``columns`` whitespace-separated fields of ``line`` end (right-aligned columns end together)."""
    return [m.end() for m in re.finditer(r"\S+", line)][-columns:]


def test_stats_columns_stay_aligned_for_long_class_names_and_wide_counts(tmp_path: Path, cli: CliRun) -> None:
    """A class name longer than the old 24-character column and counts of millions kept every row's columns
    under the header's (the printed table was ragged)."""
    size = 2048  # 4 windows of 1024 px: class 3 covers 4 million pixels
    classes = np.full((1, size, size), 3, np.uint8)
    classes[:, :16, :16] = 1
    names = ["background", "impervious surfaces and roads", "low vegetation", "trees and tall shrubs in parks"]
    offsets = [(0, 0), (0, 1024), (1024, 0), (1024, 1024)]
    image = np.zeros((1, size, size), np.uint8)
    config = tile_config(tmp_path, image, classes, offsets, 1024, n_classes=4, class_names=names)
    code, out, err = cli("stats", config)
    assert code == 0, err
    lines = out.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("class "))
    rows = lines[header + 1 : lines.index("", header)]
    assert len(rows) == 4 and any("trees and tall shrubs in parks" in row for row in rows)
    assert any("4,194,048" in row for row in rows), rows
    ends = _column_ends(lines[header], 4)
    for row in rows:
        assert _column_ends(row, 4) == ends, "\n".join([lines[header], *rows])


def _ink(picture: Image.Image) -> float:
    """How much dark there is in a picture (a title's glyphs, wherever they are drawn)."""
    return float((255 - np.asarray(picture.convert("L"), dtype=np.float64)).sum())


def test_a_prediction_sheet_keeps_its_whole_title_inside_the_figure(tmp_path: Path) -> None:
    """A one-tile prediction sheet is ~400 px wide; its title (config, image, mask, "left: mask, right:
    prediction") is longer than that and was drawn on one line, its end cut off by the figure's edge."""
    from PIL import ImageDraw, ImageFont

    scene = T.CoordinateScene(tmp_path)
    mask = scene.aligned_mask((np.indices((scene.size, scene.size)).sum(0) % 50 < 20).astype(np.uint8)[None])
    sampler = PatchSampler(scene.image, mask, scene.windows([0], [0]), 96)
    patch = sampler[0]
    predictions = [(patch.mask, np.ones(patch.mask.shape, bool))]
    title = (
        "a_long_configuration_name.yaml: image.tif + mask aligned.tif, 1 of 1 windows, 96 px; "
        "left: mask, right: prediction_of_the_tiny_model.tif"
    )
    sheet = preview.render_preview(sampler, [0], tile=96, title=title, progress_bar=False, predictions=predictions)
    untitled = preview.render_preview(sampler, [0], tile=96, progress_bar=False, predictions=predictions)
    font = ImageFont.load_default(size=preview.FONT_SIZE)
    alone = Image.new("RGB", (round(font.getlength(title)) + 40, 40), (255, 255, 255))
    ImageDraw.Draw(alone).text((10, 10), title, fill=(0, 0, 0), font=font)
    assert _ink(alone) > 0
    assert _ink(sheet) - _ink(untitled) == pytest.approx(_ink(alone), rel=0.03)  # every glyph is on the sheet

    geometry = preview.sheet_layout(1, 96, preview.legend(sampler, [patch.mask], [~patch.mask_valid]), 2, title)
    assert sheet.size == (geometry.width, geometry.height) and len(geometry.title) > 1
    assert " ".join(geometry.title) == title
    draw = ImageDraw.Draw(sheet)
    first_tile_top = geometry.tiles[0][1]
    for k, line in enumerate(geometry.title):
        left, top, right, bottom = draw.textbbox(
            (preview.MARGIN, preview.TITLE_TOP + k * preview.TITLE_LINE), line, font=font
        )
        assert 0 <= left and right <= sheet.width - preview.MARGIN and 0 <= top and bottom <= first_tile_top
