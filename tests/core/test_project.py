"""The project basics agree with each other: one version, one set of addresses, a changelog
shown in the docs, a valid citation file and a requirements page naming what CI tests."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import mkdocs_hooks  # docs/scripts, on sys.path via tests/conftest.py
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MKDOCS = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
CITATION = yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_one_version_everywhere() -> None:
    """crossgeo.__version__ is the one place: pyproject reads it, the site header and CITATION.cff show it."""
    import crossgeo

    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "crossgeo.__version__"}
    assert mkdocs_hooks.package_version() == crossgeo.__version__
    assert "docs/scripts/mkdocs_hooks.py" in MKDOCS["hooks"]
    label = f"crossgeo {crossgeo.__version__}" + (" + unreleased" if mkdocs_hooks.unreleased() else "")
    assert mkdocs_hooks.on_config({"site_name": MKDOCS["site_name"]})["site_name"] == label
    assert str(CITATION["version"]) == crossgeo.__version__


def test_the_changelog_covers_the_version_and_is_in_the_docs() -> None:
    import crossgeo

    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", changelog, flags=re.M)
    assert released and released[0] == crossgeo.__version__, released
    assert "## [Unreleased]" in changelog
    assert str(CITATION["date-released"]) in changelog  # the release date of the cited version
    # The docs page includes the file itself (pymdownx.snippets, a missing file fails the build).
    page = (ROOT / "docs" / "changelog.md").read_text()
    assert '--8<-- "CHANGELOG.md"' in page
    snippets = next(e for e in MKDOCS["markdown_extensions"] if isinstance(e, dict) and "pymdownx.snippets" in e)
    assert snippets["pymdownx.snippets"]["check_paths"] is True


def test_addresses_agree() -> None:
    """repo_url / site_url are written in mkdocs.yml and repeated in pyproject and CITATION.cff."""
    urls = PYPROJECT["project"]["urls"]
    assert urls["Repository"] == urls["Homepage"] == MKDOCS["repo_url"] == CITATION["repository-code"]
    assert urls["Documentation"] == MKDOCS["site_url"] == CITATION["url"]
    assert urls["Changelog"] == MKDOCS["site_url"] + "changelog/"


def test_licence_and_citation() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "crossgeo contributors" in licence
    assert PYPROJECT["project"]["license"] == {"text": "MIT"} and CITATION["license"] == "MIT"
    assert CITATION["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "type"} <= set(CITATION)
    assert all("name" in a or "family-names" in a for a in CITATION["authors"])


def test_requirements_page_names_what_ci_tests() -> None:
    page = (ROOT / "docs" / "requirements.md").read_text()
    pin = re.search(r"^torch==(\S+)$", (ROOT / "ci" / "requirements-torch.txt").read_text(), flags=re.M)
    assert pin and f"torch **{pin[1]}**" in page, "docs/requirements.md must name the torch version CI pins"
    assert f"Python {PYPROJECT['project']['requires-python']}" in page
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("torch", "tensorflow", "augment", "cli", "hydra"):
        assert f"| `{extra}` |" in page, extra
        for requirement in extras[extra]:
            name, _, spec = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)", requirement).groups()
            assert f"{name} `{spec}`" in page, requirement
