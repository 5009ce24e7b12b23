"""The two ASGI middlewares: admission (the body's size, the API key and the client's rate,
checked before the body is read), and per-request metrics and logging."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import CALLER, authenticate, services_of
from app.core.errors import (
    AppError,
    PayloadTooLarge,
    TooManyRequests,
    database_unavailable,
    problem,
    render,
)
from app.core.metrics import Metrics
from app.services.limits import retry_after

log = logging.getLogger("app")


class _TooLarge(Exception):
    """Raised in the app where it reads a body over the limit."""


class _CountedBody:
    """A request's ``receive`` and ``send`` while a body without a Content-Length streams in:
    past ``limit`` bytes a 413 is raised where the app reads it. The app may answer that its
    own way (FastAPI: 400, "There was an error parsing the body"): that answer is dropped, and
    the 413 sent instead, closing the connection (the rest of the body is never read)."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive, self._send, self.limit = receive, send, limit
        self.seen, self.started = 0, False
        self.refused: JSONResponse | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        self.seen += len(message.get("body", b""))
        if self.seen > self.limit:
            detail = f"the request body exceeds {self.limit} bytes"
            self.refused = problem(413, PayloadTooLarge.title, detail, {"Connection": "close"})
            raise _TooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.refused is None:  # else the app's answer to the refusal: dropped
            self.started = True
            await self._send(message)


class Admission:
    """What every request must pass before a route reads its body, in this order, each a
    problem+json answer: its size (413 over MAX_BODY_BYTES: at once by Content-Length, or as a
    body without one streams in; a body with a Content-Length is not counted again, the server
    reads exactly that many bytes), its API key (401; not on the ``public`` paths) and the
    client's request rate (429). The :class:`~app.services.keys.Caller` goes into the
    request's state, where the ``CurrentCaller`` and ``CurrentClient`` dependencies read it.
    One middleware, one pass over the headers: each layer costs the predict path. (How long
    a body may take is the server's to hold, app/core/server.py.)"""

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
        body = _CountedBody(receive, send, self.limit)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if body.refused is None:
                raise
        if body.refused is not None and not body.started:
            await body.refused(scope, receive, send)

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


def printable(text: str) -> str:
    """A client's text for a log line: as it is if printable, else with each character that
    is not (newlines, escapes, and a backslash, so that no escape is ambiguous) written as
    ``repr`` writes it, so a request can never start a log line of its own."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


class RequestMetrics:
    """Counts and times each request by its route template; logs one line per failed request
    (every request at DEBUG), its method and path made :func:`printable`."""

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
                method, path = printable(scope["method"]), printable(scope["path"])
                log.info("%s %s %d %.1fms", method, path, status, elapsed * 1000)
