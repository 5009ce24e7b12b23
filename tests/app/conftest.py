"""Every app test runs against SQLite and against the PostgreSQL on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.core.config import Settings
from app.core.db import alembic_config, make_engine, make_sessionmaker
from app.core.security import hash_key, new_key
from app.crud import create_client
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = POSTGRES_URL
        engine = create_engine(url)
        with engine.begin() as conn:  # a clean slate for the migrations
            conn.execute(text("DROP TABLE IF EXISTS tasks, clients, alembic_version CASCADE"))
        engine.dispose()
    command.upgrade(alembic_config(url), "head")
    yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        model_dir=ROOT / "models",
        cache_size=64,
        max_support=200,
        max_query=500,
        max_predict_rows=1000,
        max_body_bytes=2**20,
        auth_cache_seconds=0,
    )


@pytest.fixture
def sessions(database_url: str):
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM tasks"))
        conn.execute(text("DELETE FROM clients"))
    yield make_sessionmaker(engine)
    engine.dispose()


def make_key(sessions, name: str) -> str:
    key = new_key()
    with sessions() as s:
        create_client(s, name=name, key_hash=hash_key(key), key_prefix=key[:10])
    return key


@pytest.fixture
def client(settings: Settings, sessions) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def alice(sessions) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(sessions, 'alice')}"}


@pytest.fixture
def bob(sessions) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(sessions, 'bob')}"}
