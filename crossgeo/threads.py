"""What crossgeo keeps per thread: raster handles, the GDAL environment, augmentation copies.

All three live in a `PerThread`, the one place that decides what "this thread" means:

* A ``threading.local`` lease is the fast path (one attribute read and a process check per
  call). A dict keyed by ``threading.get_ident()`` is not enough: idents are reused, so a new
  thread would inherit a dead thread's entry - and with it, skip entering crossgeo's GDAL
  environment.
* A plain ``threading.local`` is not enough either: tf.data's ``numpy_function`` runs every
  call on a fresh Python thread state (its C++ threads attach to Python per call), so a
  thread-local cache would reopen the rasters for every patch. When a thread ends, its value
  goes back to an idle pool and the next new thread adopts it: a `PerThread` makes at most as
  many values as threads used it *at the same time*, however often threads come and go.
  Values that must not pass between threads (an entered ``rasterio.Env``) use ``adopt=False``.
* Fork-safe: a forked child (a DataLoader worker) forgets the values it inherited - it never
  uses, nor closes, its parent's handles - and makes its own.
* Picklable: only the factory is pickled, never a value (nothing open crosses processes).

This module imports neither rasterio nor numpy, so the pure-numpy `crossgeo.augment` can use it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerThread"]

T = TypeVar("T")


class _Lease:
    """A thread's hold on a value; when the thread ends, the lease is freed and hands the value back."""

    __slots__ = ("owner", "token", "value")

    def __init__(self, owner: weakref.ref[PerThread[Any]], token: object, value: Any) -> None:
        self.owner = owner
        self.token = token
        self.value = value

    def __del__(self) -> None:
        owner = self.owner()
        if owner is not None and self.token is not None:
            owner._thread_ended(self.token, self.value)


class PerThread(Generic[T]):
    """One value per live thread, made on first use, adopted by new threads when its thread ends.

    Args:
        make: Makes a value (e.g. opens a raster reader); called in the thread that needs it.
        close: Releases a value (`clear`, `discard`, and the end of its thread with
            ``adopt=False``); None: values need no closing.
        adopt: When a thread ends, keep its value idle for the next new thread (True), or
            drop it (False: for values tied to the thread that made them, such as an
            entered ``rasterio.Env``).
    """

    def __init__(self, make: Callable[[], T], *, close: Callable[[T], None] | None = None, adopt: bool = True) -> None:
        self.make = make
        self.close = close
        self.adopt = adopt
        self._start()

    def _start(self) -> None:
        """Fresh state for this process: at construction, after unpickling, in a forked child."""
        self._token = object()  # replaced by `clear`: leases holding an older token are stale
        self._pid = os.getpid()
        self._lock = threading.RLock()  # re-entrant: a lease may be freed (and call back) while it is held
        self._local = threading.local()
        self._values: dict[int, T] = {}  # every value of this process, in use or idle, by id
        self._idle: list[T] = []
        self._created = 0

    # ------------------------------------------------------------------ per thread

    def get(self) -> T:
        """This thread's value: its own, else one an ended thread left, else a new one."""
        lease = getattr(self._local, "lease", None)
        if lease is not None and lease.token is self._token and self._pid == os.getpid():
            return lease.value
        return self._attach()

    def _attach(self) -> T:
        self.forget_inherited()
        with self._lock:
            token = self._token
            adopted = bool(self._idle)
            value = self._idle.pop() if adopted else None
        if not adopted:
            value = self.make()  # outside the lock: opening rasters can take a while
            with self._lock:
                self._values[id(value)] = value
                self._created += 1
        self._local.lease = _Lease(weakref.ref(self), token, value)
        return value  # type: ignore[return-value]

    def _thread_ended(self, token: object, value: T) -> None:
        """A lease was freed (its thread ended): keep the value for the next thread, or drop it."""
        with self._lock:
            if token is not self._token or self._pid != os.getpid():
                return  # cleared or inherited: already closed or forgotten
            if self.adopt:
                self._idle.append(value)
                return
            self._values.pop(id(value), None)
        if self.close is not None:
            self.close(value)

    def discard(self) -> None:
        """Close and forget this thread's value; its next `get` makes a new one.

        For a value that may be in a bad state (e.g. handles after a failed read).
        """
        lease = getattr(self._local, "lease", None)
        if lease is None or lease.token is not self._token or self._pid != os.getpid():
            return
        lease.token = None  # freeing it must not hand the value back
        del self._local.lease
        with self._lock:
            self._values.pop(id(lease.value), None)
        if self.close is not None:
            self.close(lease.value)

    # ------------------------------------------------------------------ per process

    def forget_inherited(self) -> None:
        """In a forked child, forget the values inherited from the parent, unused and unclosed."""
        if self._pid != os.getpid():
            self._start()

    def clear(self) -> None:
        """Close every value this process made, idle or in use; threads make new ones on next use."""
        self.forget_inherited()
        with self._lock:
            self._token = object()
            values = list(self._values.values())
            self._values.clear()
            self._idle.clear()
        if self.close is not None:
            for value in values:
                self.close(value)

    def values(self) -> list[T]:
        """The values this process holds (in use by a thread or idle)."""
        if self._pid != os.getpid():
            return []
        with self._lock:
            return list(self._values.values())

    def __len__(self) -> int:
        return len(self.values())

    @property
    def created(self) -> int:
        """How many values `make` made in this process (adopted ones are not made again)."""
        return self._created if self._pid == os.getpid() else 0

    def __getstate__(self) -> dict[str, Any]:
        return {"make": self.make, "close": self.close, "adopt": self.adopt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    def __repr__(self) -> str:
        return f"PerThread({self.make!r}, values={len(self)}, adopt={self.adopt})"
