"""The benchmark suite's smoke mode runs end to end, so ``python -m benchmarks`` cannot rot.

Runs in-process on a tiny scene (no targets enforced). Framework rows run in subprocesses
when torch / tensorflow are installed and are listed as skipped when they are not; this
test passes either way.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_smoke_run_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.run import TARGETS, main

    out_json = tmp_path / "bench.json"
    code = main(["--smoke", "--cache", str(tmp_path / "cache"), "--json", str(out_json), "--skip", "torchgeo"])
    assert code == 0
    table = capsys.readouterr().out
    assert "crossgeo core, aligned mask (DEFLATE GeoTIFF)" in table
    assert "raw bound, 4326 mask, small VRT per window" in table
    assert "open-per-item, 4326 mask (MBTiles)" in table
    # Rows say what was measured (smoke: 10,000 index rows, 2 epochs) and where the scene is cached.
    assert "10,000-row Parquet index: build seconds" in table and "1,000,000" not in table
    assert "worker RSS after 2 epochs / after 1" in table and "10 epochs" not in table
    assert f"scene cache: {tmp_path / 'cache' / 'scene-512-v1'}" in table

    results = json.loads(out_json.read_text())
    assert results["mode"] == "smoke"
    assert results["gdal_cachemax_bytes"] == 8 << 20
    for name in (
        "raw_aligned",
        "core_aligned",
        "raw_warped_full_vrt",
        "raw_warped_window_vrt",
        "core_warped",
        "open_per_item",
        "core_warped_mbtiles",
        "open_per_item_mbtiles",
    ):
        assert results["throughput"][name]["patches_per_s"] > 0, name
    assert 0 < results["colour"]["ratio"]
    assert "20 scenes: SceneSampler construction seconds" in table
    for name in ("scenes_max_open", "open_per_item", "scenes_small", "single"):
        assert results["scenes"]["throughput"][name]["patches_per_s"] > 0, name
    assert results["scenes"]["open_scenes_after"] <= 32 and results["scenes"]["windows"] > 0
    assert results["index"]["rows"] == 10_000
    # Warm-cache rows (second pass on a large block cache) and the import time are always reported.
    for name in ("raw_aligned", "core_aligned", "raw_warped_full_vrt", "raw_warped_window_vrt", "core_warped"):
        assert results["warm"][name]["patches_per_s"] > 0, name
    assert 0 < results["import"]["python_c_import_crossgeo_s"] < 60
    assert "warped, warm cache, crossgeo / best raw warped read" in table
    assert "aligned, warm cache, crossgeo / raw" in table
    assert results["ratios"]["index_rss_mb"]["label"] == "10,000-row Parquet index: resident MB"
    assert results["scene"]["folder"] == str(tmp_path / "cache" / "scene-512-v1")

    ratios = results["ratios"]
    assert set(ratios) == {key for key, *_ in TARGETS}
    assert ratios["torch_vs_torchgeo"]["status"] == "skipped"
    assert "torchgeo" in results["skipped"]
    for key in ("core_aligned_vs_raw", "core_warped_vs_raw", "colour_decode_vs_read", "index_rss_mb"):
        assert ratios[key]["status"] == "not enforced (smoke)"
    for section, module, key in (
        ("torch", "torch", "torch_2_vs_0_workers"),
        ("tf", "tensorflow", "tf_autotune_vs_generator"),
    ):
        if _installed(module):
            assert section in results, results["skipped"].get(section)
            assert ratios[key]["value"] > 0
        else:
            assert section in results["skipped"]
            assert ratios[key]["status"] == "skipped"
            assert f"skipped {section}" in table
    # The scene is cached: a second run reuses it.
    assert (tmp_path / "cache" / "scene-512-v1" / "manifest.json").exists()


def test_frameworks_listed_as_skipped_without_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without torch/tensorflow (simulated here) the framework rows are skipped, not failed."""
    import benchmarks.run as run

    real = run._has
    hidden = {"torch", "tensorflow", "torchgeo"}
    run_has = lambda module: module not in hidden and real(module)  # noqa: E731
    try:
        run._has = run_has
        code = run.main(["--smoke", "--cache", str(tmp_path), "--skip", "io,colour,index"])
    finally:
        run._has = real
    assert code == 0
    table = capsys.readouterr().out
    assert "skipped torch: torch is not installed" in table
    assert "skipped tf: tensorflow is not installed" in table
    assert "skipped torchgeo: torchgeo is not installed" in table


def test_module_entry_point_help() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--smoke" in done.stdout
