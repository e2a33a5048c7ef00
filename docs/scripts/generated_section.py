"""The marked, generated section of a documentation page: read it, check it, rewrite it.

The reference generators (``cli_reference.py``, ``config_reference.py``,
``troubleshooting.py``) write their text between a BEGIN and an END marker; everything
outside the markers is hand-written. ``python docs/scripts/NAME.py`` rewrites the section,
``--check`` exits 1 when it is out of date.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

END = "<!-- END GENERATED -->"


def current(page: Path, begin: str) -> str:
    """The page's generated section, markers included."""
    text = page.read_text()
    start = text.index(begin)
    return text[start : text.index(END, start) + len(END)]


def main(argv: list[str], page: Path, begin: str, generated: Callable[[], str], script: str) -> int:
    """Rewrite the section of ``page`` with ``generated()``, or with ``--check`` compare only."""
    fresh = generated()
    old = current(page, begin)
    if "--check" in argv:
        if old != fresh:
            print(f"{page} is out of date: run python docs/scripts/{script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(page.read_text().replace(old, fresh))
    print(f"wrote {page}")
    return 0
