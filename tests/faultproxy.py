"""A TCP proxy that injects faults between Strongroom and a real server (a moto S3 server, PostgreSQL).

Tests put one in front of a region's S3 server (``http=True``: it understands requests, one upstream
connection per request) or in front of the source PostgreSQL (raw bytes), point the connection at
``proxy.port`` and set faults while the run goes on:

* ``latency``: seconds added before each forwarded block;
* ``rate``: a bandwidth cap in bytes per second, shared by every connection and both directions;
* ``stalled``: nothing moves any more (open connections hang, new ones are accepted and never served),
  what a network partition behind a load balancer looks like (the half-open endpoint);
* ``reset_every``: every time the bytes forwarded cross a multiple of it, the connection carrying
  them is reset (RST), in the middle of whatever request it was carrying;
* ``fail_every`` (HTTP): every Nth request (of those matching ``fail_only``, when set) is answered
  ``503 SlowDown`` (or ``500 InternalError`` with ``fail_status = 500``) instead of being forwarded.
  With N above 1 the fault is intermittent, as throttling is: a request (its request line and
  ``Range``) is refused at most once, and every later identical request (its retry, or the same read
  made at the same time by another thread) is forwarded and not counted, so a retry cannot land on the
  next failing number by chance (a test of "retried" then fails only if the client does not retry).
  ``fail_every = 1`` refuses every attempt;
* ``hold`` (HTTP): requests whose ``METHOD path?query`` (followed by `` Range: bytes=...`` when the
  request has one) matches the pattern hang (a test waits for one in :attr:`held` and then, say, kills
  the process).

:meth:`clear` removes every fault and forgets what was recorded. The proxy records each HTTP request
line in :attr:`requests`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable

_ERRORS = {503: (b"Slow Down", b"SlowDown", b"Please reduce your request rate."),
           500: (b"Internal Server Error", b"InternalError", b"We encountered an internal error. Please try again.")}


def _error_response(status: int) -> bytes:
    reason, code, message = _ERRORS[status]
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>' % (
        code, message)
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (
        status, reason, len(body), body)

BLOCK = 64 * 1024


class _Reset(Exception):
    """The connection is to be reset by the proxy."""


class FaultProxy:
    def __init__(self, upstream_port: int, *, http: bool = False, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.http = http
        self.latency = 0.0
        self.rate: float | None = None
        self.stalled = False
        self.reset_every: int | None = None
        self.fail_every: int | None = None
        self.fail_only: re.Pattern[str] | None = None
        self.fail_status = 503
        self.hold: re.Pattern[str] | None = None
        self.requests: list[str] = []
        self.held: list[str] = []
        self.resets = 0
        self.failures = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._next_free = 0.0
        self._count = 0
        self._refused: set[str] = set()  # requests refused once by fail_every > 1: they pass from now on
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server((host, 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)

    # ---- control ----------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        """No more faults (held requests are released: their connections are closed)."""
        self.latency, self.rate, self.stalled = 0.0, None, False
        self.reset_every = self.fail_every = None
        self.fail_only, self.fail_status = None, 503
        self.hold = None
        self._drop_all()
        with self._lock:  # and a fresh record: a test waits for requests of its own
            self.requests, self.held = [], []
            self.resets = self.failures = self.forwarded = self._count = 0
            self._refused = set()

    def stop(self) -> None:
        self._closing.set()
        self._listener.close()
        self._drop_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"proxy {self.port}: condition not reached in {timeout:.0f}s")
            time.sleep(0.05)

    # ---- plumbing ---------------------------------------------------------------------------------------
    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            handler = self._serve_http if self.http else self._serve_raw
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _wait_while_stalled(self) -> None:
        while self.stalled and not self._closing.is_set():
            time.sleep(0.05)

    def _throttle(self, n: int) -> None:
        rate = self.rate
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + n / rate
        if start > now:
            time.sleep(start - now)

    def _forward(self, data: bytes, to: socket.socket) -> None:
        """Send ``data`` on, block by block, with every byte-level fault applied."""
        view = memoryview(data)
        while view:
            self._wait_while_stalled()
            block = view[:BLOCK]
            if self.latency:
                time.sleep(self.latency)
            self._throttle(len(block))
            period = self.reset_every
            with self._lock:
                before, self.forwarded = self.forwarded, self.forwarded + len(block)
                crossed = period is not None and before // period != self.forwarded // period
            if crossed:
                assert period is not None
                cut = period - before % period
                if cut < len(block):
                    to.sendall(block[:cut])
                with self._lock:
                    self.resets += 1
                raise _Reset
            to.sendall(block)
            view = view[len(block):]

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                data = src.recv(BLOCK)
                if not data:
                    break
                self._forward(data, dst)
            dst.shutdown(socket.SHUT_WR)
        except _Reset:
            _reset(client)
            _close(upstream)
        except OSError:
            _close(client)
            _close(upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pump both ways until either side is done (each direction under the faults set), then close both."""
        back = threading.Thread(target=self._pump, args=(upstream, client, client, upstream), daemon=True)
        back.start()
        self._pump(client, upstream, client, upstream)
        back.join()
        _close(client)
        _close(upstream)

    def _serve_raw(self, client: socket.socket) -> None:
        self._wait_while_stalled()
        if self._closing.is_set():
            return
        try:
            upstream = self._track(socket.create_connection(self.upstream))
        except OSError:
            _close(client)
            return
        self._relay(client, upstream)

    def _serve_http(self, client: socket.socket) -> None:
        """One request per upstream connection, sent with ``Connection: close``; the client connection is
        closed after the response, so requests never share a connection the proxy cannot follow."""
        try:
            self._wait_while_stalled()
            head, rest = _read_head(client)
            if head is None:
                _close(client)
                return
            lines = head.split(b"\r\n")
            method, target = lines[0].decode("latin-1").split(" ")[:2]
            line = f"{method} {target}"
            ranges = [h for h in lines[1:] if h.lower().startswith(b"range:")]
            attempt = line + (" " + ranges[0].decode("latin-1") if ranges else "")
            counted = self.fail_only is None or self.fail_only.search(line) is not None
            with self._lock:
                self.requests.append(line)
                if attempt in self._refused:  # a retry (or a twin) of an intermittently refused request
                    counted = False
                self._count += counted
                number = self._count
            if self.hold is not None and self.hold.search(attempt):
                with self._lock:
                    self.held.append(line)
                while self.hold is not None and self.hold.search(attempt) and not self._closing.is_set():
                    time.sleep(0.05)
                _close(client)
                return
            if self.fail_every and counted and number % self.fail_every == 0:
                with self._lock:
                    self.failures += 1
                    if self.fail_every > 1:
                        self._refused.add(attempt)
                expect = any(h.lower().startswith(b"expect: 100-continue") for h in lines[1:])
                if not expect:
                    _drain(client, _content_length(lines) - len(rest))
                client.sendall(_error_response(self.fail_status))
                _close(client)
                return
            kept = [h for h in lines[1:] if h and not h.lower().startswith(b"connection:")]
            upstream = self._track(socket.create_connection(self.upstream))
        except (OSError, ValueError):
            _close(client)
            return
        try:
            self._forward(b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""]) + rest, upstream)
        except _Reset:
            _reset(client)
            _close(upstream)
            return
        except OSError:
            _close(client)
            _close(upstream)
            return
        self._relay(client, upstream)


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(BLOCK)
        if not more:
            return None, b""
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _content_length(lines: list[bytes]) -> int:
    for header in lines[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _drain(sock: socket.socket, n: int) -> None:
    while n > 0:
        data = sock.recv(min(BLOCK, n))
        if not data:
            return
        n -= len(data)


def _reset(sock: socket.socket) -> None:
    """Cut the connection at once, as a middlebox dropping it does (an RST once the last thread lets go)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    # shutdown first: close() alone neither wakes a thread blocked in recv() nor ends the connection
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
