"""Every app test runs against SQLite and against the PostgreSQL on this machine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database, alembic_config
from app.main import create_app
from tests.conftest import ROOT
from tests.utils.database import POSTGRES_URL, drop_all, empty, make_key
from tests.utils.meta_models import new_version


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = POSTGRES_URL
        drop_all(url)
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture
def models_dir() -> Path:
    return ROOT / "models"


@pytest.fixture
def settings(database_url: str, models_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        model_dir=models_dir,
        cache_size=64,
        max_support=200,
        max_query=500,
        max_predict_rows=1000,
        max_body_bytes=2**20,
        auth_cache_seconds=0,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The test database, emptied."""
    database = Database(database_url)
    empty(database)
    yield database
    database.dispose()


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def alice(db: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(db, 'alice')}"}


@pytest.fixture
def bob(db: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(db, 'bob')}"}


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    """A model folder serving sinusoid 1.0.0 (the shipped one) and 1.1.0 (weights nudged)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(ROOT / "models" / "sinusoid", models / "sinusoid")
    new_version(models / "sinusoid", models / "sinusoid-1.1.0", "1.1.0", nudge=0.05)
    return models
