"""``/tasks``: adapt, list, get, delete, predict. Each route validates, calls the task service,
returns."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api import bodies
from app.api.deps import (
    Adapted,
    CurrentCaller,
    CurrentClient,
    OwnedTask,
    ServicesDep,
    SessionDep,
    TasksDep,
    adapted_model,
    current_caller,
    services_of,
)
from app.core.config import Settings
from app.core.errors import InvalidInput
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
from app.services import prediction
from app.services.keys import Caller
from app.services.state import Services
from app.services.tasks import PolicyStep, Update
from app.tables import TaskRow
from meta_core.artifact import Artifact

# Every route here may answer these (the key, the body's time and size, the client's rate,
# the database).
router = APIRouter(prefix="/tasks", tags=["tasks"], responses=problems(401, 408, 413, 429, 503))
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
    (identified by the ``Admission`` middleware before the body is read), the adapted model
    (404), the body (413 over what the model's rows can take, app/api/bodies.py; then
    ``PredictIn``: 400/422 exactly as FastAPI words them; over SMALL bytes, parsed off the
    event loop), and answers with the ``PredictOut`` it returns.

    FastAPI's generic per-request machinery (dependency graph, body field, response
    re-validation) costs several times the prediction itself on a small model;
    docs/benchmarks.md, "The predict path against its floor", has the measurement. The route
    function below stays the one place the work is done, and its declaration gives the OpenAPI
    schema."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            services = services_of(request.app)
            task_id: str = request.path_params["task_id"]
            caller = await current_caller(request)
            adapted = await adapted_model(task_id, caller, services)
            body = await predict_body(request, adapted.meta_model, services.settings)
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


async def predict_body(request: Request, meta_model: Artifact, settings: Settings) -> PredictIn:
    """The body of a predict for ``meta_model``: a small one validated from its JSON at once,
    a larger one held to the model's limit and parsed in pieces on a thread."""
    size = bodies.content_length(request)
    limit = None
    if size is None or size > bodies.SMALL:
        limit = bodies.predict_limit(meta_model, settings)
        bodies.refuse_by_length(request, limit)
    raw = await bodies.read(request)
    try:
        if len(raw) <= bodies.SMALL:
            return PredictIn.model_validate_json(raw)
        limit = limit or bodies.predict_limit(meta_model, settings)
        if len(raw) > limit.max_bytes:
            raise bodies.too_large(limit)
        return PredictIn.model_validate(await bodies.parse(raw, limit, pydantic_core.from_json))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def predict(
    task_id: str,
    body: PredictIn,
    adapted: Adapted,
    services: ServicesDep,
    caller: CurrentCaller,
    request: Request,
) -> PredictOut:
    """Predictions of the task's adapted model for every row of x."""
    return await prediction.predict(
        task_id,
        adapted,
        body.x,
        body_bytes=len(await request.body()),  # read once already: cached
        caller=caller,
        settings=services.settings,
        pool=services.predict_pool,
        batchers=services.batchers,
        sampling=prediction.Sampling(body.sample, body.seed)
        if body.sample or body.seed is not None
        else None,
    )


router.add_api_route(
    "/{task_id}/predict",
    predict,
    methods=["POST"],
    response_model=PredictOut,
    responses=problems(400, 404, 409, 422),
    route_class_override=PredictRoute,
)


class CreateRoute(bodies.LargeBodyRoute):
    """``POST /tasks``: a large body, before it names its model, is held to the most a task of
    any model served can take, then to its own model's."""

    async def body_limit(self, request: Request, services: Services) -> bodies.BodyLimit:
        served = [
            art for versions in services.registry.versions.values() for art in versions.values()
        ]
        return bodies.any_task_limit(served, services.settings)


class ExamplesRoute(bodies.LargeBodyRoute):
    """``POST /tasks/{id}/examples``: a large body is held to what the task's meta-model can
    take (the task is read first: 404 before the body is)."""

    async def body_limit(self, request: Request, services: Services) -> bodies.BodyLimit:
        client_id = (await current_caller(request)).client_id
        task_id: str = request.path_params["task_id"]

        def read() -> TaskRow:
            with services.db.session() as session:
                return crud.get_task(session, client_id=client_id, task_id=task_id)

        task = await run_in_threadpool(read)
        meta_model = services.registry.exact(task.meta_model_name, task.meta_model_version)
        return bodies.examples_limit(meta_model, services.settings)


async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    caller: CurrentCaller,
    services: ServicesDep,
) -> TaskOut:
    """Adapt a meta-model to a support set and store the adapted model."""
    size = len(await request.body())  # read already: cached
    if size > bodies.SMALL:
        meta_model = services.registry.for_new_task(body.model, body.model_version)
        limit = bodies.task_limit(meta_model, services.settings)
        if size > limit.max_bytes:
            raise bodies.too_large(limit)
    row = await services.tasks.create(body, caller)
    response.headers["Location"] = f"/tasks/{row.id}"
    return tagged(TaskOut.of(row), response)


router.add_api_route(
    "",
    create_task,
    methods=["POST"],
    response_model=TaskOut,
    status_code=201,
    responses={201: WITH_ETAG, **problems(400, 404, 422)},
    route_class_override=CreateRoute,
)


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


@router.get("/{task_id}", response_model=TaskOut, responses={200: WITH_ETAG, **problems(404, 422)})
def get_task(task: OwnedTask, response: Response) -> TaskOut:
    """One task (404 if unknown or another client's), with its revision as the ETag."""
    return tagged(TaskOut.of(task), response)


@router.delete("/{task_id}", status_code=204, responses=problems(404, 412, 422))
def delete_task(
    task_id: str,
    session: SessionDep,
    client_id: CurrentClient,
    tasks: TasksDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete a task, its adapted model and its support set."""
    tasks.delete(session, client_id=client_id, task_id=task_id, if_match=if_match)
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
        **problems(404, 409, 422),
    },
)
def export_model(
    task_id: str, session: SessionDep, client_id: CurrentClient, tasks: TasksDep
) -> Response:
    """Download the task's adapted model, to predict offline exactly as the service does."""
    archive, task = tasks.export(session, client_id=client_id, task_id=task_id)
    return Response(
        archive,
        media_type="application/x-tar",
        headers={
            "Content-Disposition": f'attachment; filename="task-{task.id}.tar"',
            "ETag": etag(task.revision),
        },
    )


UPDATE_PROBLEMS = {200: WITH_ETAG, **problems(400, 404, 409, 412, 422)}


async def add_examples(
    task_id: str,
    body: ExamplesIn,
    response: Response,
    services: ServicesDep,
    caller: CurrentCaller,
    if_match: IfMatch = None,
) -> TaskOut:
    """Add labelled examples to the task's support set (new classes allowed, up to the
    meta-model's ways) and adapt again from the meta-initialization on the whole set; or, for
    a policy task, take one more policy-gradient step on rollouts of its current revision."""
    if body.trajectories is not None or body.revision is not None:
        step = policy_step(body, if_match)
        return tagged(TaskOut.of(await services.tasks.step(task_id, step, caller)), response)
    if body.x is None or body.y is None:
        raise InvalidInput(
            "x and y are required (a policy task takes trajectories and their revision)"
        )
    examples = Examples(x=body.x, y=body.y)
    change = Update(
        examples=examples, inner_steps=body.inner_steps, inner_lr=body.inner_lr, if_match=if_match
    )
    return tagged(await _update(task_id, change, services, caller), response)


router.add_api_route(
    "/{task_id}/examples",
    add_examples,
    methods=["POST"],
    response_model=TaskOut,
    responses=UPDATE_PROBLEMS,
    route_class_override=ExamplesRoute,
)


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
    change = Update(
        model_version=body.model_version,
        inner_steps=body.inner_steps,
        inner_lr=body.inner_lr,
        if_match=if_match,
    )
    return tagged(await _update(task_id, change, services, caller), response)


def policy_step(body: ExamplesIn, if_match: str | None) -> PolicyStep:
    """A policy task's step: its trajectories with the revision that collected them."""
    if body.trajectories is None or body.revision is None:
        raise InvalidInput("a policy task's step needs both trajectories and revision")
    if body.x is not None or body.y is not None:
        raise InvalidInput("send trajectories (a policy task) or x and y, not both")
    return PolicyStep(body.trajectories, body.revision, body.inner_steps, body.inner_lr, if_match)


async def _update(task_id: str, change: Update, services: Services, caller: Caller) -> TaskOut:
    return TaskOut.of(await services.tasks.update(task_id, change, caller))
