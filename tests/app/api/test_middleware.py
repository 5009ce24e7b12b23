"""The middlewares: the API key is checked before the body is read, on every route but the
public ones, and a rejected key is remembered; the body limit; request metrics."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from app import crud
from app.core.security import new_key
from tests.conftest import ROOT
from tests.utils.problem import assert_problem
from tests.utils.server import running_server
from tests.utils.tasks import create

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


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """The key hashes looked up in the database, in order."""
    seen: list[str] = []
    real = crud.active_client

    def counted(session, *, key_hash):
        seen.append(key_hash)
        return real(session, key_hash=key_hash)

    monkeypatch.setattr(crud, "active_client", counted)
    return seen


def test_a_rejected_key_is_remembered(client, lookups):
    wrong = {"Authorization": f"Bearer {new_key()}"}  # well formed: looked up once
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


@pytest.mark.parametrize(
    "route", ["/tasks", "/tasks/{id}/predict", "/tasks/{id}/examples", "/tasks/{id}/readapt"]
)
def test_a_body_without_a_length_over_the_limit_is_a_413(client, alice, route):
    """Counted as it streams in (chunked), and refused as a body with a length is, whatever
    the route makes of a body it could not read."""
    path = route.format(id=create(client, alice)["id"])
    chunks = iter([b" " * 2**16] * 17)  # 1 MiB and a bit, in pieces: no Content-Length
    r = client.post(path, headers=alice | {"content-type": "application/json"}, content=chunks)
    assert_problem(r, 413, "the request body exceeds 1048576 bytes")
    assert r.headers["connection"] == "close"


def test_a_path_cannot_write_a_log_line_of_its_own(client, caplog):
    """Control characters a client puts in the path (percent-encoded) are escaped in the
    request's log line, so it cannot forge another line (or recolour a terminal)."""
    with caplog.at_level(logging.INFO, logger="app"):
        r = client.get("/x%0A2026-01-01 ERROR forged%1B[31m\\%E2%80%A8")
    assert r.status_code == 401
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "app"]
    assert line.startswith("GET /x\\n2026-01-01 ERROR forged\\x1b[31m\\\\\\u2028 401 ")
    assert line.isprintable()


def test_a_malformed_key_is_refused_without_a_database_read(client, lookups):
    for key in ("no", "mk_wrong", "mk_" + "a" * 42 + "!", "mk_" + "a" * 5000):
        r = client.get("/tasks", headers={"Authorization": f"Bearer {key}"})
        assert_problem(r, 401, "invalid or revoked API key")
    assert lookups == []
