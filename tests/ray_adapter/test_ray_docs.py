"""Documentation examples that need Ray (``# requires: ray``) on a local cluster; see docs/scripts/run_examples.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import run_examples as examples  # docs/scripts, on sys.path via tests/conftest.py

PAGES = examples.all_blocks()
RAY_PAGES = [page for page, blocks in PAGES.items() if examples.page_uses(blocks, "ray")]


def test_there_are_ray_examples() -> None:
    assert "docs/howto/ray.md" in RAY_PAGES


@pytest.mark.parametrize("page", RAY_PAGES)
def test_ray_page_examples_run(page: str, tmp_path: Path) -> None:
    scene = examples.write_scene(tmp_path / "scene")
    ran = examples.run_page(PAGES[page], "ray", scene, tmp_path / "work")
    assert any(not examples.runnable(block, "core") for block in ran), f"{page}: no Ray example ran"
