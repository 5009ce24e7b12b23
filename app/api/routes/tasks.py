"""``/tasks``: adapt, list, get, delete, predict. Each route validates, calls the task service,
returns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import crud
from app.api.deps import (
    Adapted,
    CacheDep,
    CurrentClient,
    DatabaseDep,
    MetricsDep,
    OwnedTask,
    PoolDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
)
from app.schemas import PredictIn, PredictOut, TaskCreate, TaskOut, TaskPage
from app.services import tasks as service

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.post("", response_model=TaskOut, status_code=201)
async def create_task(
    body: TaskCreate,
    response: Response,
    client_id: CurrentClient,
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
        client_id=client_id,
        settings=settings,
        registry=registry,
        pool=pool,
        cache=cache,
        metrics=metrics,
        db=db,
    )
    response.headers["Location"] = f"/tasks/{row.id}"
    return TaskOut.of(row)


@router.get("", response_model=TaskPage)
def list_tasks(
    session: SessionDep,
    client_id: CurrentClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TaskPage:
    """The client's tasks, newest first."""
    rows, total = crud.list_tasks(session, client_id=client_id, limit=limit, offset=offset)
    return TaskPage(items=[TaskOut.of(t) for t in rows], total=total, limit=limit, offset=offset)


@router.get("/{task_id}", response_model=TaskOut)
def get_task(task: OwnedTask) -> TaskOut:
    """One task (404 if unknown or another client's)."""
    return TaskOut.of(task)


@router.delete("/{task_id}", status_code=204)
def delete_task(
    task_id: str, session: SessionDep, client_id: CurrentClient, cache: CacheDep
) -> Response:
    """Delete a task and its adapted model."""
    service.delete_task(session, client_id=client_id, task_id=task_id, cache=cache)
    return Response(status_code=204)


@router.post("/{task_id}/predict", response_model=PredictOut)
async def predict(
    task_id: str, body: PredictIn, adapted: Adapted, settings: SettingsDep
) -> PredictOut:
    """Predictions of the task's adapted model for every row of x."""
    return service.predict(task_id, adapted, body.x, settings)
