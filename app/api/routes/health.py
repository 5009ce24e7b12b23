"""Liveness, readiness and Prometheus metrics (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.api.deps import DatabaseDep, MetricsDep, RegistryDep
from app.core.errors import problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(db: DatabaseDep, registry: RegistryDep) -> dict[str, Any] | Response:
    """The database answers and the meta-models are loaded."""
    try:
        await run_in_threadpool(db.ping)
    except Exception as exc:  # any failure to reach the database means not ready
        return problem(503, "Not ready", f"database unreachable ({exc.__class__.__name__})")
    if not registry.names:
        return problem(503, "Not ready", "no models loaded")
    return {"status": "ready", "models": registry.names}


@router.get("/metrics")
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
