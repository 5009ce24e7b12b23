"""Request bodies: each route's limits for its meta-model (bytes, rows, values), and large bodies
parsed off the event loop, so that a real server answers its probes while it takes the largest
bodies it allows."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import ROOT
from tests.utils.database import make_key
from tests.utils.problem import assert_problem
from tests.utils.server import running_server
from tests.utils.tasks import create

MiB = 2**20
MAX_BODY = 8 * MiB  # MAX_BODY_BYTES' default, which the real server below runs with
PROBE_SECONDS = 0.1  # the most a /healthz may take while a large body is taken


def rows_body(prefix: str, row: bytes, size: int, suffix: str = "]}") -> bytes:
    """``prefix`` + as many copies of ``row`` as fit in ``size`` bytes + ``suffix``."""
    head, tail = prefix.encode(), suffix.encode()
    n = (size - len(head) - len(tail)) // (len(row) + 1)
    return head + b",".join([row] * n) + tail


IMAGE_ROW = json.dumps([[[0] * 28] * 28], separators=(",", ":")).encode()  # 1.6 KB
PADDED_ROW = b"[" + b" " * 30 + b"-0.12345678901234567]"  # 52 bytes: 10,000 in 530,008


def png() -> bytes:
    """A JSON string of a base64 PNG of noise, 105 x 105 pixels as Omniglot's (11 KB)."""
    pixels = np.random.default_rng(0).integers(0, 256, (105, 105), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return b'"' + base64.b64encode(out.getvalue()) + b'"'


def probed(base: str, send: Callable[[], httpx.Response]) -> tuple[list[float], httpx.Response]:
    """``send()`` on a thread while /healthz is asked again and again: each probe's seconds,
    and what ``send`` got."""
    got: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: got.append(send()))
    with httpx.Client(base_url=base, timeout=30) as probe:
        probe.get("/healthz")  # connected before the timing starts
        sender.start()
        seconds = []
        while not seconds or sender.is_alive():  # once at least: the answer may be at once
            start = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            seconds.append(time.perf_counter() - start)
    sender.join()
    return seconds, got[0]


@pytest.fixture
def server(database_url: str, db) -> Iterator[tuple[str, dict[str, str]]]:
    """A real server with the default limits, and a client's Authorization."""
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    for name in ("MAX_BODY_BYTES", "MAX_PREDICT_ROWS", "MAX_SUPPORT", "MAX_QUERY"):
        env.pop(name, None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running_server(env) as base:
        yield base, {"Authorization": f"Bearer {make_key(db, 'bodies')}"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_probes_answer_while_each_route_takes_its_largest_body(server):
    base, key = server
    headers = key | {"content-type": "application/json"}
    with httpx.Client(base_url=base, timeout=60) as client:
        sinusoid = create(client, key)["id"]
        support = {"x": [[[[0.0] * 28] * 28]] * 5, "y": [0, 1, 2, 3, 4]}
        r = client.post("/tasks", headers=key, json={"model": "omniglot-5w1s", "support": support})
        assert r.status_code == 201, r.text
        omniglot = r.json()["id"]
    # Each route's largest bodies: MAX_BODY_BYTES of numbers (refused before they are
    # decoded), the most numbers the route takes (MAX_BODY_VALUES, or a numeric model's row
    # limits), rows beyond the row limits, and MAX_BODY_BYTES of images.
    task = '{"model":"sinusoid","support":{"y":[1],"x":['
    row = [[[0] * 28] * 28]
    valid_task = {  # as many query rows as the adaptation's memory allows
        "model": "omniglot-5w1s",
        "support": {"x": [row] * 5, "y": [0, 1, 2, 3, 4]},
        "query": {"x": [row] * 300, "y": [0] * 300},
    }
    values = 1_000_000 // 784 * (len(IMAGE_ROW) + 1)  # rows of 784 numbers in MAX_BODY_VALUES
    cases = [
        ("/tasks", rows_body(task, b"[1]", MAX_BODY, "]}}"), 413),
        ("/tasks", rows_body(task, b"[1]", 2 * MiB, "]}}"), 422),
        ("/tasks", json.dumps(valid_task, separators=(",", ":")).encode(), 201),
        (f"/tasks/{sinusoid}/predict", rows_body('{"x":[', b"[1]", MAX_BODY), 413),
        (f"/tasks/{sinusoid}/predict", rows_body('{"x":[', PADDED_ROW, 530_008), 200),
        (f"/tasks/{omniglot}/predict", rows_body('{"x":[', b"[1]", MAX_BODY), 413),
        (f"/tasks/{omniglot}/predict", rows_body('{"x":[', IMAGE_ROW, MAX_BODY), 413),
        (f"/tasks/{omniglot}/predict", rows_body('{"x":[', IMAGE_ROW, values), 200),
        (f"/tasks/{omniglot}/predict", rows_body('{"x":[', png(), MAX_BODY), 200),
        (f"/tasks/{sinusoid}/examples", rows_body('{"y":[1],"x":[', b"[1]", MAX_BODY), 413),
        (f"/tasks/{omniglot}/examples", rows_body('{"y":[1],"x":[', b"[1]", MAX_BODY), 413),
        (f"/tasks/{omniglot}/examples", rows_body('{"y":[1],"x":[', b"[1]", 2 * MiB), 422),
    ]
    seen = []
    with httpx.Client(base_url=base, timeout=120) as sender:
        for path, body, status in cases:

            def send(path: str = path, body: bytes = body) -> httpx.Response:
                return sender.post(path, headers=headers, content=body)

            seconds, r = probed(base, send)
            slowest = round(max(seconds) * 1000)
            seen.append((path, len(body), status, r.status_code, slowest, len(seconds)))
    report = "\n".join(
        f"{path}: {size} bytes, {got} (expected {want}), slowest probe {slowest} ms of {n}"
        for path, size, want, got, slowest, n in seen
    )
    fine = [want == got and slowest < PROBE_SECONDS * 1000 for _, _, want, got, slowest, _ in seen]
    assert all(fine), report


JSON = {"content-type": "application/json"}


def omniglot_task(client: TestClient, headers: dict[str, str]) -> str:
    support = {"x": [[[[0.0] * 28] * 28]] * 5, "y": [0, 1, 2, 3, 4]}
    r = client.post("/tasks", headers=headers, json={"model": "omniglot-5w1s", "support": support})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_numeric_models_bodies_are_held_to_what_its_rows_can_take(client, alice):
    """Settings: 1000 predict rows, 200 support and 500 query rows, MAX_BODY_BYTES 1 MiB; a
    sinusoid row is at most 96 bytes (a number, 64, in a list, 32), a target too."""
    sinusoid = create(client, alice)["id"]
    padded = b'{"x": [1.0' + b" " * 120_000 + b"]}"
    r = client.post(f"/tasks/{sinusoid}/predict", headers=alice | JSON, content=padded)
    detail = "the most a predict of model 'sinusoid' (at most 1000 rows) can take"
    assert_problem(r, 413, f"the request body exceeds 112384 bytes, {detail}")
    r = client.post(f"/tasks/{sinusoid}/examples", headers=alice | JSON, content=padded)
    detail = "the most examples for a task of model 'sinusoid' (at most 200 rows) can take"
    assert_problem(r, 413, f"the request body exceeds 54784 bytes, {detail}")
    task = b'{"model": "sinusoid", "support": {"x": [1, 2], "y": [1, 2]}' + b" " * 200_000 + b"}"
    r = client.post("/tasks", headers=alice | JSON, content=task)
    detail = "the most a task of model 'sinusoid' (at most 200 support and 500 query rows) can take"
    assert_problem(r, 413, f"the request body exceeds 150784 bytes, {detail}")
    # Within them, a large body's padding costs nothing: the same answers as a small one's.
    pretty = json.dumps({"x": [[-0.12345678901234567]] * 1000}, indent=8).encode()
    assert len(pretty) > 64 * 2**10
    r = client.post(f"/tasks/{sinusoid}/predict", headers=alice | JSON, content=pretty)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1000


def test_rows_beyond_the_limits_are_refused_before_they_are_decoded(client, alice):
    omniglot = omniglot_task(client, alice)
    rows = rows_body('{"x":[', b"[1]", 400_000)  # 100,000 rows
    r = client.post(f"/tasks/{omniglot}/predict", headers=alice | JSON, content=rows)
    assert_problem(r, 422, "x has 99998 rows; the limit is 1000")
    r = client.post(f"/tasks/{omniglot}/examples", headers=alice | JSON, content=rows)
    assert_problem(r, 422, "x has 99998 rows; the limit is 200")
    task = rows_body('{"model":"sinusoid","support":{"y":[1],"x":[', b"[1]", 400_000, "]}}")
    r = client.post("/tasks", headers=alice | JSON, content=task)
    assert_problem(r, 422, "support.x has 99988 rows; the limit is 200")
    wide = b'{"x": [[' + b",".join([b"1"] * 40_000) + b"]]}"  # one row of 40,000 numbers
    r = client.post(f"/tasks/{omniglot}/predict", headers=alice | JSON, content=wide)
    detail = "a list or object in the body (x[]) has 40000 items; none may have more than 1000"
    assert_problem(r, 422, detail)


def test_a_large_body_is_answered_as_a_small_one(client, alice):
    """Malformed JSON, a missing field, a wrong type: the words FastAPI (or pydantic) uses."""
    omniglot = omniglot_task(client, alice)
    predict = f"/tasks/{omniglot}/predict"
    large = b'{"x": [' + b",".join([b"[[[0]]]"] * 20_000)
    r = client.post(predict, headers=alice | JSON, content=large + b"]")  # unclosed
    assert_problem(r, 400, "the request body is not valid JSON")
    padding = json.dumps("a" * 100_000).encode()
    r = client.post(predict, headers=alice | JSON, content=b'{"y": [1], "pad": ' + padding + b"}")
    assert_problem(r, 422, "x: Field required")
    task = b'{"support": {"x": ' + padding + b', "y": []}}'
    r = client.post("/tasks", headers=alice | JSON, content=task)
    assert_problem(r, 422, "model: Field required")
    r = client.post(predict, headers=alice | JSON, content=b'{"x": ' + padding + b"}")
    assert_problem(r, 422, "x: Input should be a valid list")


def test_a_body_holding_too_many_values_is_a_413(settings, db, alice):
    with TestClient(create_app(settings.model_copy(update={"max_body_values": 2**15}))) as client:
        omniglot = omniglot_task(client, alice)
        rows = rows_body('{"x":[', IMAGE_ROW, 60 * (len(IMAGE_ROW) + 1) + 8)  # 60 x 784 numbers
        r = client.post(f"/tasks/{omniglot}/predict", headers=alice | JSON, content=rows)
        detail = (
            "the request body holds 47040 values (numbers, labels, rows); the limit is 32768: "
            "send fewer rows per request"
        )
        assert_problem(r, 413, detail)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_body_over_its_models_limit_is_refused_before_it_is_sent(server):
    base, key = server
    with httpx.Client(base_url=base, timeout=60) as client:
        sinusoid = create(client, key)["id"]
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        # 1 MB announced (within MAX_BODY_BYTES, beyond the 536,384 a sinusoid predict can
        # take), none of it sent: the 413 must come without it.
        conn.sendall(
            f"POST /tasks/{sinusoid}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"application/json\r\nAuthorization: {key['Authorization']}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        assert conn.recv(4096).startswith(b"HTTP/1.1 413 ")
