"""POST /tasks, predict, list, get, delete: happy paths, isolation and every bad input."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from app import crud
from app.core.db import Database
from app.core.metrics import Metrics
from app.main import create_app
from app.services.cache import ModelCache
from app.services.pool import WorkPool
from meta_core.artifact import load_artifact
from tests.conftest import ROOT
from tests.utils.database import client_id_of
from tests.utils.overrides import override_services
from tests.utils.problem import PROBLEM, assert_problem
from tests.utils.tasks import create, sinusoid_task, stored_task
from tests.utils.text import SHIPPED


def test_sinusoid_end_to_end(client, alice):
    x, y = sinusoid_task(10)
    grid = torch.linspace(-5, 5, 100)
    truth = 2.0 * torch.sin(grid - 1.0)
    r = client.post(
        "/tasks",
        headers=alice,
        json={
            "model": "sinusoid",
            "support": {"x": x, "y": y},
            "inner_steps": 10,
            "inner_lr": 0.01,
            "query": {"x": grid.tolist(), "y": truth.tolist()},
            "name": "amp 2",
        },
    )
    assert r.status_code == 201
    task = r.json()
    assert r.headers["location"] == f"/tasks/{task['id']}"
    assert task["support_size"] == 10 and task["name"] == "amp 2" and task["adapt_ms"] > 0
    m = task["metrics"]
    assert m["support_loss_after"] < m["support_loss_before"]
    assert m["query_loss_after"] < 0.25 * m["query_loss_before"]

    r = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": grid.tolist()})
    assert r.status_code == 200
    pred = torch.tensor(r.json()["predictions"])
    art = load_artifact(ROOT / "models" / "sinusoid")
    unadapted = art.predict(art.params, grid.view(-1, 1))[:, 0]
    mse, mse_before = ((pred - truth) ** 2).mean(), ((unadapted - truth) ** 2).mean()
    assert mse < 0.25 * mse_before
    # The same support adapted in-process with meta_core gives the same predictions.
    fast = art.adapt(torch.tensor(x).view(-1, 1), torch.tensor(y).view(-1, 1), steps=10, lr=0.01)
    torch.testing.assert_close(pred, art.predict(fast, grid.view(-1, 1))[:, 0], rtol=0, atol=1e-6)
    assert m["query_loss_after"] == pytest.approx(mse.item(), rel=1e-5)


@pytest.mark.omniglot
def test_classification_uses_the_clients_labels(client, alice):
    from meta_core.data.omniglot import PREPROCESSING, load_images, read_split

    images, ids = load_images()
    index = {c: i for i, c in enumerate(ids)}
    chars = [index[c] for c in read_split("test")[:3]]  # held-out characters
    drawings = images[chars].float() * PREPROCESSING.scale
    support = drawings[:, 0].unsqueeze(1).tolist()
    protos = drawings[:, 1].unsqueeze(1)  # other drawings of the same characters
    labels = ["cat", "dog", 7]
    r = client.post(
        "/tasks",
        headers=alice,
        json={
            "model": "omniglot-5w1s",
            "support": {"x": support, "y": labels},
            "query": {"x": protos.tolist(), "y": labels},
        },
    )
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["labels"] == [7, "cat", "dog"]
    assert "query_accuracy_after" in task["metrics"]
    r = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": protos.tolist()})
    body = r.json()
    assert body["labels"] == [7, "cat", "dog"]
    assert [p["label"] for p in body["predictions"]] == labels
    for p in body["predictions"]:
        assert len(p["probabilities"]) == 3 and sum(p["probabilities"]) == pytest.approx(1.0)


def test_list_get_delete(client, alice):
    ids = [create(client, alice, name=f"t{i}")["id"] for i in range(3)]
    page = client.get("/tasks?limit=2", headers=alice).json()
    assert page["total"] == 3 and [t["id"] for t in page["items"]] == ids[::-1][:2]
    assert client.get("/tasks?limit=2&offset=2", headers=alice).json()["items"][0]["id"] == ids[0]
    assert client.get(f"/tasks/{ids[1]}", headers=alice).json()["name"] == "t1"
    assert client.delete(f"/tasks/{ids[1]}", headers=alice).status_code == 204
    assert_problem(client.get(f"/tasks/{ids[1]}", headers=alice), 404, f"no task '{ids[1]}'")
    assert_problem(
        client.post(f"/tasks/{ids[1]}/predict", headers=alice, json={"x": [1.0]}),
        404,
        f"no task '{ids[1]}'",
    )
    assert_problem(client.delete(f"/tasks/{ids[1]}", headers=alice), 404, f"no task '{ids[1]}'")
    assert_problem(
        client.get("/tasks?limit=0", headers=alice),
        422,
        "query.limit: Input should be greater than or equal to 1",
    )


def test_another_clients_task_is_invisible(client, alice, bob):
    tid = create(client, alice)["id"]
    assert (
        client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [0.5]}).status_code == 200
    )  # now cached: bob must still be refused
    for r in (
        client.get(f"/tasks/{tid}", headers=bob),
        client.post(f"/tasks/{tid}/predict", headers=bob, json={"x": [0.5]}),
        client.delete(f"/tasks/{tid}", headers=bob),
    ):
        assert_problem(r, 404, f"no task '{tid}'")
    assert client.get("/tasks", headers=bob).json()["total"] == 0
    assert client.get(f"/tasks/{tid}", headers=alice).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}]
)
def test_missing_or_wrong_key_is_401(client, headers):
    r = client.get("/tasks", headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == PROBLEM


def test_a_restarted_service_predicts_identically(settings, db, alice):
    with TestClient(create_app(settings)) as first:
        tid = create(first, alice)["id"]
        before = first.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [0.1, 2.0]})
    with TestClient(create_app(settings)) as second:  # a new process: empty cache
        after = second.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [0.1, 2.0]})
    assert after.json() == before.json()


X, Y = sinusoid_task(4)
BAD = [
    (
        {"support": {"x": [[1.0, 2.0]] * 4, "y": Y}},
        422,
        "support.x has shape [4, 2]; model 'sinusoid' takes [n, 1]",
    ),
    (
        {"support": {"x": [1.0, float("nan"), 0.0, 1.0], "y": Y}},
        422,
        "support.x contains NaN or Inf, or a number beyond float32's range",
    ),
    (
        {"support": {"x": [1.0, 1e39, 0.0, 1.0], "y": Y}},
        422,
        "support.x contains NaN or Inf, or a number beyond float32's range",
    ),
    (
        {"support": {"x": X, "y": [1.0, 2.0, float("inf"), 0.0]}},
        422,
        "support.y contains NaN or Inf, or a number beyond float32's range",
    ),
    ({"support": {"x": [], "y": []}}, 422, "support.x is empty"),
    (
        {"support": {"x": [0.0] * 201, "y": [0.0] * 201}},
        422,
        "support.x has 201 rows; the limit is 200",
    ),
    (
        {"support": {"x": X, "y": Y[:3]}},
        422,
        "support.y has shape [3]; expected [4] or [4, 1] to match x",
    ),
    (
        {"support": {"x": [[1.0], [2.0, 3.0]], "y": [1.0, 2.0]}},
        422,
        "support.x must be a rectangular array of numbers",
    ),
    (
        {"support": {"x": ["a", "b", "c", "d"], "y": Y}},
        422,
        "support.x holds strings, but model 'sinusoid' takes numbers",
    ),
    (
        {"support": {"x": [[1.0], "b", [2.0], [3.0]], "y": Y}},
        422,
        "support.x must be a rectangular array of numbers",
    ),
    (  # a numeric string is not a number (NumPy would convert it)
        {"support": {"x": [1.0, "2.0", 0.0, 1.0], "y": Y}},
        422,
        "support.x must be a rectangular array of numbers",
    ),
    (
        {"support": {"x": [1.0, None, {}, 1.0], "y": Y}},
        422,
        "support.x must be a rectangular array of numbers",
    ),
    (
        {"support": {"x": X, "y": [1.0, "2", 0.0, 10**30]}},
        422,
        "support.y must be an array of numbers",
    ),
    (
        {"support": {"x": X, "y": [1.0, 10**30, 0.0, 1.0]}},
        422,
        "support.y must be an array of numbers",
    ),
    ({"inner_steps": 101}, 422, "inner_steps must be between 0 and 100, got 101"),
    ({"inner_steps": -1}, 422, "inner_steps must be between 0 and 100, got -1"),
    ({"inner_lr": 0}, 422, "inner_lr must be in (0, 10.0], got 0.0"),
    ({"inner_lr": 11}, 422, "inner_lr must be in (0, 10.0], got 11.0"),
    (
        {"model": "resnet"},
        422,
        f"unknown model 'resnet'; available: {SHIPPED}",
    ),
    (
        {"query": {"x": [0.0] * 501, "y": [0.0] * 501}},
        422,
        "query.x has 501 rows; the limit is 500",
    ),
    ({"extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ({"support": {"x": X}}, 422, "support.y: Field required"),
]


@pytest.mark.parametrize(("change", "status", "detail"), BAD)
def test_bad_task_input_is_a_clear_4xx_and_stores_nothing(client, alice, change, status, detail):
    body = {"model": "sinusoid", "support": {"x": X, "y": Y}} | change
    raw = json.dumps(body).encode()  # NaN and Infinity as Python's json writes them
    r = client.post("/tasks", headers=alice | {"content-type": "application/json"}, content=raw)
    assert_problem(r, status, detail)
    assert client.get("/tasks", headers=alice).json()["total"] == 0


def image_rows(n: int) -> list:
    return torch.zeros(n, 1, 28, 28).tolist()


@pytest.mark.parametrize(
    ("support_y", "query_y", "detail"),
    [
        ([0, 1, 2, 3, 4, 5], None, "support.y has 6 classes; the model takes at most 5"),
        ([0, 1, 2, 3, True, 4], None, "support.y must hold integer or string labels, not True"),
        ([0, 1, 2, 3, 4, 1.5], None, "support.y must hold integer or string labels, not 1.5"),
        ([0, 0, 1, 1, 2, 2], [0, 9], "query.y has labels not in the support set: [9]"),
        ([0, 0, 1, 1, 2], None, "support.y has 5 labels for 6 rows of x"),
        ([0, 0, 1, 1, 2, 2], [[0]], "query.y must hold integer or string labels, not [0]"),
        ([0, 0, 1, 1, 2, 2], [{}], "query.y must hold integer or string labels, not {}"),
        (
            [0, 0, 1, 1, 2, 2**60],
            None,
            f"support.y holds {2**60}; integer labels must be within ±2^53",
        ),
        (
            [0, 0, 1, 1, 2, "x" * 500_000],
            None,
            "support.y holds a label of 500000 characters; the limit is 100",
        ),
    ],
)
def test_bad_labels(client, alice, support_y, query_y, detail):
    body = {"model": "omniglot-5w1s", "support": {"x": image_rows(6), "y": support_y}}
    if query_y is not None:
        body["query"] = {"x": image_rows(len(query_y)), "y": query_y}
    assert_problem(client.post("/tasks", headers=alice, json=body), 422, detail)
    assert client.get("/tasks", headers=alice).json()["total"] == 0


def test_a_label_with_a_lone_surrogate_is_refused_and_stores_nothing(client, alice):
    rows = json.dumps(image_rows(2))
    raw = f'{{"model": "omniglot-5w1s", "support": {{"x": {rows}, "y": ["a", "\\ud800"]}}}}'
    r = client.post("/tasks", headers=alice | {"content-type": "application/json"}, content=raw)
    assert_problem(r, 422, "support.y holds a label that is not valid Unicode (a lone surrogate)")
    assert client.get("/tasks", headers=alice).json()["total"] == 0


def test_a_stored_label_json_cannot_carry_never_breaks_a_response(client, db, alice):
    tid = stored_task(db, client_id_of(db, alice), "omniglot-5w1s", labels=["a", "\ud800"])
    page = client.get("/tasks", headers=alice)
    assert page.status_code == 200 and page.json()["items"][0]["labels"] == ["a", "\ufffd"]
    assert client.get(f"/tasks/{tid}", headers=alice).json()["labels"] == ["a", "\ufffd"]
    r = client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": image_rows(1)})
    assert r.status_code == 200 and r.json()["labels"] == ["a", "\ufffd"]
    assert client.delete(f"/tasks/{tid}", headers=alice).status_code == 204


def test_stored_non_finite_weights_are_a_409_not_a_500(client, db, alice):
    art = load_artifact(ROOT / "models" / "sinusoid")
    broken = {k: torch.full_like(v, math.nan) for k, v in art.params.items()}
    tid = stored_task(db, client_id_of(db, alice), "sinusoid", weights=broken)
    r = client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    assert_problem(
        r,
        409,
        "the task's stored model has non-finite weights (its adaptation diverged before the "
        "service refused such adaptations): delete it and adapt again",
    )
    assert client.delete(f"/tasks/{tid}", headers=alice).status_code == 204


def test_a_diverging_adaptation_is_a_422_and_stores_nothing(client, alice):
    body = {
        "model": "sinusoid",
        "support": {"x": [[1.0], [2.0]], "y": [1.0, 2.0]},
        "inner_steps": 100,
        "inner_lr": 10,
    }
    r = client.post("/tasks", headers=alice, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("the adaptation diverged: the support loss went from ")
    assert r.json()["detail"].endswith(
        "in 100 steps at inner_lr 10.0; lower inner_lr or inner_steps"
    )
    huge = {"model": "sinusoid", "support": {"x": [[1.0], [2.0]], "y": [3e38, -3e38]}}
    assert_problem(
        client.post("/tasks", headers=alice, json=huge),
        422,
        "support_loss_before is inf: the support set's values are too large for the model's "
        "float32 arithmetic; scale x and y down",
    )
    assert client.get("/tasks", headers=alice).json()["total"] == 0


def test_a_prediction_json_cannot_carry_is_a_422(client, alice):
    tid = create(client, alice)["id"]
    r = client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [0.5, 3e38, -3e38]})
    assert_problem(
        r,
        422,
        "the predictions for rows [1, 2] of x are not finite: those inputs are too large for "
        "the model's float32 arithmetic",
    )


def test_an_offset_beyond_any_database_is_a_422(client, alice):
    r = client.get("/tasks?offset=10000000000000000000000000", headers=alice)
    assert_problem(r, 422, "query.offset: Input should be less than or equal to 2147483647")


def test_listing_and_getting_read_only_the_columns_they_show(client, db, alice):
    tid = create(client, alice)["id"]
    statements: list[str] = []
    engine = client.app.state.services.db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/tasks", headers=alice).status_code == 200
        assert client.get(f"/tasks/{tid}", headers=alice).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "tasks" in s]
    assert len(selects) >= 2
    assert not any(re.search(r"\btasks\.weights\b(?!_)", s) for s in selects), selects


def test_malformed_json_and_oversized_body(client, alice):
    r = client.post(
        "/tasks", headers=alice | {"content-type": "application/json"}, content=b'{"model": '
    )
    assert_problem(r, 400, "the request body is not valid JSON")
    big = b'{"x": [' + b"0.0," * 300_000 + b"0.0]}"
    r = client.post("/tasks", headers=alice | {"content-type": "application/json"}, content=big)
    assert_problem(r, 413, "the request body exceeds 1048576 bytes")


def test_bad_predict_input(client, alice):
    tid = create(client, alice)["id"]
    url = f"/tasks/{tid}/predict"
    assert_problem(
        client.post(url, headers=alice, json={"x": [[1.0, 2.0]]}),
        422,
        "x has shape [1, 2]; model 'sinusoid' takes [n, 1]",
    )
    assert_problem(client.post(url, headers=alice, json={"x": []}), 422, "x is empty")
    assert_problem(
        client.post(url, headers=alice, json={"x": [1.0, 1e39]}),
        422,
        "x contains NaN or Inf, or a number beyond float32's range",
    )
    assert_problem(
        client.post(url, headers=alice, json={"x": [0.0] * 1001}),
        422,
        "x has 1001 rows; the limit is 1000",
    )
    assert_problem(client.post(url, headers=alice, json={"y": [1]}), 422, "x: Field required")


def test_overload_answers_503_with_retry_after(client, alice):
    app: FastAPI = client.app
    metrics = Metrics()
    pool = WorkPool("adaptations", 1, 0, 1, metrics.rejected)

    pool.in_flight = pool.capacity  # as if every slot and queue place were taken
    override_services(app, adapt_pool=pool, metrics=metrics)
    x, y = sinusoid_task()
    r = client.post(
        "/tasks", headers=alice, json={"model": "sinusoid", "support": {"x": x, "y": y}}
    )
    assert_problem(r, 503, "1 adaptations are in progress; retry shortly")
    assert r.headers["retry-after"] == "1"
    assert client.get("/tasks", headers=alice).json()["total"] == 0
    assert (
        'work_rejected_total{pool="adaptations",reason="capacity"} 1.0'
        in client.get("/metrics").text
    )
    pool.shutdown()


def test_an_exhausted_connection_pool_is_a_503(client, database_url, alice):
    tid = create(client, alice)["id"]
    tiny = Database(database_url, pool_size=1, pool_timeout=0.2)
    override_services(client.app, db=tiny, cache=ModelCache(0))
    try:
        with tiny.engine.connect():  # the pool's one connection, taken
            r = client.get(f"/tasks/{tid}", headers=alice)
        assert_problem(r, 503, "every database connection is in use; retry shortly")
        assert r.headers["retry-after"] == "1"
        assert client.get(f"/tasks/{tid}", headers=alice).status_code == 200
    finally:
        tiny.dispose()


def test_database_outage_is_503_and_recovers(client, alice):
    app: FastAPI = client.app
    uncached = override_services(app, cache=ModelCache(0))  # every predict reads the database
    tid = create(client, alice)["id"]
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    override_services(app, db=down)
    try:
        r = client.get(f"/tasks/{tid}", headers=alice)
        assert_problem(r, 503, "the database cannot be reached; retry later")
        assert r.headers["retry-after"] == "1"
        x, y = sinusoid_task()
        assert (
            client.post(
                "/tasks", headers=alice, json={"model": "sinusoid", "support": {"x": x, "y": y}}
            ).status_code
            == 503
        )
        assert_problem(
            client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]}),
            503,
            "the database cannot be reached; retry later",
        )
    finally:
        override_services(app, cache=uncached.cache)
        down.dispose()
    assert client.get(f"/tasks/{tid}", headers=alice).status_code == 200
    assert client.get("/tasks", headers=alice).json()["total"] == 1


def test_sinusoid_predictions_are_row_independent(client, alice):
    tid = create(client, alice)["id"]
    url = f"/tasks/{tid}/predict"
    together = client.post(url, headers=alice, json={"x": [0.3, -2.0, 4.0]}).json()
    alone = [
        client.post(url, headers=alice, json={"x": [v]}).json()["predictions"][0]
        for v in (0.3, -2.0, 4.0)
    ]
    assert together["predictions"] == pytest.approx(alone, abs=1e-6)
    assert not math.isnan(alone[0])


def test_a_task_deleted_by_another_worker_stops_predicting(settings, db, alice):
    settings.cache_ttl_seconds = 0  # re-check on every cached predict
    with TestClient(create_app(settings)) as worker_a, TestClient(create_app(settings)) as worker_b:
        tid = create(worker_a, alice)["id"]
        assert worker_a.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]}).is_success
        assert worker_b.delete(f"/tasks/{tid}", headers=alice).status_code == 204
        r = worker_a.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
        assert_problem(r, 404, f"no task '{tid}'")


def test_predict_checks_the_key_before_reading_the_body(client, alice):
    tid = create(client, alice)["id"]
    url = f"/tasks/{tid}/predict"
    bad_json = {"content-type": "application/json"}
    r = client.post(url, headers=bad_json | {"Authorization": "Bearer nope"}, content=b"{")
    assert_problem(r, 401, "invalid or revoked API key")
    assert_problem(
        client.post(url, headers=alice | bad_json, content=b"{"),
        400,
        "the request body is not valid JSON",
    )


def test_predict_is_documented_by_its_route_declaration(client):
    op = client.get("/openapi.json").json()["paths"]["/tasks/{task_id}/predict"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictIn"}
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictOut"}
    assert [p["name"] for p in op["parameters"]] == ["task_id"]


def test_a_predict_whose_client_left_mid_body_is_a_400_not_a_crash(client, alice):
    tid = create(client, alice)["id"]
    app: FastAPI = client.app
    path = f"/tasks/{tid}/predict"
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", alice["Authorization"].encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "root_path": "",
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}  # the client is gone before its body arrives

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["detail"] == "the request body could not be read"


ROWS = json.dumps(image_rows(2))
# Every bad input issue 10 reproduced, and its neighbours, as raw bodies: (method, path, body,
# status). None may answer 5xx, store anything, or break the listing afterwards.
CORPUS = [
    (
        "POST",
        "/tasks",
        f'{{"model":"omniglot-5w1s","support":{{"x":{ROWS},"y":["a","\\ud800"]}}}}',
        422,
    ),
    (
        "POST",
        "/tasks",
        f'{{"model":"omniglot-5w1s","support":{{"x":{ROWS},"y":[0,1]}},"query":{{"x":{ROWS},"y":[[0],[1]]}}}}',
        422,
    ),
    (
        "POST",
        "/tasks",
        f'{{"model":"omniglot-5w1s","support":{{"x":{ROWS},"y":[0,1]}},"query":{{"x":{ROWS},"y":[{{}},{{}}]}}}}',
        422,
    ),
    (
        "POST",
        "/tasks",
        f'{{"model":"omniglot-5w1s","support":{{"x":{ROWS},"y":[0,{2**60}]}}}}',
        422,
    ),
    (
        "POST",
        "/tasks",
        f'{{"model":"omniglot-5w1s","support":{{"x":{ROWS},"y":[0,"{"x" * 500_000}"]}}}}',
        422,
    ),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[[1],[2]],"y":[3e38,-3e38]}}', 422),
    (
        "POST",
        "/tasks",
        '{"model":"sinusoid","support":{"x":[[1],[2]],"y":[1,2]},"inner_steps":100,"inner_lr":10}',
        422,
    ),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,NaN],"y":[1,2]}}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,Infinity],"y":[1,2]}}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,1e39],"y":[1,2]}}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,"2"],"y":[1,2]}}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[[1],[2,3]],"y":[1,2]}}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,2],"y":[1,' + "9" * 400 + "]}}", 422),
    (
        "POST",
        "/tasks",
        '{"model":"sinusoid","support":{"x":[1,2],"y":[1,2]},"inner_steps":1e99}',
        422,
    ),
    ("POST", "/tasks", '{"model":"sinusoid","support":{"x":[1,2],"y":[1,2]},"inner_lr":-1}', 422),
    ("POST", "/tasks", '{"model":"sinusoid","support":', 400),
    ("POST", "/tasks", "[]", 422),
    ("POST", "/tasks", '"\\ud800"', 422),
    ("GET", "/tasks?offset=10000000000000000000000000", "", 422),
    ("GET", "/tasks?limit=-1", "", 422),
    ("GET", "/tasks/%00", "", 404),
    ("DELETE", "/tasks/" + "x" * 5000, "", 404),
]


@pytest.mark.parametrize(("method", "path", "raw", "status"), CORPUS)
def test_the_bad_input_corpus(client, alice, method, path, raw, status):
    headers = alice | {"content-type": "application/json"}
    r = client.request(method, path, headers=headers, content=raw.encode("utf-8", "surrogatepass"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    page = client.get("/tasks", headers=alice)
    assert page.status_code == 200 and page.json()["total"] == 0


def test_the_corpus_against_predict(client, alice):
    tid = create(client, alice)["id"]
    headers = alice | {"content-type": "application/json"}
    for raw, status in [
        ('{"x":[[0]]}', 200),
        ('{"x":[{}]}', 422),
        ('{"x":[[0],[1,2]]}', 422),
        ('{"x":[3e38,-3e38]}', 422),
        ('{"x":["\\ud800"]}', 400),  # not valid JSON text for the parser
        ('{"x":' + "[" * 2000 + "]" * 2000 + "}", 400),  # nested beyond the parser's limit
        ('{"x":' + "[" * 50 + "0" + "]" * 50 + "}", 422),
        ('{"x":1}', 422),
    ]:
        r = client.post(f"/tasks/{tid}/predict", headers=headers, content=raw.encode())
        assert r.status_code == status, (raw[:40], r.text)


def test_an_expired_task_is_gone_and_purged(client, db, alice, monkeypatch):
    lasting = create(client, alice)
    assert lasting["expires_at"] is None
    brief = create(client, alice, ttl_seconds=60)
    assert brief["expires_at"] is not None
    url = f"/tasks/{brief['id']}"
    assert client.post(f"{url}/predict", headers=alice, json={"x": [1.0]}).status_code == 200
    later = datetime.now(UTC) + timedelta(seconds=61)

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return later

    for module in ("app.crud", "app.services.cache"):
        monkeypatch.setattr(f"{module}.datetime", Later)
    assert_problem(client.get(url, headers=alice), 404, f"no task '{brief['id']}'")
    r = client.post(f"{url}/predict", headers=alice, json={"x": [1.0]})  # cached, expired
    assert_problem(r, 404, f"no task '{brief['id']}'")
    page = client.get("/tasks", headers=alice).json()
    assert page["total"] == 1 and page["items"][0]["id"] == lasting["id"]
    with db.session() as session:
        assert crud.stored(session, client_id=client_id_of(db, alice))[0] == 2
        assert crud.purge_expired(session) == 1
        assert crud.stored(session, client_id=client_id_of(db, alice))[0] == 1
    assert client.delete(url, headers=alice).status_code == 404


def test_the_service_purges_expired_tasks_by_itself(settings, db, alice):
    client_id = client_id_of(db, alice)
    stored_task(db, client_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    quick = settings.model_copy(update={"purge_interval_seconds": 0.05})
    with TestClient(create_app(quick)):
        deadline = time.monotonic() + 10
        while True:
            with db.session() as session:
                if crud.stored(session, client_id=client_id) == (0, 0):
                    break
            assert time.monotonic() < deadline, "the expired task was not purged"
            time.sleep(0.05)


def test_a_task_whose_meta_model_version_is_not_served_is_a_409(client, db, alice):
    me = client_id_of(db, alice)
    older = stored_task(db, me, "sinusoid", meta_model_version="0.9.0")
    r = client.post(f"/tasks/{older}/predict", headers=alice, json={"x": [1.0]})
    assert_problem(
        r,
        409,
        f"task '{older}' was adapted from meta-model 'sinusoid' version 0.9.0, which this "
        "service no longer serves ('sinusoid' versions served: 1.0.0); it was made before "
        "tasks kept their support sets: adapt a new task from its examples (POST /tasks) and "
        "delete this one",
    )
    gone = stored_task(db, me, "sinusoid", meta_model_name="retired")
    r = client.post(f"/tasks/{gone}/predict", headers=alice, json={"x": [1.0]})
    assert r.json()["detail"].endswith(
        "('retired' versions served: none); no version of 'retired' is served: delete the task"
    )
    assert client.get(f"/tasks/{older}", headers=alice).status_code == 200
    assert client.delete(f"/tasks/{gone}", headers=alice).status_code == 204
