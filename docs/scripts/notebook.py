"""Generate the getting-started notebook from its documentation page (one source, two forms).

    python docs/scripts/notebook.py          # rewrite docs/getting-started.ipynb
    python docs/scripts/notebook.py --check  # exit 1 when the notebook is out of date

The page ``docs/getting-started.md`` is the source: its prose becomes Markdown cells, each
``python`` block a code cell (without its ``# requires:`` line) and each ``console`` block's
``$ crossgeo ...`` lines a code cell running the same command with the kernel's Python
(``!{sys.executable} -m crossgeo ...``). The page's shown outputs (```` ```text title="Output" ````
blocks) are left out: running the notebook prints them. Other blocks stay in the Markdown.
``tests/core/test_docs.py`` checks the notebook is up to date;
``tests/torch_adapter/test_getting_started_notebook.py`` executes it (torch, and Keras on
its torch backend).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
PAGE = DOCS / "getting-started.md"
NOTEBOOK = DOCS / "getting-started.ipynb"
_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)")
_REQUIRES = re.compile(r"^#\s*requires:.*$")


def _cell(kind: str, text: str) -> dict[str, Any]:
    lines = text.strip("\n").splitlines(keepends=True)
    cell: dict[str, Any] = {"cell_type": kind, "metadata": {}, "source": lines}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def cells(page: Path = PAGE) -> list[dict[str, Any]]:
    """The notebook cells of ``page``, in order."""
    out: list[dict[str, Any]] = [_cell("code", "import sys  # the CLI cells run `python -m crossgeo` with this kernel")]
    prose: list[str] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = lines[i + 1 : end]
        lang = match["lang"]
        commands = [line[2:] for line in body if line.startswith("$ crossgeo ")]
        if lang == "python" or (lang == "console" and commands):
            if "".join(prose).strip():
                out.append(_cell("markdown", "\n".join(prose)))
            prose = []
            if lang == "python":
                code = "\n".join(line for line in body if not _REQUIRES.match(line))
            else:
                code = "\n".join("!{sys.executable} -m " + command for command in commands)
            out.append(_cell("code", code))
        elif lang == "text" and 'title="Output"' in lines[i]:
            pass  # the shown output of the block before: the notebook prints its own
        else:
            prose.extend(lines[i : end + 1])
        i = end + 1
    if "".join(prose).strip():
        out.append(_cell("markdown", "\n".join(prose)))
    return out


def generated() -> str:
    """The notebook (nbformat 4) as JSON text."""
    notebook = {
        "cells": cells(),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for n, cell in enumerate(notebook["cells"]):
        cell["id"] = f"cell-{n}"
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        return 0 if NOTEBOOK.exists() and NOTEBOOK.read_text() == generated() else 1
    NOTEBOOK.write_text(generated())
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
