"""Start-up: the app refuses an unmigrated database and a missing MODEL_DIR; its routes are
mounted with the schema and behaviour ``include_router`` gives; a client generated from that
schema (docs/client.md) drives a real server."""

from __future__ import annotations

import gc
import importlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import schemathesis.checks
from alembic import command
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from app.api.routes import health, meta_models, tasks
from app.core.config import Settings
from app.core.db import Database, alembic_config
from app.main import NotMigrated, create_app, mount
from app.schemas import etag
from tests.conftest import ROOT
from tests.utils.database import make_key
from tests.utils.server import running_server


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


def test_what_start_up_loaded_is_out_of_the_collectors_sight_while_serving(database_url):
    """gc.freeze() at the end of start-up: full collections walk only what requests leave
    (tests/app/services/test_pool.py measures the effect on the event loop)."""
    settings = Settings(database_url=database_url, model_dir=ROOT / "models")
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # torch, the app, the meta-models
    assert gc.get_freeze_count() == 0  # unfrozen at shutdown: a later app frees this one


def test_mounted_routes_give_the_schema_include_router_gives(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", model_dir=ROOT / "models")
    included = FastAPI(title="MAML adaptation service", version="0.1.0")
    for module in (tasks, meta_models, health):
        included.include_router(module.router)
    ours, theirs = create_app(settings).openapi(), included.openapi()
    assert ours["paths"] == theirs["paths"]
    assert ours["components"]["schemas"].pop("Problem")["title"] == "Problem"
    assert ours["components"] == theirs["components"]


def test_every_error_is_documented_as_problem_json(tmp_path):
    """Each error answer is problem+json (app/core/errors.py), and the schema says so for each
    (FastAPI's own 422 for a route with parameters says application/json)."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", model_dir=ROOT / "models")
    schema = create_app(settings).openapi()
    wrong = [
        f"{method.upper()} {path} {status}: {list(answer.get('content', {}))}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status >= "400" and list(answer.get("content", {})) != ["application/problem+json"]
    ]
    assert wrong == []
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_mount_refuses_what_it_cannot_redeclare():
    router = APIRouter()
    router.add_route("/plain", lambda request: None)
    with pytest.raises(TypeError, match="API routes only"):
        mount(FastAPI(), router)


@pytest.fixture
def fuzz_key(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A migrated SQLite database with one client: the settings, and its Authorization."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    command.upgrade(alembic_config(url), "head")
    db = Database(url)
    key = make_key(db, "fuzzer")
    db.dispose()
    settings = Settings(database_url=url, model_dir=ROOT / "models", max_body_bytes=2**20)
    yield settings, {"Authorization": f"Bearer {key}"}


def test_every_answer_is_documented_and_none_is_a_server_error(
    fuzz_key: tuple[Settings, dict[str, str]],
) -> None:
    """schemathesis over every operation of the OpenAPI schema (seeded and bounded): each
    answer's status, media type, headers and body as documented, and no 5xx."""
    settings, headers = fuzz_key
    app = create_app(settings)
    with TestClient(app):  # the lifespan: meta-models, database, pools
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 13
        for operation in operations:

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(
                max_examples=20,
                derandomize=True,  # the same cases on every run
                deadline=None,
                suppress_health_check=list(hypothesis.HealthCheck),
                database=None,
            )
            def check(case: Any) -> None:
                # A schema-valid body may still not fit the meta-model (its name, shapes,
                # classes): that is the documented 422, not a rejected valid request.
                excluded = [schemathesis.checks.positive_data_acceptance]
                case.call_and_validate(headers=headers, excluded_checks=excluded)

            check()


def test_a_wrong_method_lists_every_method_of_the_path(fuzz_key):
    settings, headers = fuzz_key
    with TestClient(create_app(settings)) as client:
        r = client.request("OPTIONS", "/tasks", headers=headers)
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        r = client.put("/tasks/5c2d3d2e-2b4b-4a8e-9d33-2a7c1b0e9f10", headers=headers)
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"


def generate_client(schema_url: str, folder: Path) -> None:
    """docs/client.md's command: the generated package in ``folder``; any warning (a response
    or model the generator would leave out) fails."""
    subprocess.run(
        [
            *(sys.executable, "-m", "openapi_python_client", "generate"),
            *("--url", schema_url, "--output-path", str(folder), "--meta", "none"),
            *("--config", str(ROOT / "docs" / "client-config.yaml"), "--fail-on-warning"),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def generated_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where ``generate_client`` writes ``maml_client``, importable from there; forgotten
    after the test (another test's package is another folder's)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "maml_client"
    for name in [m for m in sys.modules if m.split(".")[0] == "maml_client"]:
        del sys.modules[name]


def test_a_generated_client_drives_a_real_server(
    database_url: str, db: Database, generated_package: Path
) -> None:
    """openapi-python-client, run as docs/client.md says on a live server's /openapi.json,
    generates every operation: its calls create a task, predict, list, get, export (the tar's
    bytes) and delete it, and parse problem+json answers into its ``Problem``."""
    key = make_key(db, "generated")
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    auth = {"Authorization": f"Bearer {key}"}
    with running_server(env) as base, httpx.Client(base_url=base, headers=auth) as raw:
        generate_client(f"{base}/openapi.json", generated_package)
        importlib.invalidate_caches()
        from maml_client import AuthenticatedClient
        from maml_client.api.tasks import create_task_tasks_post as create_task
        from maml_client.api.tasks import delete_task_tasks_task_id_delete as delete_task
        from maml_client.api.tasks import export_model_tasks_task_id_model_get as export_model
        from maml_client.api.tasks import get_task_tasks_task_id_get as get_task
        from maml_client.api.tasks import list_tasks_tasks_get as list_tasks
        from maml_client.api.tasks import predict_tasks_task_id_predict_post as predict
        from maml_client.models import Examples, PredictIn, Problem, TaskCreate, TaskOut

        with AuthenticatedClient(base_url=base, token=key) as client:
            support = Examples(x=[0.0, 1.0, 2.0], y=[0.5, 1.0, -0.25])
            body = TaskCreate(model="sinusoid", support=support)
            task = create_task.sync(client=client, body=body)
            assert isinstance(task, TaskOut)
            assert (task.model, task.support_size, task.revision) == ("sinusoid", 3, 1)

            out = predict.sync(task.id, client=client, body=PredictIn(x=[0.5, 1.5]))
            expected = raw.post(f"/tasks/{task.id}/predict", json={"x": [0.5, 1.5]}).json()
            assert out.to_dict() == expected and len(out.predictions) == 2
            page = list_tasks.sync(client=client)
            assert page.total == 1 and [t.id for t in page.items] == [task.id]
            assert get_task.sync(task.id, client=client).to_dict() == task.to_dict()

            export = export_model.sync_detailed(task.id, client=client)
            archive = export.parsed.payload.read()
            assert export.status_code == 200 and export.headers["ETag"] == etag(1)
            assert archive == raw.get(f"/tasks/{task.id}/model").content
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                assert sorted(tar.getnames()) == ["manifest.json", "weights.safetensors"]

            assert delete_task.sync_detailed(task.id, client=client).status_code == 204
            gone = get_task.sync(task.id, client=client)
            assert isinstance(gone, Problem)
            assert (gone.status, gone.detail) == (404, f"no task {task.id!r}")
            assert isinstance(export_model.sync(task.id, client=client), Problem)
            short = TaskCreate(model="sinusoid", support=Examples(x=[0.0, 1.0], y=[0.5]))
            bad = create_task.sync(client=client, body=short)
            assert isinstance(bad, Problem)
            assert (bad.status, bad.detail) == (
                422,
                "support.y has shape [1]; expected [2] or [2, 1] to match x",
            )


def test_the_documented_openapi_schema_is_the_services():
    """docs/openapi.json is the schema the service serves (CONTRIBUTING.md says how to
    regenerate it when a route or a schema changes)."""
    import json

    kept = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert kept == create_app(Settings()).openapi()
