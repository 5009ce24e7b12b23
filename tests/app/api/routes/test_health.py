"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from fastapi import FastAPI

from app.api.routes import health
from app.services.cache import ModelCache
from tests.conftest import ROOT
from tests.utils.overrides import override_services
from tests.utils.server import running_server
from tests.utils.tasks import create
from tests.utils.text import SHIPPED


def test_health_readiness_and_metrics(client, alice, database_url):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "models": SHIPPED,
        "announcements": "live" if database_url.startswith("postgresql") else "none",
    }
    cache = ModelCache(8)
    app: FastAPI = client.app
    override_services(app, cache=cache)
    tid = create(client, alice)["id"]
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    cache.drop(tid)
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/tasks",status="201"} 1.0' in text
    assert 'route="/tasks/{task_id}/predict",status="200"} 2.0' in text
    assert 'adaptations_total{model="sinusoid"} 1.0' in text
    assert "adapted_cache_hits_total 1.0" in text and "adapted_cache_misses_total 1.0" in text
    assert "http_request_duration_seconds_bucket" in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_count_every_worker(database_url, db):
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running_server(env, "--workers", "2") as base:
        for _ in range(40):  # a connection each: both workers answer some
            assert httpx.get(f"{base}/healthz").status_code == 200
        series = 'http_requests_total{method="GET",route="/healthz",status="200"}'
        for _ in range(4):  # whichever worker answers the scrape
            lines = httpx.get(f"{base}/metrics").text.splitlines()
            assert f"{series} 40.0" in lines, [line for line in lines if "healthz" in line]


def test_metrics_are_rendered_off_the_event_loop(client, monkeypatch):
    """Rendering every series (all workers' files, with several) is work for a thread."""
    rendered_on_loop = []

    def render(registry):
        try:
            asyncio.get_running_loop()
            rendered_on_loop.append(True)
        except RuntimeError:  # a worker thread has no running loop
            rendered_on_loop.append(False)
        return b"# rendered\n"

    monkeypatch.setattr(health, "generate_latest", render)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.text == "# rendered\n"
    assert rendered_on_loop == [False]
