"""Domain errors, and the one place they become RFC 9457 problem+json responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class AppError(Exception):
    """An error the client can act on: ``status`` and a ``detail`` saying what is wrong."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(AppError):
    status, title = 422, "Invalid input"


class NotFound(AppError):
    status, title = 404, "Not found"


class Unauthorized(AppError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Conflict(AppError):
    """The request is valid but the stored state does not allow it (say so, and how to fix)."""

    status, title = 409, "Conflict"


class PreconditionFailed(AppError):
    """The request's If-Match names a revision of the task other than its current one."""

    status, title = 412, "Precondition failed"


class PayloadTooLarge(AppError):
    status, title = 413, "Payload too large"


class Overloaded(AppError):
    status, title = 503, "Service overloaded"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class TooManyRequests(AppError):
    """A client over one of its limits (its share of a pool, its rate, its quotas)."""

    status, title = 429, "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class DatabaseUnavailable(AppError):
    status, title = 503, "Database unavailable"

    def __init__(
        self, *, retry_after: int, detail: str = "the database cannot be reached; retry later"
    ) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class StoredWeightsCorrupt(AppError):
    """A stored task's weights fail their checksum or do not fit its meta-model: the server's
    fault, logged, never the client's."""

    status, title = 500, "Stored model corrupt"


def database_unavailable(exc: Exception, retry_after: int) -> DatabaseUnavailable:
    """The 503 for a database that cannot be reached (``DBAPIError``) or whose connections are
    all taken (``sqlalchemy.exc.TimeoutError``)."""
    log.warning("database error: %s", exc.__class__.__name__)
    if isinstance(exc, PoolTimeout):
        busy = "every database connection is in use; retry shortly"
        return DatabaseUnavailable(retry_after=retry_after, detail=busy)
    return DatabaseUnavailable(retry_after=retry_after)


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def render(exc: AppError) -> JSONResponse:
    """An application error as its problem+json response."""
    if exc.status >= 500:
        log.error("%s: %s", exc.title, exc.detail)
    return problem(exc.status, exc.title, exc.detail, exc.headers)


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route of ``app`` answers on ``path`` (each route has its own)."""
    methods = {
        method
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.path_regex.match(path)
        for method in route.methods or ()
    }
    return sorted(methods)


def install_handlers(app: FastAPI, retry_after: int) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(400, "Malformed JSON", "the request body is not valid JSON")
        first = errors[0]
        detail = f"{_location(first['loc'])}: {first['msg']}"
        cleaned = [{"loc": _location(e["loc"]), "msg": e["msg"]} for e in errors[:20]]
        return problem(422, "Invalid input", detail, errors=cleaned)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return problem(exc.status_code, str(exc.detail), str(exc.detail), headers)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses (a safety net: input is validated before it is stored).
        log.warning("database refused a value: %s", exc.__class__.__name__)
        return problem(422, "Invalid input", "a value in the request cannot be stored")

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _db(_: Request, exc: Exception) -> JSONResponse:
        return render(database_unavailable(exc, retry_after))
