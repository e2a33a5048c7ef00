"""Ray glue: patches as a ``ray.data.Dataset``, chip stores and scene predictions across a cluster.

Optional (in a clone of crossgeo: ``pip install '.[ray]'``); the core never imports it. Each Ray worker
unpickles the sampler it is given and opens its own readers (a sampler holds no open handle
when pickled), so the work spreads over the cluster's CPUs and nodes. Paths must be visible
to every node (a shared file system or GDAL's virtual file systems for inputs).

On one machine ``ray.init(num_cpus=2)`` starts a local cluster; on an existing cluster,
``ray.init(address="auto")`` (or ``address="ray://HEAD:10001"``) connects to it.
"""

from __future__ import annotations

try:
    import ray
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "crossgeo.ray needs Ray, which is not installed. In a clone of crossgeo install it with: "
        "pip install '.[ray]' (the ray extra)."
    ) from _error

import os
import re
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossgeo.deferred import defer_import
from crossgeo.errors import ConfigError

if TYPE_CHECKING:
    from crossgeo.chips import Layout

__all__ = ["predict_scenes", "read_patches", "start_workers", "write_shards"]


def _connect() -> None:
    """Start a local Ray cluster when none is running (``ray.init()`` with Ray's defaults)."""
    if not ray.is_initialized():
        ray.init(log_to_driver=False)


# --------------------------------------------------------------------------- patches as a dataset


def _sampler_of(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        from crossgeo.chips import ChipSampler

        return ChipSampler(source)
    if not hasattr(source, "get") or not hasattr(source, "__len__"):
        raise ConfigError(
            f"read_patches: source must be a sampler (PatchSampler, SceneSampler, ChipSampler) or the path of a "
            f"chip store, got {type(source).__name__}."
        )
    return source


def _read_rows(sampler: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The patches of a batch of positions as numpy columns (``scene`` -1 for a single image)."""
    patches = [sampler[int(i)] for i in batch["id"]]
    columns: dict[str, np.ndarray] = {}
    for name in ("image", "mask", "mask_valid", "image_valid"):
        values = [getattr(p, name) for p in patches]
        if all(v is not None for v in values):
            columns[name] = np.stack(values)
    columns["row_off"] = np.array([p.row_off for p in patches], dtype=np.int64)
    columns["col_off"] = np.array([p.col_off for p in patches], dtype=np.int64)
    columns["index"] = np.array([p.index for p in patches], dtype=np.int64)
    columns["scene"] = np.array([-1 if p.scene is None else p.scene for p in patches], dtype=np.int64)
    return columns


def read_patches(source: Any, *, batch_size: int = 64, blocks: int | None = None) -> Any:
    """A ``ray.data.Dataset`` of patch rows (numpy): ``image``, ``mask``, ``mask_valid``, ``image_valid``,
    ``row_off``, ``col_off``, ``index`` and ``scene`` (-1 for a single image), in the source's order.

    ``source`` is a sampler (`crossgeo.PatchSampler`, `crossgeo.SceneSampler`,
    `crossgeo.chips.ChipSampler`) or the path of a chip store. The rows are the sampler's
    patches exactly (the mask as int64); reading is lazy and spread over the cluster
    (``blocks`` read tasks; Ray's default when None).
    """
    _connect()
    sampler = _sampler_of(source)
    n = len(sampler)
    dataset = ray.data.range(n, override_num_blocks=blocks) if blocks else ray.data.range(n)
    return dataset.map_batches(partial(_read_rows, sampler), batch_size=batch_size, batch_format="numpy")


# --------------------------------------------------------------------------- chip stores


_WORKER_SAMPLER: dict[str, Any] = {}
"""The sampler of the current `write_shards` call in this Ray worker, by the call's token (at most one)."""


def _worker_sampler(token: str, holder: Sequence[Any]) -> Any:
    """The sampler of call ``token`` (``holder``: its object ref), unpickled once per worker for the call's
    tasks, boto3 deferred first (`crossgeo.deferred`: rasterio imports it, local reads never use it). A Ray
    worker holds one CPU: like a DataLoader worker it reads a patch's sources one after the other
    (`crossgeo.io.SourcePool`)."""
    if token not in _WORKER_SAMPLER:
        defer_import("boto3")
        from crossgeo.io import source_pool

        source_pool.enabled = False
        _WORKER_SAMPLER.clear()
        _WORKER_SAMPLER[token] = ray.get(holder[0])
    return _WORKER_SAMPLER[token]


def _write_group(
    token: str, holder: Sequence[Any], root: str, layout_json: dict[str, Any], shards: Sequence[int]
) -> list[dict[str, Any]]:
    """One task: write a contiguous group of shards (their scenes read together) and return their records."""
    sampler = _worker_sampler(token, holder)
    from crossgeo.chips import Layout, write_shards_here

    try:
        return list(write_shards_here(sampler, root, Layout.from_json(layout_json), shards, encode_behind=False))
    finally:
        if hasattr(sampler, "close"):
            sampler.close()  # no handle outlives the task; the next task's reads reopen what they need


def _unpickle(token: str, holder: Sequence[Any]) -> None:
    """Have this worker import crossgeo and unpickle the sampler of call ``token`` now (`start_workers`)."""
    try:
        _worker_sampler(token, holder)
    except Exception:  # the call's first task on this worker meets the same error and reports it
        _WORKER_SAMPLER.clear()


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _ship(sampler: Any) -> tuple[str, list[Any]]:
    """A token naming the call (workers keep its sampler) and the sampler's object ref, in a list (a ref)."""
    return uuid.uuid4().hex, [ray.put(sampler)]


def start_workers(sampler: Any) -> tuple[str, list[Any]]:
    """Put ``sampler`` in Ray's object store and have one worker per cluster CPU import crossgeo and
    unpickle it now, without waiting; pass what it returns to `write_shards`.

    `crossgeo.write_chips` calls it before planning the store, so the workers' imports and their
    copy of the sampler are ready when the first shards are handed out.
    """
    _connect()
    shipped = _ship(sampler)
    remote = ray.remote(num_cpus=1)(_unpickle)
    for _ in range(_cpus()):
        remote.remote(*shipped)
    return shipped


def write_shards(
    sampler: Any,
    root: Path,
    layout: Layout,
    pending: Sequence[int],
    *,
    progress: bool = True,
    shipped: tuple[str, list[Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Write the ``pending`` shards of a chip store in Ray tasks (`crossgeo.write_chips` with ``engine="ray"``).

    Tasks: contiguous groups of shards, largest first (`crossgeo.chips.task_groups`). Each writes its
    shard files into the store with `crossgeo.chips.write_shards_here` (``engine=None``'s code: the
    same bytes; ``encode_behind=False``: its worker has no CPU to spare) and returns only their
    records, yielded as tasks finish; no chip travels through Ray's object store. The sampler is
    put there once (``shipped``, from `start_workers`, or here) and unpickled once per worker.
    """
    from crossgeo.chips import task_groups

    if not pending:
        return
    _connect()
    remote = ray.remote(num_cpus=1)(_write_group)
    args = (*(shipped or _ship(sampler)), str(root), layout.to_json())
    waiting = [remote.remote(*args, group) for group in task_groups(pending, _cpus())]
    bar = _bar(len(pending), progress)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for record in ray.get(done[0]):
                if bar is not None:
                    bar.update(1)
                yield record
    finally:
        for ref in waiting:
            ray.cancel(ref, force=True)
        if bar is not None:
            bar.close()


def _bar(total: int, show: bool) -> Any:
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="writing chips", unit="shard", disable=None, leave=False)


# --------------------------------------------------------------------------- predictions


def _output_names(scenes: Sequence[Any], out_dir: Path) -> list[Path]:
    """One output per scene: ``OUT_DIR/<image stem>.tif``, the position prefixed when stems repeat."""
    stems = [Path(s.image_path).stem for s in scenes]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [
        out_dir / (f"{scene.position:06d}-{stem}.tif" if stem in repeated else f"{stem}.tif")
        for scene, stem in zip(scenes, stems)
    ]


def _predict_one(image_path: str, out_path: str, model_factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    from crossgeo.predict import predict_raster

    try:
        predict = model_factory()
        result = predict_raster(image_path, predict, out_path, progress=False, **options)
    except Exception as error:
        return {"status": "failed", "error": f"{type(error).__name__}: {' '.join(str(error).split())}"}
    return {"status": "written", "error": None, "prediction": result}


def _last_line(error: BaseException) -> str:
    """The line of a Ray task's error that says what failed (Ray's text is a coloured traceback)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def predict_scenes(
    catalogue: Any,
    model_factory: Any,
    out_dir: str | os.PathLike[str],
    *,
    num_cpus: float = 1,
    **predict_options: Any,
) -> list[dict[str, Any]]:
    """Run `crossgeo.predict_raster` on every scene of ``catalogue`` in Ray tasks across the cluster.

    Args:
        catalogue: Scenes as `crossgeo.SceneSampler` takes them (a CSV/Parquet table, a list
            of mappings with ``image_path``, a DataFrame or pyarrow Table).
        model_factory: A picklable callable with no arguments returning the ``predict``
            function of `crossgeo.predict_raster` (batches (N, C, H, W) float32 -> scores);
            called once per task, on the node that runs it (load the model there).
        out_dir: Folder of the outputs: one GeoTIFF per scene, ``<image stem>.tif``, each
            written atomically by `crossgeo.predict_raster`.
        num_cpus: CPUs Ray reserves per scene task.
        **predict_options: Options of `crossgeo.predict_raster` (``patch_size`` is required).

    Returns one record per scene, catalogue order: ``scene``, ``image_path``, ``out_path``,
    ``status`` (``"written"``, ``"skipped"`` - its output existed, from an earlier run - or
    ``"failed"``) and ``error``. A failing scene is reported there while the others complete;
    rerunning writes only the scenes without an output.
    """
    from crossgeo.scenes import read_catalogue

    if "patch_size" not in predict_options:
        raise ConfigError("predict_scenes: patch_size is required (the model's input size), as for predict_raster.")
    for name in ("out_path", "image_path", "predict", "overwrite", "progress"):
        if name in predict_options:
            raise ConfigError(f"predict_scenes sets {name} itself; remove it from the options.")
    scenes, _ = read_catalogue(catalogue)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    outputs = _output_names(scenes, folder)
    records: list[dict[str, Any]] = [
        {"scene": s.position, "image_path": s.image_path, "out_path": str(o), "status": "skipped", "error": None}
        for s, o in zip(scenes, outputs)
    ]
    todo = [k for k, out in enumerate(outputs) if not out.exists()]
    if todo:
        _connect()
        remote = ray.remote(num_cpus=num_cpus)(_predict_one)
        factory = ray.put(model_factory)
        refs = {remote.remote(scenes[k].image_path, str(outputs[k]), factory, dict(predict_options)): k for k in todo}
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            k = refs[done[0]]
            try:
                result = ray.get(done[0])
            except Exception as error:
                result = {"status": "failed", "error": _last_line(error)}
            records[k].update({n: result[n] for n in ("status", "error")})
    return records
