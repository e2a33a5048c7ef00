"""One root exception for everything crossgeo raises on purpose.

Each concrete error also derives from the builtin a caller would naturally catch
(``ValueError`` for bad input, ``OSError`` for failed reads, ``TypeError`` for unknown
options), the pattern of ``rasterio.errors``: ``except ValueError`` keeps working.
Messages say what is wrong, where (file, option, row) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class CrossgeoError(Exception):
    """Root of every error crossgeo raises deliberately."""


class ConfigError(CrossgeoError, ValueError):
    """An option has a bad value, or options contradict each other."""


class OptionError(CrossgeoError, TypeError):
    """An option name is unknown or a required one is missing (and, as `OptionTypeError`, a value's type is wrong)."""


class OptionTypeError(ConfigError, OptionError):
    """An option's value has the wrong type (``patch_size: "256"``, ``seed: true``).

    A bad value, so a `ConfigError` (``ValueError``) like every other bad value, and a
    ``TypeError`` (`OptionError`) as Python raises for a wrong type: ``except ValueError``
    catches every bad value and ``except TypeError`` keeps catching wrong types. Raised by
    the shared checks of `crossgeo.options` only.
    """


class WindowError(CrossgeoError, ValueError):
    """A window source (table or vector file) holds unusable windows."""


class RasterError(CrossgeoError, ValueError):
    """A raster cannot be used as configured (bands, dtype, CRS, overlap)."""


class ClassRangeError(RasterError):
    """A mask holds a class value outside ``0..n_classes-1`` (``out_of_range="error"``)."""


class ReadError(CrossgeoError, OSError):
    """Opening or reading a raster failed; names the file and the window."""


class WriteError(CrossgeoError, OSError):
    """Writing an output file failed (a full disk says so, with ``errno.ENOSPC``); names the file and option.

    The previous file of that name, if any, is unchanged (`crossgeo.files.atomic_output`).
    ``errno`` and ``filename`` are set as for any `OSError`; the message is crossgeo's own.
    """

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0])


# Conditions code decides on (``except NoOverlapError``), each a leaf of the class it refines,
# so ``except RasterError`` / ``except ValueError`` keep working. Never match an error's text.


class NoOverlapError(RasterError):
    """The mask does not overlap the image (or a shared mask none of a catalogue's scenes)."""


class LayerNotFoundError(WindowError):
    """A vector file has no layer of the name ``crops_layer`` gives."""


class CatalogueError(ConfigError):
    """Scenes of a catalogue cannot be used; ``problems`` holds one record per problem.

    The records are `crossgeo.catalogue.SceneProblem` values (step, scene, file, error), so a
    caller lists or filters them without parsing this error's message.
    """

    def __init__(self, message: str, problems: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class MissingAssetError(ConfigError):
    """STAC items lack an asset the catalogue lists (`crossgeo.stac_scenes`; every such item is named)."""
