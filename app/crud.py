"""Database reads and writes, each scoped to the calling client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.models import Client, Task


def create_task(
    session: Session,
    *,
    client_id: int,
    model_name: str,
    model_version: str,
    name: str | None,
    support_size: int,
    inner_steps: int,
    inner_lr: float | None,
    adapt_ms: float,
    labels: list | None,
    metrics: dict,
    weights: bytes,
    weights_sha256: str,
) -> Task:
    """Insert a task and its weights in one transaction: all of it or nothing."""
    task = Task(
        id=str(uuid.uuid4()),
        client_id=client_id,
        name=name,
        model_name=model_name,
        model_version=model_version,
        created_at=datetime.now(UTC),
        support_size=support_size,
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        adapt_ms=adapt_ms,
        labels=labels,
        metrics=metrics,
        weights=weights,
        weights_sha256=weights_sha256,
    )
    session.add(task)
    session.commit()
    return task


def get_task(session: Session, *, client_id: int, task_id: str) -> Task:
    """The client's task, or 404 (another client's task is indistinguishable from none)."""
    task = session.scalar(select(Task).where(Task.id == task_id, Task.client_id == client_id))
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def task_exists(session: Session, *, client_id: int, task_id: str) -> bool:
    """A cheap check (no weights read) that the client's task is still there."""
    return (
        session.scalar(select(Task.id).where(Task.id == task_id, Task.client_id == client_id))
        is not None
    )


def list_tasks(
    session: Session, *, client_id: int, limit: int, offset: int
) -> tuple[list[Task], int]:
    total = (
        session.scalar(select(func.count()).select_from(Task).where(Task.client_id == client_id))
        or 0
    )
    rows = session.scalars(
        select(Task)
        .where(Task.client_id == client_id)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def delete_task(session: Session, *, client_id: int, task_id: str) -> None:
    result = session.execute(delete(Task).where(Task.id == task_id, Task.client_id == client_id))
    if result.rowcount == 0:
        raise NotFound(f"no task {task_id!r}")
    session.commit()


def create_client(session: Session, *, name: str, key_hash: str, key_prefix: str) -> Client:
    client = Client(
        name=name, key_hash=key_hash, key_prefix=key_prefix, created_at=datetime.now(UTC)
    )
    session.add(client)
    session.commit()
    return client
