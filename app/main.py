"""The ASGI app: ``app.main:app``. Artifacts load once at start; the database must be migrated."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.routes import health, models, tasks
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_sessionmaker, migration_state
from app.core.errors import install_handlers, problem
from app.core.metrics import Metrics
from app.services.adaptation import AdaptationPool, StoredWeightsCorrupt
from app.services.cache import LRUCache
from app.services.registry import ModelRegistry

log = logging.getLogger("app")


class NotMigrated(RuntimeError):
    pass


def check_migrated(engine) -> None:  # type: ignore[no-untyped-def]
    current, head = migration_state(engine)
    if current != head:
        raise NotMigrated(
            f"the database is at revision {current or 'none (empty)'}, the code "
            f"needs {head}: run `alembic upgrade head` (DATABASE_URL="
            f"{engine.url.render_as_string(hide_password=True)})"
        )


class BodyLimit:
    """413 for bodies over MAX_BODY_BYTES, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, "Payload too large", f"the request body exceeds {self.limit} bytes")(
            scope, receive, send
        )


class _TooLarge(Exception):
    pass


class RequestMetrics:
    """Counts and times each request by its route template; logs one line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            if log.isEnabledFor(logging.DEBUG) or status >= 400:
                log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed * 1000)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        engine = make_engine(settings.database_url)
        check_migrated(engine)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.registry = ModelRegistry.load(settings.model_dir)
        app.state.adapt_pool = AdaptationPool(
            settings.adapt_concurrency, settings.adapt_queue, settings.retry_after_seconds
        )
        log.info(
            "ready: models %s, database %s",
            sorted(app.state.registry.models),
            engine.url.render_as_string(hide_password=True),
        )
        yield
        app.state.adapt_pool.shutdown()
        engine.dispose()

    app = FastAPI(title="MAML adaptation service", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.cache = LRUCache(settings.cache_size, settings.cache_ttl_seconds)
    app.state.auth_cache = {}
    install_handlers(app, settings.retry_after_seconds)

    @app.exception_handler(StoredWeightsCorrupt)
    async def _corrupt(_, exc: StoredWeightsCorrupt):  # type: ignore[no-untyped-def]
        log.error("stored weights corrupt: %s", exc)
        return problem(500, "Stored model corrupt", str(exc))

    for module in (health, models, tasks):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    # ``app.main:app`` is built on first access, so importing this module reads no settings.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
