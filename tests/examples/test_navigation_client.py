"""The example client closes the loop against the service with only its URL and a key: its own
environment, rollouts of the task's policy, one step per revision, a higher return after one
step on a goal no run trained on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import Database, alembic_config
from app.main import create_app
from examples.navigation_client import Navigation, ServiceError, adapt, main, roll_out
from tests.conftest import ROOT
from tests.utils.database import make_key


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service on the shipped meta-models and an embedded database, and a client's key."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    command.upgrade(alembic_config(url), "head")
    db = Database(url)
    key = {"Authorization": f"Bearer {make_key(db, 'robot')}"}
    settings = Settings(database_url=url, model_dir=ROOT / "models", auth_cache_seconds=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, key
    db.dispose()


def post_via(client: TestClient, key: dict[str, str]):
    """The client's ``post`` over the test client (the real one is urllib's)."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = client.post(path, json=body, headers=key)
        if r.status_code >= 400:
            raise ServiceError(f"{path}: {r.status_code} {r.json()['detail']}")
        answer: dict[str, Any] = r.json()
        return answer

    return post


def test_the_client_adapts_the_shipped_policy_to_a_new_goal(service):
    client, key = service
    post = post_via(client, key)
    env = Navigation(np.array([0.37, -0.41]))
    seen = []
    returns = adapt(
        post,
        "navigation-2d",
        env,
        steps=1,
        trajectories=10,
        seed=3,
        report=lambda s, r: seen.append((s, r)),
    )
    assert [s for s, _ in seen] == [0, 1] and [r for _, r in seen] == returns
    assert returns[1] > returns[0] + 2.0  # one step towards a goal it was never told
    tasks = client.get("/tasks", headers=key).json()["items"]
    assert len(tasks) == 1 and tasks[0]["revision"] == 2 and tasks[0]["inner_steps"] == 1


def test_rollouts_end_at_the_goal_and_carry_their_done_flags(service):
    post = post_via(*service)
    task = post("/tasks", {"model": "navigation-2d"})
    env = Navigation(np.array([0.0, 0.0]), radius=10.0)  # every first step reaches it
    runs, mean_return = roll_out(post, task["id"], env, trajectories=3, seed=0)
    assert [len(r["rewards"]) for r in runs] == [1, 1, 1]
    assert all(r["dones"] == [True] for r in runs)
    assert mean_return == np.mean([r["rewards"][0] for r in runs])


def test_main_needs_a_key(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "--key" in capsys.readouterr().err
