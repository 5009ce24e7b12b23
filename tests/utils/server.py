"""A real uvicorn process: a free port and the readiness poll (also used by
benchmarks/serve.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(
    base: str, server: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> None:
    """Poll ``base``/readyz until it answers 200; fail if ``server`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base} did not become ready in {timeout:.0f} s")
        time.sleep(0.2)


@contextmanager
def running_server(env: dict[str, str], *args: str) -> Iterator[str]:
    """``python -m app serve`` on a free port with ``env`` (and extra ``args``): its base URL,
    once ready; terminated on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
