"""Request bodies: the most bytes a valid body can take for a meta-model, and JSON parsed off
the event loop when large.

A numeric meta-model's largest valid body follows from its rows: the route's row limit x the
bytes of a row (NUMBER_BYTES a number, LIST_BYTES a list: as JSON encoders write them, with
separators and indentation), plus ENVELOPE for the other fields. A larger body is refused
(413) before it is read when its Content-Length says so, else before it is parsed. An image
or audio model's rows may be base64 files, which only MAX_BODY_BYTES bounds. Bodies up to
SMALL bytes are always taken.

A body over SMALL bytes is parsed on a thread, in pieces (:mod:`app.core.json_pieces`): a
parser holds the interpreter lock for the whole of one call, so one call on a whole 8 MiB body
would stall the event loop as long on a thread as on the loop. Its row limits (422) and
MAX_BODY_VALUES (413) are checked before the rows are decoded: millions of rows beyond them
would cost the collector and the deallocator, on the loop, as much again, and turning numbers
into an array holds the lock about 30 ns each."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from app.api.deps import services_of
from app.core import json_pieces
from app.core.config import Settings
from app.core.errors import AppError, InvalidInput, PayloadTooLarge
from app.services.state import Services
from meta_core.artifact import Artifact
from meta_core.preprocessing import RolloutPreprocessing, TablePreprocessing

SMALL = 64 * 2**10  # parsed on the event loop: a few milliseconds at most
# A row's bytes as JSON encoders write it, json.dumps(indent=4) included: each number with its
# separator and indentation, each list with its brackets and theirs.
NUMBER_BYTES = 64
LIST_BYTES = 32
ENVELOPE = 16 * 2**10  # every field but the rows: model, name, inner_steps, ...


@dataclass(frozen=True)
class BodyLimit:
    """What one request's body may hold: ``max_bytes`` (``why`` says whence, in the 413; empty
    for MAX_BODY_BYTES), and rows: at most ``rows[path]`` items in the list at ``path``,
    ``max_items`` in any other list or object, and ``max_values`` in all."""

    max_bytes: int
    why: str
    rows: Mapping[str, int]
    max_items: int
    max_values: int  # in the whole body (MAX_BODY_VALUES)


def row_bytes(meta_model: Artifact) -> int | None:
    """The most bytes one valid input row takes as JSON; None for an image, audio or text
    model (a row may be a base64 image or recording, or a sentence)."""
    spec = meta_model.manifest.preprocessing
    if spec is not None and not isinstance(spec, TablePreprocessing | RolloutPreprocessing):
        return None
    shape = meta_model.row_shape
    lists = sum(math.prod(shape[:k]) for k in range(len(shape)))  # the nested lists of a row
    size = math.prod(shape) * NUMBER_BYTES + LIST_BYTES * lists
    if isinstance(spec, TablePreprocessing):  # or an object keyed by column name
        size = max(size, sum(NUMBER_BYTES + 12 * len(c) + 4 for c in spec.columns) + LIST_BYTES)
    return size


def target_bytes(meta_model: Artifact, settings: Settings) -> int:
    """The most bytes one valid target takes: a label (a string, each character escaped as
    \\uXXXX, twice for one beyond the BMP, or an integer) or a row of numbers."""
    if meta_model.task_kind == "classification":
        return 12 * settings.max_label_chars + NUMBER_BYTES
    return meta_model.n_outputs * NUMBER_BYTES + LIST_BYTES


def widest(meta_model: Artifact) -> int:
    """The longest list (or object) a valid row or target of the model holds."""
    return max(*meta_model.row_shape, meta_model.n_outputs)


def predict_limit(meta_model: Artifact, settings: Settings) -> BodyLimit:
    rows = settings.max_predict_rows
    return _limit(
        meta_model,
        settings,
        row_bytes(meta_model),
        rows,
        f"a predict of model {meta_model.name!r} (at most {rows} rows)",
        {"x": rows},
    )


def rollouts_limit(meta_model: Artifact, settings: Settings, what: str) -> BodyLimit:
    """A policy's trajectories: at most MAX_TRAJECTORIES of MAX_TRAJECTORY_STEPS steps, each
    an observation, an action, a reward and a done flag."""
    count, steps = settings.max_trajectories, settings.max_trajectory_steps
    step = (meta_model.row_shape[0] + meta_model.n_outputs + 2) * NUMBER_BYTES + 2 * LIST_BYTES
    size = min(settings.max_body_bytes, count * (steps * step + 4 * LIST_BYTES) + ENVELOPE)
    why = (
        f"the most {what} of model {meta_model.name!r} can take ({count} trajectories of "
        f"{steps} steps)"
        if size < settings.max_body_bytes
        else ""
    )
    items = max(steps, count, widest(meta_model))
    return BodyLimit(size, why, {"trajectories": count}, items, settings.max_body_values)


def examples_limit(meta_model: Artifact | None, settings: Settings) -> BodyLimit:
    """``POST /tasks/{id}/examples`` for a task of ``meta_model`` (None: one not served, which
    the update refuses itself)."""
    rows = settings.max_support
    if meta_model is None:
        paths = {"x": rows, "y": rows, "trajectories": settings.max_trajectories}
        items = max(rows, settings.max_trajectory_steps)
        return BodyLimit(settings.max_body_bytes, "", paths, items, settings.max_body_values)
    if meta_model.task_kind == "policy":
        return rollouts_limit(meta_model, settings, "a step for a task")
    row = row_bytes(meta_model)
    return _limit(
        meta_model,
        settings,
        None if row is None else row + target_bytes(meta_model, settings),
        rows,
        f"examples for a task of model {meta_model.name!r} (at most {rows} rows)",
        {"x": rows, "y": rows},
    )


def task_limit(meta_model: Artifact, settings: Settings) -> BodyLimit:
    if meta_model.task_kind == "policy":
        return rollouts_limit(meta_model, settings, "a task")
    support, query = settings.max_support, settings.max_query
    row = row_bytes(meta_model)
    return _limit(
        meta_model,
        settings,
        None if row is None else row + target_bytes(meta_model, settings),
        support + query,
        f"a task of model {meta_model.name!r} (at most {support} support and {query} query rows)",
        task_rows(settings),
    )


def task_rows(settings: Settings) -> dict[str, int]:
    support, query = settings.max_support, settings.max_query
    return {
        "support.x": support,
        "support.y": support,
        "query.x": query,
        "query.y": query,
        "trajectories": settings.max_trajectories,
    }


def any_task_limit(meta_models: list[Artifact], settings: Settings) -> BodyLimit:
    """``POST /tasks`` before its body names its model: the largest over ``meta_models``."""
    limits = [task_limit(m, settings) for m in meta_models]
    size = max([limit.max_bytes for limit in limits], default=settings.max_body_bytes)
    why = "the most a task of any model served can take"
    return BodyLimit(
        size,
        why if size < settings.max_body_bytes else "",
        task_rows(settings),
        max([limit.max_items for limit in limits], default=settings.max_query),
        settings.max_body_values,
    )


def _limit(
    meta_model: Artifact,
    settings: Settings,
    per_row: int | None,
    rows: int,
    what: str,
    paths: dict[str, int],
) -> BodyLimit:
    size = settings.max_body_bytes
    if per_row is not None:
        size = min(size, rows * per_row + ENVELOPE)
    why = f"the most {what} can take" if size < settings.max_body_bytes else ""
    items = max(*paths.values(), widest(meta_model))
    return BodyLimit(size, why, paths, items, settings.max_body_values)


def too_large(limit: BodyLimit) -> PayloadTooLarge:
    why = f", {limit.why}" if limit.why else ""  # else MAX_BODY_BYTES, as Admission says
    return PayloadTooLarge(f"the request body exceeds {limit.max_bytes} bytes{why}")


def refuse_by_length(request: Request, limit: BodyLimit) -> None:
    """413 if the body's Content-Length already exceeds the limit (nothing of it read)."""
    length = content_length(request)
    if length is not None and length > limit.max_bytes:
        raise too_large(limit)


async def read(request: Request) -> bytes:
    """The whole body (the ``Admission`` middleware bounds it by MAX_BODY_BYTES); a client
    that leaves before sending it is a 400, as FastAPI answers it."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise AppError("the request body could not be read") from None


def content_length(request: Request) -> int | None:
    """The body's announced length (None: not announced), from the raw headers: the predict
    path is short enough for ``request.headers``'s construction to show."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this content type as JSON (none given included)."""
    if content_type is None:
        return True
    kind = content_type.partition(";")[0].strip().lower()
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def parse(body: bytes, limit: BodyLimit, parser: json_pieces.Parse = json.loads) -> Any:
    """A large body's JSON, decoded in pieces on a thread: 400 if it is not JSON (as FastAPI
    words it), 413 if it holds more values than the limit allows, 422 if a list holds more
    rows."""
    try:
        return await run_in_threadpool(
            json_pieces.loads,
            body,
            parser,
            json_pieces.PIECE,
            limit.rows,
            limit.max_items,
            limit.max_values,
        )
    except json_pieces.InvalidJSON as exc:
        error = {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error"}
        raise RequestValidationError([error | {"input": {}, "ctx": {"error": str(exc)}}]) from None
    except json_pieces.TooManyValues as exc:
        raise PayloadTooLarge(
            f"the request body holds {exc.count} values (numbers, labels, rows); the limit is "
            f"{exc.limit}: send fewer rows per request"
        ) from None
    except json_pieces.TooManyItems as exc:
        if exc.path in limit.rows:
            raise InvalidInput(
                f"{exc.path} has {exc.count} rows; the limit is {exc.limit}"
            ) from None
        raise InvalidInput(
            f"a list or object in the body ({exc.path or 'the body itself'}) has {exc.count} "
            f"items; none may have more than {exc.limit}"
        ) from None


class LargeBodyRoute(APIRoute):
    """A route whose JSON body, when over SMALL bytes, is held to :meth:`body_limit` (413) and
    parsed in pieces off the event loop before FastAPI validates it, as it validates a body it
    parsed itself (bodies of other content types are left to FastAPI)."""

    async def body_limit(self, request: Request, services: Services) -> BodyLimit:
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            size = content_length(request)
            if size is not None and size <= SMALL:
                return await handle(request)
            services = services_of(request.app)
            limit = None
            if size is not None:
                limit = await self.body_limit(request, services)
                refuse_by_length(request, limit)
            body = await read(request)
            if len(body) > SMALL:
                limit = limit or await self.body_limit(request, services)
                if len(body) > limit.max_bytes:
                    raise too_large(limit)
                if is_json(request.headers.get("content-type")):
                    # Request.json() returns what it finds here, which FastAPI then validates.
                    request._json = await parse(body, limit)
            return await handle(request)

        return handler
