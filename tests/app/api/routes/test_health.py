"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import FastAPI

from app.services.cache import LRUCache
from tests.utils.overrides import override_services
from tests.utils.tasks import create


def test_health_readiness_and_metrics(client, alice):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "models": ["omniglot-20w1s", "omniglot-5w1s", "sinusoid"],
    }
    cache = LRUCache(8)
    app: FastAPI = client.app
    override_services(app, cache=cache)
    tid = create(client, alice)["id"]
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    cache.pop(tid)
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/tasks",status="201"} 1.0' in text
    assert 'route="/tasks/{task_id}/predict",status="200"} 2.0' in text
    assert 'adaptations_total{model="sinusoid"} 1.0' in text
    assert "adapted_cache_hits_total 1.0" in text and "adapted_cache_misses_total 1.0" in text
    assert "http_request_duration_seconds_bucket" in text
