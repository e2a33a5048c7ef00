"""Import a module when it is first used rather than when it is imported (`defer_import`).

rasterio imports boto3 (and botocore, s3transfer) when it is imported, to sign requests to S3:
about 0.2 CPU seconds of a process that only reads local files. A fresh Ray worker of
``write_chips(engine="ray")`` pays it on a busy machine where every CPU second is one the chips
do not get, so `crossgeo.ray` defers boto3 in Ray workers: the first use of any of its
attributes imports it, so S3 reads behave as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["defer_import"]


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet; the first attribute looked up imports it."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def defer_import(name: str) -> bool:
    """Make ``import NAME`` cheap until NAME is used: True when a stand-in was put in ``sys.modules``.

    Nothing happens (False) when the module is imported already, is not installed, or is a
    submodule (a dotted name). ``import NAME`` then gives the stand-in; any attribute of it
    (``NAME.Session``, ``NAME.__path__`` for a submodule's import) imports the module and
    answers from it, and ``sys.modules`` holds the real module from then on.
    """
    if "." in name or name in sys.modules:
        return False
    try:
        if importlib.util.find_spec(name) is None:
            return False
    except (ImportError, ValueError):
        return False
    sys.modules[name] = _Deferred(name)
    return True
