"""GET /models and /models/{name}: the loaded meta-models, every version of each; tasks keep
the version they were adapted from."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from app.main import create_app
from tests.utils.meta_models import new_version
from tests.utils.problem import assert_problem
from tests.utils.tasks import sinusoid_task
from tests.utils.text import SHIPPED


def test_models(client, alice):
    models = client.get("/models", headers=alice).json()
    assert [m["name"] for m in models] == SHIPPED
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


def test_versions_default_to_the_newest_and_tasks_keep_theirs(settings, db, alice, two_versions):
    with TestClient(create_app(settings.model_copy(update={"model_dir": two_versions}))) as c:
        listed = c.get("/models", headers=alice).json()
        assert [(m["version"], m["default"]) for m in listed] == [("1.0.0", False), ("1.1.0", True)]
        one = c.get("/models/sinusoid", headers=alice).json()
        assert one["version"] == "1.1.0" and one["versions"] == ["1.0.0", "1.1.0"]
        assert one["content_hash"].startswith("sha256:")
        x, y = sinusoid_task()
        body = {"model": "sinusoid", "support": {"x": x, "y": y}}
        new = c.post("/tasks", headers=alice, json=body).json()
        old = c.post("/tasks", headers=alice, json=body | {"model_version": "1.0.0"}).json()
        assert new["model_version"] == "1.1.0" and old["model_version"] == "1.0.0"
        r = c.post("/tasks", headers=alice, json=body | {"model_version": "2.0"})
        assert_problem(r, 422, "model 'sinusoid' has no version '2.0'; served: ['1.0.0', '1.1.0']")
        ask = {"x": [0.5, 1.5]}
        before = {
            t["id"]: c.post(f"/tasks/{t['id']}/predict", headers=alice, json=ask).json()
            for t in (new, old)
        }
        assert before[new["id"]]["predictions"] != before[old["id"]]["predictions"]
    # A restart on the same versions: each task predicts exactly as before.
    with TestClient(create_app(settings.model_copy(update={"model_dir": two_versions}))) as c:
        for tid, answer in before.items():
            assert c.post(f"/tasks/{tid}/predict", headers=alice, json=ask).json() == answer
    # Version 1.0.0 replaced by a different artifact under the same version: its task refuses.
    shutil.rmtree(two_versions / "sinusoid")
    new_version(two_versions / "sinusoid-1.1.0", two_versions / "sinusoid", "1.0.0")
    with TestClient(create_app(settings.model_copy(update={"model_dir": two_versions}))) as c:
        r = c.post(f"/tasks/{old['id']}/predict", headers=alice, json=ask)
        assert r.status_code == 409 and "serves a different artifact as" in r.json()["detail"]
        assert c.post(f"/tasks/{new['id']}/predict", headers=alice, json=ask).status_code == 200
