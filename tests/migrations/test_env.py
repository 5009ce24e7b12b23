"""migrations/env.py runs an upgrade that keeps every row: a database holding clients and tasks
written at each earlier revision, upgraded to head, has the same rows, column for column, and
true counters. SQLite's batch rebuild of ``clients`` (copy, DROP TABLE, rename) once cascaded
through ``tasks.client_id ON DELETE CASCADE`` and deleted every task, while an empty-schema
test passed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, create_engine, inspect, select, text

from app.core.db import alembic_config
from tests.utils.database import POSTGRES_URL, drop_all

# Oldest first; every revision but head holds data that head must keep.
REVISIONS = [
    r.revision
    for r in reversed(list(ScriptDirectory.from_config(alembic_config("")).walk_revisions()))
]
T0 = datetime(2026, 11, 20, 12, 30, 15, 250000, tzinfo=UTC)

# Every column any revision has, with a value (a new column needs one here: see `insert`).
CLIENTS: list[dict[str, Any]] = [
    {
        "id": 3,
        "name": "acme",
        "key_hash": "a" * 64,
        "key_prefix": "mk_acme000",
        "created_at": T0,
        "revoked_at": None,
        "limits": {"max_tasks": 7, "rate_per_second": 2.5},
    },
    {
        "id": 8,
        "name": "globex",
        "key_hash": "b" * 64,
        "key_prefix": "mk_globex0",
        "created_at": T0 + timedelta(hours=1),
        "revoked_at": T0 + timedelta(days=2),
        "limits": None,
    },
    {  # no tasks
        "id": 11,
        "name": "initech",
        "key_hash": "c" * 64,
        "key_prefix": "mk_initech",
        "created_at": T0 + timedelta(hours=2),
        "revoked_at": None,
        "limits": None,
    },
]
TASKS: list[dict[str, Any]] = [
    {
        "id": "00000000-0000-4000-8000-000000000001",
        "client_id": 3,
        "name": "first",
        "model_name": "sinusoid",
        "model_version": "1.0.0",
        "model_hash": "sha256:" + "1" * 64,
        "created_at": T0 + timedelta(minutes=5),
        "support_size": 10,
        "inner_steps": 5,
        "inner_lr": 0.01,
        "adapt_ms": 12.5,
        "labels": None,
        "metrics": {"support_loss_before": 2.0, "support_loss_after": 0.5},
        "weights": bytes(range(256)) * 3,
        "weights_sha256": "d" * 64,
        "storage": "float32",
        "expires_at": None,
        "support": b"support-set-of-the-first-task",
        "support_sha256": "e" * 64,
        "revision": 3,
        "updated_at": T0 + timedelta(hours=5),
    },
    {  # expired, not yet purged: it still exists, and counts
        "id": "00000000-0000-4000-8000-000000000002",
        "client_id": 3,
        "name": None,
        "model_name": "omniglot",
        "model_version": "2.1.0",
        "model_hash": "",
        "created_at": T0 + timedelta(minutes=6),
        "support_size": 25,
        "inner_steps": 1,
        "inner_lr": None,
        "adapt_ms": 40.0,
        "labels": ["alpha", 2, "gamma"],
        "metrics": {"support_loss_before": 1.0},
        "weights": b"\x00\xff" * 500,
        "weights_sha256": "f" * 64,
        "storage": "float32",
        "expires_at": T0 + timedelta(minutes=10),
        "support": None,
        "support_sha256": None,
        "revision": 1,
        "updated_at": None,
    },
    {
        "id": "00000000-0000-4000-8000-000000000003",
        "client_id": 8,
        "name": "globex's",
        "model_name": "sinusoid",
        "model_version": "1.0.0",
        "model_hash": "sha256:" + "2" * 64,
        "created_at": T0 + timedelta(hours=3),
        "support_size": 3,
        "inner_steps": 2,
        "inner_lr": 0.5,
        "adapt_ms": 3.25,
        "labels": [0, 1],
        "metrics": {},
        "weights": b"w" * 77,
        "weights_sha256": "0" * 64,
        "storage": "float32",
        "expires_at": T0 + timedelta(days=30),
        "support": b"s" * 19,
        "support_sha256": "9" * 64,
        "revision": 2,
        "updated_at": T0 + timedelta(hours=4),
    },
]


def _task_bytes(task: dict[str, Any], columns: set[str]) -> int:
    """What the task counts in its client's storage at a revision with these columns."""
    support = task["support"] if "support" in columns else None
    return len(task["weights"]) + (len(support) if support is not None else 0)


def insert(conn: Connection) -> tuple[dict[str, dict[Any, dict[str, Any]]], set[str]]:
    """Write CLIENTS and TASKS with the columns the database has now (counters true, byte
    counts of the bytes stored); the rows as written, by table and id, and the tasks' columns."""
    columns = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("clients", "tasks")}
    tasks = [{k: v for k, v in t.items() if k in columns["tasks"]} for t in TASKS]
    for task, full in zip(tasks, TASKS, strict=True):
        if "weights_bytes" in columns["tasks"]:
            task["weights_bytes"] = len(full["weights"])
        if "support_bytes" in columns["tasks"]:
            task["support_bytes"] = _task_bytes(full, columns["tasks"]) - len(full["weights"])
    clients = [{k: v for k, v in c.items() if k in columns["clients"]} for c in CLIENTS]
    for client in clients:
        mine = [t for t in TASKS if t["client_id"] == client["id"]]
        if "task_count" in columns["clients"]:
            client["task_count"] = len(mine)
        if "stored_bytes" in columns["clients"]:
            client["stored_bytes"] = sum(_task_bytes(t, columns["tasks"]) for t in mine)
    written = {"clients": clients, "tasks": tasks}
    for name, rows in written.items():
        missing = columns[name] - set(rows[0])
        assert not missing, f"give {name}.{sorted(missing)} a value in this test"
        conn.execute(Table(name, MetaData(), autoload_with=conn).insert(), rows)
    by_id = {name: {r["id"]: r for r in rows} for name, rows in written.items()}
    return by_id, columns["tasks"]


def read(conn: Connection, name: str) -> dict[Any, dict[str, Any]]:
    table = Table(name, MetaData(), autoload_with=conn)
    return {r["id"]: dict(r) for r in conn.execute(select(table)).mappings()}


def same(value: Any) -> Any:
    """A value as both databases give it back (SQLite keeps UTC times without their zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return bytes(value) if isinstance(value, memoryview) else value


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, left at head."""
    url = f"sqlite:///{tmp_path / 'up.db'}" if request.param == "sqlite" else POSTGRES_URL
    if request.param == "postgresql":
        drop_all(url)
    yield url
    if request.param == "postgresql":
        drop_all(url)
        command.upgrade(alembic_config(url), "head")


@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_an_upgrade_to_head_keeps_the_data_of_every_revision(empty_url: str, revision: str):
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, revision)
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        written, task_columns = insert(conn)
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == REVISIONS[-1]
        now = {name: read(conn, name) for name in ("clients", "tasks")}
    engine.dispose()
    for name, rows in written.items():
        assert set(now[name]) == set(rows), name
        for row_id, row in rows.items():
            kept = {k: same(now[name][row_id][k]) for k in row}
            assert kept == {k: same(v) for k, v in row.items()}, (name, row_id)
    for client_id, client in now["clients"].items():
        mine = [t for t in TASKS if t["client_id"] == client_id]
        assert client["task_count"] == len(mine)
        assert client["stored_bytes"] == sum(_task_bytes(t, task_columns) for t in mine)
    for task_id, task in now["tasks"].items():
        assert task["weights_bytes"] == len(task["weights"]), task_id
        assert task["support_bytes"] == len(task["support"] or b""), task_id
        assert task["storage"] == "float32", task_id  # every task stored before a choice


@pytest.mark.parametrize(
    ("change", "count"),
    [
        ({"storage": "support"}, 1),
        ({"support": b"\x00\x00\x00\x00zlib" + b"packed"}, 1),
        ({}, 0),
    ],
    ids=["support", "compressed", "float32"],
)
def test_a_downgrade_refuses_tasks_the_older_code_would_misread(
    empty_url: str, change: dict[str, Any], count: int
):
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "head")
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        insert(conn)
        tasks = Table("tasks", MetaData(), autoload_with=conn)
        if change:
            conn.execute(tasks.update().where(tasks.c.id == TASKS[0]["id"]).values(**change))
    previous = REVISIONS[-2]
    if count:
        with pytest.raises(RuntimeError) as refused:
            command.downgrade(cfg, previous)
        assert str(refused.value) == (
            "1 tasks are stored compressed or otherwise than as float32 weights, which "
            f"revision {previous} cannot read: run `python -m app tasks store --storage "
            "float32 --compression none`, then downgrade"
        )
    else:
        command.downgrade(cfg, previous)
    with engine.connect() as conn:
        at = MigrationContext.configure(conn).get_current_revision()
        assert at == (REVISIONS[-1] if count else previous)
        assert len(read(conn, "tasks")) == len(TASKS)
    engine.dispose()


def test_an_upgrade_refuses_a_row_that_violates_a_foreign_key(tmp_path: Path):
    """SQLite: migrations run with foreign keys off, and ``PRAGMA foreign_key_check`` after
    them fails the upgrade, all of it, rather than leave a task without its client."""
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, REVISIONS[1])
    engine = create_engine(url)  # a plain SQLite connection: foreign keys off
    with engine.begin() as conn:
        insert(conn)
        conn.execute(text("DELETE FROM clients WHERE id = 8"))  # its task stays behind
    with pytest.raises(RuntimeError) as failed:
        command.upgrade(cfg, "head")
    assert str(failed.value) == (
        "foreign key check failed after the migrations: tasks rowid 3 refers to a missing "
        "clients row (fix or delete the rows, then upgrade again)"
    )
    with engine.connect() as conn:  # all or nothing: still at the revision it was
        assert MigrationContext.configure(conn).get_current_revision() == REVISIONS[1]
        assert "task_count" not in {c["name"] for c in inspect(conn).get_columns("clients")}
        assert set(inspect(conn).get_table_names()) == {"alembic_version", "clients", "tasks"}
        assert len(read(conn, "tasks")) == len(TASKS)
    engine.dispose()
