"""Documentation examples that need TensorFlow or Keras (``# requires: tensorflow`` / ``keras``).

Runs every page with such a block (its core blocks too, in order). See
``docs/scripts/run_examples.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_examples() -> Any:
    path = ROOT / "docs" / "scripts" / "run_examples.py"
    spec = importlib.util.spec_from_file_location("crossgeo_docs_run_examples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


examples = _load_examples()
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
