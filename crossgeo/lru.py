"""A bounded cache of open things (a catalogue's scenes): least recently used closed first.

The shape of xarray's ``backends/lru_cache.py`` (``LRUCache(maxsize, on_evict=...)``) with
what a sampler read from several threads and DataLoader workers needs besides:

* an entry in use (inside `LRUCache.acquire`) is never evicted, so a thread never loses the
  handles it is reading through; the cache may then hold more than ``maxsize`` entries for
  as long as they are busy;
* fork-aware: a forked child forgets the entries it inherited - it neither uses nor closes
  its parent's handles - and opens its own;
* picklable without its entries: only ``maxsize``, the opener and ``on_evict`` cross
  processes, never an open handle.

This module imports neither rasterio nor numpy (only `crossgeo.errors`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from crossgeo.errors import ConfigError

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` idle entries open per process; the least recently used one is closed first.

    Args:
        maxsize: How many entries stay open when none is in use (>= 1).
        opener: Opens the entry of a key on its first use (and again after its eviction). It
            runs under the cache's lock: keep it cheap, e.g. a reader whose files open lazily.
        on_evict: Closes an entry the cache drops (eviction and `clear`, never in a forked
            child for an entry its parent opened).
    """

    def __init__(self, maxsize: int, opener: Callable[[K], V], on_evict: Callable[[K, V], None]) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"maxsize must be an integer >= 1 (entries kept open), got {maxsize!r}.")
        self.maxsize = maxsize
        self.opener = opener
        self.on_evict = on_evict
        self._start()

    def _start(self) -> None:
        """Fresh state for this process: at construction, after unpickling, in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, V] = OrderedDict()  # least recently used first
        self._busy: dict[K, int] = {}

    def forget_inherited(self) -> None:
        """In a forked child, forget the parent's entries, unused and unclosed."""
        if self._pid != os.getpid():
            self._start()

    @contextmanager
    def acquire(self, key: K) -> Iterator[V]:
        """The entry of ``key`` (opened if needed), in use - never evicted - while the block runs.

        Entering makes it the most recently used entry and closes the least recently used idle
        entries beyond ``maxsize``.
        """
        self.forget_inherited()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            else:
                self._entries[key] = self.opener(key)
            value = self._entries[key]
            self._busy[key] = self._busy.get(key, 0) + 1
            self._evict(len(self._entries) - self.maxsize)
        try:
            yield value
        finally:
            with self._lock:
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]

    def _evict(self, excess: int) -> None:
        """Close up to ``excess`` idle entries, least recently used first (the lock is held)."""
        for key in list(self._entries):
            if excess <= 0:
                return
            if key not in self._busy:
                self.on_evict(key, self._entries.pop(key))
                excess -= 1

    def clear(self) -> None:
        """Close every idle entry this process opened (busy ones stay until their next eviction)."""
        self.forget_inherited()
        with self._lock:
            self._evict(len(self._entries))

    def keys(self) -> tuple[K, ...]:
        """The keys of this process's open entries, least recently used first."""
        if self._pid != os.getpid():
            return ()
        with self._lock:
            return tuple(self._entries)

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize, "opener": self.opener, "on_evict": self.on_evict}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    def __repr__(self) -> str:
        return f"LRUCache(maxsize={self.maxsize}, open={len(self)})"
