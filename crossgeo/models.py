"""Model files: which framework can load one, decided from the file's content without loading it.

`model_file_framework` is what ``crossgeo predict`` and the torch and Keras adapters' file
loaders call before any framework code runs: model files are code, and crossgeo loads them
only through ``torch.jit.load``, ``torch.export.load`` of a checked program and Keras'
``safe_mode=True``, never by unpickling.

A ``torch.export`` program (``torch.export.save``, ``.pt2``) is a zip of JSON (the graph,
the weights' layout) and raw tensor bytes, but ``torch.export.load`` also unpickles what
the file asks it to (weights or constants marked ``use_pickle``, custom objects, legacy
``.pt`` weight files, and sample inputs when the restricted unpickler fails), runs the
``guards_code`` strings of the file with ``exec``, and calls any ``torch``/``math``/
``operator`` attribute a graph node names. `check_exported_program` refuses all of that
before torch sees the file: graph nodes may call only torch operators
(``torch.ops.*``) and ``operator`` functions, guards may only compare input sizes.
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossgeo.errors import ConfigError

__all__ = ["check_exported_program", "is_exported_program", "model_file_framework"]

_FIXES = {
    "torch": "Export it with torch.export: torch.export.save(torch.export.export(model, (example,)), 'model.pt2') "
    "(or as TorchScript: torch.jit.script(model).save('model.pt'))",
    "keras": "Save it in the Keras format: model.save('model.keras')",
}
_GUARD_CALLS = {"size", "stride", "dim", "storage_offset"}
"""Methods a ``guards_code`` expression may call (on the inputs ``L[...]``): nothing else runs."""
_GUARD_NODES = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Subscript, ast.Load,
    ast.Name, ast.Attribute, ast.Call, ast.cmpop, ast.boolop, ast.operator, ast.unaryop, ast.Slice, ast.Tuple,
)  # fmt: skip


def is_exported_program(names: list[str]) -> bool:
    """Whether a zip's member ``names`` are a ``torch.export.save`` archive (``<root>/archive_format``)."""
    return any(name.split("/")[1:] == ["archive_format"] for name in names)


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every graph node of a serialized program, in nested graphs (control flow) too."""
    if isinstance(value, dict):
        if "target" in value and "inputs" in value and isinstance(value["target"], str):
            yield value
        for item in value.values():
            yield from _nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)


def _safe_guard(code: Any) -> bool:
    """A guard that only compares the inputs' sizes: ``L['x'].size()[2] >= 8`` and the like."""
    try:
        tree = ast.parse(code, mode="eval") if isinstance(code, str) else None
    except SyntaxError:
        return False
    if tree is None:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return False
        if isinstance(node, ast.Name) and node.id != "L":
            return False
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_CALLS:
            return False
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Attribute):
            return False
    return True


def check_exported_program(archive: zipfile.ZipFile, *, where: str) -> None:
    """Refuse a ``torch.export`` archive whose loading would unpickle, ``exec`` code or call non-operators.

    ``where`` names the file and option in the error. Checked: no legacy pickled weight or
    constant files; every weight and constant stored as raw tensor bytes (``use_pickle``
    false, no custom or opaque objects); every graph node's target a torch operator
    (``torch.ops.``) or an ``operator`` function; every ``guards_code`` a comparison of input sizes.
    """

    def refuse(why: str) -> ConfigError:
        return ConfigError(
            f"{where} is a torch.export program that {why}; crossgeo loads .pt2 programs only without pickled "
            f"data or code beyond torch operators. {_FIXES['torch']}."
        )

    names = archive.namelist()
    models = [n for n in names if n.split("/")[1:2] == ["models"] and n.endswith(".json")]
    if not models:
        raise refuse("holds no program (models/*.json)")
    for name in names:
        parts = name.split("/")
        if parts[1:3] in (["data", "weights"], ["data", "constants"]) and name.endswith(".pt"):
            raise refuse(f"stores {name} as a pickle (the legacy format)")
    for name in names:
        if name.endswith(("_weights_config.json", "_constants_config.json")):
            for key, entry in json.loads(archive.read(name)).get("config", {}).items():
                if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise refuse(f"stores {key!r} as a pickled object ({name})")
    for name in models:
        program = json.loads(archive.read(name))
        for node in _nodes(program.get("graph_module", {})):
            target = node["target"]
            if not (target.startswith("torch.ops.") or target.startswith("_operator.")):
                raise refuse(f"calls {target!r}, which is not a torch operator")
        for guard in program.get("guards_code") or []:
            if not _safe_guard(guard):
                raise refuse(f"has the guard {guard!r}, which is more than a comparison of input sizes")


def model_file_framework(path: str | os.PathLike[str], *, option: str = "model_path") -> str:
    """``"torch"`` for a TorchScript or ``torch.export`` file, ``"keras"`` for a Keras ``.keras`` file; else an error.

    Decided from the file's content without loading it: all are zip files; a Keras file
    holds ``config.json`` (and ``metadata.json``) at its root, a TorchScript file a folder
    holding ``code/`` and ``constants.pkl``, a ``torch.export`` program (``.pt2``) a folder
    holding ``archive_format`` (checked by `check_exported_program`). A ``torch.save`` file (a pickled module or
    state dict: zip without ``code/``, or the legacy pickle), a legacy Keras HDF5 file and
    other formats are refused with the way to export a loadable file: model files are
    code, and crossgeo loads them only through ``torch.jit.load`` and Keras'
    ``safe_mode=True``, never by unpickling arbitrary objects.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"{option} {str(file)!r} does not exist (or is not a file); give a torch.export (.pt2), TorchScript or "
            ".keras file."
        )
    with file.open("rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            if is_exported_program(names):
                check_exported_program(archive, where=f"{option} {str(file)!r}")
                return "torch"
        if "config.json" in names:
            if file.suffix != ".keras":
                raise ConfigError(
                    f"{option} {str(file)!r} is a Keras model file without the .keras suffix Keras requires; "
                    "rename it to end in .keras."
                )
            return "keras"
        parts = [name.split("/") for name in names]
        if any(len(p) > 2 and p[1] == "code" for p in parts) or any(p[1:] == ["constants.pkl"] for p in parts):
            return "torch"
        if any(p[1:] == ["data.pkl"] for p in parts):
            raise ConfigError(
                f"{option} {str(file)!r} is a torch.save file (a pickled module or state dict), not TorchScript; "
                f"crossgeo does not unpickle model files. {_FIXES['torch']}."
            )
    elif head == b"\x89HDF\r\n\x1a\n":
        raise ConfigError(
            f"{option} {str(file)!r} is a legacy Keras HDF5 file, which Keras cannot load safely. {_FIXES['keras']}."
        )
    elif head[:1] == b"\x80":
        raise ConfigError(
            f"{option} {str(file)!r} is a pickle (e.g. a legacy torch.save file); crossgeo does not unpickle model "
            f"files. {_FIXES['torch']}."
        )
    raise ConfigError(
        f"{option} {str(file)!r} is neither a torch.export or TorchScript file nor a Keras .keras file. torch: "
        f"{_FIXES['torch']}; Keras: {_FIXES['keras']}."
    )
