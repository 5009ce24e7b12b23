"""A real uvicorn process: a free port and the readiness poll (also used by
benchmarks/serve.py)."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


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
