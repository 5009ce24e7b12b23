"""app/core/db.py: the service's SQLite connections enforce foreign keys; the migrations' do
not (a batch rebuild's DROP TABLE would cascade), and hold their DDL in the transaction."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.core.db import Database, migration_engine


def test_the_service_enforces_foreign_keys_and_the_migrations_do_not(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    db = Database(url)
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()
    engine = migration_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 0
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.rollback()  # the CREATE TABLE too
        assert conn.execute(text("SELECT name FROM sqlite_master WHERE name = 't'")).all() == []
    engine.dispose()
