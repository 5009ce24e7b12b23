"""Serving with one listening socket per worker (Linux): the kernel spreads connections over
the workers, a taken port fails at once, a restarted worker listens again."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from app.core import server
from tests.conftest import ROOT
from tests.utils.database import make_key
from tests.utils.server import free_port, running_server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing: Linux")


def test_sockets_of_one_port_share_its_connections():
    port = free_port()
    first = server.listening_socket("127.0.0.1", port)
    second = server.listening_socket("127.0.0.1", port)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    try:
        accepted = []
        for sock in (first, second):
            sock.setblocking(False)
            count = 0
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                count += 1
            accepted.append(count)
        # Hashed over two sockets, all 64 on one has a chance of 2**-63.
        assert sum(accepted) == 64 and min(accepted) > 0, accepted
    finally:
        for sock in (*clients, first, second):
            sock.close()


def test_localhost_is_ipv4_as_uvicorn_binds_it():
    port = free_port()
    with server.listening_socket("localhost", port) as sock:
        assert sock.family == socket.AF_INET
        socket.create_connection(("127.0.0.1", port)).close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_an_ipv6_address_binds_ipv6():
    try:
        sock = server.listening_socket("::1", 0)
    except OSError as exc:  # IPv6 compiled in but not configured on this machine
        pytest.skip(f"::1 unavailable: {exc}")
    with sock:
        assert sock.family == socket.AF_INET6
        socket.create_connection(("::1", sock.getsockname()[1])).close()


def test_accepted_connections_send_at_once():
    """Nagle's algorithm off (TCP_NODELAY) on connections asyncio accepts from the socket."""

    async def accept_one() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = server.listening_socket("127.0.0.1", 0)
        listener = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            listener.close()

    assert asyncio.run(accept_one()) != 0


@pytest.mark.parametrize("holder", ["another program", "another instance of the service"])
def test_a_taken_port_fails_before_any_worker_starts(holder):
    port = free_port()
    if holder == "another program":
        taken = socket.create_server(("127.0.0.1", port))
    else:  # its workers' sockets would accept a share of our connections
        taken = server.listening_socket("127.0.0.1", port)
    try:
        with pytest.raises(OSError, match="in use"):
            server.run("app.main:app", host="127.0.0.1", port=port, workers=2)
    finally:
        taken.close()


def listeners(port: int) -> dict[str, list[int]]:
    """The sockets listening on ``port`` (by inode) and the processes holding each."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    held: dict[str, list[int]] = {inode: [] for inode in inodes}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # a process that ended, or not ours
            continue
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            if inode in held:
                held[inode].append(int(fd_dir.parent.name))
    return held


def one_socket_per_worker(port: int, workers: int, timeout: float = 60) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout
    while True:
        held = listeners(port)
        pids = [pid for holders in held.values() for pid in holders]
        if len(held) == workers and len(set(pids)) == len(pids) == workers:
            return held
        if time.monotonic() > deadline:
            raise AssertionError(f"listening sockets and their processes: {held}")
        time.sleep(0.2)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_worker_listens_on_its_own_socket_restarts_included(database_url, db):
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running_server(env, "--workers", "2") as base:
        port = int(base.rsplit(":", 1)[1])
        before = one_socket_per_worker(port, 2)
        killed = next(iter(before.values()))[0]
        os.kill(killed, signal.SIGKILL)  # the supervisor starts another worker
        deadline = time.monotonic() + 60
        while killed in [pid for pids in listeners(port).values() for pid in pids]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        after = one_socket_per_worker(port, 2)
        assert killed not in [pid for pids in after.values() for pid in pids]


def trickle(conn: socket.socket, data: bytes, give_up: float = 15) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time, each once the server has had a tenth of a second to
    answer: its answer, read until it closes the connection (b"" if it closed without one),
    and the seconds from the first byte to the answer."""
    start = time.monotonic()
    conn.settimeout(0.1)
    for i in itertools.count():
        if i < len(data):
            conn.sendall(data[i : i + 1])
        try:
            answer = conn.recv(65536)
        except TimeoutError:
            assert time.monotonic() - start < give_up, f"no answer after {i} bytes"
            continue
        except ConnectionResetError:
            answer = b""
        seconds = time.monotonic() - start
        conn.settimeout(5)
        while chunk := answer and conn.recv(65536):
            answer += chunk
        return answer, seconds
    raise AssertionError("unreachable")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_slow_or_oversized_requests_are_cut_off(database_url, db):
    """A request's headers within HEADER_TIMEOUT_SECONDS (408; a silent connection is closed)
    and MAX_HEADER_BYTES (431), its body within BODY_TIMEOUT_SECONDS (408)."""
    limits = {
        "HEADER_TIMEOUT_SECONDS": "1",
        "BODY_TIMEOUT_SECONDS": "1",
        "MAX_HEADER_BYTES": "4096",
    }
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")} | limits
    key = make_key(db, "slow")
    head = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with running_server(env) as base:
        address = base.removeprefix("http://").split(":")

        def connect() -> socket.socket:
            return socket.create_connection((address[0], int(address[1])), timeout=10)

        with connect() as conn:  # says nothing
            answer, seconds = trickle(conn, b"")
            assert answer == b"" and 0.9 < seconds < 5
        with connect() as conn:  # headers a byte at a time
            answer, seconds = trickle(conn, head * 10)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"did not arrive within 1 seconds" in answer and 0.9 < seconds < 5
        with connect() as conn:  # headers without end
            conn.sendall(head + b"X-Pad: " + b"a" * 5000)
            answer, _ = trickle(conn, b"")
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        with connect() as conn:  # the body a byte at a time
            conn.sendall(
                head + f"Authorization: Bearer {key}\r\nContent-Length: 1000\r\n\r\n".encode()
            )
            answer, seconds = trickle(conn, b"{" * 1000)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            status, _, body = answer.partition(b"\r\n\r\n")
            assert b"connection: close" in status.lower()
            assert json.loads(body)["detail"] == "the request body did not arrive within 1 seconds"
            assert 0.9 < seconds < 5
