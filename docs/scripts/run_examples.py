"""Run the code examples of the documentation (and of README.md) as tests.

    python docs/scripts/run_examples.py [core|torch|tensorflow]...

How examples are found and run:

* Every fenced ``python`` block of ``README.md`` and ``docs/**/*.md`` is an example. The
  blocks of one page run in order in one namespace (like a notebook), inside a fresh copy of
  the example folder written by ``docs/scripts/docs_scene.py`` (``imagery.mbtiles``,
  ``masks/mask.vrt``, ``crops/windows.csv``, ...), so pages use plain relative paths.
* A block whose first line is ``# requires: NAME[, NAME]`` needs more than the core:
  ``torch``, ``tensorflow`` / ``keras`` (the TensorFlow env), ``ray`` (the Ray env), ``chips``
  (zarr and webdataset: the core, torch and Ray envs; `chips_missing` says when they are
  not installed, and the tests skip such pages then) or ``real-data`` (the real
  rasters of ``../shared/data/real``, linked as ``real/``; skipped when absent). The core
  test runs the blocks that need no framework; ``tests/torch_adapter/test_torch_docs.py`` and
  ``tests/tf_adapter/test_tf_docs.py`` run the pages that use their framework (with the
  page's core blocks before them).
* In ``console`` blocks, each ``$ crossgeo ...`` line is run through ``crossgeo.cli.main``
  and must exit 0 (core test; a console block whose first line is ``# requires: torch`` runs
  in the torch test instead, e.g. ``crossgeo predict`` with a TorchScript model).
* ``yaml`` blocks whose ``_target_`` is a ``crossgeo.`` class are instantiated with Hydra
  (torch test), the way a training script would.

Other blocks (``bash``, ``text``, ``diff``, ``yaml`` of the original library) are shown, not run.

The pages of ``docs/tutorials/`` (the gallery) run only as a reader runs them
(``docs/scripts/run_tutorial.py``: a new environment made from the page's install line), never in
the test environments. A figure on such a page (``![...](../images/tutorials/NAME.png)``) is one
the page's code draws: it must have written ``NAME.png`` in its folder by the end of the run, and
``--reader --update-outputs`` copies it into ``docs/images/tutorials/``.

Shown output: a ``text`` block whose fence line reads ```` ```text title="Output" ```` right after
a ``python`` or ``console`` block is that block's output, as a reader sees it: what it printed
(for a console block, what its commands printed). Running the page checks it: the text must
equal what the block prints now, except that decimal numbers (losses, accuracies, timings)
only need to be numbers. ``python docs/scripts/run_examples.py --update-outputs [FRAMEWORK]...``
rewrites every shown output from a fresh run, so a page's outputs are generated, never typed.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import shlex
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
FRAMEWORKS = {
    "torch": {"torch", "chips"},
    "tensorflow": {"tensorflow", "keras"},
    "core": {"chips"},
    "ray": {"ray", "chips"},
}
KNOWN = {"torch", "tensorflow", "keras", "real-data", "chips", "ray"}
TUTORIALS = "docs/tutorials/"
"""The gallery's pages: run as a reader only (see the module docstring)."""
FIGURES = ROOT / "docs" / "images" / "tutorials"
_FIGURE = re.compile(r"!\[[^\]]*\]\((?:\.\./)*images/tutorials/(?P<name>[\w.-]+\.png)\)")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<lang>[\w+-]*)[^\n]*$")
_REQUIRES = re.compile(r"^#\s*requires:\s*(?P<names>.+)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: str
    line: int
    lang: str
    code: str
    fence: str = ""
    """The whole fence line (``title="Output"`` marks a shown output)."""

    @property
    def is_output(self) -> bool:
        return self.lang == "text" and 'title="Output"' in self.fence

    @property
    def requires(self) -> frozenset[str]:
        first = self.code.lstrip().split("\n", 1)[0].strip()
        match = _REQUIRES.match(first)
        if not match:
            return frozenset()
        names = frozenset(n.strip() for n in match["names"].split(",") if n.strip())
        unknown = names - KNOWN
        if unknown:
            raise ValueError(f"{self.page}:{self.line}: unknown '# requires:' name(s) {sorted(unknown)}")
        return names

    @property
    def frameworks(self) -> frozenset[str]:
        return self.requires - {"real-data"}

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang})"


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks_of(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced code blocks of a page (indented fences inside admonitions/tabs too)."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        code = textwrap.dedent("\n".join(body)) + "\n"
        out.append(Block(str(path.relative_to(root)), i + 1, lang, code, lines[i].strip()))
        i = j + 1
    return out


def all_blocks(root: Path = ROOT) -> dict[str, list[Block]]:
    return {str(p.relative_to(root)): blocks_of(p, root) for p in pages(root)}


def runnable(block: Block, framework: str) -> bool:
    """Whether ``block`` runs in the env of ``framework`` ("core", "torch" or "tensorflow").

    ``"reader"`` (docs/scripts/run_tutorial.py): every python block and crossgeo command,
    whatever it requires, in the environment the page's own install line made.
    """
    if framework == "reader":
        return block.lang == "python" or (
            block.lang == "console" and any(line.startswith("$ crossgeo") for line in block.code.splitlines())
        )
    if block.page.startswith(TUTORIALS):
        return False
    if block.lang == "python":
        return block.frameworks <= FRAMEWORKS[framework]
    if block.lang == "console":
        commands = any(line.startswith("$ crossgeo") for line in block.code.splitlines())
        if not block.frameworks:
            return commands and framework == "core"
        return commands and framework != "core" and block.frameworks <= FRAMEWORKS[framework]
    if block.lang == "yaml":
        return framework == "torch" and "_target_: crossgeo." in block.code
    return False


def chips_missing(blocks: Iterable[Block]) -> str:
    """Why a page's ``# requires: chips`` blocks cannot run here ("" when they can, or there are none)."""
    import importlib.util

    if not any("chips" in b.requires for b in blocks):
        return ""
    missing = [m for m in ("zarr", "webdataset") if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (in a clone: `pip install '.[chips,webdataset]'`)" if missing else ""


def page_uses(blocks: Iterable[Block], framework: str) -> bool:
    """True when the page has a block that is new in ``framework``'s env."""
    if framework == "core":
        return any(runnable(b, "core") for b in blocks)
    return any(runnable(b, framework) and not runnable(b, "core") for b in blocks)


def real_data_available(scene: Path) -> bool:
    return (scene / "real" / "RGB.byte.tif").exists()


def write_scene(folder: Path) -> Path:
    """The example folder (see docs/scripts/docs_scene.py)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from docs_scene import write_docs_scene
    finally:
        sys.path.remove(str(SCRIPTS))
    return write_docs_scene(folder)


def copy_scene(scene: Path, workdir: Path) -> Path:
    """A fresh copy of the example folder (rasters linked, the rest copied; ``real/`` linked)."""
    shutil.copytree(scene, workdir, symlinks=True, dirs_exist_ok=True)
    return workdir


def _run_console(block: Block) -> None:
    from crossgeo.cli import main

    for line in block.code.splitlines():
        if not line.startswith("$ crossgeo"):
            continue
        argv = shlex.split(line[2:])[1:]
        status = main(argv)
        if status != 0:
            raise AssertionError(f"{block}: `{line[2:]}` exited {status}")


def _run_yaml(block: Block) -> None:
    import yaml
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    data = yaml.safe_load(block.code)
    targets = [data] if "_target_" in data else [v for v in data.values() if isinstance(v, dict) and "_target_" in v]
    for node in targets:
        dataset = instantiate(OmegaConf.create(node))
        if len(dataset) == 0 or set(dataset[0]) < {"image", "mask"}:
            raise AssertionError(f"{block}: {node['_target_']} gave no usable samples")


_DECIMAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")
#: Timings and rates vary from run to run even when whole: "12 s", "164 patches/s".
_TIMING = re.compile(r"\b\d[\d,]*(?:\.\d+)?(?= ?(?:s|ms|min)\b| ?[\w ]*/s\b)")


def comparable(text: str) -> str:
    """Output as the check compares it: decimals and timings masked, trailing spaces, blank ends and the
    indent common to every line dropped (a page's block is read dedented: a table printed with a leading
    space, as pandas' ``to_string`` prints one, shows without it)."""
    text = textwrap.dedent(text.strip("\n"))
    lines = [_DECIMAL.sub("<decimal>", _TIMING.sub("<time>", line)).rstrip() for line in text.splitlines()]
    return "\n".join(lines)


#: Shown outputs found different from a fresh run, by (page, line of the output block): the new text.
OUTPUTS: dict[tuple[str, int], str] = {}


def _check_output(block: Block, shown: Block | None, printed: str, workdir: Path) -> None:
    """Compare ``printed`` with the output block ``shown`` after ``block`` (remembered for --update-outputs)."""
    if shown is None:
        return
    printed = printed.replace(str(workdir) + os.sep, "").replace(str(workdir), ".")
    if os.environ.get("CROSSGEO_UPDATE_OUTPUTS") == "1":
        # Rewrite every output that is not exactly the run's, so the decimals shown are real ones too.
        if printed.strip("\n") != shown.code.strip("\n"):
            OUTPUTS[(shown.page, shown.line)] = printed
        return
    if comparable(printed) == comparable(shown.code):
        return
    OUTPUTS[(shown.page, shown.line)] = printed
    diff = "\n".join(
        difflib.unified_diff(comparable(shown.code).splitlines(), comparable(printed).splitlines(), "shown", "printed")
    )
    raise AssertionError(
        f"the output shown at {shown} is not what {block} prints now (decimals are masked):\n{diff}\n"
        "Run python docs/scripts/run_examples.py --update-outputs core torch tensorflow to regenerate it."
    )


def update_outputs(root: Path = ROOT) -> int:
    """Write the outputs collected in `OUTPUTS` into their pages; returns how many changed."""
    by_page: dict[str, list[tuple[int, str]]] = {}
    for (page, line), text in OUTPUTS.items():
        by_page.setdefault(page, []).append((line, text))
    for page, changes in by_page.items():
        path = root / page
        lines = path.read_text().splitlines()
        for line, text in sorted(changes, reverse=True):  # bottom up: earlier line numbers stay valid
            start = line - 1
            indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
            fence = lines[start].strip().split("text")[0]
            end = next(j for j in range(start + 1, len(lines)) if lines[j].strip() == fence)
            body = [(indent + t).rstrip() if t.strip() else "" for t in text.strip("\n").splitlines()]
            lines[start + 1 : end] = body
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {len(changes)} output(s) in {page}")
    return len(OUTPUTS)


def run_page(blocks: list[Block], framework: str, scene: Path, workdir: Path) -> list[Block]:
    """Run a page's blocks for ``framework`` inside a copy of ``scene``; returns those run.

    A block's printed output is compared with the shown output right after it, if any.
    """
    from crossgeo import io as crossgeo_io

    real = real_data_available(scene)
    copy_scene(scene, workdir)
    gdal_options = dict(crossgeo_io.GDAL_OPTIONS)  # pages may edit them, as the remote page shows
    namespace: dict[str, Any] = {"__name__": "__main__"}
    ran: list[Block] = []
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for position, block in enumerate(blocks):
            if not runnable(block, framework) or ("real-data" in block.requires and not real):
                continue
            following = blocks[position + 1] if position + 1 < len(blocks) else None
            shown = following if following is not None and following.is_output else None
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):
                    if block.lang == "python":
                        code = compile(block.code, f"{block.page}:{block.line}", "exec")
                        exec(code, namespace)
                    elif block.lang == "console":
                        _run_console(block)
                    else:
                        _run_yaml(block)
            except BaseException as error:
                sys.stdout.write(printed.getvalue())
                raise AssertionError(f"the example at {block} failed: {type(error).__name__}: {error}") from error
            _check_output(block, shown, printed.getvalue(), workdir)
            ran.append(block)
    finally:
        os.chdir(previous)
        namespace.clear()
        crossgeo_io.GDAL_OPTIONS.clear()
        crossgeo_io.GDAL_OPTIONS.update(gdal_options)
    return ran


def main(argv: list[str]) -> int:
    if argv[:1] == ["--reader"]:
        return run_as_reader([Path(page) for page in argv[1:]])
    update = "--update-outputs" in argv
    if update:
        os.environ["CROSSGEO_UPDATE_OUTPUTS"] = "1"
    frameworks = [a for a in argv if not a.startswith("--")] or ["core"]
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "scene")
        total = 0
        for framework in frameworks:
            for page, blocks in all_blocks().items():
                if not page_uses(blocks, framework):
                    continue
                workdir = Path(tmp) / framework / page.replace("/", "_")
                ran = run_page(blocks, framework, scene, workdir)
                total += len(ran)
                print(f"{framework:<10} {page}: {len(ran)} block(s) ran")
        print(f"{total} examples ran")
        if update:
            print(f"{update_outputs()} shown output(s) rewritten")
    return 0


def figures_of(path: Path) -> list[str]:
    """The file names of the figures a tutorial page shows from ``docs/images/tutorials/``."""
    return _FIGURE.findall(path.read_text())


def check_figures(path: Path, workdir: Path) -> list[str]:
    """Each figure ``path`` shows must have been drawn by its code into ``workdir`` (copied with --update-outputs)."""
    names = figures_of(path)
    missing = [name for name in names if not (workdir / name).is_file()]
    if missing:
        raise AssertionError(
            f"{path.relative_to(ROOT)} shows {missing} from docs/images/tutorials/, but its code did not draw "
            f"them: a figure on a tutorial page is saved by the page's own code under that name"
        )
    if os.environ.get("CROSSGEO_UPDATE_OUTPUTS") == "1":
        FIGURES.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(workdir / name, FIGURES / name)
            print(f"wrote {FIGURES.relative_to(ROOT) / name}")
    return names


def run_as_reader(pages: list[Path]) -> int:
    """Run each page's blocks in order as a reader would (see docs/scripts/run_tutorial.py).

    With ``--update-outputs`` first (``run_examples.py --reader --update-outputs PAGE...``) the
    shown outputs and figures are rewritten from the run instead of checked.
    """
    if pages[:1] == [Path("--update-outputs")]:
        os.environ["CROSSGEO_UPDATE_OUTPUTS"] = "1"
        pages = pages[1:]
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "scene")
        for page in pages:
            path = page if page.is_absolute() else ROOT / page
            workdir = Path(tmp) / path.stem
            ran = run_page(blocks_of(path), "reader", scene, workdir)
            figures = check_figures(path, workdir)
            print(f"reader     {page}: {len(ran)} block(s) ran, shown outputs and {len(figures)} figure(s) checked")
    if os.environ.get("CROSSGEO_UPDATE_OUTPUTS") == "1":
        print(f"{update_outputs()} shown output(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --------------------------------------------------------------------------- reference checks

CONFIG_PAGE = ROOT / "docs" / "reference" / "configuration.md"
REQUIRED = "required"


@dataclass(frozen=True)
class ConfigRow:
    """One option of the configuration table."""

    name: str
    default: Any  # REQUIRED for required options
    sampler: bool
    dataset: bool


def config_table(page: Path = CONFIG_PAGE) -> dict[str, ConfigRow]:
    """The options table of the configuration reference, parsed."""
    import ast

    rows: dict[str, ConfigRow] = {}
    for line in page.read_text().splitlines():
        line = re.sub(r'<a id="[^"]*"></a>', "", line)  # the rows' anchors (configuration.md#option-NAME)
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6:
            continue
        name, _, default, sampler, dataset, _ = cells
        default = default.strip("`")
        rows[name.strip("`")] = ConfigRow(
            name=name.strip("`"),
            default=REQUIRED if default == REQUIRED else ast.literal_eval(default),
            sampler=sampler == "✓",
            dataset=dataset == "✓",
        )
    return rows
