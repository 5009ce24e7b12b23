"""Running an ASGI app under uvicorn, with one listening socket per worker process.

uvicorn's ``--workers N`` binds one socket in the supervisor and hands it to every worker: the
workers race to accept on one queue, and the one that wakes first takes every connection
waiting (asyncio accepts up to its backlog per wake-up). Long-lived keep-alive connections, as
a load balancer or a client's connection pool keeps, then stay where they landed, and one
worker may serve them all while the others idle (README, "The predict path against its floor",
has the measurement).

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
"""

from __future__ import annotations

import socket
import sys
from typing import Any, cast

import uvicorn
from uvicorn.supervisors import Multiprocess


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
    :class:`uvicorn.Config`'s."""
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
