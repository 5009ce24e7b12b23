"""Per-client limits over HTTP: the request rate (429), an adaptation's cost (422), stored tasks
and bytes (429), each naming its limit; per-client overrides; the token bucket."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from app import crud
from app.core.config import Settings
from app.services.limits import Limits, RateLimiter
from tests.utils.database import client_id_of
from tests.utils.problem import assert_problem
from tests.utils.tasks import create, sinusoid_task


def limit(db, headers, **overrides) -> None:
    with db.session() as session:
        crud.set_limits(session, client_id=client_id_of(db, headers), limits=overrides)


def test_a_client_over_its_rate_gets_429_and_others_do_not(client, db, alice, bob):
    limit(db, alice, rate_per_second=0.5, rate_burst=2)
    for _ in range(2):
        assert client.get("/tasks", headers=alice).status_code == 200
    r = client.get("/tasks", headers=alice)
    assert_problem(r, 429, r.json()["detail"])
    assert r.json()["detail"].startswith("over your request rate: 0.5 per second (bursts of 2)")
    assert r.headers["retry-after"] == "2"
    assert client.get("/tasks", headers=bob).status_code == 200
    assert "rate_limited_total 1.0" in client.get("/metrics").text


def test_an_adaptation_over_its_cost_budget_is_a_422_before_any_work(client, db, alice):
    limit(db, alice, max_adapt_flops=1e6)
    x, y = sinusoid_task(10)
    body = {"model": "sinusoid", "support": {"x": x, "y": y}, "inner_steps": 100}
    assert_problem(
        client.post("/tasks", headers=alice, json=body),
        422,
        "this adaptation would cost 0.0104 GFLOP (10 support rows x 100 inner steps of model "
        "'sinusoid', 3441 FLOPs per row); the limit is 0.001 GFLOP: send fewer rows or "
        "inner_steps",
    )
    assert client.post("/tasks", headers=alice, json=body | {"inner_steps": 5}).status_code == 201


def test_stored_tasks_and_bytes_are_capped_per_client(client, db, alice, bob):
    limit(db, alice, max_tasks=2)
    create(client, alice)
    create(client, alice)
    x, y = sinusoid_task()
    body = {"model": "sinusoid", "support": {"x": x, "y": y}}
    r = client.post("/tasks", headers=alice, json=body)
    assert_problem(
        r,
        429,
        "you store 2 tasks, the most one client may (limit: 2); delete some (DELETE /tasks/{id})",
    )
    assert r.headers["retry-after"] == "1"
    items = client.get("/tasks", headers=alice).json()["items"]
    assert len(items) == 2
    assert client.delete(f"/tasks/{items[0]['id']}", headers=alice).status_code == 204
    assert client.post("/tasks", headers=alice, json=body).status_code == 201  # room again
    limit(db, bob, max_stored_bytes=10_000)
    first = create(client, bob)  # its weights (7 KB, float32) and its support set
    assert first["storage"] == "float32" and 7_000 < first["stored_bytes"] < 8_000
    r = client.post("/tasks", headers=bob, json=body)
    assert_problem(
        r,
        429,
        f"your tasks take {first['stored_bytes']} bytes, and this one {first['stored_bytes']} "
        "more; the limit is 10000 bytes: delete some tasks (DELETE /tasks/{id})",
    )
    assert client.get("/tasks", headers=bob).json()["total"] == 1


def test_limits_default_to_the_settings_and_take_overrides():
    settings = Settings(rate_per_second=7, max_tasks_per_client=3)
    assert Limits.of(settings).rate_per_second == 7 and Limits.of(settings).max_tasks == 3
    mine = Limits.of(settings, {"max_tasks": 9, "unknown": 1})
    assert mine.max_tasks == 9 and mine.rate_per_second == 7
    with pytest.raises(ValueError, match="greater than 0"):
        Limits.of(settings, {"rate_per_second": 0})


def test_the_token_bucket_refills_at_its_rate(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("app.services.limits.time.monotonic", lambda: now[0])
    bucket = RateLimiter()
    assert [bucket.take(1, 2.0, 3) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(1, 2.0, 3) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take(1, 2.0, 3) == 0 and bucket.take(2, 2.0, 3) == 0


def test_forgetting_idle_buckets_uses_each_clients_own_rate(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("app.services.limits.time.monotonic", lambda: now[0])
    bucket = RateLimiter()
    assert bucket.take(1, 0.001, 2) == 0  # a slow client, one token left for a long time
    for client in range(2, 10_002):  # many fast clients, full again a moment later
        bucket.take(client, 1000.0, 2)
    now[0] += 1.0
    bucket.take(10_002, 1000.0, 2)  # past 10,000 buckets: the full ones are forgotten
    assert bucket.take(1, 0.001, 2) == 0 and bucket.take(1, 0.001, 2) > 0  # not refilled


def tiny_png() -> str:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_an_adaptation_over_its_memory_budget_is_a_422_before_any_work(client, db, alice):
    limit(db, alice, max_adapt_bytes=200 * 2**20)
    body = {"model": "omniglot-5w1s", "support": {"x": [tiny_png()] * 150, "y": [0, 1] * 75}}
    assert_problem(
        client.post("/tasks", headers=alice, json=body),
        422,
        "this adaptation would need about 461 MiB of memory (150 support rows of model "
        "'omniglot-5w1s'); the limit is 200 MiB: send fewer rows",
    )
    fewer = {"model": "omniglot-5w1s", "support": {"x": [tiny_png()] * 50, "y": [0, 1] * 25}}
    assert client.post("/tasks", headers=alice, json=fewer).status_code == 201
    assert client.get("/tasks", headers=alice).json()["total"] == 1
