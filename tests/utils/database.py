"""The test databases: a fresh SQLite file, and the PostgreSQL on this machine."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

from app import crud
from app.core.db import Database
from app.core.security import hash_key, new_key

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def drop_all(url: str) -> None:
    """A clean PostgreSQL slate for the migrations."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tasks, clients, alembic_version CASCADE"))
    engine.dispose()


def empty(db: Database) -> None:
    with db.session() as session:
        session.execute(text("DELETE FROM tasks"))
        session.execute(text("DELETE FROM clients"))


def make_key(db: Database, name: str) -> str:
    """A new client's API key."""
    key = new_key()
    with db.session() as session:
        crud.create_client(session, name=name, key_hash=hash_key(key), key_prefix=key[:10])
    return key


def client_id_of(db: Database, headers: dict[str, str]) -> int:
    """The id of the client whose ``Authorization: Bearer <key>`` this is."""
    with db.session() as session:
        found = crud.active_client(session, key_hash=hash_key(headers["Authorization"][7:]))
    assert found is not None
    return found[0]
