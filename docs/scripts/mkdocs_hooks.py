"""MkDocs hooks (``hooks:`` in mkdocs.yml): the version in the header, the repository address and the citation.

The version is read from ``crossgeo/__init__.py`` without importing the package (the docs
env does not install it; mkdocstrings reads the code statically too), so the site, the
package metadata (``pyproject.toml`` takes it from there) and ``crossgeo --version`` agree.
While CHANGELOG.md has entries under "Unreleased", the header says so: the pages describe
the code in the repository, which is ahead of the last release.

Pages write ``{{ repo_url }}`` where they need the repository's address (the clone command),
so it is written in one place, mkdocs.yml's ``repo_url`` (``tests/core/test_project.py``
keeps pyproject.toml and CITATION.cff equal to it), and ``{{ citation }}`` where the "how to
cite" text goes, built from CITATION.cff.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_VERSION = re.compile(r'^__version__ = "(?P<version>[^"]+)"$', re.M)


def package_version(root: Path = ROOT) -> str:
    """``crossgeo.__version__`` as written in ``crossgeo/__init__.py``."""
    match = _VERSION.search((root / "crossgeo" / "__init__.py").read_text())
    if match is None:
        raise RuntimeError('crossgeo/__init__.py has no line __version__ = "..."')
    return match["version"]


def unreleased(root: Path = ROOT) -> bool:
    """Whether CHANGELOG.md lists changes under "Unreleased" (any line starting with ``-`` there)."""
    text = (root / "CHANGELOG.md").read_text()
    match = re.search(r"^## \[Unreleased\]\n(?P<body>.*?)(?=^## )", text, re.M | re.S)
    return bool(match and re.search(r"^- ", match["body"], re.M))


def site_name(base: str, root: Path = ROOT) -> str:
    """The name shown in the header and the page titles: ``crossgeo 0.1.0`` (``+ unreleased`` while ahead of it)."""
    version = package_version(root)
    return f"{base} {version} + unreleased" if unreleased(root) else f"{base} {version}"


def citation(root: Path = ROOT) -> str:
    """The "how to cite" Markdown: a sentence and a BibTeX entry built from CITATION.cff."""
    import yaml  # mkdocs depends on PyYAML

    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    authors = " and ".join(
        a.get("name") or f"{a.get('given-names', '')} {a.get('family-names', '')}".strip() for a in cff["authors"]
    )
    year = str(cff["date-released"])[:4]
    key = f"crossgeo{year}"
    return "\n".join(
        [
            f"{authors} ({year}). *{cff['title']}* (version {cff['version']}). {cff['repository-code']}",
            "",
            "```bibtex",
            f"@software{{{key},",
            f"  author  = {{{{{authors}}}}},",
            f"  title   = {{{{{cff['title']}}}}},",
            f"  version = {{{cff['version']}}},",
            f"  year    = {{{year}}},",
            f"  url     = {{{cff['repository-code']}}},",
            f"  license = {{{cff['license']}}}",
            "}",
            "```",
        ]
    )


def on_config(config: Any, **_: Any) -> Any:
    config["site_name"] = site_name(config["site_name"])
    return config


def on_page_markdown(markdown: str, config: Any, **_: Any) -> str:
    if "{{ citation }}" in markdown:
        markdown = markdown.replace("{{ citation }}", citation())
    return markdown.replace("{{ repo_url }}", config["repo_url"].rstrip("/"))
