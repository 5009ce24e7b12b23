"""The middlewares: the API key is checked before the body is read, on every route but the
public ones, and a rejected key is remembered; the body limit; request metrics."""

from __future__ import annotations

import os
import socket
import time

import pytest

from app import crud
from tests.conftest import ROOT
from tests.utils.problem import assert_problem
from tests.utils.server import running_server

PROTECTED = [
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/some-id"),
    ("DELETE", "/tasks/some-id"),
    ("POST", "/tasks/some-id/predict"),
    ("GET", "/models"),
    ("GET", "/models/sinusoid"),
    ("GET", "/no/such/path"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_bad_key_is_a_401_before_the_body_is_parsed(client, method, path):
    malformed = {"content-type": "application/json"}
    r = client.request(method, path, headers=malformed, content=b"{")
    assert_problem(r, 401, "missing API key: send 'Authorization: Bearer <key>'")
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.request(
        method, path, headers=malformed | {"Authorization": "Bearer no"}, content=b"{"
    )
    assert_problem(r, 401, "invalid or revoked API key")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_probes_metrics_and_docs_need_no_key(client, path):
    assert client.get(path).status_code == 200


def test_a_rejected_key_is_remembered(client, monkeypatch):
    lookups = []
    real = crud.active_client

    def counted(session, *, key_hash):
        lookups.append(key_hash)
        return real(session, key_hash=key_hash)

    monkeypatch.setattr(crud, "active_client", counted)
    wrong = {"Authorization": "Bearer mk_wrong"}
    for _ in range(5):
        assert client.get("/tasks", headers=wrong).status_code == 401
    assert len(lookups) == 1


def test_a_real_server_refuses_a_wrong_key_without_waiting_for_the_body(database_url, db):
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    with running_server(env) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            # 8 MB announced, none of it sent: the 401 must come without it.
            conn.sendall(
                b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer mk_wrong\r\nContent-Length: 8000000\r\n\r\n"
            )
            start = time.monotonic()
            answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
            assert time.monotonic() - start < 5
