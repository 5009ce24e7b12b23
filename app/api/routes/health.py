"""Liveness, readiness and Prometheus metrics (no key needed)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool

from app.api.deps import MetricsDep, ServicesDep
from app.core.errors import problem
from app.schemas import problems

router = APIRouter(tags=["health"], responses=problems(413))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problems(503))
async def readyz(services: ServicesDep) -> dict[str, Any] | Response:
    """The database answers and the meta-models are loaded. ``announcements`` says whether
    this process hears other processes' changes (PostgreSQL's LISTEN/NOTIFY: "live"; "down":
    its caches re-check after their TTLs until it is back; "none": SQLite)."""
    db, registry, listener = services.db, services.registry, services.listener
    try:
        await run_in_threadpool(db.ping)
    except Exception as exc:  # any failure to reach the database means not ready
        return problem(503, "Not ready", f"database unreachable ({exc.__class__.__name__})")
    if not registry.names:
        return problem(503, "Not ready", "no models loaded")
    heard = "none" if listener is None else "live" if listener.live else "down"
    return {"status": "ready", "models": registry.names, "announcements": heard}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: every worker's, summed, when the service runs several
    (prometheus-client's multiprocess mode, set up by ``python -m app serve``)."""
    registry = metrics.registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    text = await run_in_threadpool(generate_latest, registry)  # every series: not on the loop
    return Response(text, media_type=CONTENT_TYPE_LATEST)
