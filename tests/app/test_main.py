"""Start-up: the app refuses an unmigrated database and a missing MODEL_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import NotMigrated, create_app
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
