"""``python -m app`` (app/__main__.py): the client CLI, and serve as a real uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from app import crud
from app.__main__ import main
from app.core.security import hash_key
from tests.conftest import ROOT
from tests.utils.server import free_port, wait_ready
from tests.utils.tasks import stored_task


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )


def test_client_cli_and_a_real_uvicorn_process(database_url, db):
    env = os.environ | {
        "DATABASE_URL": database_url,
        "MODEL_DIR": str(ROOT / "models"),
        "AUTH_CACHE_SECONDS": "0",
    }
    key = run_cli(env, "clients", "create", "carol").stdout.strip().splitlines()[-1]
    assert key.startswith("mk_")
    listing = run_cli(env, "clients", "list").stdout
    assert "carol" in listing and key not in listing
    missing = subprocess.run(
        [sys.executable, "-m", "app", "clients", "revoke", "999999"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == 1 and missing.stderr.strip() == "no client 999999"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
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


def test_client_limits_rotation_and_purge(database_url, db):
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    run_cli(env, "clients", "create", "dave")
    client_id = run_cli(env, "clients", "list").stdout.split("\t")[0]
    shown = run_cli(
        env, "clients", "limits", client_id, "--rate-per-second", "2", "--max-tasks", "7"
    )
    assert "rate_per_second\t2  (override)" in shown.stdout
    assert "max_tasks\t7  (override)" in shown.stdout and "rate_burst\t1000\n" in shown.stdout
    with db.session() as session:
        assert crud.get_client(session, client_id=int(client_id)).limits == {
            "rate_per_second": 2.0,
            "max_tasks": 7,
        }
    bad = subprocess.run(
        [sys.executable, "-m", "app", "clients", "limits", client_id, "--rate-burst", "0"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "--rate-burst: Input should be greater than or equal to 1"
    assert "(override)" not in run_cli(env, "clients", "limits", client_id, "--reset").stdout

    with db.session() as session:
        old_hash = crud.get_client(session, client_id=int(client_id)).key_hash
    new = run_cli(env, "clients", "rotate", client_id).stdout.strip().splitlines()[-1]
    with db.session() as session:
        assert crud.active_client(session, key_hash=old_hash) is None
        assert crud.active_client(session, key_hash=hash_key(new)) is not None
    stored_task(db, int(client_id))
    active = subprocess.run(
        [sys.executable, "-m", "app", "clients", "purge", client_id],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert active.returncode == 1
    assert active.stderr.strip() == f"client {client_id} is active; revoke it first"
    run_cli(env, "clients", "revoke", client_id)
    purged = run_cli(env, "clients", "purge", client_id).stdout.strip()
    assert purged == f"deleted 1 tasks of client {client_id}"
    assert run_cli(env, "tasks", "purge-expired").stdout.strip() == "deleted 0 expired tasks"


def test_clients_recount_makes_wrong_counters_true(database_url, db):
    """After an upgrade that lost tasks (or any drift), ``clients recount`` sets each client's
    counters to what its task rows hold, expired tasks included (they count until purged)."""
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    with db.session() as session:
        ids = [
            crud.create_client(session, name=name, key_hash=name * 16, key_prefix=name).id
            for name in ("erin", "fred", "gina")
        ]
    stored_task(db, ids[0])
    stored_task(db, ids[0], expires_at=datetime.now(UTC) - timedelta(days=1))
    stored_task(db, ids[1], support=(b"s" * 100, "0" * 64))
    with db.session() as session:
        true = [crud.stored(session, client_id=i) for i in ids]
        for client_id, wrong in zip(ids[:2], [(0, 0), (5, 1)], strict=True):
            session.execute(
                text("UPDATE clients SET task_count = :n, stored_bytes = :b WHERE id = :id"),
                {"n": wrong[0], "b": wrong[1], "id": client_id},
            )
    assert true[0][0] == 2 and true[1][0] == 1 and true[2] == (0, 0)

    out = run_cli(env, "clients", "recount").stdout.splitlines()
    assert out == [
        f"client {ids[0]} (erin): tasks 0 -> 2, stored bytes 0 -> {true[0][1]}",
        f"client {ids[1]} (fred): tasks 5 -> 1, stored bytes 1 -> {true[1][1]}",
        "recounted 3 clients; 2 corrected",
    ]
    with db.session() as session:
        assert [crud.stored(session, client_id=i) for i in ids] == true
    again = run_cli(env, "clients", "recount").stdout.splitlines()
    assert again == ["recounted 3 clients; 0 corrected"]


@pytest.mark.parametrize("option", ["--rate-per-second", "--max-adapt-flops"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e999"])
def test_clients_limits_refuses_non_finite_values(capsys, option, value):
    """A float limit must be a finite number (before anything is read or stored)."""
    with pytest.raises(SystemExit) as exited:
        main(["clients", "limits", "1", f"{option}={value}"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m app clients limits: error: argument {option}: not a finite number: {value!r}"
    )


def test_tasks_store_compacts_tasks_stored_before_and_readies_a_downgrade(
    database_url, db, settings
):
    """Tasks stored as float32 (as before there was a choice) go to their support set where
    it re-adapts to their weights bit for bit, predicting the same; one whose weights it
    does not reproduce stays as it was; ``--storage float32 --compression none`` brings
    every task back to the form the previous schema reads."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.tables import TaskRow
    from tests.utils.database import make_key
    from tests.utils.tasks import sinusoid_task

    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    key = {"Authorization": f"Bearer {make_key(db, 'hana')}"}
    old = settings.model_copy(update={"task_storage": "float32", "task_compression": "none"})
    ids, before = [], []
    with TestClient(create_app(old)) as client:
        for seed in range(3):
            x, y = sinusoid_task(seed=seed)
            body = {"model": "sinusoid", "support": {"x": x, "y": y}}
            ids.append(client.post("/tasks", headers=key, json=body).json()["id"])
            r = client.post(f"/tasks/{ids[-1]}/predict", headers=key, json={"x": [0.5, 2.0]})
            before.append(r.json()["predictions"])
    with db.session() as session:  # weights no re-adaptation gives (same shape, same sha)
        task = session.get(TaskRow, ids[2])
        from app.services import weights as codec
        from meta_core.artifact import load_artifact

        art = load_artifact(ROOT / "models" / "sinusoid")
        nudged = {k: v + 1e-3 for k, v in art.params.items()}
        task.weights, task.weights_sha256 = codec.serialize(art, nudged)
        task.weights_bytes = len(task.weights)
    out = run_cli(env, "tasks", "store", "--storage", "support").stdout.splitlines()
    assert out[0] == (
        "sinusoid: 2 stored again, 0 unchanged, 1 kept as they were (their support set does "
        "not re-adapt to their weights bit for bit, or they are unreadable: logged), 0 not "
        "served (left as they are)"
    )
    with db.session() as session:
        rows = {t.id: t for t in session.query(TaskRow)}
        assert [rows[i].storage for i in ids] == ["support", "support", "float32"]
        assert [rows[i].revision for i in ids] == [1, 1, 1]  # the same models
        owner = rows[ids[0]].client_id
        counted = crud.stored(session, client_id=owner)[1]
        assert counted == sum(t.weights_bytes + t.support_bytes for t in rows.values())
    with TestClient(create_app(settings)) as client:  # a fresh process: every model read back
        for tid, wanted in zip(ids[:2], before, strict=False):
            r = client.post(f"/tasks/{tid}/predict", headers=key, json={"x": [0.5, 2.0]})
            assert r.json()["predictions"] == wanted
    back = ["tasks", "store", "--storage", "float32", "--compression", "none"]
    assert (
        run_cli(env, *back)
        .stdout.splitlines()[0]
        .startswith("sinusoid: 2 stored again, 1 unchanged")
    )
    with db.session() as session:
        assert {t.storage for t in session.query(TaskRow)} == {"float32"}
