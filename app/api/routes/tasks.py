"""``/tasks``: adapt, list, get, delete, predict. Each route validates, calls the task service,
returns."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
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
from app.schemas import (
    Examples,
    ExamplesIn,
    PredictIn,
    PredictOut,
    ReadaptIn,
    TaskCreate,
    TaskOut,
    TaskPage,
    etag,
    problems,
)
from app.services import tasks as service
from app.services.keys import Caller
from app.services.state import Services

# Every route here may answer these (the key, the body limit, the client's rate, the database).
router = APIRouter(prefix="/tasks", tags=["tasks"], responses=problems(401, 413, 429, 503))
MAX_OFFSET = 2**31 - 1  # beyond, databases overflow; no client has that many tasks
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=1000,
        description="the task's ETag as you last read it: the change is refused (412) if the "
        "task has changed since",
    ),
]
# The ETag of a task's answer (OpenAPI).
WITH_ETAG = {
    "headers": {"ETag": {"description": "the task's revision", "schema": {"type": "string"}}}
}


def tagged(task: TaskOut, response: Response) -> TaskOut:
    response.headers["ETag"] = task.etag
    return task


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
            adapted = await adapted_model(task_id, caller, services)
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


@router.post(
    "",
    response_model=TaskOut,
    status_code=201,
    responses={201: WITH_ETAG, **problems(400, 404, 422)},
)
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
    return tagged(TaskOut.of(row), response)


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


@router.get("/{task_id}", response_model=TaskOut, responses={200: WITH_ETAG, **problems(404)})
def get_task(task: OwnedTask, response: Response) -> TaskOut:
    """One task (404 if unknown or another client's), with its revision as the ETag."""
    return tagged(TaskOut.of(task), response)


@router.delete("/{task_id}", status_code=204, responses=problems(404, 412))
def delete_task(
    task_id: str,
    session: SessionDep,
    client_id: CurrentClient,
    cache: CacheDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete a task, its adapted model and its support set."""
    service.delete_task(
        session, client_id=client_id, task_id=task_id, cache=cache, if_match=if_match
    )
    return Response(status_code=204)


@router.get(
    "/{task_id}/model",
    response_class=Response,
    responses={
        200: {
            "description": "the adapted model as a standalone artifact: a tar archive of "
            "manifest.json and weights.safetensors, which meta_core.artifact.load_artifact "
            "reads",
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
            "headers": WITH_ETAG["headers"],
        },
        **problems(404, 409),
    },
)
def export_model(
    task_id: str, session: SessionDep, client_id: CurrentClient, registry: RegistryDep
) -> Response:
    """Download the task's adapted model, to predict offline exactly as the service does."""
    archive, task = service.export(session, client_id=client_id, task_id=task_id, registry=registry)
    return Response(
        archive,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="task-{task.id}.tar"',
            "ETag": etag(task.revision),
        },
    )


UPDATE_PROBLEMS = {200: WITH_ETAG, **problems(400, 404, 409, 412, 422)}


@router.post("/{task_id}/examples", response_model=TaskOut, responses=UPDATE_PROBLEMS)
async def add_examples(
    task_id: str,
    body: ExamplesIn,
    response: Response,
    services: ServicesDep,
    caller: CurrentCaller,
    if_match: IfMatch = None,
) -> TaskOut:
    """Add labelled examples to the task's support set (new classes allowed, up to the
    meta-model's ways) and adapt again from the meta-initialization on the whole set."""
    examples = Examples(x=body.x, y=body.y)
    change = service.Update(
        examples=examples, inner_steps=body.inner_steps, inner_lr=body.inner_lr, if_match=if_match
    )
    return tagged(await _update(task_id, change, services, caller), response)


@router.post("/{task_id}/readapt", response_model=TaskOut, responses=UPDATE_PROBLEMS)
async def readapt(
    task_id: str,
    response: Response,
    services: ServicesDep,
    caller: CurrentCaller,
    body: ReadaptIn | None = None,
    if_match: IfMatch = None,
) -> TaskOut:
    """Adapt the task again on its stored support set: onto another version of its
    meta-model (``model_version``; how a task moves off a version that is retired), or with
    other inner-loop settings."""
    body = body or ReadaptIn()
    change = service.Update(
        model_version=body.model_version,
        inner_steps=body.inner_steps,
        inner_lr=body.inner_lr,
        if_match=if_match,
    )
    return tagged(await _update(task_id, change, services, caller), response)


async def _update(
    task_id: str, change: service.Update, services: Services, caller: Caller
) -> TaskOut:
    row = await service.update_task(task_id, change, caller=caller, services=services)
    return TaskOut.of(row)
