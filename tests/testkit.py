"""Helpers shared by the core, torch and tf suites (``tests/`` is on ``sys.path`` through its conftest).

The scenes themselves come from `crossgeo.testing.CoordinateScene`; the CLI runner is served by
the ``cli`` fixture (``tests/conftest.py``), typed here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

CliRun = Callable[..., tuple[int, str, str]]
"""The ``cli`` fixture: ``cli("validate", config)`` -> (exit status, stdout, stderr)."""


def run_cli(*argv: Any) -> tuple[int, str, str]:
    """``crossgeo ARGV`` in-process (each argument ``str``-ed): (exit status, stdout, stderr)."""
    from crossgeo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()
