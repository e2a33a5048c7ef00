"""Documentation examples that need PyTorch, and the dataset's row of the configuration table.

Runs every page with a ``# requires: torch`` block (its core blocks too, in order) and every
``yaml`` block whose ``_target_`` is a crossgeo class, through Hydra. See
``docs/scripts/run_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

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
    if examples.chips_missing(PAGES[page]):
        pytest.skip(examples.chips_missing(PAGES[page]))
    ran = examples.run_page(PAGES[page], "torch", docs_scene, tmp_path / "work")
    assert any(not examples.runnable(block, "core") for block in ran), f"{page}: no torch example ran"


def test_the_dataset_takes_every_documented_option_and_suggests_for_typos(docs_scene: Path) -> None:
    """The drop-in reads the one option list: every documented name is known, a typo gets a suggestion."""
    from crossgeo.options import ADAPTER_OPTIONS, ALIASES, SAMPLER_OPTIONS, SCENE_OPTIONS
    from crossgeo.torch import MBTilesCropsGeoTifMaskDataset

    documented = set(examples.config_table())
    assert documented == {o.name for o in (*SAMPLER_OPTIONS, *SCENE_OPTIONS, *ADAPTER_OPTIONS)} | set(ALIASES)
    from crossgeo.options import IgnoredOptionWarning

    with (
        pytest.raises(TypeError, match=r"missing the required option.s. patch_size"),
        pytest.warns(IgnoredOptionWarning, match=r"unknown option pach_size=64. Did you mean 'patch_size'"),
    ):
        MBTilesCropsGeoTifMaskDataset(
            image_mbtiles_path=docs_scene / "imagery.mbtiles",
            mask_path=docs_scene / "masks" / "mask.vrt",
            crops_path=docs_scene / "crops" / "windows.csv",
            pach_size=64,
        )
    with pytest.raises(TypeError, match=r"missing the required option.s. image_mbtiles_path"):
        MBTilesCropsGeoTifMaskDataset(mask_path="m.tif", crops_path="c.csv", patch_size=64)
