"""Run a tutorial page the way a reader does: a fresh virtual environment, the page's install line, the page's code.

    python docs/scripts/run_tutorial.py [PAGE...] [--keep DIR]

With no page named, every tutorial runs: ``docs/getting-started.md`` and the gallery's pages
(``docs/tutorials/*.md``). For each page:

1. a new virtual environment is created (``python -m venv``, no system site-packages), so
   nothing installed elsewhere can hide a package the page forgets;
2. the page's install commands are run as written: every line of its ``bash`` block whose first
   line is ``# install, in the clone's folder`` that starts with ``pip install``, from the repository root (the
   reader's clone), with that environment's pip;
3. every ``python`` and ``console`` block of the page runs in that environment, in order, in
   one namespace, in a fresh copy of the example folder (``docs/scripts/run_examples.py
   --reader``): ``# requires:`` markers are ignored (the install line promised everything) and
   each shown output (```` ```text title="Output" ````) is checked against what its block prints,
   and each figure the page shows from ``docs/images/tutorials/`` must have been drawn by its code.

The environment of the run holds only ``PATH``, ``HOME``, the pip configuration and a
temporary folder: no ``KERAS_BACKEND``, ``PYTHONPATH`` or ``CROSSGEO_*`` the page does not set
itself. The ``tutorials`` tox env runs it; the pip cache is kept warm by the other envs, and
pages that install torch pin its CPU build with ``-c ci/requirements-torch.txt`` on their install
line (an unpinned torch resolves to multi-GB CUDA wheels).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
MARK = "# install, in the clone's folder"
#: Passed through to the reader's shell: where pip finds packages (its configuration, proxies)
#: and nothing that chooses a backend or a code path.
PASSED = (
    "HOME",
    "PATH",
    "LANG",
    "TMPDIR",
    "PIP_CONFIG_FILE",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_CACHE_DIR",
    "PIP_CONSTRAINT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "CROSSGEO_REAL_DATA",
)


def tutorials() -> list[Path]:
    """Every tutorial page: Getting started, then the gallery's pages (docs/tutorials/) by name."""
    return [ROOT / "docs" / "getting-started.md", *sorted((ROOT / "docs" / "tutorials").glob("*.md"))]


def install_lines(page: Path) -> list[str]:
    """The page's ``pip install`` commands: the ``bash`` block whose first line is ``# the install line``."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import run_examples
    finally:
        sys.path.remove(str(SCRIPTS))
    for block in run_examples.blocks_of(page, ROOT):
        lines = block.code.strip().splitlines()
        if block.lang == "bash" and lines and lines[0].strip() == MARK:
            commands = [line.split("  #")[0].strip() for line in lines[1:] if line.strip().startswith("pip install")]
            if commands:
                return commands
    raise SystemExit(f"{page}: no ```bash block starting with '{MARK}' and holding a `pip install` line")


def reader_env(folder: Path) -> dict[str, str]:
    """The environment a reader's shell has after activating the new venv (nothing else of ours)."""
    env = {name: os.environ[name] for name in PASSED if name in os.environ}
    env["VIRTUAL_ENV"] = str(folder)
    env["PATH"] = os.pathsep.join([str(folder / "bin"), env.get("PATH", os.defpath)])
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations' network check: not a behaviour switch
    return env


def run(page: Path, folder: Path) -> float:
    """Create the venv in ``folder``, install, run the page; returns the seconds taken."""
    start = time.perf_counter()
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    env = reader_env(folder)
    python = str(folder / "bin" / "python")
    for command in install_lines(page):
        argv = [python, "-m", *shlex.split(command)]
        print(f"[{page.name}] $ {command}", flush=True)
        subprocess.run(argv, cwd=ROOT, env=env, check=True)
    installed = time.perf_counter() - start
    print(f"[{page.name}] installed in {installed:.0f} s; running the page", flush=True)
    subprocess.run(
        [python, str(SCRIPTS / "run_examples.py"), "--reader", str(page.relative_to(ROOT))],
        cwd=ROOT,
        env=env,
        check=True,
    )
    total = time.perf_counter() - start
    print(f"[{page.name}] ran as a reader in {total:.0f} s (install {installed:.0f} s)", flush=True)
    return total


def main(argv: list[str]) -> int:
    keep = None
    if "--keep" in argv:
        at = argv.index("--keep")
        keep, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2 :]
    pages = [Path(a).resolve() for a in argv] or tutorials()
    start = time.perf_counter()
    seconds: dict[Path, float] = {}
    failed: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="crossgeo-tutorial-") as tmp:
        for page in pages:  # every page runs, so one failure does not hide another
            folder = (keep or Path(tmp)) / f"venv-{page.stem}"
            page_start = time.perf_counter()
            try:
                run(page, folder)
            except subprocess.CalledProcessError as error:
                print(f"[{page.name}] FAILED: {shlex.join(map(str, error.cmd))} exited {error.returncode}", flush=True)
                failed.append(page)
            seconds[page] = time.perf_counter() - page_start
            if keep is None:
                shutil.rmtree(folder, ignore_errors=True)  # a torch venv is ~1 GB
    for page, taken in seconds.items():
        status = "FAILED" if page in failed else "ok"
        print(f"  {taken:5.0f} s  {status:<6} {page.relative_to(ROOT)}")
    total = time.perf_counter() - start
    print(f"{len(pages) - len(failed)} of {len(pages)} tutorial(s) ran as a reader in {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
