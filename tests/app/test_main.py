"""Start-up: the app refuses an unmigrated database and a missing MODEL_DIR; its routes are
mounted with the schema and behaviour ``include_router`` gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from app.api.routes import health, meta_models, tasks
from app.core.config import Settings
from app.main import NotMigrated, create_app, mount
from tests.conftest import ROOT


def test_refuses_to_start_on_an_unmigrated_database(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}", model_dir=ROOT / "models"
    )
    with (
        pytest.raises(NotMigrated, match=r"run `alembic upgrade head`"),
        TestClient(create_app(settings)),
    ):
        pass


def test_models_dir_path_is_configurable(tmp_path: Path, database_url: str):
    settings = Settings(database_url=database_url, model_dir=tmp_path / "missing")
    with pytest.raises(RuntimeError, match="is not a directory"), TestClient(create_app(settings)):
        pass


def test_mounted_routes_give_the_schema_include_router_gives(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", model_dir=ROOT / "models")
    included = FastAPI(title="MAML adaptation service", version="0.1.0")
    for module in (tasks, meta_models, health):
        included.include_router(module.router)
    assert create_app(settings).openapi() == included.openapi()


def test_mount_refuses_what_it_cannot_redeclare():
    router = APIRouter()
    router.add_route("/plain", lambda request: None)
    with pytest.raises(TypeError, match="API routes only"):
        mount(FastAPI(), router)
