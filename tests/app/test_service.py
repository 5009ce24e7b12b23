"""Models, health, metrics, start-up checks, the client CLI, and migrations."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from app.core.config import Settings
from app.core.db import alembic_config
from app.main import NotMigrated, create_app
from app.models import Base
from tests.app.conftest import ROOT
from tests.app.test_tasks import assert_problem, create


def test_models(client, alice):
    models = client.get("/models", headers=alice).json()
    assert [m["name"] for m in models] == ["omniglot-20w1s", "omniglot-5w1s", "sinusoid"]
    sin = client.get("/models/sinusoid", headers=alice).json()
    assert sin["task_kind"] == "regression" and sin["input_shape"] == [1]
    assert sin["n_classes"] is None and sin["inner_loop"]["lr"] == 0.01
    omni = client.get("/models/omniglot-5w1s", headers=alice).json()
    assert omni["n_classes"] == 5 and omni["input_shape"] == [1, 28, 28]
    assert omni["evaluation"]["results"]["1"]["1"]["accuracy"] > 0.98
    omni20 = client.get("/models/omniglot-20w1s", headers=alice).json()
    assert omni20["n_classes"] == 20 and omni20["inner_loop"]["steps"] == 5
    assert_problem(client.get("/models/nope", headers=alice), 404, "no model 'nope'")
    assert client.get("/models").status_code == 401


def test_health_readiness_and_metrics(client, alice):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "models": ["omniglot-20w1s", "omniglot-5w1s", "sinusoid"],
    }
    tid = create(client, alice)["id"]
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    client.app.state.cache.pop(tid)
    client.post(f"/tasks/{tid}/predict", headers=alice, json={"x": [1.0]})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/tasks",status="201"} 1.0' in text
    assert 'route="/tasks/{task_id}/predict",status="200"} 2.0' in text
    assert 'adaptations_total{model="sinusoid"} 1.0' in text
    assert "adapted_cache_hits_total 1.0" in text and "adapted_cache_misses_total 1.0" in text
    assert "http_request_duration_seconds_bucket" in text


def test_refuses_to_start_on_an_unmigrated_database(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}", model_dir=ROOT / "models"
    )
    with (
        pytest.raises(NotMigrated, match=r"run `alembic upgrade head`"),
        TestClient(create_app(settings)),
    ):
        pass


def test_migrations_match_the_orm_and_downgrade(tmp_path):
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
    from tests.app.conftest import POSTGRES_URL

    command.upgrade(alembic_config(POSTGRES_URL), "head")  # a no-op once migrated
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert current is not None and diff == []


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )


def test_client_cli_and_a_real_uvicorn_process(database_url, sessions, tmp_path):
    env = os.environ | {
        "DATABASE_URL": database_url,
        "MODEL_DIR": str(ROOT / "models"),
        "AUTH_CACHE_SECONDS": "0",
    }
    key = run_cli(env, "clients", "create", "carol").stdout.strip().splitlines()[-1]
    assert key.startswith("mk_")
    listing = run_cli(env, "clients", "list").stdout
    assert "carol" in listing and key not in listing
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        r = httpx.post(
            f"{base}/tasks",
            headers=headers,
            json={"model": "sinusoid", "support": {"x": [0.0, 1.0], "y": [0.5, 1]}},
        )
        assert r.status_code == 201
        p = httpx.post(f"{base}/tasks/{r.json()['id']}/predict", headers=headers, json={"x": [0.5]})
        assert p.status_code == 200 and len(p.json()["predictions"]) == 1
        client_id = listing.split("\t")[0]
        assert "revoked" in run_cli(env, "clients", "revoke", client_id).stdout
        assert httpx.get(f"{base}/tasks", headers=headers).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_settings_refuse_sqlite_in_production():
    with pytest.raises(ValueError, match="ENVIRONMENT=production needs DATABASE_URL"):
        Settings(environment="production")
    Settings(environment="production", database_url="postgresql+psycopg://u@h/db")


def test_models_dir_path_is_configurable(tmp_path: Path, database_url):
    settings = Settings(database_url=database_url, model_dir=tmp_path / "missing")
    with pytest.raises(RuntimeError, match="is not a directory"), TestClient(create_app(settings)):
        pass
