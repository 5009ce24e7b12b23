"""The two ASGI middlewares: admission (the body's size, the API key and the client's rate,
checked before the body is read), and per-request metrics and logging."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import CALLER, authenticate, services_of
from app.core.errors import (
    AppError,
    PayloadTooLarge,
    TooManyRequests,
    database_unavailable,
    render,
)
from app.core.metrics import Metrics
from app.services.limits import retry_after

log = logging.getLogger("app")


class _TooLarge(Exception):
    pass


class Admission:
    """What every request must pass before a route reads its body, in this order, each a
    problem+json answer: its size (413 over MAX_BODY_BYTES: at once by Content-Length, or as a
    body without one streams in; a body with a Content-Length is not counted again, the server
    reads exactly that many bytes), its API key (401; not on the ``public`` paths) and the
    client's request rate (429). The :class:`~app.services.keys.Caller` goes into the
    request's state, where the ``CurrentCaller`` and ``CurrentClient`` dependencies read it.
    One middleware, one pass over the headers: each layer costs the predict path."""

    def __init__(self, app: ASGIApp, limit: int, public: frozenset[str]) -> None:
        self.app, self.limit, self.public = app, limit, public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length, key = None, b""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"authorization":
                key = value
        if length is not None and length > self.limit:
            return await self._too_large(scope, receive, send)
        if scope["path"] not in self.public:
            refused = await self._admit(scope, key.decode("latin-1"))
            if refused is not None:
                return await render(refused)(scope, receive, send)
        if length is not None:
            return await self.app(scope, receive, send)
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

    async def _admit(self, scope: Scope, header: str) -> AppError | None:
        """None with the caller in the scope's state, or the error to answer."""
        services = services_of(scope["app"])
        try:
            caller = await authenticate(header, services)
        except AppError as refused:
            return refused
        except (DBAPIError, PoolTimeout) as exc:
            return database_unavailable(exc, services.settings.retry_after_seconds)
        limits = caller.limits
        wait = services.rates.take(caller.client_id, limits.rate_per_second, limits.rate_burst)
        if wait:
            services.metrics.rate_limited.inc()
            return TooManyRequests(
                f"over your request rate: {limits.rate_per_second:g} per second (bursts of "
                f"{limits.rate_burst}); retry in {wait:.2f} s",
                retry_after=retry_after(wait),
            )
        scope.setdefault("state", {})[CALLER] = caller
        return None

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"the request body exceeds {self.limit} bytes")
        await render(error)(scope, receive, send)


class RequestMetrics:
    """Counts and times each request by its route template; logs one line per failed request
    (every request at DEBUG)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        # The labelled series, looked up once per (method, route, status): ``labels()`` costs
        # more than the increment itself.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

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
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], route, status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (
                    self.metrics.requests.labels(key[0], route, str(status)),
                    self.metrics.latency.labels(key[0], route),
                )
            series[0].inc()
            series[1].observe(elapsed)
            if status >= 400 or log.isEnabledFor(logging.DEBUG):
                log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed * 1000)
