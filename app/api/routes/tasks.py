"""``/tasks``: adapt, list, get, delete, predict. Each route validates, calls the task service,
returns."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from app import crud
from app.api.deps import (
    Adapted,
    CacheDep,
    CurrentCaller,
    CurrentClient,
    DatabaseDep,
    MetricsDep,
    OwnedTask,
    PoolDep,
    RegistryDep,
    ServicesDep,
    SessionDep,
    SettingsDep,
    adapted_model,
    current_caller,
    services_of,
)
from app.core.errors import AppError
from app.schemas import PredictIn, PredictOut, TaskCreate, TaskOut, TaskPage, problems
from app.services import tasks as service

# Every route here may answer these (the key, the body limit, the client's rate, the database).
router = APIRouter(prefix="/tasks", tags=["tasks"], responses=problems(401, 413, 429, 503))
MAX_OFFSET = 2**31 - 1  # beyond, databases overflow; no client has that many tasks


# Predict first: requests are matched against routes in order, and predict is the hot path.
class PredictRoute(APIRoute):
    """The predict route resolves its own arguments, in this order: the services, the caller
    (identified by the ``Admission`` middleware before the body is read), the body
    (``PredictIn``: 400/422 exactly as FastAPI words them), the adapted model (404), and
    answers with the ``PredictOut`` it returns.

    FastAPI's generic per-request machinery (dependency graph, body field, response
    re-validation) costs several times the prediction itself on a small model; README, "The
    predict path against its floor", has the measurement. The route function below stays the
    one place the work is done, and its declaration gives the OpenAPI schema."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            services = services_of(request.app)
            task_id: str = request.path_params["task_id"]
            caller = await current_caller(request)
            try:
                body = PredictIn.model_validate_json(await request.body())
            except ClientDisconnect:  # as FastAPI answers a body it could not read
                raise AppError("the request body could not be read") from None
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from None
            adapted = await adapted_model(task_id, caller.client_id, services)
            out: PredictOut = await endpoint(
                task_id=task_id,
                body=body,
                adapted=adapted,
                services=services,
                caller=caller,
                request=request,
            )
            return Response(out.model_dump_json(), media_type="application/json")

        return handler


async def predict(
    task_id: str,
    body: PredictIn,
    adapted: Adapted,
    services: ServicesDep,
    caller: CurrentCaller,
    request: Request,
) -> PredictOut:
    """Predictions of the task's adapted model for every row of x."""
    return await service.predict(
        task_id,
        adapted,
        body.x,
        body_bytes=len(await request.body()),  # read once already: cached
        caller=caller,
        settings=services.settings,
        pool=services.predict_pool,
    )


router.add_api_route(
    "/{task_id}/predict",
    predict,
    methods=["POST"],
    response_model=PredictOut,
    responses=problems(400, 404, 409, 422),
    route_class_override=PredictRoute,
)


@router.post("", response_model=TaskOut, status_code=201, responses=problems(400, 404, 422))
async def create_task(
    body: TaskCreate,
    response: Response,
    caller: CurrentCaller,
    settings: SettingsDep,
    registry: RegistryDep,
    pool: PoolDep,
    cache: CacheDep,
    metrics: MetricsDep,
    db: DatabaseDep,
) -> TaskOut:
    """Adapt a meta-model to a support set and store the adapted model."""
    row = await service.create_task(
        body,
        caller=caller,
        settings=settings,
        registry=registry,
        pool=pool,
        cache=cache,
        metrics=metrics,
        db=db,
    )
    response.headers["Location"] = f"/tasks/{row.id}"
    return TaskOut.of(row)


@router.get("", response_model=TaskPage, responses=problems(422))
def list_tasks(
    session: SessionDep,
    client_id: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TaskPage:
    """The client's tasks, newest first."""
    rows, total = crud.list_tasks(session, client_id=client_id, limit=limit, offset=offset)
    return TaskPage(items=[TaskOut.of(t) for t in rows], total=total, limit=limit, offset=offset)


@router.get("/{task_id}", response_model=TaskOut, responses=problems(404))
def get_task(task: OwnedTask) -> TaskOut:
    """One task (404 if unknown or another client's)."""
    return TaskOut.of(task)


@router.delete("/{task_id}", status_code=204, responses=problems(404))
def delete_task(
    task_id: str, session: SessionDep, client_id: CurrentClient, cache: CacheDep
) -> Response:
    """Delete a task and its adapted model."""
    service.delete_task(session, client_id=client_id, task_id=task_id, cache=cache)
    return Response(status_code=204)
