"""Loopback-only test servers: a byte-range file server and a fault-injecting reverse proxy.

Both bind 127.0.0.1 on a free port, run in a daemon thread and stop when the test ends.
Faults are deterministic: every ``fail_every``-th request either answers 503 or drops the
connection without a reply (alternately), so a test knows how many faults it injected.
A `FileServer` can also hang (accept requests and never answer, until it stops) and serve
damaged bytes for a byte range a given number of times.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet tests
        pass

    def _inject_fault(self) -> bool:
        server = self.server
        with server.lock:
            n = next(server.counter)
            if not server.fail_every or n % server.fail_every != server.fail_every - 1:
                return False
            server.faults += 1
            drop = server.faults % 2 == 0
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return True

    def _hang(self) -> bool:
        """Accept the request and never answer while the server hangs (bounded: until it stops)."""
        server = self.server
        if not server.hang.is_set():
            return False
        with server.lock:
            server.hung += 1
        server.stopping.wait(server.max_hang)
        self.close_connection = True
        return True

    def do_HEAD(self) -> None:
        if not self._hang() and not self._inject_fault():
            self.server.respond(self, body=False)

    def do_GET(self) -> None:
        if not self._hang() and not self._inject_fault():
            self.server.respond(self, body=True)

    def do_PUT(self) -> None:
        if not self._inject_fault():
            self.server.respond(self, body=True)

    def do_POST(self) -> None:
        self.do_PUT()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail_every: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail_every = fail_every
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.faults = 0
        self.hang = threading.Event()
        """Set: every new request is accepted and never answered (until the server stops or `max_hang`)."""
        self.stopping = threading.Event()
        self.max_hang = 120.0
        self.hung = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def respond(self, handler: _Handler, body: bool) -> None:
        raise NotImplementedError


class FileServer(_Server):
    """Serves files below ``root`` with HTTP byte ranges (what GDAL's /vsicurl/ needs).

    ``damage(name, start, stop, times)`` makes the next ``times`` responses that carry any of
    the bytes ``[start, stop)`` of file ``name`` carry them inverted instead (`damaged` counts them).
    """

    def __init__(self, root: Path, fail_every: int = 0) -> None:
        super().__init__(fail_every)
        self.root = root
        self.damages: dict[str, tuple[int, int, int]] = {}
        self.damaged = 0

    def damage(self, name: str, start: int, stop: int, times: int) -> None:
        with self.lock:
            self.damages[name] = (start, stop, times)

    def _damaged(self, name: str, start: int, data: bytes) -> bytes:
        with self.lock:
            if name not in self.damages:
                return data
            first, stop, times = self.damages[name]
            lo, hi = max(first, start), min(stop, start + len(data))
            if times <= 0 or lo >= hi:
                return data
            self.damages[name] = (first, stop, times - 1)
            self.damaged += 1
        out = bytearray(data)
        out[lo - start : hi - start] = bytes(255 - b for b in out[lo - start : hi - start])
        return bytes(out)

    def respond(self, handler: _Handler, body: bool) -> None:
        path = self.root / handler.path.lstrip("/").split("?")[0]
        if not path.is_file():
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        ranged = re.match(r"bytes=(\d+)-(\d*)", handler.headers.get("Range", ""))
        if ranged:
            start, end = int(ranged.group(1)), min(int(ranged.group(2) or end), end)
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            handler.send_response(200)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(end - start + 1))
        handler.end_headers()
        if body:
            with open(path, "rb") as stream:
                stream.seek(start)
                handler.wfile.write(self._damaged(path.name, start, stream.read(end - start + 1)))


class FaultProxy(_Server):
    """Forwards every request to ``upstream`` (host, port), injecting faults on the way."""

    def __init__(self, upstream: tuple[str, int], fail_every: int = 0) -> None:
        super().__init__(fail_every)
        self.upstream = upstream

    def respond(self, handler: _Handler, body: bool) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        payload = handler.rfile.read(length) if length else None
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        connection.request(handler.command, handler.path, body=payload, headers=dict(handler.headers))
        reply = connection.getresponse()
        data = reply.read()
        handler.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
        connection.close()


@contextmanager
def running(server: _Server) -> Iterator[_Server]:
    """Run ``server`` in a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()  # hung requests end (without an answer)
        server.shutdown()
        server.server_close()
