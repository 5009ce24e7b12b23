"""What the counters of a client's storage say stays true when deletions race: a deletion gives
back exactly what it removed, once, whoever removes a task first."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import crud
from app.core.db import Database, alembic_config
from app.core.errors import NotFound, Unauthorized
from tests.utils.database import POSTGRES_URL, client_id_of, empty, make_key
from tests.utils.tasks import stored_task

PAST = datetime.now(UTC) - timedelta(seconds=1)


def test_an_expired_task_is_gone_to_delete_and_released_once_by_the_purge(db, alice):
    me = client_id_of(db, alice)
    expired = stored_task(db, me, expires_at=PAST)
    kept = stored_task(db, me)
    with db.session() as session:
        size = crud.stored(session, client_id=me)[1]
        with pytest.raises(NotFound):
            crud.delete_task(session, client_id=me, task_id=expired)
    with db.session() as session:
        assert crud.purge_expired(session) == 1
        assert crud.purge_expired(session) == 0
        count, left = crud.stored(session, client_id=me)
    assert count == 1 and 0 < left < size
    with db.session() as session:
        crud.delete_task(session, client_id=me, task_id=kept)
        assert crud.stored(session, client_id=me) == (0, 0)


def test_a_revoked_client_stores_nothing(db, alice):
    me = client_id_of(db, alice)
    with db.session() as session:
        crud.revoke_client(session, client_id=me)
    with pytest.raises(Unauthorized, match="revoked while this request ran; nothing was stored"):
        stored_task(db, me)
    with db.session() as session:
        assert crud.stored(session, client_id=me) == (0, 0)
        assert session.scalar(text("SELECT count(*) FROM tasks")) == 0


@pytest.fixture
def pg() -> Iterator[Database]:
    command.upgrade(alembic_config(POSTGRES_URL), "head")
    db = Database(POSTGRES_URL)
    empty(db)
    yield db
    db.dispose()


def blocked_behind(session: Session, db: Database, second: Callable[[Session], object]) -> None:
    """Run ``second`` in its own transaction while ``session``'s is open, wait until
    PostgreSQL has it waiting on ``session``'s row locks, then commit ``session``'s and let
    ``second`` finish: the interleaving that once gave a purged task's bytes back twice."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with db.session() as other:
                second(other)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    waiting = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
    )
    with db.engine.connect() as probe:
        for _ in range(100_000):
            if probe.execute(waiting).scalar():
                break
            probe.rollback()
        else:
            raise AssertionError("the second transaction never waited")
    session.commit()
    thread.join(timeout=30)
    assert not errors, errors


def test_racing_purges_and_deletions_release_each_task_once(pg):
    """On PostgreSQL: two purges of expired tasks (every worker purges; the CLI can run beside
    them), and a DELETE beside a revoked client's purge, racing on the same tasks."""
    me = client_id_of(pg, {"Authorization": f"Bearer {make_key(pg, 'alice')}"})
    for _ in range(3):
        stored_task(pg, me, expires_at=PAST)
    with pg.session() as first:
        assert crud.purge_expired(first) == 3
        blocked_behind(first, pg, crud.purge_expired)
    with pg.session() as session:
        assert crud.stored(session, client_id=me) == (0, 0)

    doomed = stored_task(pg, me)  # a revoked client's DELETE in flight beside its purge
    with pg.session() as session:
        crud.revoke_client(session, client_id=me)
    with pg.session() as first:
        crud.delete_task(first, client_id=me, task_id=doomed)
        purged: list[int] = []
        blocked_behind(
            first, pg, lambda other: purged.append(crud.purge_tasks(other, client_id=me))
        )
    assert purged == [0]
    with pg.session() as session:
        assert crud.stored(session, client_id=me) == (0, 0)
