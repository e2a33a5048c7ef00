"""The core imports no deep-learning framework; the public API is where the README says; the
documented install lines work from a clone (crossgeo is not published on PyPI)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def test_import_crossgeo_imports_no_framework() -> None:
    code = (
        "import sys, crossgeo, crossgeo.sampler, crossgeo.windows, crossgeo.masks, crossgeo.io, crossgeo.grid, "
        "crossgeo.config, crossgeo.augment, crossgeo.testing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'tensorflow', 'keras', 'jax'})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_public_api() -> None:
    import crossgeo

    assert issubclass(crossgeo.ConfigError, ValueError) and issubclass(crossgeo.ConfigError, crossgeo.CrossgeoError)
    assert issubclass(crossgeo.ReadError, OSError) and issubclass(crossgeo.OptionError, TypeError)
    assert issubclass(crossgeo.WindowError, ValueError) and issubclass(crossgeo.RasterError, ValueError)
    assert set(crossgeo.__all__) <= set(dir(crossgeo))


# --------------------------------------------------------------------------- install lines

ROOT = Path(__file__).resolve().parents[2]
_PIP = re.compile(r"pip install ([^`\n]+?)(?=`|\s*&&|\s*#|$)", re.M)


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.py"))]


def _install_lines() -> list[tuple[str, list[str]]]:
    found = []
    for page in _pages():
        for match in _PIP.finditer(page.read_text()):
            found.append((f"{page.relative_to(ROOT)}: pip install {match[1]}", shlex.split(match[1])))
    return found


def test_install_lines_work_from_a_clone() -> None:
    """crossgeo is not on PyPI: every documented install of it is the clone (``.``), with real extras,
    and a torch install carries the CPU pin (``-c ci/requirements-torch.txt``)."""
    extras = _extras()
    for page in _pages():
        assert "crossgeo[" not in page.read_text(), f"{page.name} names crossgeo[...], which pip cannot find"
    lines = _install_lines()
    assert len(lines) >= 8, lines
    for where, args in lines:
        assert not any(re.match(r"crossgeo\b", a) for a in args), f"{where}: crossgeo is not published; use '.'"
        for arg in args:
            match = re.fullmatch(r"\.(?:\[(?P<extras>[\w,-]+)\])?", arg)
            if not match:
                continue
            named = set(filter(None, (match["extras"] or "").split(",")))
            assert named <= set(extras), f"{where}: unknown extra(s) {sorted(named - set(extras))}"
            if named & {"torch", "all"}:
                assert "-c ci/requirements-torch.txt" in " ".join(args), f"{where}: add -c ci/requirements-torch.txt"


def test_hydra_extra_matches_the_ci_pins() -> None:
    """The migration how-to needs Hydra: the ``hydra`` extra installs it, and the torch CI file pins the same."""
    hydra = _extras()["hydra"]
    assert any(r.startswith("hydra-core") for r in hydra) and any(r.startswith("omegaconf") for r in hydra)
    ci = [
        line.strip()
        for line in (ROOT / "ci" / "requirements-torch.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(hydra) <= set(ci), f"ci/requirements-torch.txt {ci} should pin the hydra extra {hydra}"
    assert 'pip install ".[hydra]"' in (ROOT / "docs" / "howto" / "migrate.md").read_text()


def _ignored(path: str) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, capture_output=True)
    if done.returncode not in (0, 1):
        pytest.skip(f"not a git checkout: {done.stderr.decode().strip()}")
    return done.returncode == 0


def test_suggested_commands_leave_the_clone_clean() -> None:
    """What the demo and the documented commands write into the working folder is git-ignored."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    written = {
        match[1]
        for page in pages
        for match in re.finditer(r"--(?:out|json) ([\w./-]+)", page.read_text())
        if not match[1].startswith("/") and not match[1].isupper()
    }
    assert {"preview.png", "stats.json"} <= written, written
    outputs = [*written, "crossgeo-demo/image.tif", "crossgeo-demo/windows.index.csv", "crossgeo-demo/preview.png"]
    assert [p for p in outputs if not _ignored(p)] == []
    assert not _ignored("docs/images/preview.png") and not _ignored("README.md")
