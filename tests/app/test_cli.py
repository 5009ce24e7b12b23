"""``python -m app`` (app/__main__.py): the client CLI, and serve as a real uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.conftest import ROOT
from tests.utils.server import free_port, wait_ready


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )


def test_client_cli_and_a_real_uvicorn_process(database_url, db):
    env = os.environ | {
        "DATABASE_URL": database_url,
        "MODEL_DIR": str(ROOT / "models"),
        "AUTH_CACHE_SECONDS": "0",
    }
    key = run_cli(env, "clients", "create", "carol").stdout.strip().splitlines()[-1]
    assert key.startswith("mk_")
    listing = run_cli(env, "clients", "list").stdout
    assert "carol" in listing and key not in listing
    missing = subprocess.run(
        [sys.executable, "-m", "app", "clients", "revoke", "999999"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == 1 and missing.stderr.strip() == "no client 999999"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.post(
            f"{base}/tasks",
            headers=headers,
            json={"model": "sinusoid", "support": {"x": [0.0, 1.0], "y": [0.5, 1]}},
        )
        assert r.status_code == 201
        p = httpx.post(f"{base}/tasks/{r.json()['id']}/predict", headers=headers, json={"x": [0.5]})
        assert p.status_code == 200 and len(p.json()["predictions"]) == 1
        client_id = listing.split("\t")[0]
        assert "revoked" in run_cli(env, "clients", "revoke", client_id).stdout
        assert httpx.get(f"{base}/tasks", headers=headers).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
