"""The benchmark suite's smoke mode runs end to end, so ``python -m benchmarks`` cannot rot.

Runs in-process on a tiny scene (no targets enforced). Framework rows run in subprocesses
when torch / tensorflow are installed and are listed as skipped when they are not; this
test passes either way.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
    from benchmarks.scenes import SCENE_VERSION

    out_json = tmp_path / "bench.json"
    code = main(["--smoke", "--cache", str(tmp_path / "cache"), "--json", str(out_json), "--skip", "peers,s2"])
    assert code == 0
    table = capsys.readouterr().out
    assert "crossgeo core, aligned mask (DEFLATE GeoTIFF)" in table
    assert "raw bound, 4326 mask, small VRT per window" in table
    assert "open-per-item, 4326 mask (MBTiles)" in table
    # Rows say what was measured (smoke: 10,000 index rows, 2 epochs) and where the scene is cached.
    assert "10,000-row Parquet index: build seconds" in table and "1,000,000" not in table
    assert "worker RSS after 2 epochs / after 1" in table and "10 epochs" not in table
    assert f"scene cache: {tmp_path / 'cache' / f'scene-512-v{SCENE_VERSION}'}" in table

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
    for name in ("scenes_max_open", "scenes_blocks", "open_per_item", "scenes_small", "single"):
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
    assert results["scene"]["folder"] == str(tmp_path / "cache" / f"scene-512-v{SCENE_VERSION}")

    ratios = results["ratios"]
    assert set(ratios) == {target.key for target in TARGETS}
    for key in ("torchgeo_loader_2", "original_loader_2", "original_peak_rss", "warm_warped_vs_torchgeo"):
        assert ratios[key]["status"] == "skipped", key
    assert results["skipped"]["peers"] == "--skip"
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
    assert (tmp_path / "cache" / f"scene-512-v{SCENE_VERSION}" / "manifest.json").exists()
    # What the performance page states beside the numbers: the machine and the versions, from the same run.
    machine = results["machine"]
    assert machine["cpus"] >= 1 and machine["memory_gb"] > 0 and machine["cpu"] and machine["gdal"]
    assert machine["versions"]["crossgeo"] and machine["versions"]["rasterio"]
    # The page's other questions: block alignment, band files, chip stores.
    assert results["blocks"]["variants"]["random"]["aligned"]["blocks_per_patch"] == 1.0
    assert results["blocks"]["variants"]["random"]["unaligned"]["blocks_per_patch"] > 1.0
    assert set(results["bands"]["variants"]) == {"one_file", "band_files", "mixed_resolution"}
    assert all(v["median"] > 0 for v in results["bands"]["variants"].values())
    if _installed("zarr"):
        assert results["chips"]["scene"]["windows"] == 16
    else:
        assert "zarr" in results["skipped"]["chips"]
    import performance_page  # docs/scripts

    sections = performance_page.generated(results)
    assert "Not measured in this run (--skip)" in sections["peers"]
    assert "| `random_windows`, read in random order | 4.00 → 1.00 |" in sections["blocks"]


def test_frameworks_listed_as_skipped_without_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without torch/tensorflow and the peers (simulated here) their rows are skipped, not failed."""
    import benchmarks.run as run

    for name in ("CROSSGEO_BENCH_PEER_PYTHON", "CROSSGEO_BENCH_TORCHGEO_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    real = run._has
    hidden = {"torch", "tensorflow", "torchgeo", "pytorch_segmentation_models_trainer"}
    run_has = lambda module: module not in hidden and real(module)  # noqa: E731
    try:
        run._has = run_has
        code = run.main(["--smoke", "--cache", str(tmp_path), "--skip", "io,colour,index,s2"])
    finally:
        run._has = real
    assert code == 0
    table = capsys.readouterr().out
    assert "skipped torch: torch is not installed" in table
    assert "skipped tf: tensorflow is not installed" in table
    assert "skipped peers: neither torchgeo nor pytorch_segmentation_models_trainer is installed" in table
    assert "original_loader_2" not in table and "crossgeo / the original, DataLoader bs 16, 2 workers" in table


def _peer_results(original: bool) -> dict[str, object]:
    """What a run with the peers section returns (the shape of `benchmarks.peers.orchestrate`)."""
    from benchmarks.run import counts, parse_args

    def case(pps: float, **more: float) -> dict[str, object]:
        return {"patches_per_s": pps, **more, "rounds": [{"patches_per_s": pps, **more}]}

    libraries = {"crossgeo": 1.0, "torchgeo": 0.2, **({"original": 0.4} if original else {})}
    peers: dict[str, object] = {
        "versions": {lib: {"version": "9.9", "torch": "2.x"} for lib in libraries},
        "missing": {} if original else {"original": "pytorch_segmentation_models_trainer is not installed"},
        "windows": 2000,
        "rounds": 3,
        "batch_size": 16,
        "agreement": {
            lib: {
                kind: {
                    "images_identical": 16,
                    "windows_checked": 16,
                    "mask_agreement_mean": 1.0,
                    "mask_agreement_first_window": 1.0,
                }
                for kind in ("aligned", "warped")
            }
            for lib in libraries
            if lib != "crossgeo"
        },
    }
    for lib, speed in libraries.items():
        for name in ("direct_aligned", "direct_warped", "workers_0"):
            peers[f"{lib}_{name}"] = case(100 * speed, peak_rss_mb=500 / speed)
        peers[f"{lib}_workers_2"] = case(
            200 * speed, peak_rss_mb=500, worker_rss_mb=300 / speed, worker_rss_mb_per_worker=[300 / speed] * 2
        )
    return {
        "mode": "full",
        "scene": {"folder": "/tmp/scene", "size": 8192, "windows": 2000, "patch_size": 256},
        "gdal_cachemax_bytes": 64 << 20,
        "repeat": 2,
        "machine": {"cpus": 2},
        "counts": counts(parse_args([])),
        "skipped": {} if original else dict(peers["missing"]),  # type: ignore[call-overload]
        "seconds": 1.0,
        "peers": peers,
    }


@pytest.mark.parametrize("original", [True, False], ids=["three libraries", "original missing"])
def test_peer_ratios_and_table(original: bool) -> None:
    """The peer rows are computed from the peers section: crossgeo over each peer, RSS the other way round."""
    from benchmarks.run import format_table, ratios

    results = _peer_results(original)
    results["ratios"] = got = ratios(results)
    assert got["torchgeo_aligned"]["value"] == pytest.approx(5.0)
    assert got["torchgeo_loader_2"] == {
        "label": "crossgeo / TorchGeo, DataLoader bs 16, 2 workers",
        "value": pytest.approx(5.0),
        "op": ">=",
        "target": 4.0,
        "status": "met",
    }
    assert got["torchgeo_worker_rss"]["value"] == pytest.approx(0.2)
    assert got["torchgeo_worker_rss"]["status"] == "met"
    if original:
        assert got["original_warped"]["value"] == pytest.approx(2.5)
        assert got["original_warped"]["status"] == "met"
        assert got["original_peak_rss"]["status"] == "reported"
    else:
        assert all(got[key]["status"] == "skipped" for key in got if key.startswith("original_"))
    table = format_table(results)
    row = next(line for line in table.splitlines() if line.startswith("DataLoader bs 16, 2 workers"))
    assert row.split()[-5:] == (
        ["200.0", "40.0", "80.0", "5.00", "2.50"] if original else ["200.0", "40.0", "-", "5.00", "-"]
    )
    assert "same pixels as TorchGeo, warped: images equal / mask agreement" in table
    if not original:
        assert "skipped original: pytorch_segmentation_models_trainer is not installed" in table


def test_targets_are_data() -> None:
    """One row per key, a known comparison each."""
    from benchmarks.targets import OPERATORS, TARGETS, Target

    keys = [target.key for target in TARGETS]
    assert len(keys) == len(set(keys))
    assert all(target.op in OPERATORS for target in TARGETS)
    with pytest.raises(ValueError, match="op"):
        Target("x", "x", "==", 1.0, ("a",))


@pytest.mark.skipif(
    not os.environ.get("CROSSGEO_BENCH_PEER_PYTHON"), reason="set CROSSGEO_BENCH_PEER_PYTHON to the bench env's python"
)
def test_peers_in_the_bench_env(tmp_path: Path) -> None:
    """The peer comparison end to end in the bench env (tox -e bench): every library measured, same pixels."""
    from benchmarks import harness
    from benchmarks.scenes import ensure_scene

    scene = ensure_scene(tmp_path, 512, 8, 256, log=lambda _message: None)
    command = [
        *(os.environ["CROSSGEO_BENCH_PEER_PYTHON"], "-m", "benchmarks.peers"),
        *harness.scene_args(scene, 64, 4),
        *("--peer-windows", "8", "--rounds", "1", "--warm-windows", "4"),
    ]
    out = harness.run_json(command, 1800)
    assert out["missing"] == {}
    assert set(out["versions"]) == {"crossgeo", "torchgeo", "original"}
    for lib in ("crossgeo", "torchgeo", "original"):
        for case in ("direct_aligned", "direct_warped", "workers_0", "workers_2"):
            assert out[f"{lib}_{case}"]["patches"] == 8, (lib, case)
        assert len(out[f"{lib}_workers_2"]["rounds"][0]["worker_rss_mb_per_worker"]) == 2
    for lib in ("torchgeo", "original"):
        assert out["agreement"][lib]["aligned"]["images_identical"] == 8
        assert out["agreement"][lib]["aligned"]["mask_agreement_mean"] == 1.0
        assert out["agreement"][lib]["warped"]["mask_agreement_mean"] > 0.98


def test_module_entry_point_help() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--smoke" in done.stdout


def test_s2_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Sentinel-2-like case (issue #24) end to end on a tiny scene: rows, agreement, correctness, ratios."""
    from benchmarks import s2_bench
    from benchmarks.run import counts, parse_args, ratios

    out_json = tmp_path / "s2.json"
    assert s2_bench.main(["--smoke", "--cache", str(tmp_path), "--rounds", "1", "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out_json.read_text())
    folder = Path(result["scene"]["folder"])
    assert sorted(p.name for p in folder.glob("T32UNU_*_B*.tif")) == sorted(
        s2_bench.band_file(folder, band).name for band in s2_bench.BANDS
    )
    for name in ("crossgeo_bands", "crossgeo_vrt"):
        for case in ("cold", "warm"):
            assert result["throughput"][f"{name}_{case}"]["patches_per_s"] > 0
    # The VRT stack and the band files give the same pixels (nearest everywhere).
    agree = result["agreement"]["crossgeo_vrt"]
    assert agree["images_identical"] == agree["windows_checked"] > 0 and agree["mask_agreement_mean"] == 1.0
    checks = result["correctness"]
    assert checks["other_crs"]["agreement"] >= 0.999 and checks["other_crs"]["pixels"] == 16 * 256 * 256
    assert checks["resolution"]["nearest"]["max_abs_diff"] == 0 and checks["resolution"]["bilinear"]["met"]
    assert checks["resolution"]["nearest"]["views"] == ["aligned", "scaled", "scaled"]
    assert "crossgeo band files / VRT stack (>= 1x)" in table
    if "torchgeo" in result["missing"]:
        assert "skipped torchgeo" in table
    # The suite's ratio rows read this section.
    got = ratios({"mode": "smoke", "counts": counts(parse_args(["--smoke"])), "s2": result})
    assert got["s2_vs_vrt_cold"]["value"] > 0 and got["s2_other_crs_agreement"]["value"] >= 0.999
    assert (
        got["s2_vs_vrt_cold"]["label"]
        == "S2-like 12 band files, 16 windows, cold: crossgeo / hand-built VRT stack at 10 m"
    )
    written = s2_bench.band_file(folder, "B02").stat().st_mtime_ns
    assert s2_bench.ensure_scene(tmp_path, 1080, 512, 16, 256, "nearest") == folder
    assert s2_bench.band_file(folder, "B02").stat().st_mtime_ns == written  # cached: not rewritten
