"""Running an ASGI app under uvicorn, with one listening socket per worker process.

uvicorn's ``--workers N`` binds one socket in the supervisor and hands it to every worker: the
workers race to accept on one queue, and the one that wakes first takes every connection
waiting (asyncio accepts up to its backlog per wake-up). Long-lived keep-alive connections, as
a load balancer or a client's connection pool keeps, then stay where they landed, and one
worker may serve them all while the others idle (docs/benchmarks.md, "The predict path against
its floor", has the measurement).

On Linux each worker here listens on a socket of its own, all bound to the address with
``SO_REUSEPORT``: the kernel spreads new connections over the workers by a hash of their
addresses. uvicorn's supervisor still runs the workers
(health checks, restarts, signals). The supervisor holds a socket bound to the address that
never listens, so a port already taken (by anything, another instance of this service
included) fails at once, with the error, and it receives no connections. The sockets are
created with the TCP protocol number, so asyncio turns Nagle's algorithm off on accepted
connections (uvicorn's own socket, created with protocol 0, leaves it on). The price: a worker
that stops (killed, or replaced on SIGHUP) resets the connections still waiting in its own
queue, not yet accepted, where a shared queue would have kept them for another worker; clients
retry a reset connect. Elsewhere, or with one worker, this is plain :func:`uvicorn.run`.

Either way connections speak :class:`LimitedHTTP`: uvicorn's HTTP/1.1 protocol (httptools),
with deadlines on a request's headers and body and a limit on its headers' size. uvicorn's own
``timeout_keep_alive`` closes a connection only when it is idle after a response, so a
connection that opened and said nothing, or sent its headers or its body a byte at a time, was
held for as long as the client liked; and httptools bounds no header's size (h11 does, with
``h11_max_incomplete_event_size``). Here, not in a middleware, a request that arrives whole
costs nothing: an ASGI middleware would time every read of every body.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any, Literal, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from app.core.config import get_settings


def listening_socket(
    host: str, port: int, *, listen: bool = True, share: bool = True
) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEADDR`` (a restart does not wait for
    old connections' TIME_WAIT) and, when ``share``, ``SO_REUSEPORT``; listening unless told
    not to."""
    # The family as uvicorn chooses it: "localhost" is 127.0.0.1, whatever the resolver lists
    # first.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)  # uvicorn's default backlog; asyncio listens again with its own
    except OSError:
        sock.close()
        raise
    return sock


class _OwnSocket:
    """Stands in uvicorn's list of sockets for a worker's own: the supervisor passes the list to
    each worker it starts (or restarts) by pickling it, and this unpickles, in the worker, as a
    new socket bound to the address."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return listening_socket, (self.host, self.port)


def run(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve ``app`` (an import string) with ``workers`` processes; ``options`` are
    :class:`uvicorn.Config`'s (``http``: :class:`LimitedHTTP` unless given)."""
    options.setdefault("http", f"{__name__}:LimitedHTTP")  # by name: each worker imports it
    if workers <= 1 or sys.platform != "linux":
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(app, host=host, port=port, workers=workers, **options)
    # An unshared bind first: a port taken by anything, another instance of this service
    # included (its workers would otherwise share our connections), is an OSError here.
    listening_socket(host, port, listen=False, share=False).close()
    reserved = listening_socket(host, port, listen=False)
    try:
        own = cast(list[socket.socket], [_OwnSocket(host, port)])
        Multiprocess(config, sockets=own).run()
    finally:
        reserved.close()


def _refusal(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP response, problem+json, that closes the connection."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


class LimitedHTTP(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with each request held to limits: its line and headers to
    HEADER_TIMEOUT_SECONDS (from their first byte, or from the connection's opening: 408, or a
    close if nothing came at all) and to MAX_HEADER_BYTES (431), its body to
    BODY_TIMEOUT_SECONDS from its headers (408, the app's answer to the body it lacks being
    dropped; a close if the app has answered already). Each closes the connection. A request
    that arrives whole (headers and body in one read, the usual case for small ones) sets no
    timer at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()  # in the worker process: its environment's
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting: Literal["headers", "body", None] = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await("headers", self.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is not before:  # a new request: its headers are in
            self._stop()
            if cycle.more_body:
                self._await("body", self.body_timeout, self._body_too_slow)
        elif self._awaiting == "body":
            if not cycle.more_body:
                self._stop()
        elif self._awaiting == "headers" or cycle is None or cycle.response_complete:
            if self._awaiting is None:  # the first bytes of the next request's headers
                self._await("headers", self.header_timeout, self._headers_too_slow)
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                detail = f"the request line and headers exceed {self.max_header_bytes} bytes"
                self._refuse(_refusal(431, "Request Header Fields Too Large", detail))

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _await(self, what: Literal["headers", "body"], seconds: float, late: Any) -> None:
        self._stop()
        self._awaiting, self._header_bytes = what, 0
        self._timer = self.loop.call_later(seconds, late)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._awaiting = None, None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._header_bytes:  # nothing said: nothing to answer
            self.transport.close()
            return
        detail = f"the request's headers did not arrive within {self.header_timeout:g} seconds"
        self._refuse(_refusal(408, "Request Timeout", detail))

    def _body_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle.response_started:  # answered without it: only the connection to end
            self.transport.close()
            return
        detail = f"the request body did not arrive within {self.body_timeout:g} seconds"
        self._refuse(_refusal(408, "Request Timeout", detail))

    def _refuse(self, response: bytes) -> None:
        """Answer (the app, still waiting for the body, is told the client left: its own
        answer goes nowhere) and close."""
        self._stop()
        self.transport.write(response)
        self.transport.close()
