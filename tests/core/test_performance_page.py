"""docs/performance.md shows one benchmark run: its tables and figures come from docs/images/bench-run.json.

``docs/scripts/performance_page.py`` writes the page's tables between markers and draws its
figures from that one file; the hand-written text around them states no measured number, so it
cannot contradict a table.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import performance_page  # docs/scripts, on sys.path via tests/conftest.py
import pytest


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return performance_page.load()


def test_page_and_figures_come_from_the_committed_run(run: dict[str, Any]) -> None:
    stale = performance_page.stale(run, performance_page.digest())
    assert not stale, f"docs/performance.md is out of date ({stale}): run python docs/scripts/performance_page.py"


def test_the_run_names_its_machine_and_versions(run: dict[str, Any]) -> None:
    machine = performance_page.section_machine(run)
    m = run["machine"]
    for text in (m["cpu"], f"{m['cpus']} cores", m["python"], m["gdal"], m["versions"]["rasterio"]):
        assert text in machine
    for library in ("torchgeo", "original"):
        assert run["peers"]["versions"][library]["version"] in machine


def test_tables_show_the_runs_numbers(run: dict[str, Any]) -> None:
    """A number changed in the run changes the table: crossgeo / TorchGeo is computed, never typed."""
    changed = copy.deepcopy(run)
    changed["peers"]["crossgeo_direct_aligned"]["patches_per_s"] = 500.0
    changed["peers"]["torchgeo_direct_aligned"]["patches_per_s"] = 100.0
    changed["peers"]["original_direct_aligned"]["patches_per_s"] = 250.0
    row = next(line for line in performance_page.section_peers(changed).splitlines() if "image grid" in line)
    assert row == "| read `dataset[i]`, mask on the image grid | **500** | 100 | 250 | 5.0× | 2.0× |"
    changed["peers"]["torchgeo_workers_2"]["patches_per_s"] = 30.0
    changed["peers"]["torchgeo_workers_0"]["patches_per_s"] = 20.0
    workers = performance_page.section_workers(changed)
    assert "| 30.0 (1.5×) |" in workers
    del changed["peers"]
    changed["skipped"] = {"peers": "--skip"}
    assert performance_page.section_peers(changed) == "*Not measured in this run (--skip).*"


def test_hand_written_text_states_no_measured_number() -> None:
    """Outside the generated sections and code, no speed, ratio or size: those live in the tables only."""
    text = performance_page.PAGE.read_text()
    for name in performance_page.SECTIONS:
        text = text.replace(
            performance_page.generated_section.current(performance_page.PAGE, performance_page.begin(name)), ""
        )
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = re.sub(r"`[^`]*`", "", prose)
    measured = re.findall(r"\d[\d,.]*\s*(?:×(?!\s*\d)|x\b|%|[KMG]i?B\b|patches|seconds|minutes|s\b)", prose)
    assert not measured, f"numbers outside the generated tables: {measured}"


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib draws the figures")
def test_figures_are_stamped_with_their_run(run: dict[str, Any], tmp_path: Path) -> None:
    written = performance_page.draw(run, "abc123", tmp_path)
    assert {p.name for p in written} == set(performance_page.FIGURES.values())
    assert all(performance_page.png_source(p) == "bench-run.json sha256:abc123" for p in written)
    stale = performance_page.stale(run, "abc123", folder=tmp_path)
    assert not [s for s in stale if s.startswith("figure")]
    assert performance_page.stale(run, "another run", folder=tmp_path)
