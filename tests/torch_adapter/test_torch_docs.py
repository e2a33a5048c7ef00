"""Documentation examples that need PyTorch, and the dataset's row of the configuration table.

Runs every page with a ``# requires: torch`` block (its core blocks too, in order) and every
``yaml`` block whose ``_target_`` is a crossgeo class, through Hydra. See
``docs/scripts/run_examples.py``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


import run_examples as examples  # noqa: E402 - docs/scripts, on sys.path via tests/conftest.py

PAGES = examples.all_blocks()
TORCH_PAGES = [page for page, blocks in PAGES.items() if examples.page_uses(blocks, "torch")]


@pytest.fixture(scope="module")
def docs_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_scene(tmp_path_factory.mktemp("docs") / "scene")


def test_there_are_torch_examples() -> None:
    assert {"docs/howto/pytorch.md", "docs/howto/migrate.md"} <= set(TORCH_PAGES)


@pytest.mark.parametrize("page", TORCH_PAGES)
def test_torch_page_examples_run(page: str, docs_scene: Path, tmp_path: Path) -> None:
    ran = examples.run_page(PAGES[page], "torch", docs_scene, tmp_path / "work")
    assert any(not examples.runnable(block, "core") for block in ran), f"{page}: no torch example ran"


def test_configuration_table_matches_the_imported_dataset() -> None:
    """The table's dataset column against the real signature (and the options it passes on)."""
    from crossgeo import PatchSampler
    from crossgeo.torch import MBTilesCropsGeoTifMaskDataset

    def defaults(function: Any) -> dict[str, Any]:
        return {
            name: examples.REQUIRED if p.default is inspect.Parameter.empty else p.default
            for name, p in inspect.signature(function).parameters.items()
            if name != "self" and p.kind is not p.VAR_KEYWORD
        }

    accepted = defaults(MBTilesCropsGeoTifMaskDataset.__init__)
    passed_on = {k: v for k, v in defaults(PatchSampler.__init__).items() if k != "image_path" and k not in accepted}
    code = {**accepted, **passed_on}
    documented = {name: row.default for name, row in examples.config_table().items() if row.dataset}
    assert documented == code
