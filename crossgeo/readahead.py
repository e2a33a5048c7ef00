"""A bounded read-ahead pool: read the next items in a few threads while the consumer works on this one.

GDAL releases the GIL while it decodes, so two threads reading patches keep two cores busy
where one thread reading and the model (or a collate step) would alternate. `ReadAhead`
yields the results **in the order of the items**, identical to a sequential loop, and never
holds more than ``depth`` results (done or in flight) ahead of the consumer.

Each pool thread reads with its own handles: give it a function that reads through a
`crossgeo.threads.PerThread` (as `crossgeo.PatchSampler.get` does). When the pool ends its
threads end, and their handles go idle for the next pool's threads to adopt, so opening a
pool per epoch (or per `predict_raster` call) opens no more handles than threads read at once.
Given ``plan=``, the pool is told the next `PLAN_ITEMS` items before it reads them
(`crossgeo.PatchSampler.plan_reads`: the image's decoded tiles are kept, for all threads, while the
windows ahead need them again).

Framework-free (imports neither rasterio nor numpy): the torch 0-worker loader, Keras'
``PatchPyDataset`` and `crossgeo.predict.predict_raster` can all use it.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from crossgeo.errors import ConfigError, OptionTypeError

__all__ = [
    "PLAN_ITEMS",
    "READ_THREADS",
    "READ_THREAD_PREFIX",
    "ReadAhead",
    "check_read_threads",
    "resolve_read_threads",
]

log = logging.getLogger("crossgeo")

I = TypeVar("I")  # noqa: E741
T = TypeVar("T")

READ_THREADS = 2
"""`predict_raster`'s default pool size: its reads overlap the model and the writes."""


PLAN_ITEMS = 16384
"""Items named in one plan (`ReadAhead`'s ``plan=``): as many windows as a DataLoader worker's plan
(`crossgeo.torch.ring.PLAN_BATCHES` batches of 16), pulled that far ahead of the reads."""


READ_THREAD_PREFIX = "crossgeo-read"
"""The names of `ReadAhead`'s threads begin with it (`crossgeo.io.SourcePool` reads their sources in order)."""


def check_read_threads(value: object, option: str = "read_threads") -> int:
    """``value`` as a count >= 0 (threads: 0 and 1 read in the caller), else an error naming ``option``.

    A value of another type raises `crossgeo.errors.OptionTypeError` (a `ConfigError` too), a negative
    count `ConfigError`, as every option check does (`crossgeo.options`).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionTypeError(f"{option} must be a whole number >= 0 (0 or 1: read in the caller), got {value!r}.")
    if value < 0:
        raise ConfigError(f"{option} must be a whole number >= 0 (0 or 1: read in the caller), got {value!r}.")
    return int(value)


def resolve_read_threads(value: object, option: str = "read_threads") -> int:
    """The pool size for ``read_threads=value``: the value checked, or (None) 0, one reader.

    Read-ahead in the loaders is asked for, not the default: it pays only where a core is idle. For a
    tiled GeoTIFF or MBTiles image the torch loader's threads share the decoded tiles of the windows
    they are told (`crossgeo.io.PlannedBlocks`): on a quiet two-core machine ``read_threads=2`` read
    1.57-1.78x a direct loop (medians of 3 rounds, three runs) at a direct loop's CPU per patch; for
    other images (a VRT mosaic, strips) each thread's handles decode the tiles neighbouring windows
    share again (~24 % more CPU per patch), and with the cores busy (other processes, a model on the
    CPU) it was slower (`benchmarks.loader_bench`). `predict_raster`, whose reads overlap the model,
    keeps `READ_THREADS`.
    """
    if value is None:
        return 0
    return check_read_threads(value, option)


class ReadAhead(Generic[I, T]):
    """``read(item)`` for each item, computed up to ``depth`` items ahead by ``threads`` threads, yielded in order.

    Args:
        read: Reads one item (called in a pool thread; must be thread-safe, e.g. through
            per-thread handles).
        items: What to read, in the order results are yielded.
        threads: Pool threads; 0 or 1 read in the consumer's thread (no pool, exactly a loop).
        depth: Results at most ahead of the consumer (default ``2 * threads``): bounds memory.
        plan: Told the items to be read next, in order, and how many threads read them: called in a
            pool thread with `PLAN_ITEMS` items before any of them is read, and again for the next.
            Only a hint: its errors are logged, not raised (the reads meet and report the same problem).

    An exception raised by ``read`` is raised by the iterator at that item's turn (the results
    before it are yielded first); the items after it are not read further. Stopping early (a
    ``break``, `close`, garbage collection) cancels the reads not started and waits for the
    running ones, so no thread outlives the iteration.
    """

    def __init__(
        self,
        read: Callable[[I], T],
        items: Iterable[I],
        *,
        threads: int = READ_THREADS,
        depth: int | None = None,
        plan: Callable[[list[I], int], object] | None = None,
    ) -> None:
        self.read = read
        self.items = items
        self.threads = check_read_threads(threads, "threads")
        self.depth = 2 * self.threads if depth is None else check_read_threads(depth, "depth")
        self.plan = plan
        self._iterator: Iterator[T] | None = None

    def __iter__(self) -> Iterator[T]:
        if self._iterator is None:
            self._iterator = self._run() if self.threads > 1 else map(self.read, self.items)
        return self._iterator

    def __next__(self) -> T:
        return next(iter(self))

    def _run(self) -> Iterator[T]:
        pending: collections.deque[Future[T]] = collections.deque()
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=READ_THREAD_PREFIX)
        depth = max(self.depth, 1)
        try:
            for item in self._planned(pool):
                pending.append(pool.submit(self.read, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)

    def _planned(self, pool: ThreadPoolExecutor) -> Iterator[I]:
        """The items in order; with ``plan``, pulled `PLAN_ITEMS` at a time, each chunk planned before its reads."""
        items = iter(self.items)
        if self.plan is None:
            yield from items
            return
        while chunk := list(itertools.islice(items, PLAN_ITEMS)):
            try:
                pool.submit(self.plan, chunk, self.threads).result()  # in a pool thread: its handles plan
            except Exception:  # a hint: the reads meet (and report) whatever failed here
                log.debug("crossgeo: planning %d reads failed; reading them unplanned", len(chunk), exc_info=True)
            yield from chunk

    def close(self) -> None:
        """Stop reading: cancel what has not started, wait for what has."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
