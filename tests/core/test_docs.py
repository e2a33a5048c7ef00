"""The documentation stays true: its examples run and its reference tables match the code.

The example runner lives in ``docs/scripts/run_examples.py`` (it also runs on its own);
see its docstring for the ``# requires:`` markers. This file runs the examples that need no
deep-learning framework; ``tests/torch_adapter/test_torch_docs.py`` and
``tests/tf_adapter/test_tf_docs.py`` run the others.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


import cli_reference  # noqa: E402 - docs/scripts, on sys.path via tests/conftest.py
import config_reference  # noqa: E402
import run_examples as examples  # noqa: E402
import troubleshooting  # noqa: E402

PAGES = examples.all_blocks()
CORE_PAGES = [page for page, blocks in PAGES.items() if examples.page_uses(blocks, "core")]


@pytest.fixture(scope="module")
def docs_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples.write_scene(tmp_path_factory.mktemp("docs") / "scene")


@pytest.mark.parametrize("page", CORE_PAGES)
def test_page_examples_run(page: str, docs_scene: Path, tmp_path: Path) -> None:
    if examples.chips_missing(PAGES[page]):
        pytest.skip(examples.chips_missing(PAGES[page]))
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
        envs = ("reader",) if block.page.startswith(examples.TUTORIALS) else ("core", "torch", "tensorflow", "ray")
        assert any(examples.runnable(block, env) for env in envs), str(block)
    assert "README.md" in CORE_PAGES
    assert not any(page.startswith(examples.TUTORIALS) for page in CORE_PAGES)  # gallery pages run as a reader only


def test_pages_are_in_the_navigation_and_images_exist() -> None:
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT / "docs").as_posix()
        assert f" {relative}" in mkdocs, f"{relative} is not in mkdocs.yml's nav"
    for page in examples.pages():
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / image).is_file(), f"{page.name}: missing image {image}"


# --------------------------------------------------------------------------- configuration table


def test_configuration_table_is_generated_from_the_option_list() -> None:
    assert config_reference.current() == config_reference.generated(), (
        "docs/reference/configuration.md is out of date: run python docs/scripts/config_reference.py"
    )


def test_sampler_api_entry_lists_every_option() -> None:
    """PatchSampler's API entry shows each option's Python type, default and description (issue #27.4)."""
    assert config_reference.api_current() == config_reference.api_generated(), (
        "docs/reference/api-core.md is out of date: run python docs/scripts/config_reference.py"
    )
    section = config_reference.api_current()
    from crossgeo.options import SAMPLER_OPTIONS

    for option in SAMPLER_OPTIONS:
        assert f"| `{option.name}` |" in section and f"configuration.md#option-{option.name})" in section


def test_the_sampler_signature_is_the_option_list() -> None:
    """PatchSampler's parameters (written out, so the API reference reads them statically) are SamplerOptions'
    fields: the same names in the same order, defaults and type annotations; required ones positional."""
    import attrs

    from crossgeo import PatchSampler
    from crossgeo.options import REQUIRED, SamplerOptions

    parameters = list(inspect.signature(PatchSampler.__init__).parameters.values())
    assert parameters[0].name == "self" and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD
    fields = attrs.fields(SamplerOptions)
    assert [p.name for p in parameters[1:-1]] == [f.name for f in fields]
    for parameter, field in zip(parameters[1:-1], fields):
        required = field.default is attrs.NOTHING
        assert parameter.default is REQUIRED if required else parameter.default == field.default, field.name
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if required else inspect.Parameter.KEYWORD_ONLY
        assert parameter.kind is kind, field.name
        assert parameter.annotation == field.type, field.name


def test_configuration_table_covers_the_original_keys() -> None:
    """Every key of the original's configuration table is documented for the dataset."""
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


# --------------------------------------------------------------------------- troubleshooting page


def test_troubleshooting_page_is_generated_from_the_bad_input_catalogue() -> None:
    assert troubleshooting.current() == troubleshooting.generated(), (
        "docs/troubleshooting.md is out of date: run python docs/scripts/troubleshooting.py"
    )


def test_every_catalogue_case_has_a_linkable_entry_with_its_message() -> None:
    """Each case of tests/core/test_bad_input.py's CASES is on the page: anchor, error type, message, fix."""
    import test_bad_input

    page = troubleshooting.PAGE.read_text()
    table = troubleshooting.cases()
    assert [c.id for c in table] == [c[0] for c in test_bad_input.CASES]
    assert len({c.anchor for c in table}) == len(table), "two cases share an anchor"
    for case, (_, _, error, pattern) in zip(table, test_bad_input.CASES):
        assert case.error == error.__name__ and case.pattern == pattern
        section = page.split(f"{{#{case.anchor}}}\n", 1)[1].split("\n### ", 1)[0]
        assert f"`{error.__name__}`" in section and "**Fix:**" in section, case.id
        assert " ".join(troubleshooting.readable(pattern).split()) in " ".join(section.split()), case.id


def test_getting_started_notebook_is_generated_from_its_page() -> None:
    import notebook

    assert notebook.NOTEBOOK.read_text() == notebook.generated(), (
        "docs/getting-started.ipynb is out of date: run python docs/scripts/notebook.py"
    )
    cells = json.loads(notebook.generated())["cells"]
    code = [("".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    assert any("-m crossgeo windows" in c for c in code) and any("keras.Sequential" in c for c in code)
    assert not any("# requires:" in c for c in code)


# --------------------------------------------------------------------------- shown outputs


def test_shown_outputs_are_checked_with_decimals_and_timings_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's shown output must be what its block prints; losses and timings may differ (issue #27.3)."""
    monkeypatch.delenv("CROSSGEO_UPDATE_OUTPUTS", raising=False)
    code = examples.Block("page.md", 1, "python", "print(1)\n")
    shown = examples.Block("page.md", 5, "text", "96 training windows, last loss 0.865\n", '```text title="Output"')
    assert shown.is_output and not examples.Block("p.md", 1, "text", "", "```text").is_output
    examples._check_output(code, shown, "96 training windows, last loss 0.412\n", tmp_path)
    examples._check_output(code, shown, "96 training windows, last loss 1.5e-03\n", tmp_path)
    with pytest.raises(AssertionError, match="update-outputs"):
        examples._check_output(code, shown, "95 training windows, last loss 0.865\n", tmp_path)
    timing = examples.Block("page.md", 9, "text", "  9 files in 19.8 s, 164 patches/s\n", '```text title="Output"')
    examples._check_output(code, timing, "  9 files in 3 s, 20 patches/s\n", tmp_path)
    # A page's block is read dedented: a table printed with a common leading space still matches.
    table = examples.Block("page.md", 13, "text", "index  building\n   43     0.393\n", '```text title="Output"')
    examples._check_output(code, table, " index  building\n    43     0.401\n", tmp_path)


def test_updating_outputs_rewrites_stale_numbers_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--update-outputs regenerates every shown output, its decimals too: a masked comparison had kept
    Getting started's "pixel accuracy 0.706, mean IoU 0.177" beside the CLI's 0.933 / 0.706 for the
    same prediction (issue #23, new user 8: the page must show the model that learns)."""
    monkeypatch.setenv("CROSSGEO_UPDATE_OUTPUTS", "1")
    monkeypatch.setattr(examples, "OUTPUTS", {})
    code = examples.Block("page.md", 1, "python", "print(1)\n")
    shown = examples.Block("page.md", 5, "text", "pixel accuracy 0.706, mean IoU 0.177\n", '```text title="Output"')
    examples._check_output(code, shown, "pixel accuracy 0.706, mean IoU 0.177\n", tmp_path)
    assert examples.OUTPUTS == {}  # the same text: nothing to rewrite
    examples._check_output(code, shown, "pixel accuracy 0.933, mean IoU 0.706\n", tmp_path)
    assert examples.OUTPUTS == {("page.md", 5): "pixel accuracy 0.933, mean IoU 0.706\n"}


def test_every_getting_started_step_shows_its_output() -> None:
    """Each python/console step of Getting started is followed by its shown output (but the preview's picture)."""
    blocks = examples.blocks_of(ROOT / "docs" / "getting-started.md")
    steps = [i for i, b in enumerate(blocks) if b.lang in ("python", "console")]
    without = [str(blocks[i]) for i in steps if i + 1 >= len(blocks) or not blocks[i + 1].is_output]
    assert len(without) <= 1, without  # the preview writes a picture, shown as an image
    assert all(blocks[i + 1].code.strip() for i in steps if i + 1 < len(blocks) and blocks[i + 1].is_output)


def test_the_tutorial_runner_uses_the_pages_install_line_and_none_of_our_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """tox -e tutorials installs what Getting started says, and passes no KERAS_BACKEND/CROSSGEO_* (issue #27.1)."""
    import run_tutorial

    lines = run_tutorial.install_lines(ROOT / "docs" / "getting-started.md")
    assert lines and all(line.startswith("pip install ") for line in lines)
    assert any(".[" in line and "torch" in line for line in lines)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    monkeypatch.setenv("CROSSGEO_REQUIRE", "torch")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    env = run_tutorial.reader_env(tmp_path / "venv")
    assert not {"KERAS_BACKEND", "CROSSGEO_REQUIRE", "PYTHONPATH"} & set(env)
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "venv" / "bin")
    assert re.search(r"^envlist = .*\btutorials\b", (ROOT / "tox.ini").read_text(), re.M)


def test_every_gallery_tutorial_runs_as_a_reader_and_has_a_thumbnail() -> None:
    """Each page of docs/tutorials/ installs from its own line, shows outputs and a figure its code draws,
    is run by tox -e tutorials and has a card with a thumbnail on the gallery page (issue #27.7)."""
    import run_tutorial

    pages = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
    assert {p.stem for p in pages} >= {"band-files", "time-series", "stac", "chips", "ray"}
    assert run_tutorial.tutorials() == [ROOT / "docs" / "getting-started.md", *pages]
    gallery = (ROOT / "docs" / "tutorials.md").read_text()
    tox = (ROOT / "tox.ini").read_text()
    assert "commands = python docs/scripts/run_tutorial.py {posargs}" in tox  # no page named: every tutorial
    for page in pages:
        lines = run_tutorial.install_lines(page)
        assert lines and all(line.startswith("pip install ") for line in lines), page.name
        if "torch" in " ".join(lines):  # an unpinned torch downloads multi-GB CUDA wheels
            assert all("-c ci/requirements-torch.txt" in line for line in lines), page.name
        blocks = examples.blocks_of(page)
        assert sum(b.is_output and bool(b.code.strip()) for b in blocks) >= 1, page.name
        figures = examples.figures_of(page)
        assert figures and all((examples.FIGURES / name).is_file() for name in figures), page.name
        assert f"](tutorials/{page.name})" in gallery, f"{page.name} has no card in docs/tutorials.md"
        assert f"](images/tutorials/{figures[0]})](tutorials/{page.name})" in gallery, f"{page.name}: no thumbnail"
