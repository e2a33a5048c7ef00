"""Outputs that appear whole or not at all: every file crossgeo writes goes through `atomic_output`.

A writer writes to a temporary name in the target's own folder::

    .NAME.partial-PID-RANDOM.SUFFIX

(``NAME`` the target's file name, ``PID`` the writing process, ``RANDOM`` 8 hex digits,
``.SUFFIX`` the target's suffix, so writers that choose a format by suffix still choose the
right one; e.g. ``.prediction.tif.partial-4242-0f3a9c1e.tif``). When the writer is done the
temporary is flushed to disk and renamed onto the target (`os.replace`, atomic within a
folder). On any failure the temporary is removed and the previous target is left as it
was; a target that is a symbolic link is replaced by the file, not written through.

A run killed half-way (``kill -9``, a power cut) leaves its temporary behind. The next write
to the same target removes that target's temporaries (`remove_stale`): only names of the
pattern above for that exact target, whose process is no longer running and whose last
change is older than the start of the current process; nothing else is ever removed.

A failed write raises `crossgeo.errors.WriteError` naming the file and the option; a full
disk (``ENOSPC``/``EDQUOT``, or a GDAL write failure with almost no free space left in the
folder, as GDAL does not pass the system error on) says "disk full" and carries
``errno.ENOSPC``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from crossgeo.errors import ConfigError, CrossgeoError, WriteError

__all__ = [
    "LOW_SPACE",
    "AtomicOutput",
    "atomic_output",
    "check_not_input",
    "disk_full",
    "input_paths",
    "partial_pattern",
    "remove_stale",
    "write_error",
]

LOW_SPACE = 1 << 20
"""Free bytes below which a write failure without a system error code counts as a full disk."""


def _process_start() -> float:
    """When this process started (Linux: from /proc, to 1/100 s), else when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


_STARTED = _process_start()


def partial_pattern(path: str | os.PathLike[str]) -> re.Pattern[str]:
    """The names of ``path``'s temporaries (and GDAL's ``.aux.xml`` beside them); group 1 is the PID."""
    name = os.path.basename(os.fspath(path))
    suffix = os.path.splitext(name)[1]
    return re.compile(rf"\.{re.escape(name)}\.partial-(\d+)-[0-9a-f]{{8}}(?:\.cog)?{re.escape(suffix)}(?:\.aux\.xml)?")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) is no liveness probe on Windows: rely on the age alone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries a killed run left for ``path`` (see the module doc); returns what was removed."""
    full = Path(os.path.abspath(os.fspath(path)))
    pattern = partial_pattern(full)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(full.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _running(int(match.group(1))):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= _STARTED:
                continue
            os.remove(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def disk_full(error: BaseException | None, folder: str | os.PathLike[str], need: int = 0) -> bool:
    """Whether a write failure in ``folder`` means the disk is full.

    The system's error code decides when there is one (``ENOSPC``, ``EDQUOT``); GDAL reports
    a failed write without it, so then the folder's free space decides: less than
    ``max(LOW_SPACE, need)`` bytes (or no free inodes) is a full disk.
    """
    code = getattr(error, "errno", None)
    if isinstance(code, int):
        return code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail * stats.f_frsize < max(LOW_SPACE, need) or (stats.f_files > 0 and stats.f_favail == 0)


def _reason(error: BaseException) -> str:
    """The messages of ``error`` and of what it was raised from (rasterio: "Write failed. See previous ...")."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None and len(parts) < 4:
        text = " ".join(str(current).split())
        if text and text not in parts:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts) or type(error).__name__


def write_error(path: str | os.PathLike[str], error: BaseException, *, option: str, need: int = 0) -> WriteError:
    """The `WriteError` for a failed write of ``path`` (checked for a full disk while the temporary still exists)."""
    full = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(full)
    reason = _reason(error)
    if disk_full(error, folder, need):
        return WriteError(
            f"{option} {full!r}: disk full (no space left on device in {folder!r}) while writing it ({reason}); "
            "the previous file, if any, is unchanged. Free some space or write to another folder.",
            errno=errno.ENOSPC,
            filename=full,
        )
    code = getattr(error, "errno", None)
    return WriteError(
        f"{option} {full!r} could not be written ({reason}); the previous file, if any, is unchanged. "
        "Check the folder is writable and the disk healthy, or write to another folder.",
        errno=code if isinstance(code, int) else None,
        filename=full,
    )


class AtomicOutput:
    """One output file written under temporary names and renamed onto ``path`` by `commit`.

    `temporary` gives a new name of the pattern in the module doc (a writer may use several,
    e.g. a GeoTIFF and its COG rewrite); `commit` renames one onto the target and removes
    the others, `abort` removes them all. Creating one first removes the target's stale
    temporaries (`remove_stale`).
    """

    def __init__(self, path: str | os.PathLike[str], *, option: str = "out_path") -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.option = option
        self.temporaries: list[Path] = []
        remove_stale(self.path)

    def temporary(self, *, cog: bool = False) -> Path:
        """A new temporary name beside the target, created empty (so no other writer takes it)."""
        name = self.path.name
        middle = ".cog" if cog else ""
        temp = self.path.with_name(
            f".{name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{middle}{os.path.splitext(name)[1]}"
        )
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as error:
            raise self.failed(error) from error
        self.temporaries.append(temp)
        return temp

    def failed(self, error: BaseException, need: int = 0) -> WriteError:
        """The `WriteError` for ``error`` (call it before `abort`, while the temporary still takes its space)."""
        return write_error(self.path, error, option=self.option, need=need)

    def commit(self, temp: Path | None = None) -> Path:
        """Flush ``temp`` (default: the last temporary) to disk and rename it onto the target."""
        chosen = temp or self.temporaries[-1]
        try:
            handle = os.open(chosen, os.O_RDWR)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(chosen, self.path)
        except OSError as error:
            failure = self.failed(error)
            self.abort()
            raise failure from error
        self.temporaries.remove(chosen)
        self.abort()
        if os.name == "posix":  # make the rename itself durable
            with contextlib.suppress(OSError):
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        return self.path

    def abort(self) -> None:
        """Remove every temporary (and GDAL's ``.aux.xml`` beside it)."""
        for temp in self.temporaries:
            for candidate in (temp, temp.with_name(temp.name + ".aux.xml")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(candidate)
        self.temporaries.clear()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, option: str = "out_path") -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it becomes ``path``.

    On an exception the temporary is removed and ``path`` keeps its previous content; an
    `OSError` that is not already a crossgeo error (a failed write) becomes a `WriteError`
    naming ``path`` and ``option`` ("disk full" when it is). The folder must exist.
    """
    output = AtomicOutput(path, option=option)
    temp = output.temporary()
    try:
        yield temp
    except OSError as error:
        failure = None if isinstance(error, CrossgeoError) else output.failed(error)
        output.abort()
        if failure is None:
            raise
        raise failure from error
    except BaseException:
        output.abort()
        raise
    output.commit(temp)


def check_not_input(
    path: str | os.PathLike[str], inputs: Mapping[str, Any], *, option: str, advice: str = "choose another file name"
) -> None:
    """Refuse an output ``path`` that is one of ``inputs`` (option name -> path): same resolved path or same file.

    Compared by resolved path and, when both exist, by file identity (`os.path.samefile`:
    hard links, bind mounts), so a prediction never replaces the image it is made from.
    Inputs that are not local paths (None, URLs, lists) are skipped.
    """
    out = os.path.abspath(os.fspath(path))
    resolved = os.path.realpath(out)
    for name, value in inputs.items():
        if not isinstance(value, (str, os.PathLike)) or "://" in os.fspath(value):
            continue
        source = os.path.abspath(os.fspath(value))
        same = os.path.realpath(source) == resolved
        if not same and os.path.exists(out) and os.path.exists(source):
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, source)
        if same:
            raise ConfigError(
                f"{option} {out!r} is the {name} {source!r}, an input of this run: writing there would replace it, "
                f"so it is refused (with or without overwrite). Give {option} another file ({advice})."
            )


def input_paths(config: str | os.PathLike[str] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The input files of a configuration, for `check_not_input`: the file itself, every ``*_path`` option,
    ``scenes`` and ``window_index_cache``.

    A list or mapping of paths (several image sources) gives one entry per path (a source
    given as a mapping by its ``path``).
    """
    inputs: dict[str, Any] = {} if config is None else {"configuration": config}
    for key, value in options.items():
        if not (key.endswith("_path") or key in ("scenes", "window_index_cache")):
            continue
        if isinstance(value, Mapping):  # several image sources: name -> path | {path, bands, ...}
            inputs.update({f"{key}[{name!r}]": _source_path(item) for name, item in value.items()})
        elif isinstance(value, (list, tuple)):
            inputs.update({f"{key}[{i}]": _source_path(item) for i, item in enumerate(value)})
        else:
            inputs[key] = value
    return inputs


def _source_path(item: Any) -> Any:
    """The path of one image source: itself, or a source mapping's ``path``."""
    return item.get("path") if isinstance(item, Mapping) else item
