"""Size after issue 23: no function over 80 lines without a comment saying why, and small adapters.

A function is measured from its ``def`` line to its last line, less the lines of its own
docstring and of the docstrings of the functions and classes inside it. One that is longer
than `MAX_FUNCTION` says why in a comment placed before its first statement (after the
docstring), starting with one of `WHY_MARKERS`, e.g.::

    def predict_raster(...):
        \"\"\"...\"\"\"
        # Long because one pipeline (check, plan, read, predict, blend, write) shares the strip state.

`crossgeo.SceneSampler` and each framework adapter module stay under `MAX_ADAPTER` lines
(physical lines, docstrings included): framework glue only; the policy lives in
`crossgeo.loading`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "crossgeo"
MAX_FUNCTION = 80
MAX_ADAPTER = 300
WHY_MARKERS = ("Long because", "One function because", "Longer than 80 lines:", "Just over 80 lines:")
"""How a long function's why-comment starts (the last two: the wording of the comments that predate the test)."""
_WHY = re.compile(r"^\s*#\s*(" + "|".join(re.escape(m) for m in WHY_MARKERS) + r")\s*\S")
ADAPTERS = ("tensorflow.py", "keras.py", "ray.py")
"""Adapter modules besides torch's (`torch_adapter_files`)."""

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", None)
    if not body or not isinstance(body[0], ast.Expr):
        return 0
    value = body[0].value
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        return 0
    return int(body[0].end_lineno or body[0].lineno) - body[0].lineno + 1


def function_length(node: Function) -> int:
    """Lines from ``def`` to the end, docstrings (its own and those of what it defines) excluded."""
    total = int(node.end_lineno or node.lineno) - node.lineno + 1
    inner = (n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    return total - sum(_docstring_lines(n) for n in inner)


def says_why(node: Function, lines: list[str]) -> bool:
    """Whether a why-comment stands between the signature (and docstring) and the first statement."""
    body = node.body
    start = body[0].end_lineno if _docstring_lines(node) and len(body) > 1 else node.lineno
    stop = body[1].lineno if _docstring_lines(node) and len(body) > 1 else body[0].lineno
    return any(_WHY.match(line) for line in lines[int(start or node.lineno) : stop - 1])


def functions(path: Path) -> list[tuple[Function, list[str]]]:
    text = path.read_text(encoding="utf-8")
    tree, lines = ast.parse(text, filename=str(path)), text.splitlines()
    return [(n, lines) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions_without_why(root: Path) -> list[str]:
    """``file:line name (N lines)`` of every function over `MAX_FUNCTION` lines without a why-comment."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node, lines in functions(path):
            length = function_length(node)
            if length > MAX_FUNCTION and not says_why(node, lines):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def largest_functions(root: Path, count: int = 10) -> list[tuple[int, str]]:
    """The ``count`` longest functions: (length, ``file:line name``), longest first."""
    sizes = [
        (function_length(node), f"{path.relative_to(root.parent)}:{node.lineno} {node.name}")
        for path in sorted(root.rglob("*.py"))
        for node, _ in functions(path)
    ]
    return sorted(sizes, key=lambda s: (-s[0], s[1]))[:count]


def torch_adapter_files() -> list[Path]:
    """torch's adapter: every file of the package ``crossgeo/torch/``."""
    return sorted((PACKAGE / "torch").rglob("*.py"))


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_function_is_over_80_lines_without_saying_why() -> None:
    assert long_functions_without_why(PACKAGE) == [], (
        f"functions over {MAX_FUNCTION} lines (docstrings excluded): split them, or say why in a comment before "
        f"the first statement starting with one of {WHY_MARKERS}"
    )


def test_the_scene_sampler_class_is_under_300_lines() -> None:
    tree = ast.parse((PACKAGE / "scenes.py").read_text(encoding="utf-8"))
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SceneSampler"]
    assert int(node.end_lineno or node.lineno) - node.lineno + 1 < MAX_ADAPTER


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_adapter_module_is_under_300_lines(name: str) -> None:
    assert _lines(PACKAGE / name) < MAX_ADAPTER, f"crossgeo/{name}: framework glue only; move policy to loading.py"


def test_each_file_of_the_torch_adapter_is_under_300_lines() -> None:
    files = torch_adapter_files()
    assert files, "crossgeo/torch/ has no module"
    too_long = {str(p.relative_to(ROOT)): _lines(p) for p in files if _lines(p) >= MAX_ADAPTER}
    assert too_long == {}, "each module of crossgeo/torch/ stays under 300 lines"


LONG_BODY = "\n".join(f"    x{i} = {i}" for i in range(85))


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        (f"def f():\n{LONG_BODY}\n", True),
        (f'def f():\n    """Doc."""\n{LONG_BODY}\n', True),
        (f'def f():\n    """Doc."""\n    # Long because one draw shares its state.\n{LONG_BODY}\n', False),
        (f"def f(\n    a,\n):\n    # One function because the steps share a handle.\n{LONG_BODY}\n", False),
        (f'def f():\n    """Doc."""\n    # Long because\n{LONG_BODY}\n', True),  # a marker without a reason
        (f'def f():\n    """Doc."""\n    x = 0\n    # Long because it is.\n{LONG_BODY}\n', True),  # too late
        ('def f():\n    """' + "\n".join(["doc"] * 40) + '"""\n' + LONG_BODY[: LONG_BODY.index("x60")] + "0\n", False),
        (
            "class C:\n    def m(self):\n"
            + LONG_BODY.replace("\n    ", "\n        ").replace("    x0", "        x0", 1),
            True,
        ),
    ],
    ids=[
        "long",
        "long-with-docstring",
        "why",
        "why-after-signature",
        "no-reason",
        "not-first",
        "doc-excluded",
        "method",
    ],
)
def test_the_audit_flags_long_functions_without_a_reason(tmp_path: Path, source: str, flagged: bool) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(source)
    assert bool(long_functions_without_why(package)) is flagged
