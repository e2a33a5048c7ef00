"""The documentation stays true: its examples run and its reference tables match the code.

The example runner lives in ``docs/scripts/run_examples.py`` (it also runs on its own);
see its docstring for the ``# requires:`` markers. This file runs the examples that need no
deep-learning framework; ``tests/torch_adapter/test_torch_docs.py`` and
``tests/tf_adapter/test_tf_docs.py`` run the others.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


import cli_reference  # noqa: E402 - docs/scripts, on sys.path via tests/conftest.py
import run_examples as examples  # noqa: E402

PAGES = examples.all_blocks()
CORE_PAGES = [page for page, blocks in PAGES.items() if examples.page_uses(blocks, "core")]


@pytest.fixture(scope="module")
def docs_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_scene(tmp_path_factory.mktemp("docs") / "scene")


@pytest.mark.parametrize("page", CORE_PAGES)
def test_page_examples_run(page: str, docs_scene: Path, tmp_path: Path) -> None:
    ran = examples.run_page(PAGES[page], "core", docs_scene, tmp_path / "work")
    assert ran, f"{page}: no example ran"


def test_readme_first_example_runs_on_the_demo_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first example reads what ``crossgeo demo`` writes (``crossgeo-demo/``), with its colours."""
    import numpy as np

    from crossgeo import demo

    demo.write_demo_scene(tmp_path / "crossgeo-demo", with_augmentation=False)
    first = next(block for block in PAGES["README.md"] if block.lang == "python")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(first.code, str(first), "exec"), namespace)
    sampler = namespace["sampler"]
    assert sampler.patch_size == demo.PATCH_SIZE and len(sampler) == (demo.TILES * 256 // demo.PATCH_SIZE) ** 2
    assert sorted(map(list, sampler.color_map)) == sorted(demo.COLOR_MAP)
    # Every class of the demo's landscape is decoded: a wrong colour would leave a class empty.
    classes = set().union(*(np.unique(sampler[i].mask).tolist() for i in range(len(sampler))))
    assert classes == {cls for cls, _, _ in demo.CLASSES}


def test_every_block_is_tested_somewhere() -> None:
    """Each python block has valid markers and runs in the core, torch or tensorflow env."""
    python_blocks = [b for blocks in PAGES.values() for b in blocks if b.lang == "python"]
    assert len(python_blocks) >= 25
    for block in python_blocks:
        assert any(examples.runnable(block, env) for env in ("core", "torch", "tensorflow")), str(block)
    assert "README.md" in CORE_PAGES


def test_pages_are_in_the_navigation_and_images_exist() -> None:
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT / "docs").as_posix()
        assert f" {relative}" in mkdocs, f"{relative} is not in mkdocs.yml's nav"
    for page in examples.pages():
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / image).is_file(), f"{page.name}: missing image {image}"


# --------------------------------------------------------------------------- configuration table


def _defaults(parameters: Any) -> dict[str, Any]:
    return {
        name: examples.REQUIRED if p.default is inspect.Parameter.empty else p.default
        for name, p in parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def sampler_options() -> dict[str, Any]:
    from crossgeo import PatchSampler

    return _defaults(inspect.signature(PatchSampler.__init__).parameters)


def dataset_options_from_source() -> dict[str, Any]:
    """MBTilesCropsGeoTifMaskDataset's options, read from crossgeo/torch.py without importing torch.

    Its explicit keywords, plus the PatchSampler options it passes through ``**options``
    (all of PatchSampler's except ``image_path``, which it calls ``image_mbtiles_path``).
    """
    tree = ast.parse((ROOT / "crossgeo" / "torch.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MBTilesCropsGeoTifMaskDataset")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args
    options: dict[str, Any] = {}
    positional = args.args[1:]
    defaults = [examples.REQUIRED] * (len(positional) - len(args.defaults)) + [
        ast.literal_eval(d) for d in args.defaults
    ]
    options.update({a.arg: d for a, d in zip(positional, defaults)})
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        options[arg.arg] = examples.REQUIRED if default is None else ast.literal_eval(default)
    if args.kwarg is not None:
        options.update({k: v for k, v in sampler_options().items() if k != "image_path" and k not in options})
    return options


def check_table(table: dict[str, Any], code: dict[str, Any], column: str) -> None:
    documented = {name: row.default for name, row in table.items() if getattr(row, column)}
    missing = sorted(set(code) - set(documented))
    extra = sorted(set(documented) - set(code))
    assert not missing, f"options missing from docs/reference/configuration.md ({column}): {missing}"
    assert not extra, f"docs/reference/configuration.md lists options the code does not take ({column}): {extra}"
    wrong = {k: (documented[k], code[k]) for k in code if documented[k] != code[k]}
    assert not wrong, f"defaults differ (docs, code) in the {column} column: {wrong}"


def test_configuration_table_matches_patch_sampler() -> None:
    check_table(examples.config_table(), sampler_options(), "sampler")


def test_configuration_table_matches_dataset_signature() -> None:
    check_table(examples.config_table(), dataset_options_from_source(), "dataset")


def test_configuration_table_covers_the_original_keys() -> None:
    """Every key of the original's configuration table (its spec) is documented for the dataset."""
    spec = ROOT.parent / "shared" / "spec" / "mbtiles-crops-dataset.md"
    if not spec.exists():
        pytest.skip("the original's spec is not beside the repository")
    section = spec.read_text().split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| (\w+) \|", section, flags=re.M)
    table = examples.config_table()
    assert {k for k in keys if k != "Parameter"} <= {name for name, row in table.items() if row.dataset}


# --------------------------------------------------------------------------- CLI reference


def test_cli_reference_matches_the_command() -> None:
    assert cli_reference.current() == cli_reference.generated(), (
        "docs/reference/cli.md is out of date: run python docs/scripts/cli_reference.py"
    )


# --------------------------------------------------------------------------- wording

#: "seed" for the original project (its spec, keys, format) rather than a random seed.
_SEED_AS_ORIGINAL = re.compile(r"\bseed(?:'s|\s+spec|-style|\s+format|\s+library)\b", re.I)
#: Written by the CLI's owners: docs/reference/cli.md is generated from crossgeo/cli.py's parser.
_NOT_YET = {"docs/reference/cli.md", "crossgeo/cli.py", "crossgeo/demo.py"}


def test_seed_means_a_random_seed_only() -> None:
    """User-facing text calls the original project the original `MBTilesCropsGeoTifMaskDataset`."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "crossgeo").glob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        if path.relative_to(ROOT).as_posix() not in _NOT_YET
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _SEED_AS_ORIGINAL.search(line)
    ]
    assert not found, "say 'the original `MBTilesCropsGeoTifMaskDataset`' instead:\n" + "\n".join(found)
