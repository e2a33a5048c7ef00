"""Documentation examples that need TensorFlow or Keras (``# requires: tensorflow`` / ``keras``).

Runs every page with such a block (its core blocks too, in order). See
``docs/scripts/run_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


import run_examples as examples  # noqa: E402 - docs/scripts, on sys.path via tests/conftest.py

PAGES = examples.all_blocks()
TF_PAGES = [page for page, blocks in PAGES.items() if examples.page_uses(blocks, "tensorflow")]


@pytest.fixture(scope="module")
def docs_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_scene(tmp_path_factory.mktemp("docs") / "scene")


def test_there_are_tensorflow_and_keras_examples() -> None:
    assert {"docs/howto/keras-tf-data.md", "docs/howto/keras-pydataset.md"} <= set(TF_PAGES)


@pytest.mark.parametrize("page", TF_PAGES)
def test_tf_page_examples_run(page: str, docs_scene: Path, tmp_path: Path) -> None:
    ran = examples.run_page(PAGES[page], "tensorflow", docs_scene, tmp_path / "work")
    assert any(not examples.runnable(block, "core") for block in ran), f"{page}: no TensorFlow/Keras example ran"
