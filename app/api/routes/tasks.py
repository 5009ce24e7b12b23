import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.deps import CurrentClient, RegistryDep, SessionDep
from app.core.errors import NotFound
from app.models import Task
from app.schemas import PredictIn, PredictOut, TaskCreate, TaskOut, TaskPage
from app.services.adaptation import (
    deserialize,
    outputs,
    prepare,
    run_adaptation,
    serialize,
    to_inputs,
)
from app.services.cache import AdaptedModel

log = logging.getLogger(__name__)
router = APIRouter(prefix="/tasks", tags=["tasks"])


def task_out(task: Task) -> TaskOut:
    return TaskOut(
        id=task.id,
        model=task.model_name,
        model_version=task.model_version,
        name=task.name,
        created_at=task.created_at,
        support_size=task.support_size,
        labels=task.labels,
        inner_steps=task.inner_steps,
        inner_lr=task.inner_lr,
        adapt_ms=task.adapt_ms,
        metrics=task.metrics,
    )


@router.post("", response_model=TaskOut, status_code=201)
async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    registry: RegistryDep,
    client_id: CurrentClient,
) -> TaskOut:
    """Adapt a meta-model to a support set and store the adapted model."""
    state = request.app.state
    s = state.settings
    art = registry.get(body.model)
    task = prepare(
        art,
        body,
        max_support=s.max_support,
        max_query=s.max_query,
        max_steps=s.max_inner_steps,
        max_lr=s.max_inner_lr,
        max_image_bytes=s.max_image_bytes,
        max_image_pixels=s.max_image_pixels,
    )
    adapted = await state.adapt_pool.run(run_adaptation, art, task)
    weights, digest = serialize(adapted.changed)

    def store() -> Task:
        with state.sessionmaker() as session:
            return crud.create_task(
                session,
                client_id=client_id,
                model_name=art.name,
                model_version=art.version,
                name=body.name,
                support_size=int(task.support_x.shape[0]),
                inner_steps=task.steps,
                inner_lr=task.lr,
                adapt_ms=round(adapted.adapt_ms, 3),
                labels=task.labels,
                metrics=adapted.metrics,
                weights=weights,
                weights_sha256=digest,
            )

    row = await run_in_threadpool(store)
    state.cache.put(row.id, AdaptedModel(client_id, art.name, adapted.params, task.labels))
    state.metrics.adaptations.labels(art.name).inc()
    state.metrics.adapt_seconds.labels(art.name).observe(adapted.adapt_ms / 1000)
    log.info(
        "task %s: %s adapted in %.1f ms (%d steps), support loss %.4f -> %.4f",
        row.id,
        art.name,
        adapted.adapt_ms,
        task.steps,
        adapted.metrics["support_loss_before"],
        adapted.metrics["support_loss_after"],
    )
    response.headers["Location"] = f"/tasks/{row.id}"
    return task_out(row)


@router.get("", response_model=TaskPage)
def list_tasks(
    session: SessionDep,
    client_id: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TaskPage:
    """The client's tasks, newest first."""
    rows, total = crud.list_tasks(session, client_id=client_id, limit=limit, offset=offset)
    return TaskPage(items=[task_out(t) for t in rows], total=total, limit=limit, offset=offset)


@router.get("/{task_id}", response_model=TaskOut)
def get_task(task_id: str, session: SessionDep, client_id: CurrentClient) -> TaskOut:
    """One task (404 if unknown or another client's)."""
    return task_out(crud.get_task(session, client_id=client_id, task_id=task_id))


@router.delete("/{task_id}", status_code=204)
def delete_task(
    task_id: str, request: Request, session: SessionDep, client_id: CurrentClient
) -> Response:
    """Delete a task and its adapted model."""
    crud.delete_task(session, client_id=client_id, task_id=task_id)
    request.app.state.cache.pop(task_id)
    return Response(status_code=204)


def _load_adapted(
    request: Request, registry: RegistryDep, client_id: int, task_id: str
) -> AdaptedModel:
    with request.app.state.sessionmaker() as session:
        task = crud.get_task(session, client_id=client_id, task_id=task_id)
    if task.model_name not in registry.models:
        raise NotFound(f"task {task_id!r} uses model {task.model_name!r}, which is not loaded")
    art = registry.models[task.model_name]
    params = deserialize(art, task.weights, task.weights_sha256)
    return AdaptedModel(client_id, art.name, params, task.labels)


def _check_exists(request: Request, client_id: int, task_id: str) -> None:
    with request.app.state.sessionmaker() as session:
        if not crud.task_exists(session, client_id=client_id, task_id=task_id):
            request.app.state.cache.pop(task_id)
            raise NotFound(f"no task {task_id!r}")


@router.post("/{task_id}/predict", response_model=PredictOut)
async def predict(
    task_id: str, body: PredictIn, request: Request, registry: RegistryDep, client_id: CurrentClient
) -> JSONResponse:
    """Predictions of the task's adapted model for every row of x."""
    state = request.app.state
    adapted, fresh = state.cache.get(task_id)
    if adapted is None or adapted.client_id != client_id:
        state.metrics.cache_misses.inc()
        adapted = await run_in_threadpool(_load_adapted, request, registry, client_id, task_id)
        state.cache.put(task_id, adapted)
    else:
        state.metrics.cache_hits.inc()
        if not fresh:  # another worker may have deleted it since we cached it
            await run_in_threadpool(_check_exists, request, client_id, task_id)
            state.cache.touch(task_id)
    art = registry.models[adapted.model_name]
    s = state.settings
    x = to_inputs(
        art,
        body.x,
        "x",
        s.max_predict_rows,
        max_image_bytes=s.max_image_bytes,
        max_image_pixels=s.max_image_pixels,
    )
    labels = adapted.labels
    out = outputs(art, adapted.params, x, len(labels) if labels is not None else None)
    if labels is None:
        values = out[:, 0].tolist() if art.n_outputs == 1 else out.tolist()
        return JSONResponse({"task_id": task_id, "labels": None, "predictions": values})
    probs = out.softmax(-1)
    rows = [
        {"label": labels[i], "probabilities": p}
        for i, p in zip(probs.argmax(-1).tolist(), probs.tolist(), strict=True)
    ]
    return JSONResponse({"task_id": task_id, "labels": labels, "predictions": rows})
