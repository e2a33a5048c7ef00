"""MkDocs hooks (``hooks:`` in mkdocs.yml): the site header shows the package version.

The version is read from ``crossgeo/__init__.py`` without importing the package (the docs
env does not install it; mkdocstrings reads the code statically too), so the site, the
package metadata (``pyproject.toml`` takes it from there) and ``crossgeo --version`` agree.
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


def site_name(base: str, root: Path = ROOT) -> str:
    """The name shown in the header and the page titles: ``crossgeo 0.1.0``."""
    return f"{base} {package_version(root)}"


def on_config(config: Any, **_: Any) -> Any:
    config["site_name"] = site_name(config["site_name"])
    return config
