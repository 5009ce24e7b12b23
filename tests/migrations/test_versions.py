"""The migrations build exactly the ORM's schema, and downgrade to nothing."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.core.db import alembic_config
from app.tables import Base
from tests.utils.database import POSTGRES_URL


def test_migrations_match_the_orm_and_downgrade(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []
    command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_migrations_match_the_orm_on_postgresql():
    command.upgrade(alembic_config(POSTGRES_URL), "head")  # a no-op once migrated
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert current is not None and diff == []


def test_migrations_downgrade_and_upgrade_on_postgresql():
    """Every migration is reversible on PostgreSQL too: down to nothing, then up again."""
    cfg = alembic_config(POSTGRES_URL)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(POSTGRES_URL)
    assert not {"tasks", "clients"} & set(inspect(engine).get_table_names())
    command.upgrade(cfg, "head")
    assert {"tasks", "clients"} <= set(inspect(engine).get_table_names())
    engine.dispose()
