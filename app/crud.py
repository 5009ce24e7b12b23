"""Database reads and writes, each scoped to the calling client. Nothing here commits: the
caller's session scope (:meth:`app.core.db.Database.session`) does, once, at its end."""

from __future__ import annotations

import reprlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, null, or_, select, update
from sqlalchemy.orm import Session, load_only, with_expression

from app.core.errors import Conflict, NotFound, Unauthorized
from app.core.events import announce
from app.tables import ClientRow, TaskRow


@dataclass(frozen=True)
class AdaptedState:
    """What one adaptation leaves of a task: the columns creating it and updating it write
    (the meta-model it was adapted from, the inner loop's settings and scores, the changed
    weights and the support set as safetensors bytes with their sha256)."""

    meta_model_name: str
    meta_model_version: str
    meta_model_hash: str
    support_size: int
    inner_steps: int
    inner_lr: float | None
    adapt_ms: float
    labels: list[int | str] | None
    metrics: dict[str, float]
    storage: str  # the weights' format (app/services/weights.py): "support" keeps none
    weights: bytes
    weights_sha256: str
    support: bytes | None = None
    support_sha256: str | None = None

    @property
    def stored_bytes(self) -> int:
        """What the task counts in its client's storage: weights and support set."""
        return len(self.weights) + len(self.support or b"")

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "weights_bytes": len(self.weights),
            "support_bytes": len(self.support or b""),
        }


def create_task(
    session: Session,
    *,
    client_id: int,
    name: str | None,
    state: AdaptedState,
    quota: tuple[int, int] | None = None,
    expires_at: datetime | None = None,
) -> TaskRow:
    """Add a task, its weights and its support set to the session's transaction, all of it or
    nothing, counted against the client's storage (within ``quota``, most tasks and bytes, if
    given: else :class:`OverQuota`)."""
    _reserve(session, client_id, state.stored_bytes, quota)
    task = TaskRow(
        id=str(uuid.uuid4()),
        client_id=client_id,
        name=name,
        created_at=datetime.now(UTC),
        expires_at=expires_at,
        revision=1,
        **state.columns(),
    )
    session.add(task)
    session.flush()
    return task


def live() -> ColumnElement[bool]:
    """Tasks that have not expired: every read sees only these."""
    return or_(TaskRow.expires_at.is_(None), TaskRow.expires_at > datetime.now(UTC))


# What the API shows of a task (``TaskOut``): listing and getting read only these.
SHOWN = (
    TaskRow.expires_at,
    TaskRow.id,
    TaskRow.name,
    TaskRow.meta_model_name,
    TaskRow.meta_model_version,
    TaskRow.created_at,
    TaskRow.support_size,
    TaskRow.inner_steps,
    TaskRow.inner_lr,
    TaskRow.adapt_ms,
    TaskRow.labels,
    TaskRow.metrics,
    TaskRow.revision,
    TaskRow.updated_at,
    TaskRow.storage,
    TaskRow.weights_bytes,
    TaskRow.support_bytes,
)
# What predicting needs: the shown columns, the pin and the weights, and the support set
# only where it stands in for them (READAPT).
ADAPTED = (
    *SHOWN,
    TaskRow.client_id,
    TaskRow.meta_model_hash,
    TaskRow.weights,
    TaskRow.weights_sha256,
    TaskRow.support_sha256,
)
READAPT = with_expression(
    TaskRow.support_to_readapt,
    case((TaskRow.storage == "support", TaskRow.support), else_=null()),
)


def _known(task_id: str) -> None:
    """404 for an id no task can have (ids are UUIDs), before the database sees it: a NUL or
    an oversized string is the client's mistake, not a database error."""
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"no task {reprlib.repr(task_id)}") from None


def get_task(
    session: Session,
    *,
    client_id: int,
    task_id: str,
    with_weights: bool = False,
    with_support: bool = False,
) -> TaskRow:
    """The client's task, or 404 (another client's task is indistinguishable from none): what
    the API shows of it, with its weights (and pin), or with everything (its support set
    too) when asked for."""
    _known(task_id)
    query = select(TaskRow).where(TaskRow.id == task_id, TaskRow.client_id == client_id, live())
    if with_weights and not with_support:
        query = query.options(load_only(*ADAPTED, raiseload=True), READAPT)
    elif not with_support:
        query = query.options(load_only(*SHOWN, raiseload=True))
    task = session.scalar(query)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


class OverQuota(Exception):
    """The client would store more tasks or bytes than its limits allow."""

    def __init__(self, task_count: int, stored_bytes: int) -> None:
        self.task_count, self.stored_bytes = task_count, stored_bytes


def stored(session: Session, *, client_id: int) -> tuple[int, int]:
    """How many tasks the client stores, and their weights' bytes."""
    row = session.execute(
        select(ClientRow.task_count, ClientRow.stored_bytes).where(ClientRow.id == client_id)
    ).one()
    return int(row[0]), int(row[1])


def _reserve(session: Session, client_id: int, size: int, quota: tuple[int, int] | None) -> None:
    """Count one more task of ``size`` bytes for the client; with ``quota`` (most tasks, most
    bytes), only if it fits, in one conditional update (two writes cannot both pass a check
    that only one of them fits), else :class:`OverQuota` with what the client stores. Never
    for a revoked client (401): a request in flight when its key was revoked stores nothing."""
    query = update(ClientRow).where(ClientRow.id == client_id, ClientRow.revoked_at.is_(None))
    if quota is not None:
        query = query.where(
            ClientRow.task_count + 1 <= quota[0], ClientRow.stored_bytes + size <= quota[1]
        )
    result: Any = session.execute(
        query.values(
            task_count=ClientRow.task_count + 1, stored_bytes=ClientRow.stored_bytes + size
        )
    )
    if result.rowcount == 0:
        _refuse(session, client_id)


def _refuse(session: Session, client_id: int) -> None:
    """Why a conditional update of the client's counters changed nothing: 401 if the client
    was revoked meanwhile, else :class:`OverQuota`."""
    if session.scalar(select(ClientRow.revoked_at).where(ClientRow.id == client_id)):
        raise Unauthorized("your API key was revoked while this request ran; nothing was stored")
    raise OverQuota(*stored(session, client_id=client_id))


class StaleRevision(Exception):
    """The task changed (or went) since the revision an update was computed from."""


def update_task(
    session: Session,
    *,
    client_id: int,
    task_id: str,
    revision: int,
    stored_bytes: int,
    quota: int | None,
    state: AdaptedState,
) -> None:
    """Replace the task's adapted model with ``state`` if it is still at ``revision`` (else
    :class:`StaleRevision`), one revision on, and its bytes in the client's storage
    (``stored_bytes`` were counted for it; within ``quota`` bytes, else :class:`OverQuota`).
    One transaction: both or neither."""
    new_bytes = state.stored_bytes
    result: Any = session.execute(
        update(TaskRow)
        .where(
            TaskRow.id == task_id,
            TaskRow.client_id == client_id,
            TaskRow.revision == revision,
            live(),
        )
        .values(**state.columns(), revision=revision + 1, updated_at=datetime.now(UTC))
    )
    if result.rowcount == 0:
        raise StaleRevision
    announce(session, "task", task_id)
    grow = update(ClientRow).where(ClientRow.id == client_id, ClientRow.revoked_at.is_(None))
    if quota is not None and new_bytes > stored_bytes:
        grow = grow.where(ClientRow.stored_bytes + (new_bytes - stored_bytes) <= quota)
    result = session.execute(
        grow.values(stored_bytes=ClientRow.stored_bytes + (new_bytes - stored_bytes))
    )
    if result.rowcount == 0:
        _refuse(session, client_id)


def task_ids(session: Session, *, after: str, limit: int, model: str | None) -> list[str]:
    """Up to ``limit`` task ids after ``after``, in order (of meta-model ``model``, if named):
    every task, a page at a time."""
    query = select(TaskRow.id).where(TaskRow.id > after).order_by(TaskRow.id).limit(limit)
    if model is not None:
        query = query.where(TaskRow.meta_model_name == model)
    return list(session.scalars(query))


def task_for_storage(session: Session, *, task_id: str) -> TaskRow | None:
    """Any client's task, all of it, held until the transaction ends (None if gone)."""
    return session.scalar(select(TaskRow).where(TaskRow.id == task_id).with_for_update())


def store_again(
    session: Session,
    *,
    task: TaskRow,
    storage: str,
    weights: tuple[bytes, str],
    support: tuple[bytes | None, str | None],
    changed_model: bool,
) -> bool:
    """Store the task (as :func:`task_for_storage` read it) in another form, if it is still
    at the revision read, its client's stored bytes following; one revision on if the model
    it serves changed (other processes then drop it from their caches). Whether it was."""
    sizes = {"weights_bytes": len(weights[0]), "support_bytes": len(support[0] or b"")}
    later = {"revision": task.revision + 1, "updated_at": datetime.now(UTC)}
    result: Any = session.execute(
        update(TaskRow)
        .where(TaskRow.id == task.id, TaskRow.revision == task.revision)
        .values(
            storage=storage,
            weights=weights[0],
            weights_sha256=weights[1],
            support=support[0],
            support_sha256=support[1],
            **sizes,
            **(later if changed_model else {}),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        return False
    if changed_model:
        announce(session, "task", task.id)
    grew = sum(sizes.values()) - task.weights_bytes - task.support_bytes
    session.execute(
        update(ClientRow)
        .where(ClientRow.id == task.client_id)
        .values(stored_bytes=ClientRow.stored_bytes + grew)
    )
    return True


def _release(session: Session, client_id: int, tasks: int, size: int) -> None:
    session.execute(
        update(ClientRow)
        .where(ClientRow.id == client_id)
        .values(task_count=ClientRow.task_count - tasks, stored_bytes=ClientRow.stored_bytes - size)
    )


def task_revision(session: Session, *, client_id: int, task_id: str) -> int | None:
    """A cheap check (no weights read): the client's task's revision, None if it is gone."""
    _known(task_id)
    query = select(TaskRow.revision).where(
        TaskRow.id == task_id, TaskRow.client_id == client_id, live()
    )
    return session.scalar(query)


def list_tasks(
    session: Session, *, client_id: int, limit: int, offset: int
) -> tuple[Sequence[TaskRow], int]:
    """A page of the client's tasks, newest first (only the columns the API shows), and their
    total."""
    total = session.scalar(
        select(func.count()).select_from(TaskRow).where(TaskRow.client_id == client_id, live())
    )
    rows = session.scalars(
        select(TaskRow)
        .options(load_only(*SHOWN, raiseload=True))
        .where(TaskRow.client_id == client_id, live())
        .order_by(TaskRow.created_at.desc(), TaskRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total or 0


def delete_task(
    session: Session, *, client_id: int, task_id: str, revision: int | None = None
) -> None:
    """Delete the client's task (only at ``revision``, if given: else :class:`StaleRevision`)
    and give back to the client's quota exactly what the deletion removed (an expired task
    is already gone: 404, and the purge gives its bytes back)."""
    _known(task_id)
    query = delete(TaskRow).where(TaskRow.id == task_id, TaskRow.client_id == client_id, live())
    if revision is not None:
        query = query.where(TaskRow.revision == revision)
    sizes = session.execute(
        query.returning(TaskRow.weights_bytes, TaskRow.support_bytes)
    ).one_or_none()
    if sizes is None:
        if revision is not None:
            raise StaleRevision
        raise NotFound(f"no task {task_id!r}")
    announce(session, "task", task_id)
    _release(session, client_id, 1, sizes[0] + sizes[1])


def _delete_releasing(session: Session, where: ColumnElement[bool]) -> int:
    """Delete the tasks ``where`` selects and give back to each client's quota exactly what
    this deletion removed (``DELETE ... RETURNING``: a task another transaction deleted first
    is not returned, so never released twice); how many."""
    removed = session.execute(
        delete(TaskRow)
        .where(where)
        .returning(TaskRow.client_id, TaskRow.weights_bytes + TaskRow.support_bytes)
    ).all()
    freed: dict[int, list[int]] = {}
    for client_id, size in removed:
        count_size = freed.setdefault(client_id, [0, 0])
        count_size[0] += 1
        count_size[1] += int(size or 0)
    for client_id, (count, size) in sorted(freed.items()):  # one lock order for every purge
        _release(session, client_id, count, size)
    return len(removed)


def purge_expired(session: Session) -> int:
    """Delete every expired task, giving its bytes back to its client's quota; how many."""
    now = datetime.now(UTC)
    return _delete_releasing(session, TaskRow.expires_at.is_not(None) & (TaskRow.expires_at <= now))


def create_client(session: Session, *, name: str, key_hash: str, key_prefix: str) -> ClientRow:
    client = ClientRow(
        name=name, key_hash=key_hash, key_prefix=key_prefix, created_at=datetime.now(UTC)
    )
    session.add(client)
    session.flush()
    return client


def list_clients(session: Session) -> Sequence[ClientRow]:
    return session.scalars(select(ClientRow).order_by(ClientRow.id)).all()


def revoke_client(session: Session, *, client_id: int) -> ClientRow:
    """Mark the client's key revoked (404 if there is no such client)."""
    client = get_client(session, client_id=client_id)
    client.revoked_at = datetime.now(UTC)
    announce(session, "client", client_id)
    return client


def active_client(session: Session, *, key_hash: str) -> tuple[int, dict[str, Any] | None] | None:
    """The id and limit overrides of the unrevoked client with this key hash, if any."""
    row = session.execute(
        select(ClientRow.id, ClientRow.limits).where(
            ClientRow.key_hash == key_hash, ClientRow.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def get_client(session: Session, *, client_id: int) -> ClientRow:
    client = session.get(ClientRow, client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    return client


def set_limits(session: Session, *, client_id: int, limits: dict[str, Any] | None) -> ClientRow:
    """Replace the client's limit overrides (None: the service's defaults)."""
    client = get_client(session, client_id=client_id)
    client.limits = limits or None
    announce(session, "client", client_id)
    return client


def rotate_key(session: Session, *, client_id: int, key_hash: str, key_prefix: str) -> ClientRow:
    """Give an active client a new key; the old one stops working."""
    client = get_client(session, client_id=client_id)
    if client.revoked_at is not None:
        raise Conflict(f"client {client_id} is revoked; create a new client instead")
    client.key_hash, client.key_prefix = key_hash, key_prefix
    announce(session, "client", client_id)
    return client


def purge_tasks(session: Session, *, client_id: int) -> int:
    """Delete a revoked client's tasks; how many."""
    client = get_client(session, client_id=client_id)
    if client.revoked_at is None:
        raise Conflict(f"client {client_id} is active; revoke it first")
    return _delete_releasing(session, TaskRow.client_id == client_id)


def meta_models_changed(session: Session) -> None:
    """Have every API process on the database scan its model folders (when this commits)."""
    announce(session, "meta_models")


class Recount:
    """A client's counters, (tasks, bytes), as they were stored and as its tasks make them."""

    def __init__(self, client_id: int, name: str, was: tuple[int, int], now: tuple[int, int]):
        self.client_id, self.name, self.was, self.now = client_id, name, was, now


def recount_clients(session: Session) -> list[Recount]:
    """Set every client's ``task_count`` and ``stored_bytes`` to what its task rows hold
    (expired ones too: they count until deleted, as ``_reserve`` and the purges keep them);
    every client's counters before and after, in id order."""
    # Hold every client's row before counting (in id order, as the purges take them), so no
    # task is stored, changed or deleted between the count and the write: each of those
    # writes its client's row too, and waits. PostgreSQL locks the rows FOR UPDATE; SQLite
    # ignores that and takes its one write lock at the first write, the no-op update.
    session.execute(select(ClientRow.id).order_by(ClientRow.id).with_for_update())
    session.execute(update(ClientRow).values(task_count=ClientRow.task_count))
    totals = {
        client_id: (int(count), int(size or 0))
        for client_id, count, size in session.execute(
            select(
                TaskRow.client_id,
                func.count(),
                func.sum(TaskRow.weights_bytes + TaskRow.support_bytes),
            ).group_by(TaskRow.client_id)
        )
    }
    counters = select(ClientRow.id, ClientRow.name, ClientRow.task_count, ClientRow.stored_bytes)
    recounts = []
    for client_id, name, count, size in session.execute(counters.order_by(ClientRow.id)).all():
        recount = Recount(client_id, name, (int(count), int(size)), totals.get(client_id, (0, 0)))
        if recount.now != recount.was:
            session.execute(
                update(ClientRow)
                .where(ClientRow.id == client_id)
                .values(task_count=recount.now[0], stored_bytes=recount.now[1])
            )
        recounts.append(recount)
    return recounts
