"""Chip stores: every window of a sampler written once, served back with identical numbers.

A segmentation model sees the same windows for many epochs; re-reading, re-warping and
re-decoding them every epoch is wasted work. `write_chips` writes each window's `Patch`
(every array field, in its stored dtype) once; `ChipSampler` serves them back through the
sampler interface, so every adapter, ``weights=``, epoch order and seeded augmentation works
unchanged and gives the live sampler's numbers.

A chip store is a folder, readable without crossgeo (zarr >= 3 and pyarrow)::

    STORE/
      zarr.json                 the Zarr v3 group
      image/ mask/ ...          one Zarr v3 array per array field of `crossgeo.Patch`
                                (image (N, C, H, W) or (N, T, C, H, W), mask (N, H, W),
                                mask_valid, image_valid, ...): one chunk per chip, zstd,
                                ``shard_size`` chips per shard file
      chips.parquet             one row per chip: position, scene, row_off, col_off, split,
                                weight and class fractions (when the windows carry them),
                                the window's CRS and affine transform
      manifest.json             shapes, dtypes, bands, classes, the sampler's option
                                fingerprint, crossgeo version, counts per split and the
                                sha256 of every shard file (written last)
      layout.json, shards/      what the writer planned and each finished shard's record
                                (for ``resume=True``)

Every shard file is written under a temporary name and renamed into place; a shard's record
is written (atomically) only after all of its files; the table and the manifest are written
only after every shard. A killed writer therefore leaves no file under a final name that is
not whole, and ``resume=True`` verifies and keeps the finished shards and writes the rest.

``format="webdataset"`` writes tar shards instead (``NNNNNNNNN.image.npy``, ``.mask.npy``,
the validity arrays as ``.npy`` and the chip's row as ``.json``) with the same table and
manifest, for trainers that stream with the ``webdataset`` library.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from crossgeo.errors import ConfigError, OptionError, ReadError, WriteError
from crossgeo.files import AtomicOutput, atomic_output
from crossgeo.sampler import Patch, WindowSequence
from crossgeo.windows import SPLIT_COLUMN, WEIGHT_COLUMN, WindowIndex, WindowReport, column_numbers

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ChipSampler",
    "ChipStoreError",
    "Layout",
    "chip_sampler_from_config",
    "read_manifest",
    "sampler_fingerprint",
    "verify_chips",
    "write_chips",
]

log = logging.getLogger("crossgeo")

FORMAT = "crossgeo-chips"
"""The ``format`` value of a chip store's manifest."""
FORMAT_VERSION = 1
"""Bumped when the store layout changes; a store of a newer version is refused (`ChipStoreError`)."""
MANIFEST = "manifest.json"
LAYOUT = "layout.json"
TABLE = "chips.parquet"
RECORDS = "shards"
FORMATS = ("zarr", "webdataset")
ENGINES = (None, "ray")
_SCALARS = ("row_off", "col_off", "index", "scene")
"""`Patch` fields kept in the table, not as arrays."""
_TABLE_EXTRAS = ("valid",)
"""Window-table columns carried into the chip table besides split, weight and ``class_*``."""


class ChipStoreError(ConfigError):
    """A chip store cannot be used as asked (exists, incomplete, unknown version, unknown split)."""


# --------------------------------------------------------------------------- the layout


@attrs.frozen
class ArraySpec:
    """One stored array field: per-chip shape and dtype (datetimes are stored as int64)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def stored(self) -> np.dtype[Any]:
        dtype = np.dtype(self.dtype)
        return np.dtype("<i8") if dtype.kind in "mM" else dtype.newbyteorder("<")


@attrs.frozen
class Layout:
    """What a writer plans (``layout.json``): enough to write any shard in any process."""

    chips: int
    shard_size: int
    format: str
    arrays: dict[str, ArraySpec]
    fingerprint: str

    @property
    def shards(self) -> int:
        return -(-self.chips // self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        return shard * self.shard_size, min(self.chips, (shard + 1) * self.shard_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "chips": self.chips,
            "shard_size": self.shard_size,
            "storage": self.format,
            "arrays": {name: {"shape": list(s.shape), "dtype": s.dtype} for name, s in self.arrays.items()},
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Layout:
        return cls(
            chips=int(data["chips"]),
            shard_size=int(data["shard_size"]),
            format=str(data["storage"]),
            arrays={n: ArraySpec(tuple(s["shape"]), str(s["dtype"])) for n, s in data["arrays"].items()},
            fingerprint=str(data["fingerprint"]),
        )


def _shard_files(layout: Layout, shard: int) -> dict[str, str]:
    """Store-relative file of each array of ``shard`` (zarr: the array's shard key; webdataset: one tar)."""
    if layout.format == "webdataset":
        return {"tar": f"chips-{shard:06d}.tar"}
    return {name: f"{name}/c/{shard}/" + "/".join("0" * len(spec.shape)) for name, spec in layout.arrays.items()}


def _check_version(data: Mapping[str, Any], path: Path) -> None:
    if data.get("format") != FORMAT:
        raise ChipStoreError(f"{path} is not a crossgeo chip store (format {data.get('format')!r}, not {FORMAT!r}).")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ChipStoreError(
            f"{path} was written in chip-store format version {version}; this crossgeo reads version "
            f"{FORMAT_VERSION}. Read it with the crossgeo that wrote it (see its manifest's crossgeo_version) "
            "or write the store again with this one."
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a finished chip store, its format version checked.

    Raises `ChipStoreError` for a folder that is not a chip store, a store whose writer did
    not finish (resume it) and a store of a format version this crossgeo does not know.
    """
    root = Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        if (root / LAYOUT).is_file():
            raise ChipStoreError(
                f"The chip store {root} is incomplete (its writer did not finish: no {MANIFEST}). Finish it with "
                "write_chips(..., resume=True) (crossgeo chips ... --resume) or write it again with overwrite=True."
            )
        raise ChipStoreError(f"{root} is not a chip store (no {MANIFEST}); write one with crossgeo.write_chips.")
    data = json.loads(manifest.read_text())
    _check_version(data, root)
    return dict(data)


# --------------------------------------------------------------------------- fingerprint and table

_FINGERPRINT_ATTRS = (
    "image_path",
    "mask_path",
    "crops_path",
    "patch_size",
    "n_classes",
    "mask_fill_value",
    "image_dtype",
    "selected_bands",
    "color_map",
    "split",
    "image_resampling",
    "out_of_range",
    "ignore_invalid_image",
    "options",
)


def sampler_fingerprint(sampler: Any) -> str:
    """A sha256 over the sampler's options and its windows: equal exactly when the chips would be."""
    digest = hashlib.sha256(type(sampler).__name__.encode())
    options = {name: getattr(sampler, name) for name in _FINGERPRINT_ATTRS if hasattr(sampler, name)}
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    for name in ("scene", "row_off", "col_off"):
        values = getattr(sampler, name, None) if name != "scene" else getattr(sampler.index, "scene", None)
        if values is not None:
            digest.update(np.ascontiguousarray(values, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _window_columns(sampler: Any) -> dict[str, np.ndarray]:
    """Split, weight and class-fraction columns of the sampler's windows table, one value per window.

    The sampler's own ``split`` for every window when it was built with one; otherwise the
    table's columns when its rows are the sampler's windows (a CSV/Parquet table, same count).
    """
    n = len(sampler)
    columns: dict[str, np.ndarray] = {}
    weight = getattr(sampler.index, "weight", None)
    if weight is not None:
        columns[WEIGHT_COLUMN] = np.asarray(weight, dtype=np.float64)
    crops = getattr(sampler, "crops_path", None)
    table = None
    if isinstance(crops, (str, os.PathLike)) and Path(crops).suffix.lower() in (".csv", ".parquet", ".pq"):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(crops) if Path(crops).suffix.lower() != ".csv" else pacsv.read_csv(crops)
        except Exception:
            table = None
    split = getattr(sampler, "split", None)
    if table is not None:
        if split is not None and SPLIT_COLUMN in table.column_names:
            import pyarrow.compute as pc

            table = table.filter(pc.fill_null(pc.equal(table.column(SPLIT_COLUMN).cast("string"), split), False))
        if table.num_rows == n:
            for name in table.column_names:
                if name in (SPLIT_COLUMN, *_TABLE_EXTRAS) or name.startswith("class_"):
                    values = table.column(name).to_numpy(zero_copy_only=False)
                    columns[name] = values.astype(object) if name == SPLIT_COLUMN else values.astype(np.float64)
    if split is not None:
        columns[SPLIT_COLUMN] = np.full(n, split, dtype=object)
    return columns


def _grids(sampler: Any) -> list[Any]:
    """The reference grid of each scene (one for a `crossgeo.PatchSampler`)."""
    samplers = getattr(sampler, "samplers", None)
    return [s.grid for s in samplers] if samplers is not None else [sampler.grid]


# --------------------------------------------------------------------------- writing


def _chip_arrays(patch: Patch) -> dict[str, np.ndarray]:
    """Every array field of a patch (the generic part: new `Patch` fields need no format change)."""
    return {
        field.name: value
        for field in attrs.fields(type(patch))
        if isinstance(value := getattr(patch, field.name), np.ndarray)
    }


def _chip_extras(patch: Patch) -> dict[str, Any]:
    """Non-array fields beyond the table's scalars (kept as JSON text in the table)."""
    return {
        field.name: value
        for field in attrs.fields(type(patch))
        if field.name not in _SCALARS
        and not isinstance(value := getattr(patch, field.name), np.ndarray)
        and value is not None
    }


def _stored_mask_dtype(sampler: Any) -> np.dtype[Any]:
    from crossgeo.augment import mask_dtype

    fill = int(sampler.mask_fill_value)
    return mask_dtype(min(0, fill), max(int(sampler.n_classes) - 1, fill, 1))


def _read_chip(sampler: Any, position: int) -> Patch:
    return sampler.get(position, mask_dtype=_stored_mask_dtype(sampler))


def _plan(sampler: Any, shard_size: int, storage: str) -> Layout:
    if len(sampler) == 0:
        raise ConfigError(
            "write_chips: the sampler has no windows (no valid windows); there is nothing to write. "
            "crossgeo validate CONFIG lists what was dropped."
        )
    first = _read_chip(sampler, 0)
    arrays = {name: ArraySpec(tuple(a.shape), a.dtype.str) for name, a in _chip_arrays(first).items()}
    return Layout(len(sampler), shard_size, storage, arrays, sampler_fingerprint(sampler))


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as error:
        raise ImportError(
            f"chip stores need zarr>=3 (and numcodecs): in a clone of crossgeo, pip install '.[chips]' ({error})."
        ) from error
    return zarr


def _create_arrays(store: Any, layout: Layout) -> dict[str, Any]:
    """The Zarr v3 arrays of ``layout`` in ``store`` (a path or a memory store)."""
    zarr = _zarr()
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(store, mode="a", zarr_format=3)
    arrays = {}
    for name, spec in layout.arrays.items():
        arrays[name] = group.create_array(
            name,
            shape=(layout.chips, *spec.shape),
            chunks=(1, *spec.shape),
            shards=(layout.shard_size, *spec.shape),
            dtype=spec.stored,
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            fill_value=0,
            overwrite=True,
            config={"write_empty_chunks": True},
        )
    return arrays


# The Zarr v3 sharding codec, written and read here directly (its layout is the spec's, and the
# tests read every store back through zarr): each chip is one chunk, the zstd frame of its
# little-endian C-order bytes; a shard file is the chunks one after another, then the index
# (one little-endian uint64 pair, offset and size, per chunk; 2**64-1 for none) and the
# index's CRC32C. Zarr's own async machinery costs milliseconds per chunk, this microseconds.
_EMPTY = np.iinfo(np.uint64).max
ZSTD_LEVEL = 1
"""zstd level of the chunks: level 3 made the same chips 1 % smaller at 4.5x the encoding time (measured on
the benchmark scene), which made writing slower than reading."""


def _zstd(level: int = ZSTD_LEVEL) -> Any:
    from numcodecs import Zstd

    return Zstd(level=level)


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return int(google_crc32c.value(data)).to_bytes(4, "little")


def encode_shard(chips: np.ndarray, shard_size: int) -> bytes:
    """One shard file of the sharding codec: ``chips`` (n <= shard_size, *shape) as zstd chunks plus the index."""
    codec = _zstd()
    parts: list[bytes] = []
    index = np.full((shard_size, 2), _EMPTY, dtype="<u8")
    offset = 0
    for k, chip in enumerate(chips):
        frame = bytes(codec.encode(np.ascontiguousarray(chip)))
        index[k] = (offset, len(frame))
        parts.append(frame)
        offset += len(frame)
    table = index.tobytes()
    return b"".join([*parts, table, _crc32c(table)])


def _index(blob: bytes, shard_size: int, where: str) -> np.ndarray:
    size = shard_size * 16
    table = blob[-(size + 4) : -4]
    if len(table) != size or _crc32c(table) != blob[-4:]:
        raise ReadError(f"{where}: the shard index is damaged (its CRC32C does not match).")
    return np.frombuffer(table, dtype="<u8").reshape(shard_size, 2)


def decode_chunks(blob: bytes, spec: ArraySpec, shard_size: int, count: int, where: str) -> np.ndarray:
    """The first ``count`` chips of a shard file as one (count, *shape) array of the stored dtype."""
    codec = _zstd()
    index = _index(blob, shard_size, where)
    out = np.empty((count, *spec.shape), dtype=spec.stored)
    view = memoryview(blob)
    for k in range(count):
        start, size = (int(v) for v in index[k])
        codec.decode(view[start : start + size], out=out[k])
    return out


def _npy(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes, always C order: a window's mask comes out of a read Fortran-ordered or
    not depending on the reader's caches, and the file's bytes must not (the same sha256 on every write)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _tar_bytes(start: int, chips: Sequence[dict[str, np.ndarray]], rows: Sequence[dict[str, Any]]) -> bytes:
    """One webdataset tar: per chip ``KEY.NAME.npy`` for each array and ``KEY.json`` (its table row)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for offset, (arrays, row) in enumerate(zip(chips, rows)):
            key = f"{start + offset:09d}"
            members = {f"{key}.{name}.npy": _npy(a) for name, a in arrays.items()}
            members[f"{key}.json"] = json.dumps(row, sort_keys=True, default=str).encode()
            for name, blob in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def _write_file(root: Path, relative: str, blob: bytes) -> None:
    """``blob`` under a temporary name beside ``root/relative``, fsynced, then renamed onto it."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    output = AtomicOutput(target, option="path")
    temp = output.temporary()
    try:
        with open(temp, "wb") as handle:
            handle.write(blob)
    except OSError as error:
        failure = output.failed(error, need=len(blob))
        output.abort()
        raise failure from error
    output.commit(temp)


def read_shard(sampler: Any, layout: Layout, shard: int) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """The chips of shard ``shard`` (their arrays, checked against ``layout``) and the start of its record."""
    start, stop = layout.bounds(shard)
    skipped_before = int(getattr(sampler, "skipped", 0))
    patches = [_read_chip(sampler, position) for position in range(start, stop)]
    chips = [_chip_arrays(p) for p in patches]
    for position, arrays in zip(range(start, stop), chips):
        for name, spec in layout.arrays.items():
            got = arrays.get(name)
            if got is None or tuple(got.shape) != spec.shape or got.dtype.str != spec.dtype:
                raise ConfigError(
                    f"write_chips: window {position} gives {name} "
                    f"{None if got is None else (tuple(got.shape), got.dtype.str)}, but the first window gave "
                    f"{(spec.shape, spec.dtype)}; every chip of a store has the same shapes and dtypes."
                )
    record: dict[str, Any] = {
        "shard": shard,
        "start": start,
        "stop": stop,
        "row_off": [int(p.row_off) for p in patches],
        "col_off": [int(p.col_off) for p in patches],
        "scene": [None if p.scene is None else int(p.scene) for p in patches],
        "extras": [_chip_extras(p) for p in patches],
        "skipped": int(getattr(sampler, "skipped", 0)) - skipped_before,
    }
    return record, chips


def encode_shard_files(layout: Layout, record: dict[str, Any], chips: list[dict[str, np.ndarray]]) -> dict[str, bytes]:
    """The bytes of each file of a shard (zstd chunks and index per array, or one tar): the CPU part of a write."""
    start, stop = record["start"], record["stop"]
    if layout.format == "webdataset":
        rows = [
            {"position": position, "row_off": record["row_off"][k], "col_off": record["col_off"][k]}
            | ({"scene": record["scene"][k]} if record["scene"][k] is not None else {})
            for k, position in enumerate(range(start, stop))
        ]
        return {"tar": _tar_bytes(start, chips, rows)}
    return {
        name: encode_shard(np.stack([c[name] for c in chips]).view(spec.stored), layout.shard_size)
        for name, spec in layout.arrays.items()
    }


def store_shard_files(
    path: str | os.PathLike[str], layout: Layout, record: dict[str, Any], blobs: dict[str, bytes]
) -> dict[str, Any]:
    """Write a shard's encoded files (temporary names, renamed), then its record: mostly waiting on the disk."""
    root = Path(path)
    shard = record["shard"]
    files = _shard_files(layout, shard)
    written: list[Path] = []
    try:
        for name, blob in blobs.items():
            _write_file(root, files[name], blob)
            written.append(root / files[name])
    except BaseException:
        for done in written:  # a shard is whole or absent: never some of its arrays without the others
            done.unlink(missing_ok=True)
        raise
    record["files"] = {files[n]: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in blobs.items()}
    with atomic_output(root / RECORDS / f"{shard:06d}.json", option="path") as temp:
        temp.write_text(json.dumps(record, default=str))
    return record


def store_shard(
    path: str | os.PathLike[str], layout: Layout, record: dict[str, Any], chips: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Encode the chips of a shard and write its files (temporary names, renamed), then its record."""
    return store_shard_files(path, layout, record, encode_shard_files(layout, record, chips))


def write_shards_here(
    sampler: Any,
    path: str | os.PathLike[str],
    layout: Layout,
    shards: Iterable[int],
    *,
    encode_behind: bool = True,
) -> Iterator[dict[str, Any]]:
    """Write ``shards`` of ``layout`` in this process, yielding each shard's record once its files are in place.

    One more thread writes a shard's files (and their fsync) while the next shard is read, so
    the writes' waits hide behind the reads. With ``encode_behind`` (``engine=None``) it also
    encodes the shard (zstd and sha256 release the GIL: with a CPU to spare, the encoding runs
    beside the reads). Without it (``engine="ray"``'s tasks: one per cluster CPU, no CPU to
    spare) the reading thread encodes and the other only waits on the disk, so a task's two
    threads do not trade the GIL for work that cannot run in parallel anyway. Two processes of
    14 shards each on two busy CPUs, 4 alternating rounds: 9.55 CPU s and 17.5 s encoding behind,
    9.32 CPU s and 16.7 s encoding here, 9.22 CPU s and 19.7 s with no second thread at all (the
    fsync waits then stall the reads). Either way, the same bytes.
    """
    with ThreadPoolExecutor(1) as writer:
        previous: Future[dict[str, Any]] | None = None
        for shard in shards:
            record, chips = read_shard(sampler, layout, shard)
            blobs = None if encode_behind else encode_shard_files(layout, record, chips)
            if previous is not None:
                yield previous.result()
            if blobs is None:
                previous = writer.submit(store_shard, path, layout, record, chips)
            else:
                previous = writer.submit(store_shard_files, path, layout, record, blobs)
        if previous is not None:
            yield previous.result()


GROUP_SHARE = 2
"""`task_groups` gives each task 1 / (``GROUP_SHARE`` x CPUs) of the shards not yet handed out."""


def task_groups(pending: Sequence[int], cpus: int) -> list[list[int]]:
    """The tasks of ``engine="ray"``: contiguous runs of the ``pending`` shards, largest first (guided scheduling).

    Each takes ``ceil(left / (GROUP_SHARE * cpus))`` of the shards left, at least one: the first
    tasks are long (a scene's windows stay in one task, its files opened once), the last ones a
    single shard, so that CPUs finishing early take those while the others end theirs instead of
    waiting on one long last task. 29 shards on 2 CPUs: 8, 6, 4, 3, 2, 2, 1, 1, 1, 1 (equal
    thirds per CPU before: the last 5-shard task ran about a CPU second alone).
    """
    groups: list[list[int]] = []
    start = 0
    while start < len(pending):
        size = max(1, -(-(len(pending) - start) // (GROUP_SHARE * max(1, cpus))))
        groups.append([int(s) for s in pending[start : start + size]])
        start += size
    return groups


def _file_ok(root: Path, relative: str, expected: Mapping[str, Any]) -> bool:
    try:
        blob = (root / relative).read_bytes()
    except OSError:
        return False
    return len(blob) == expected["bytes"] and hashlib.sha256(blob).hexdigest() == expected["sha256"]


def _finished(root: Path, layout: Layout, shard: int) -> dict[str, Any] | None:
    """The record of ``shard`` when it and every file it names are whole (checksums verified), else None."""
    try:
        record = json.loads((root / RECORDS / f"{shard:06d}.json").read_text())
    except (OSError, ValueError):
        return None
    if sorted(record.get("files", {})) != sorted(_shard_files(layout, shard).values()):
        return None
    if all(_file_ok(root, relative, expected) for relative, expected in record["files"].items()):
        return dict(record)
    log.warning("crossgeo: write_chips: shard %d of %s is damaged and is written again", shard, root)
    return None


def _prepare(root: Path, layout: Layout, *, overwrite: bool, resume: bool) -> None:
    """Create the store folder (or check the one to resume) and write its layout and arrays' metadata."""
    if root.exists() and any(root.iterdir()):
        if resume:
            try:
                found = json.loads((root / LAYOUT).read_text())
            except (OSError, ValueError) as error:
                raise ChipStoreError(
                    f"write_chips: {root} is not a chip store this crossgeo can resume (no readable {LAYOUT}: "
                    f"{error}). Choose an empty folder or pass overwrite=True."
                ) from error
            _check_version(found, root)
            if Layout.from_json(found) != layout:
                raise ChipStoreError(
                    f"write_chips(resume=True): {root} was started with other windows, options, shard_size or "
                    "format than these (its layout.json differs), so its shards cannot be reused. Pass "
                    "overwrite=True to write it again, or give the same sampler and options."
                )
            return
        if not overwrite:
            raise ChipStoreError(
                f"write_chips: {root} already exists and is not empty. Pass overwrite=True to replace it, "
                "resume=True to finish an interrupted write (crossgeo chips --resume), or choose another path."
            )
        if not ((root / LAYOUT).is_file() or (root / MANIFEST).is_file()):
            raise ChipStoreError(
                f"write_chips(overwrite=True): {root} is not a chip store (no {LAYOUT} or {MANIFEST}); crossgeo "
                "only replaces its own stores. Remove it yourself or choose another path."
            )
        shutil.rmtree(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / RECORDS).mkdir(exist_ok=True)
        if layout.format == "zarr":
            _create_arrays(str(root), layout)
    except OSError as error:
        raise WriteError(f"write_chips: cannot create the chip store {root}: {error}", filename=str(root)) from error
    with atomic_output(root / LAYOUT, option="path") as temp:
        temp.write_text(json.dumps(layout.to_json(), indent=1))


def _table(sampler: Any, layout: Layout, records: Sequence[Mapping[str, Any]]) -> Any:
    import pyarrow as pa

    row_off = np.concatenate([r["row_off"] for r in records]).astype(np.int64)
    col_off = np.concatenate([r["col_off"] for r in records]).astype(np.int64)
    scenes = [s for r in records for s in r["scene"]]
    has_scene = any(s is not None for s in scenes)
    grids = _grids(sampler)
    columns: dict[str, Any] = {"position": pa.array(np.arange(layout.chips, dtype=np.int64))}
    if has_scene:
        columns["scene"] = pa.array(np.asarray(scenes, dtype=np.int64))
    columns["row_off"] = pa.array(row_off)
    columns["col_off"] = pa.array(col_off)
    for name, values in _window_columns(sampler).items():
        columns[name] = pa.array(values.tolist() if values.dtype == object else values)
    # Per grid, not per chip (a catalogue's table has many thousands of rows): each grid's CRS text
    # once, and `Grid.window_transform` (transform @ translation(col_off, row_off)) in numpy, the
    # same float operations in the same order as Affine's product, so the same numbers.
    grid_of = np.asarray(scenes, dtype=np.int64) if has_scene else np.zeros(layout.chips, dtype=np.int64)
    texts = np.array([None if g.crs is None else str(g.crs) for g in grids], dtype=object)
    a, b, c, d, e, f = np.array([tuple(g.transform)[:6] for g in grids], dtype=np.float64)[grid_of].T
    cols, rows = col_off.astype(np.float64), row_off.astype(np.float64)
    transforms = np.stack(
        [
            a * 1.0 + b * 0.0,
            a * 0.0 + b * 1.0,
            a * cols + b * rows + c,
            d * 1.0 + e * 0.0,
            d * 0.0 + e * 1.0,
            d * cols + e * rows + f,
        ],
        axis=1,
    )
    columns["crs"] = pa.array(texts[grid_of].tolist(), pa.string())
    columns["transform"] = pa.FixedSizeListArray.from_arrays(pa.array(transforms.ravel()), 6)
    extras = [e for r in records for e in r["extras"]]
    for name in sorted({k for e in extras for k in e}):
        columns[name] = pa.array([json.dumps(e.get(name), default=str) for e in extras], pa.string())
    return pa.table(columns)


def _manifest(sampler: Any, layout: Layout, records: Sequence[Mapping[str, Any]], table: Any) -> dict[str, Any]:
    from crossgeo import __version__

    splits: dict[str, int] = {}
    if SPLIT_COLUMN in table.column_names:
        for value in table.column(SPLIT_COLUMN).to_pylist():
            splits[str(value)] = splits.get(str(value), 0) + 1
    bands = getattr(sampler, "selected_bands", None)
    image_info = getattr(sampler, "image_info", None)
    return {
        **layout.to_json(),
        "crossgeo_version": __version__,
        "sampler": type(sampler).__name__,
        "options": json.loads(
            json.dumps({n: getattr(sampler, n) for n in _FINGERPRINT_ATTRS if hasattr(sampler, n)}, default=str)
        ),
        "patch_size": int(sampler.patch_size),
        "image_dtype": str(np.dtype(sampler.image_dtype)),
        "unit_scale": bool(getattr(sampler, "unit_scale", True)),
        "bands": None if bands is None else [int(b) for b in bands],
        "band_names": list(getattr(image_info, "descriptions", None) or []) or None,
        "n_classes": int(sampler.n_classes),
        "mask_fill_value": int(sampler.mask_fill_value),
        "color_map": json.loads(json.dumps(getattr(sampler, "color_map", None), default=str)),
        "counts": {"chips": layout.chips, "splits": splits, "skipped": sum(int(r["skipped"]) for r in records)},
        "shards": [{"shard": r["shard"], "start": r["start"], "stop": r["stop"], "files": r["files"]} for r in records],
    }


def write_chips(
    sampler: Any,
    path: str | os.PathLike[str],
    *,
    shard_size: int = 256,
    overwrite: bool = False,
    resume: bool = False,
    engine: str | None = None,
    format: str = "zarr",
    progress: bool = True,
) -> Path:
    """Write every window of ``sampler`` (a `crossgeo.PatchSampler` / `crossgeo.SceneSampler`) to a chip store.

    Args:
        sampler: The windows to write, in its order (chip ``i`` is ``sampler[i]``).
        path: The store folder (created; see the module doc for its layout).
        shard_size: Chips per shard file (per tar with ``format="webdataset"``).
        overwrite: Replace an existing chip store at ``path`` (only a chip store is removed).
        resume: Finish an interrupted write: finished shards are verified (sha256) and kept,
            damaged or missing ones written again. The sampler must be the same.
        engine: ``None`` (this process) or ``"ray"``: shards are written by Ray tasks across
            the cluster, each opening its own readers (the ``ray`` extra);
            ``path`` must then be visible to every node. The arrays are the same.
        format: ``"zarr"`` (Zarr v3 arrays, readable by `ChipSampler`) or ``"webdataset"``
            (tar shards for the ``webdataset`` library).
        progress: Show a progress bar (tqdm, when installed and stderr is a terminal).

    Returns the store's path. Raises `ChipStoreError` for an existing store without
    ``overwrite``/``resume``, `WriteError` for a failed write (disk full) - the finished
    shards stay usable by ``resume=True``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ConfigError(
            f"write_chips: shard_size must be an integer >= 1 (chips per shard file), got {shard_size!r}."
        )
    if format not in FORMATS:
        raise ConfigError(f"write_chips: format must be one of {FORMATS}, got {format!r}.")
    if engine not in ENGINES:
        raise ConfigError(f"write_chips: engine must be None or 'ray', got {engine!r}.")
    if overwrite and resume:
        raise OptionError("write_chips: pass overwrite=True or resume=True, not both.")
    if format == "zarr":
        _zarr()
    if engine == "ray":
        import crossgeo.ray  # fails here, before any work, with the pip line when Ray is missing

        shipped = crossgeo.ray.start_workers(sampler)  # the workers import crossgeo while this process plans
    root = Path(os.path.abspath(os.fspath(path)))
    layout = _plan(sampler, int(shard_size), format)
    _prepare(root, layout, overwrite=overwrite, resume=resume)
    records: dict[int, dict[str, Any]] = {}
    if resume:
        for shard in range(layout.shards):
            found = _finished(root, layout, shard)
            if found is not None:
                records[shard] = found
        log.info("crossgeo: write_chips(resume=True): %d of %d shard(s) kept", len(records), layout.shards)
    pending = [k for k in range(layout.shards) if k not in records]
    if engine == "ray":
        from crossgeo.ray import write_shards

        written = write_shards(sampler, root, layout, pending, progress=progress, shipped=shipped)
    else:
        written = write_shards_here(sampler, root, layout, _progress(pending, progress, f"writing {root.name}"))
    for record in written:
        records[record["shard"]] = record
    ordered = [records[k] for k in range(layout.shards)]
    table = _table(sampler, layout, ordered)
    import pyarrow.parquet as pq

    with atomic_output(root / TABLE, option="path") as temp:
        pq.write_table(table, temp)
    with atomic_output(root / MANIFEST, option="path") as temp:
        temp.write_text(json.dumps(_manifest(sampler, layout, ordered, table), indent=1, default=str))
    return root


def _progress(items: Sequence[int], show: bool, what: str) -> Iterable[int]:
    if not show:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=what, unit="shard", disable=None, leave=False)


# --------------------------------------------------------------------------- verifying


def verify_chips(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a chip store against its manifest: every shard file's size and sha256, the arrays' shapes and
    dtypes, the table's row count and the counts per split. Returns ``{"problems": [...], "manifest": ...}``."""
    root = Path(path)
    manifest = read_manifest(root)
    layout = Layout.from_json(manifest)
    problems: list[str] = []
    listed = {s["shard"] for s in manifest["shards"]}
    if listed != set(range(layout.shards)):
        problems.append(f"the manifest lists {len(listed)} shard(s) of the {layout.shards} the chips need")
    for shard in manifest["shards"]:
        for relative, expected in shard["files"].items():
            if not (root / relative).is_file():
                problems.append(f"shard {shard['shard']}: {relative} is missing")
            elif not _file_ok(root, relative, expected):
                problems.append(f"shard {shard['shard']}: {relative} does not match its sha256 (damaged)")
    if layout.format == "zarr":
        zarr = _zarr()
        group = zarr.open_group(str(root), mode="r")
        for name, spec in layout.arrays.items():
            try:
                array = group[name]
            except KeyError:
                problems.append(f"array {name!r} is missing")
                continue
            if tuple(array.shape) != (layout.chips, *spec.shape) or array.dtype != spec.stored:
                problems.append(
                    f"array {name!r} is {tuple(array.shape)} {array.dtype}, the manifest says "
                    f"{(layout.chips, *spec.shape)} {spec.stored}"
                )
    import pyarrow.parquet as pq

    table = pq.read_table(root / TABLE)
    if table.num_rows != layout.chips:
        problems.append(f"{TABLE} has {table.num_rows} rows for {layout.chips} chips")
    if SPLIT_COLUMN in table.column_names:
        counts: dict[str, int] = {}
        for value in table.column(SPLIT_COLUMN).to_pylist():
            counts[str(value)] = counts.get(str(value), 0) + 1
        if counts != manifest["counts"]["splits"]:
            problems.append(f"the chips per split are {counts}, the manifest says {manifest['counts']['splits']}")
    return {"problems": problems, "manifest": manifest}


# --------------------------------------------------------------------------- reading


class ChipSampler(WindowSequence):
    """The sampler interface over a chip store: ``sampler[i]`` is the `Patch` the live sampler gave.

    Args:
        path: A chip store written by `write_chips` (``format="zarr"``).
        split: Only the chips of this split (the table's ``split`` column); ``None``: all.
        cache_bytes: Decoded chips kept in memory per process. When the chips in use fit,
            the first read of a shard decodes the whole shard and later epochs are served
            from memory; otherwise each chip is read through zarr.

    Offers what the adapters use: ``len``, ``[i]`` and ``get(i, mask_dtype=)``,
    ``patch_size``, ``selected_bands``, ``image_dtype``, ``n_classes``, ``mask_fill_value``,
    ``color_map``, ``index`` (with the table's ``weight`` for ``weights="weight"``), ``row_off``,
    ``col_off``, ``scene``, ``skipped``, ``release_inherited_handles`` and ``close``. Picklable;
    holds no open handle or cache when pickled. Each shard file's sha256 is checked the first
    time a process reads it (a damaged shard raises `ReadError` naming it).
    """

    on_read_error = "raise"

    def __init__(self, path: str | os.PathLike[str], *, split: str | None = None, cache_bytes: int = 2 << 30) -> None:
        import pyarrow.parquet as pq

        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, (int, np.integer)) or cache_bytes < 0:
            raise ConfigError(f"ChipSampler: cache_bytes must be an integer >= 0, got {cache_bytes!r}.")
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.manifest = read_manifest(self.path)
        self.layout = Layout.from_json(self.manifest)
        if self.layout.format != "zarr":
            raise ChipStoreError(
                f"ChipSampler: {self.path} is a {self.layout.format} store (tar shards for the webdataset library); "
                "ChipSampler reads format='zarr' stores."
            )
        _zarr()
        table = pq.ParquetFile(self.path / TABLE).read()  # not pq.read_table: it imports pandas
        positions = np.arange(table.num_rows, dtype=np.int64)
        if split is not None:
            splits = self.manifest["counts"]["splits"]
            if str(split) not in splits:
                raise ChipStoreError(
                    f"ChipSampler: split={split!r} but the chip store {self.path} holds "
                    + (f"the splits {sorted(splits)}" if splits else "no split column (its windows had none)")
                    + ". Name one of them or leave split unset for every chip."
                )
            keep = np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object) == str(split)
            positions = positions[keep]
            table = table.filter(keep)
        self.split = split
        self.table = table
        #: Store positions of this sampler's chips (``sampler[i]`` is chip ``positions[i]`` of the store).
        self.positions = positions
        self.crops_path = str(self.path)
        self.image_path = self.mask_path = str(self.path)
        self.patch_size: int = int(self.manifest["patch_size"])
        self.n_classes: int = int(self.manifest["n_classes"])
        self.mask_fill_value: int = int(self.manifest["mask_fill_value"])
        self.image_dtype = np.dtype(self.manifest["image_dtype"])
        #: Whether model inputs scale the integer image (the live sampler's ``image_dtype`` "uint8"/"uint16").
        self.unit_scale = bool(self.manifest.get("unit_scale", True))
        self.selected_bands = tuple(self.manifest["bands"] or range(1, self.layout.arrays["image"].shape[-3] + 1))
        self.color_map = self.manifest.get("color_map")
        weight = column_numbers(table.column(WEIGHT_COLUMN)) if WEIGHT_COLUMN in table.column_names else None
        scene = column_numbers(table.column("scene")) if "scene" in table.column_names else None
        #: The chips' windows (with ``weight`` when the store has it).
        self.index = WindowIndex(
            column_numbers(table.column("row_off")),
            column_numbers(table.column("col_off")),
            WindowReport(kept=table.num_rows),
            scene=scene,
            weight=None if weight is None else np.asarray(weight, dtype=np.float64),
        )
        self._extras = [n for n in table.column_names if n in self._extra_fields()]
        self.cache_bytes = int(cache_bytes)
        per_chip = sum(int(np.prod(s.shape)) * s.stored.itemsize for s in self.layout.arrays.values())
        used_shards = np.unique(positions // self.layout.shard_size).size
        #: True when the shards in use fit ``cache_bytes``: each is decoded whole once per process.
        self.whole_shards = used_shards * self.layout.shard_size * per_chip <= self.cache_bytes
        self.skipped = 0
        self.unreadable: set[int] = set()
        self._start()

    @staticmethod
    def _extra_fields() -> set[str]:
        return {f.name for f in attrs.fields(Patch)} - set(_SCALARS) - {"image", "mask"}

    def _start(self) -> None:
        self._pid = os.getpid()
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._verified: set[int] = set()

    def _state(self) -> None:
        if self._pid != os.getpid():
            self._start()

    # ------------------------------------------------------------------ sequence

    def _shard_blobs(self, shard: int) -> dict[str, bytes]:
        """The files of ``shard``, each checked against the manifest's sha256 (`ReadError` naming it)."""
        entry = self.manifest["shards"][shard]
        blobs = {}
        files = _shard_files(self.layout, shard)
        for name, relative in files.items():
            expected = entry["files"][relative]
            file = self.path / relative
            try:
                blob = file.read_bytes()
            except OSError as error:
                raise ReadError(
                    f"chip store {self.path}: shard {shard} file {file} cannot be read ({error}); "
                    "write_chips(..., resume=True) writes missing shards again."
                ) from error
            if len(blob) != expected["bytes"] or hashlib.sha256(blob).hexdigest() != expected["sha256"]:
                raise ReadError(
                    f"chip store {self.path}: shard {shard} file {file} does not match its sha256 in the manifest "
                    "(damaged). Rewrite it with write_chips(..., resume=True) (crossgeo chips ... --resume)."
                )
            blobs[name] = blob
        return blobs

    def _chip(self, position: int) -> dict[str, np.ndarray]:
        self._state()
        shard, offset = divmod(position, self.layout.shard_size)
        if self.whole_shards:
            arrays = self._cache.get(shard)
            if arrays is None:
                start, stop = self.layout.bounds(shard)
                arrays = {
                    name: decode_chunks(blob, self.layout.arrays[name], self.layout.shard_size, stop - start, name)
                    for name, blob in self._shard_blobs(shard).items()
                }
                self._cache[shard] = arrays
            return {name: a[offset] for name, a in arrays.items()}
        if shard not in self._verified:
            self._shard_blobs(shard)
            self._verified.add(shard)
        return {name: self._read_chunk(shard, offset, name) for name in self.layout.arrays}

    def _read_chunk(self, shard: int, offset: int, name: str) -> np.ndarray:
        """One chip of one array: the shard's index and the chip's zstd frame read from the file, decoded."""
        spec, size = self.layout.arrays[name], self.layout.shard_size
        file = self.path / _shard_files(self.layout, shard)[name]
        try:
            with open(file, "rb") as handle:
                handle.seek(-(size * 16 + 4), os.SEEK_END)
                index = _index(handle.read(), size, str(file))
                start, length = (int(v) for v in index[offset])
                handle.seek(start)
                frame = handle.read(length)
        except OSError as error:
            raise ReadError(f"chip store {self.path}: shard {shard} file {file} cannot be read ({error}).") from error
        out = np.empty(spec.shape, dtype=spec.stored)
        _zstd().decode(frame, out=out)
        return out

    def _read_window(self, position: int, mask_dtype: Any = np.int64) -> Patch:
        store_position = int(self.positions[position])
        arrays = self._chip(store_position)
        values: dict[str, Any] = {}
        for name, value in arrays.items():
            spec = self.layout.arrays[name]
            if name == "mask":
                value = value.astype(mask_dtype)  # a new array
            elif self.whole_shards:
                value = value.copy()  # never hand out the cache itself
            values[name] = value.view(np.dtype(spec.dtype)) if spec.stored != np.dtype(spec.dtype) else value
        for name in self._extras:
            values[name] = json.loads(self.table.column(name)[position].as_py())
        scene = None if self.index.scene is None else int(self.index.scene[position])
        return Patch(
            row_off=int(self.index.row_off[position]),
            col_off=int(self.index.col_off[position]),
            index=position,
            scene=scene,
            **values,
        )

    # ------------------------------------------------------------------ handles

    def release_inherited_handles(self) -> None:
        """Forget the handles and cache a forked process inherited (DataLoader workers call it)."""
        self._state()

    def close(self) -> None:
        """Drop this process's handles and decoded shards (they come back on the next read)."""
        self._start()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_cache", "_verified", "_pid"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split is not None else ""
        return f"ChipSampler({str(self.path)!r}{split}, chips={len(self)})"


def chip_sampler_from_config(options: Mapping[str, Any]) -> ChipSampler:
    """The `ChipSampler` of a configuration with ``chips_path`` (the drop-in dataset, ``build_sampler``).

    ``split`` selects a split; ``patch_size`` and ``n_classes``, when given, must equal the store's
    (a configuration meant for other chips is refused, naming both); the raster options of the
    configuration (the ones the store was written from) are not read again.
    """
    sampler = ChipSampler(options["chips_path"], split=options.get("split"))
    for name in ("patch_size", "n_classes"):
        if options.get(name) is not None and options[name] != getattr(sampler, name):
            raise ChipStoreError(
                f"{name} is {options[name]!r} but the chip store {sampler.path} (chips_path) was written with "
                f"{name} {getattr(sampler, name)!r}; write the store again with this configuration "
                "(crossgeo chips CONFIG OUT --overwrite) or fix the option."
            )
    ignored = sorted(set(options) - {"chips_path", "split", "patch_size", "n_classes"})
    if ignored:
        log.info("crossgeo: chips_path %s serves the patches; %s are the store's own", sampler.path, ", ".join(ignored))
    return sampler
