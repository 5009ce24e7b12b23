"""The database: engine, and the one session scope that decides when to commit. The schema
comes only from the Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parents[2]


def make_engine(
    url: str, pool_size: int = 16, pool_timeout: float = 5.0, *, foreign_keys: bool = True
) -> Engine:
    """An engine whose pool holds ``pool_size`` connections, one per thread that may use it
    (the service sets its thread limit to the same number), and never more: a thread that
    still finds none within ``pool_timeout`` seconds gets ``sqlalchemy.exc.TimeoutError``,
    which the service answers 503. On SQLite every connection enforces foreign keys unless
    ``foreign_keys`` is false (:func:`migration_engine`)."""
    pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            # Set at connect: inside a transaction SQLite ignores it.
            cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def migration_engine(url: str) -> Engine:
    """The migrations' engine. On SQLite its connections do not enforce foreign keys (a batch
    rebuild copies a table, drops it and renames the copy: dropping ``clients`` would cascade
    to every task), and a transaction holds the DDL too (pysqlite would commit a CREATE TABLE
    at once), so the upgrade is all or nothing and the key check after it can undo it."""
    engine = make_engine(url, pool_size=1, foreign_keys=False)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _no_implicit_transactions(conn: Any, _record: Any) -> None:
            conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


class Database:
    """An engine and its sessions. :meth:`session` is the only way code gets a session."""

    def __init__(self, url: str, pool_size: int = 16, pool_timeout: float = 5.0) -> None:
        self.engine = make_engine(url, pool_size, pool_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends normally, rolled back otherwise, so
        a request that fails changes nothing. crud functions never commit."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> AlembicConfig:
    """The migrations beside the working directory's alembic.ini (the image's /srv), else the
    source tree's."""
    root = Path.cwd() if (Path.cwd() / "alembic.ini").exists() else ROOT
    cfg = AlembicConfig(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["database_url"] = url
    return cfg


def migration_state(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision, the code's head revision)."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""
