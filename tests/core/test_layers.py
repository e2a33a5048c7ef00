"""Declared layers: every ``crossgeo`` import, function-local and ``TYPE_CHECKING`` ones too, goes down.

A module may import modules of its own layer or of a lower one, never of a higher one, and the
imports form no cycle. Every module of the package must be placed in `LAYERS`, so a new module is
placed on purpose. Read from the source with `ast` (nothing is imported), so a lazy import inside
a function cannot hide a dependency.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "crossgeo"

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # Pure leaves: no other crossgeo module except leaves (files: atomic outputs; models: model-file
    # checks; lru: the bounded cache of open scenes, arriving with the catalogue branch; readahead:
    # the bounded read-ahead pool; deferred: a module imported on first use).
    (
        "leaves",
        frozenset(
            {"errors", "grid", "options", "threads", "memory", "files", "models", "lru", "readahead", "deferred"}
        ),
    ),
    ("reading and decoding", frozenset({"io", "masks", "windows", "augment"})),
    # Inspection: sources -> frozen records (catalogue: the catalogue's inspection; stac: STAC items -> catalogue rows).
    ("inspection", frozenset({"inspection", "catalogue", "stac"})),
    ("sampler", frozenset({"sampler"})),
    ("scenes", frozenset({"scenes", "survey", "chips"})),
    ("using samplers", frozenset({"config", "planning", "predict", "evaluation", "loading", "dropin"})),
    # Adapters import their framework; demo trains with them (imported lazily) on rasters it writes
    # with testing, which nothing below this layer may use.
    ("adapters and demo", frozenset({"torch", "tensorflow", "keras", "ray", "demo", "testing"})),
    ("command and package", frozenset({"cli", "__main__", "crossgeo"})),
)
"""Lowest first. A module's key is its first component under ``crossgeo`` (``cli`` for every
``crossgeo.cli`` module); ``crossgeo`` is the package's ``__init__`` (its lazy exports)."""

ON_REQUEST: dict[tuple[str, str], str] = {
    ("crossgeo.chips", "crossgeo.ray"): "write_chips(engine='ray') loads the optional Ray engine when asked for it",
    ("crossgeo.chips", "crossgeo"): "a chip store's manifest records crossgeo.__version__, which lives in the package",
}
"""The only imports allowed to go up (each function-local, each with its reason); nothing else may."""

RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path) -> str:
    parts = ["crossgeo", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def key(module: str) -> str:
    """The `LAYERS` entry of a module: ``crossgeo.cli.main`` -> ``cli``; the package -> ``crossgeo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "crossgeo"


def imports(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported crossgeo module, line, inside a function) for every import in ``path``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    exports = _lazy_exports(root)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, local) for a in child.names if a.name.split(".")[0] == "crossgeo")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] != "crossgeo":
                    continue
                for alias in child.names:
                    found.append((_target(base, alias.name, root, exports), child.lineno, local))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def _target(base: str, name: str, root: Path, exports: dict[str, str]) -> str:
    """What ``from base import name`` loads: a submodule, a lazily exported name's module, or ``base``."""
    folder = root.joinpath(*base.split(".")[1:])
    if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file():
        return f"{base}.{name}"
    if base == "crossgeo" and name in exports:
        return exports[name]
    return base


def _lazy_exports(root: Path) -> dict[str, str]:
    """``crossgeo._EXPORTS`` read from the source (``from crossgeo import PatchSampler`` loads crossgeo.sampler)."""
    for node in ast.parse((root / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    return {}


def graph(root: Path) -> dict[str, list[tuple[str, int, bool]]]:
    return {module_name(p, root): imports(p, root) for p in sorted(root.rglob("*.py"))}


def problems(root: Path) -> list[str]:
    """Unplaced modules, imports that go up a layer, and import cycles, as readable lines."""
    edges = graph(root)
    found = [f"{m} is not placed in LAYERS (tests/core/test_layers.py)" for m in edges if key(m) not in RANK]
    edges = {m: [e for e in targets if not (e[2] and (m, e[0]) in ON_REQUEST)] for m, targets in edges.items()}
    for module, targets in edges.items():
        for target, line, local in targets:
            if key(module) in RANK and key(target) in RANK and RANK[key(target)] > RANK[key(module)]:
                where = "a function-local import" if local else "an import"
                found.append(
                    f"{module} (line {line}) has {where} of {target}: layer {LAYERS[RANK[key(module)]][0]!r} "
                    f"may not import layer {LAYERS[RANK[key(target)]][0]!r}; move the code to the right layer"
                )
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(edges))
    return found


def _cycles(edges: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (depth-first search)."""
    adjacency = {m: sorted({t for t, _, _ in targets if t in edges and t != m}) for m, targets in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in adjacency[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in adjacency:
        if module not in state:
            walk(module)
    return cycles


def test_every_import_goes_down_the_declared_layers() -> None:
    assert problems(PACKAGE) == []


def test_the_map_names_every_module_once() -> None:
    names = [name for _, layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    placed = {key(m) for m in graph(PACKAGE)}
    assert placed <= set(RANK)


def test_function_local_and_upward_imports_are_found(tmp_path: Path) -> None:
    """The check itself: a lazy upward import, an unplaced module and a cycle are each reported."""
    root = tmp_path / "crossgeo"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "grid.py").open("a") as handle:
        handle.write("\n\ndef _late():\n    from crossgeo.sampler import PatchSampler\n\n    return PatchSampler\n")
    with (root / "augment.py").open("a") as handle:
        handle.write("\n\ndef _config():\n    from crossgeo import config\n\n    return config\n")
    (root / "newthing.py").write_text("from crossgeo.errors import CrossgeoError\n")
    found = problems(root)
    assert any(p.startswith("crossgeo.grid (line") and "function-local import of crossgeo.sampler" in p for p in found)
    assert any(p.startswith("crossgeo.augment (line") and "of crossgeo.config" in p for p in found)
    assert "crossgeo.newthing is not placed in LAYERS (tests/core/test_layers.py)" in found
    cycles = [p for p in found if p.startswith("import cycle")]
    assert cycles and any("crossgeo.augment" in p and "crossgeo.config" in p for p in cycles), found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from crossgeo import PatchSampler\n", "crossgeo.sampler"),  # a lazy export: its module
        ("from crossgeo import testing as T\n", "crossgeo.testing"),
        ("from . import errors\n", "crossgeo.errors"),
        ("import crossgeo.io\n", "crossgeo.io"),
    ],
)
def test_import_forms_resolve_to_modules(tmp_path: Path, source: str, expected: str) -> None:
    root = tmp_path / "crossgeo"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "probe.py").write_text(source)
    assert [t for t, _, _ in imports(root / "probe.py", root)] == [expected]
