"""``crossgeo windows``: the written table's values and the map's pixels, on a coordinate-encoding scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("yaml")
pytest.importorskip("PIL")
pytest.importorskip("tqdm")

import yaml
from PIL import Image
from testkit import CliRun

from crossgeo import PatchSampler, class_fractions
from crossgeo.cli.windows import SPLIT_COLOURS, parse_splits
from crossgeo.testing import CoordinateScene

PATCH = 64


@pytest.fixture
def config(scene: CoordinateScene) -> Path:
    """A 512 x 512 coordinate image and an aligned 3-class mask; class 2 only in its top-left 96 x 96 pixels."""
    rows, cols = np.mgrid[0 : scene.size, 0 : scene.size]
    classes = ((rows // 40 + cols // 40) % 2).astype(np.uint8)
    classes[:96, :96] = 2
    mask = scene.aligned_mask(classes[None])
    path = scene.path("config.yaml")
    options = {"image_path": str(scene.image), "mask_path": str(mask), "patch_size": PATCH, "n_classes": 3}
    path.write_text(yaml.safe_dump({"train_dataset": options}))
    return path


def test_split_balanced_table_and_map(scene: CoordinateScene, config: Path, cli: CliRun) -> None:
    out, picture = scene.path("w.parquet"), scene.path("w.png")
    code, stdout, stderr = cli(
        "windows", config, "--grid", 32, "--split", "train=0.5,val=0.25,test=0.25", "--block", 128,
        "--balanced", 24, "--weights", "--seed", 3, "--out", out, "--map", picture,
    )  # fmt: skip
    assert code == 0, stderr
    table = pd.read_parquet(out)
    assert list(table.columns) == ["row_off", "col_off", "valid", "class_0", "class_1", "class_2", "split", "weight"]
    assert len(table) == 24 and set(table.split) == {"train", "val", "test"}
    assert table.split.value_counts().to_dict() == {"train": 12, "val": 6, "test": 6}
    # The fractions are the sampler's own counts for each written window.
    sampler = PatchSampler(
        scene.image, config.parent / "aligned.tif", table[["row_off", "col_off"]], PATCH, n_classes=3
    )
    truth = class_fractions(sampler)
    np.testing.assert_array_equal(table[["valid", "class_0", "class_1", "class_2"]], truth[truth.columns[2:]])
    # No pixel is shared by two splits.
    owner = np.full((scene.size, scene.size), "", dtype=object)
    for r, c, split in zip(table.row_off, table.col_off, table.split):
        patch = owner[r : r + PATCH, c : c + PATCH]
        assert set(np.unique(patch)) <= {"", split}
        patch[:] = split
    assert table.weight.mean() == pytest.approx(1.0)
    assert "class presence (windows)" in stdout and "->" in stdout and f"wrote {out} (24 windows)" in stdout

    image = np.asarray(Image.open(picture).convert("RGB"))
    assert image.shape[1] == scene.size  # a 512-pixel image is drawn at full size
    for r, c, split in zip(table.row_off, table.col_off, table.split):
        colour = SPLIT_COLOURS[split]
        for y, x in ((r, c + 20), (r + PATCH - 1, c + 40), (r + 20, c), (r + 40, c + PATCH - 1)):
            if _covering(table, y, x) == {split}:  # outlines of overlapping windows of one split
                assert tuple(image[y, x]) == colour, (split, y, x)
    # Away from every outline the map shows the image itself: its pixels encode their own row and column.
    outlined = np.zeros((scene.size, scene.size), dtype=bool)
    for r, c in zip(table.row_off, table.col_off):
        outlined[r, c : c + PATCH] = outlined[r + PATCH - 1, c : c + PATCH] = True
        outlined[r : r + PATCH, c] = outlined[r : r + PATCH, c + PATCH - 1] = True
    ys, xs = np.nonzero(~outlined[: scene.size, : scene.size])
    pick = np.random.default_rng(0).choice(ys.size, 200, replace=False)
    for y, x in zip(ys[pick], xs[pick]):
        assert tuple(image[y, x]) == (x % 256, y % 256, 16 * (y // 256) + x // 256)
    legend = image[scene.size :]
    assert legend.shape[0] > 0 and any((legend == colour).all(axis=-1).any() for colour in SPLIT_COLOURS.values())


def _covering(table: pd.DataFrame, y: int, x: int) -> set[str]:
    """Splits of the windows whose outline passes through pixel (y, x)."""
    found = set()
    for r, c, split in zip(table.row_off, table.col_off, table.split):
        on_rows = r <= y < r + PATCH and x in (c, c + PATCH - 1)
        on_cols = c <= x < c + PATCH and y in (r, r + PATCH - 1)
        if on_rows or on_cols:
            found.add(split)
    return found


def test_balance_lifts_the_rare_class_and_min_valid(scene: CoordinateScene, config: Path, cli: CliRun) -> None:
    plain = scene.path("plain.csv")
    assert cli("windows", config, "--grid", 32, "--out", plain)[0] == 0
    candidates = pd.read_csv(plain)
    assert "split" not in candidates and len(candidates) == 15 * 15
    balanced = scene.path("balanced.csv")
    code, stdout, _ = cli("windows", config, "--grid", 32, "--balanced", 30, "--seed", 1, "--out", balanced)
    assert code == 0
    chosen = pd.read_csv(balanced)
    before, after = (candidates.class_2 > 0).mean(), (chosen.class_2 > 0).mean()
    assert before < 0.05 and after >= 1 / 3 - 0.01
    assert f"{before:.1%}->{after:.1%}" in stdout.replace(" ", "")
    random = scene.path("random.csv")
    assert cli("windows", config, "--random", 50, "--seed", 2, "--min-valid", 0.5, "--out", random)[0] == 0
    table = pd.read_csv(random)
    assert len(table) == 50 and (table.valid >= 0.5).all()


def test_windows_bad_input(scene: CoordinateScene, config: Path, cli: CliRun) -> None:
    code, _, err = cli("windows", config, "--split", "train:0.8", "--out", scene.path("x.csv"))
    assert code == 1 and "NAME=SHARE" in err
    code, _, err = cli("windows", config, "--split", "train=0.8,val=0.1", "--out", scene.path("x.csv"))
    assert code == 1 and "sum to 0.9" in err
    code, _, err = cli("windows", config, "--out", scene.path("x.txt"))
    assert code == 1 and ".parquet or .csv" in err
    code, _, err = cli("windows", config, "--grid", 0, "--out", scene.path("x.csv"))
    assert code == 1 and "stride must be >= 1" in err
    assert parse_splits("train=0.8, val=0.2") == {"train": 0.8, "val": 0.2}


def test_demo_writes_a_balanced_split_windows_file(tmp_path: Path, cli: CliRun) -> None:
    from crossgeo import demo
    from crossgeo.cli.common import load_config, split_options

    files = demo.write_demo_scene(tmp_path / "demo", with_augmentation=False)
    table = pd.read_parquet(files["windows_split"])
    assert {"split", "weight", "valid"} <= set(table.columns)
    counts = table.split.value_counts().to_dict()
    # val has 9 candidate windows: held-out splits are never oversampled, so it keeps those 9, once each.
    assert counts == {"train": 96, "val": 9, "test": 12}
    assert not table[table.split != "train"].duplicated(["row_off", "col_off"]).any()
    size = demo.PATCH_SIZE
    owner = np.full((demo.TILES * 256, demo.TILES * 256), "", dtype=object)
    for r, c, split in zip(table.row_off, table.col_off, table.split):
        assert set(np.unique(owner[r : r + size, c : c + size])) <= {"", split}
        owner[r : r + size, c : c + size] = split
    for section, split in (("train_dataset", "train"), ("val_dataset", "val")):
        options = split_options(load_config(files["config_split"], section), section).sampler
        sampler = PatchSampler(**options)
        expected = table[table.split == split]
        assert sampler.row_off.tolist() == expected.row_off.tolist()
        assert sampler.index.report.split_left_out == len(table) - len(expected)
    # The follow-up command writes the same table again.
    again = tmp_path / "demo" / "again.parquet"
    argv = demo.SPLIT_WINDOWS_COMMAND.split()[1:]
    argv[argv.index("windows-split.parquet")] = str(again)
    argv[argv.index("config.yaml")] = str(files["config"])
    argv = argv[: argv.index("--map")]
    assert cli(*argv)[0] == 0
    assert pd.read_parquet(again).equals(table)


def test_map_legend_text_scales_with_the_map() -> None:
    """A 1024-pixel map's legend is drawn in ~43 px text, legible when a phone shows it at a third (#27.8)."""
    from crossgeo.cli.windows import draw_map

    table = pd.DataFrame({"row_off": [0, 256], "col_off": [0, 256], "split": ["train", "val"]})
    small = draw_map(np.zeros((3, 256, 256), np.uint8), table, 128, (256, 256))
    large = draw_map(np.zeros((3, 1024, 1024), np.uint8), table, 128, (1024, 1024))
    assert small.size == (256, 256 + 24)  # at least 12 px text, as before
    legend = np.asarray(large.convert("L"))[1024:]
    inked_rows = np.flatnonzero((legend < 128).any(axis=1))
    assert large.size[1] - 1024 >= 80 and inked_rows.size and np.ptp(inked_rows) >= 30
