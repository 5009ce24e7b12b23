"""Alembic environment: the URL from the app's settings (or the caller), compare_type on. On
SQLite the migrations run with foreign keys off (a batch rebuild drops and recreates a table,
and dropping ``clients`` would cascade to every task), and are checked after."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from app.core.config import get_settings
from app.core.db import migration_engine
from app.tables import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name)
url = config.attributes.get("database_url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        compare_type=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def check_foreign_keys(connection: Connection) -> None:
    """Fail the upgrade (its transaction rolls back) if a row refers to one that is missing:
    with foreign keys off, SQLite would not have refused it."""
    found = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if found:
        rows = "; ".join(
            f"{t} rowid {rowid} refers to a missing {p} row" for t, rowid, p, _ in found[:5]
        )
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise RuntimeError(
            f"foreign key check failed after the migrations: {rows}{more} (fix or delete the "
            "rows, then upgrade again)"
        )


def run_migrations_online() -> None:
    sqlite = url.startswith("sqlite")
    engine = migration_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            render_as_batch=sqlite,
            transactional_ddl=True,  # one transaction: SQLite's too (migration_engine)
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                check_foreign_keys(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
