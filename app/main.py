"""The ASGI app: ``app.main:app``. Meta-models load at start and are rescanned while it runs;
the database must be migrated. The shared objects (:class:`~app.services.state.Services`) live
on ``app.state`` and reach routes only through :mod:`app.api.deps`."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import torch
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from app.api.middleware import Admission, RequestMetrics
from app.api.routes import health, meta_models, tasks
from app.core.config import Settings, get_settings
from app.core.db import Database, migration_state
from app.core.errors import install_handlers
from app.core.events import Listener, libpq_url
from app.core.metrics import Metrics
from app.schemas import Problem
from app.services.registry import MetaModelRegistry
from app.services.state import Services

log = logging.getLogger("app")
# What answers without an API key: probes, metrics and the API's documentation.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


class NotMigrated(RuntimeError):
    pass


def check_migrated(db: Database) -> None:
    current, head = migration_state(db.engine)
    if current != head:
        raise NotMigrated(
            f"the database is at revision {current or 'none (empty)'}, the code "
            f"needs {head}: run `alembic upgrade head` (DATABASE_URL="
            f"{db.engine.url.render_as_string(hide_password=True)})"
        )


def mount(app: FastAPI, *routers: APIRouter) -> None:
    """Declare the routers' routes on the app itself, as ``include_router`` did before FastAPI
    made it lazy: an included router is a branch matched twice per request, which costs
    predict a sixth of its time (docs/benchmarks.md, "The predict path against its floor"). Each
    route is declared anew, so it takes the app's dependency overrides; the OpenAPI schema is
    the one ``include_router`` gives (tested). Requests are matched in order: the routes go
    first, in the routers' order, ahead of the documentation routes FastAPI declares itself."""
    first = len(app.router.routes)
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"mount() takes API routes only, not {route!r}")
            app.router.add_api_route(
                route.path,
                route.endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=route.tags,
                dependencies=route.dependencies,
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses=route.responses,
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                include_in_schema=route.include_in_schema,
                response_class=route.response_class,
                name=route.name,
                route_class_override=type(route),
                openapi_extra=route.openapi_extra,
            )
    ours = app.router.routes[first:]
    del app.router.routes[first:]
    app.router.routes[:0] = ours


def document_problems(app: FastAPI) -> None:
    """Add the ``Problem`` body, which every route's error responses refer to, to the OpenAPI
    schema's components (the routes declare it by reference: its media type is
    problem+json, not FastAPI's application/json)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema()
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def listen(services: Services) -> Listener | None:
    """On PostgreSQL, the process's listener for change announcements (app/core/events.py):
    it drops what they name from the caches and, while it is connected, lets the caches be
    trusted without their TTL re-checks. None on SQLite, or with ANNOUNCEMENTS=false."""
    conninfo = libpq_url(services.settings.database_url)
    if conninfo is None or not services.settings.announcements:
        return None
    settings, cache, keys = services.settings, services.cache, services.keys

    def handle(kind: str, key: str) -> None:
        if kind == "task":
            cache.drop(key)
        elif kind == "client":
            keys.forget_client(int(key))
        elif kind == "meta_models":
            threading.Thread(target=services.registry.reload, name="reload").start()

    def on_state(live: bool) -> None:
        # Up: announcements will say what changes, so a cached entry needs no re-check (a TTL
        # of 0, "never cache", stays 0). Down, or back up: some may have been missed.
        lift = float("inf") if live else None
        cache.ttl = lift if lift and settings.cache_ttl_seconds > 0 else settings.cache_ttl_seconds
        keys.accept_seconds = (
            lift if lift and settings.auth_cache_seconds > 0 else settings.auth_cache_seconds
        )
        cache.clear()
        keys.clear()
        log.info("change announcements %s", "live" if live else "down: caches use their TTLs")

    listener = Listener(conninfo, handle, on_state)
    listener.start()
    listener.wait_live(timeout=5)
    return listener


async def poll_models(registry: MetaModelRegistry, every: float) -> None:
    """Scan the model folders every ``every`` seconds (0: never), for as long as the service
    runs."""
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(registry.reload)
        except Exception:  # a scan that fails must not end the polling
            log.exception("scanning the model folders failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        # run_in_threadpool and plain-def routes share these threads; each may hold one
        # database connection, so the pool is as large and no thread waits for one.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        db = Database(settings.database_url, settings.threads, settings.db_pool_timeout)
        check_migrated(db)
        services = Services.start(settings, db, metrics)
        listener = listen(services)
        services = services.replace(listener=listener)
        app.state.services = services
        purging = asyncio.create_task(services.tasks.purge_expired(settings.purge_interval_seconds))
        polling = asyncio.create_task(poll_models(services.registry, settings.model_poll_seconds))
        # What is loaded by now (modules, meta-models, warm-ups) lives as long as the process:
        # out of the cyclic collector's sight, a full collection walks only what requests left
        # behind instead of holding the GIL, and so the event loop, over all of it
        # (docs/architecture.md, "What runs where: nothing blocks the event loop", has the
        # measurement).
        gc.collect()
        gc.freeze()
        log.info(
            "ready: meta-models %s, database %s",
            services.registry.names,
            db.engine.url.render_as_string(hide_password=True),
        )
        yield
        gc.unfreeze()  # an app made again in this process (the tests) frees this one's cycles
        purging.cancel()
        polling.cancel()
        if listener is not None:
            listener.stop()
        services.adapt_pool.shutdown()
        services.predict_pool.shutdown()
        db.dispose()

    app = FastAPI(title="MAML adaptation service", version="0.1.0", lifespan=lifespan)
    install_handlers(app, settings.retry_after_seconds)
    mount(app, tasks.router, meta_models.router, health.router)  # the hot path's first
    document_problems(app)
    # Outermost last: metrics see every answer, admission's refusals included.
    app.add_middleware(Admission, limit=settings.max_body_bytes, public=PUBLIC_PATHS)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    # ``app.main:app`` is built on first access, so importing this module reads no settings.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
