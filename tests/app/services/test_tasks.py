"""A task's lifecycle after POST /tasks: examples added (POST /tasks/{id}/examples), adapted
again or moved to another version (POST /tasks/{id}/readapt), revisions as ETags with If-Match,
what an update that fails leaves (nothing changed), and its export (GET /tasks/{id}/model)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app import crud
from app.main import create_app
from app.services.cache import ModelCache
from meta_core.artifact import MANIFEST, ArtifactError, load_artifact
from tests.utils.database import client_id_of
from tests.utils.overrides import override_services
from tests.utils.problem import assert_problem
from tests.utils.tasks import create, sinusoid_task, stored_task

ASK = {"x": [-4.0, -1.5, 0.0, 2.5, 4.5]}


def predict(client, headers, tid):
    r = client.post(f"/tasks/{tid}/predict", headers=headers, json=ASK)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_examples_readapt_from_the_meta_initialization_on_the_whole_set(client, alice):
    x, y = sinusoid_task(10, seed=3)
    first = client.post(
        "/tasks", headers=alice, json={"model": "sinusoid", "support": {"x": x[:5], "y": y[:5]}}
    )
    assert first.status_code == 201 and first.headers["etag"] == '"1"'
    task = first.json()
    assert task["revision"] == 1 and task["updated_at"] is None and task["readaptable"]
    before = predict(client, alice, task["id"])

    r = client.post(f"/tasks/{task['id']}/examples", headers=alice, json={"x": x[5:], "y": y[5:]})
    assert r.status_code == 200, r.text
    grown = r.json()
    assert r.headers["etag"] == '"2"' and grown["revision"] == 2 and grown["support_size"] == 10
    assert grown["updated_at"] is not None and grown["created_at"] == task["created_at"]
    after = predict(client, alice, task["id"])
    assert after != before
    # Exactly the model a new task on all ten examples gets: adapted from the meta-init.
    whole = create(client, alice, support={"x": x, "y": y})
    assert predict(client, alice, whole["id"]) == after
    got = client.get(f"/tasks/{task['id']}", headers=alice)
    assert got.headers["etag"] == '"2"' and got.json()["support_size"] == 10


def test_the_cache_serves_the_new_revision(settings, db, alice):
    # A second app on the same database (another worker) keeps nothing stale past the TTL
    # either; here: the app that updated serves the update at once.
    with TestClient(create_app(settings)) as c:
        task = create(c, alice)
        before = predict(c, alice, task["id"])
        x, y = sinusoid_task(5, amp=4.0, seed=9)
        assert c.post(f"/tasks/{task['id']}/examples", headers=alice, json={"x": x, "y": y})
        assert predict(c, alice, task["id"]) != before


def test_another_worker_serves_the_new_revision_and_no_deleted_task(settings, db, alice):
    # Two apps on one database are two workers; the second hears no announcements (SQLite,
    # ANNOUNCEMENTS=false, or its listener down) and re-checks its cache on every request.
    blind = settings.model_copy(update={"cache_ttl_seconds": 0, "announcements": False})
    with TestClient(create_app(settings)) as one, TestClient(create_app(blind)) as two:
        tid = create(one, alice)["id"]
        assert predict(two, alice, tid) == predict(one, alice, tid)  # cached by both
        x, y = sinusoid_task(5, amp=4.0, seed=9)
        r = one.post(f"/tasks/{tid}/examples", headers=alice, json={"x": x, "y": y})
        assert r.status_code == 200 and r.json()["revision"] == 2
        assert predict(two, alice, tid) == predict(one, alice, tid)
        assert one.delete(f"/tasks/{tid}", headers=alice).status_code == 204
        assert_problem(
            two.post(f"/tasks/{tid}/predict", headers=alice, json=ASK), 404, f"no task '{tid}'"
        )


class RevokingPool:
    """The adaptation pool, but the caller's key is revoked while its work runs."""

    def __init__(self, pool, db):
        self.pool, self.db = pool, db

    async def run(self, fn, client_id=None, share=None):
        with self.db.session() as session:
            crud.revoke_client(session, client_id=client_id)
        return await self.pool.run(fn, client_id, share)


def test_a_request_in_flight_when_its_key_is_revoked_stores_nothing(client, db, alice, bob):
    me, other = client_id_of(db, alice), client_id_of(db, bob)
    tid = create(client, bob)["id"]
    services = client.app.state.services
    override_services(client.app, adapt_pool=RevokingPool(services.adapt_pool, db))
    revoked = "your API key was revoked while this request ran; nothing was stored"
    x, y = sinusoid_task()
    body = {"model": "sinusoid", "support": {"x": x, "y": y}}
    assert_problem(client.post("/tasks", headers=alice, json=body), 401, revoked)
    r = client.post(f"/tasks/{tid}/examples", headers=bob, json={"x": x[:2], "y": y[:2]})
    assert_problem(r, 401, revoked)
    with db.session() as session:
        assert crud.stored(session, client_id=me) == (0, 0)
        assert crud.get_task(session, client_id=other, task_id=tid).revision == 1


class RecordingPool:
    """The predictions pool, recording whose work it runs, within which share."""

    def __init__(self, pool):
        self.pool, self.runs = pool, []

    async def run(self, fn, client_id=None, share=None):
        self.runs.append((client_id, share))
        return await self.pool.run(fn, client_id, share)


def test_a_cache_miss_loads_within_the_clients_share_of_the_pool(client, db, alice):
    tid = create(client, alice)["id"]
    recording = RecordingPool(client.app.state.services.predict_pool)
    override_services(client.app, cache=ModelCache(0), predict_pool=recording)
    predict(client, alice, tid)  # a small sinusoid predict runs inline: only the load is pooled
    share = client.app.state.services.settings.predict_per_client
    assert recording.runs == [(client_id_of(db, alice), share)]


def test_new_classes_join_up_to_the_ways(client, alice):
    rows = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)).tolist()
    body = {"model": "omniglot-5w1s", "support": {"x": rows[:2], "y": ["c", "a"]}}
    task = client.post("/tasks", headers=alice, json=body).json()
    assert task["labels"] == ["a", "c"]
    r = client.post(
        f"/tasks/{task['id']}/examples", headers=alice, json={"x": [rows[2]], "y": ["b"]}
    )
    assert r.status_code == 200 and r.json()["labels"] == ["a", "b", "c"]
    out = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": rows}).json()
    assert out["labels"] == ["a", "b", "c"] and len(out["predictions"][0]["probabilities"]) == 3
    # The stored rows' labels are renumbered for the new class: exactly the task made from
    # all three examples at once.
    whole = {"model": "omniglot-5w1s", "support": {"x": rows, "y": ["c", "a", "b"]}}
    fresh = client.post("/tasks", headers=alice, json=whole).json()
    again = client.post(f"/tasks/{fresh['id']}/predict", headers=alice, json={"x": rows}).json()
    assert again["predictions"] == out["predictions"]
    too_many = {"x": rows[:3], "y": ["d", "e", "f"]}
    r = client.post(f"/tasks/{task['id']}/examples", headers=alice, json=too_many)
    assert_problem(r, 422, "y brings the task to 6 classes; model 'omniglot-5w1s' takes at most 5")
    assert client.get(f"/tasks/{task['id']}", headers=alice).json()["revision"] == 2


def test_bad_examples_are_a_clear_422_and_change_nothing(client, alice):
    task = create(client, alice)
    url = f"/tasks/{task['id']}/examples"
    for body, detail in [
        ({"x": [1.0, 2.0], "y": [1.0]}, "y has shape [1]; expected [2] or [2, 1] to match x"),
        ({"x": [[1.0, 2.0]], "y": [1.0]}, "x has shape [1, 2]; model 'sinusoid' takes [n, 1]"),
        (
            {"x": [1.0] * 191, "y": [1.0] * 191},
            "the task has 10 examples and x adds 191; a support set holds at most 200",
        ),
        (
            {"x": [1.0], "y": [1.0], "inner_steps": 1000},
            "inner_steps must be between 0 and 100, got 1000",
        ),
    ]:
        assert_problem(client.post(url, headers=alice, json=body), 422, detail)
    r = client.post(url, headers=alice, json={"x": [1.0], "y": [1.0], "extra": 1})
    assert r.status_code == 422
    again = client.get(f"/tasks/{task['id']}", headers=alice).json()
    assert again["revision"] == 1 and again["support_size"] == 10


def test_if_match(client, alice):
    task = create(client, alice)
    url = f"/tasks/{task['id']}/examples"
    body = {"x": [0.5], "y": [1.0]}
    r = client.post(url, headers=alice | {"If-Match": '"1"'}, json=body)
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    stale = client.post(url, headers=alice | {"If-Match": '"1"'}, json=body)
    assert_problem(
        stale,
        412,
        'If-Match "1" does not name the task\'s current revision, "2": it changed since you '
        "read it; GET it again and retry",
    )
    assert client.get(f"/tasks/{task['id']}", headers=alice).json()["support_size"] == 11
    for tag in ('W/"2"', "2", '"3"'):  # weak, unquoted, ahead: none is the current one
        r = client.post(url, headers=alice | {"If-Match": tag}, json=body)
        assert r.status_code == 412
    r = client.post(url, headers=alice | {"If-Match": '"7", "2"'}, json=body)
    assert r.status_code == 200 and r.headers["etag"] == '"3"'
    r = client.post(f"/tasks/{task['id']}/readapt", headers=alice | {"If-Match": "*"})
    assert r.status_code == 200 and r.headers["etag"] == '"4"'
    gone = client.delete(f"/tasks/{task['id']}", headers=alice | {"If-Match": '"3"'})
    assert gone.status_code == 412
    assert (
        client.delete(f"/tasks/{task['id']}", headers=alice | {"If-Match": '"4"'}).status_code
        == 204
    )
    other = create(client, alice)  # "*": any current revision, so the task must only exist
    assert (
        client.delete(f"/tasks/{other['id']}", headers=alice | {"If-Match": "*"}).status_code == 204
    )
    assert client.get(f"/tasks/{other['id']}", headers=alice).status_code == 404
    gone = client.delete(f"/tasks/{other['id']}", headers=alice | {"If-Match": "*"})
    assert gone.status_code == 404


def test_concurrent_additions_without_if_match_all_land(client, db, alice):
    task = create(client, alice)
    with db.session() as session:  # six at once: over the default share of the pool
        crud.set_limits(session, client_id=client_id_of(db, alice), limits={"adapt_in_flight": 6})
    url = f"/tasks/{task['id']}/examples"
    statuses: list[int] = []

    def add(i: int) -> None:
        r = client.post(url, headers=alice, json={"x": [float(i % 5)], "y": [0.1 * i]})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = client.get(f"/tasks/{task['id']}", headers=alice).json()
    landed = statuses.count(200)
    # Each landed addition is there; one that kept losing the race says so (409), never lost.
    assert set(statuses) <= {200, 409} and landed >= 1
    assert done["support_size"] == 10 + landed and done["revision"] == 1 + landed


def test_readapt_moves_a_task_to_another_version(settings, db, alice, two_versions):
    app_settings = settings.model_copy(update={"model_dir": two_versions})
    x, y = sinusoid_task()
    body = {"model": "sinusoid", "support": {"x": x, "y": y}}
    with TestClient(create_app(app_settings)) as c:
        old = c.post("/tasks", headers=alice, json=body | {"model_version": "1.0.0"}).json()
        fresh = c.post("/tasks", headers=alice, json=body).json()
        assert fresh["model_version"] == "1.1.0"
        same = c.post(f"/tasks/{old['id']}/readapt", headers=alice)
        assert same.status_code == 200 and same.json()["model_version"] == "1.0.0"
        r = c.post(f"/tasks/{old['id']}/readapt", headers=alice, json={"model_version": "9"})
        assert_problem(r, 422, "model 'sinusoid' has no version '9'; served: ['1.0.0', '1.1.0']")
    # 1.0.0 retired: its task answers 409 saying how to move it, then moves.
    shutil.rmtree(two_versions / "sinusoid")
    with TestClient(create_app(app_settings)) as c:
        r = c.post(f"/tasks/{old['id']}/predict", headers=alice, json=ASK)
        assert r.status_code == 409
        assert (
            f'move it with POST /tasks/{old["id"]}/readapt and {{"model_version": "1.1.0"}} '
            '(or "latest")'
        ) in r.json()["detail"]
        assert c.post(f"/tasks/{old['id']}/readapt", headers=alice).status_code == 409
        r = c.post(f"/tasks/{old['id']}/readapt", headers=alice, json={"model_version": "latest"})
        assert r.status_code == 200 and r.json()["model_version"] == "1.1.0"
        # The moved task predicts exactly as a task made on 1.1.0 from the same examples.
        assert predict(c, alice, old["id"]) == predict(c, alice, fresh["id"])


def test_a_task_without_its_support_set_cannot_be_readapted(client, db, alice):
    tid = stored_task(db, client_id_of(db, alice))
    assert client.get(f"/tasks/{tid}", headers=alice).json()["readaptable"] is False
    for path, body in (("examples", {"x": [1.0], "y": [1.0]}), ("readapt", {})):
        r = client.post(f"/tasks/{tid}/{path}", headers=alice, json=body)
        assert r.status_code == 409 and "before tasks kept their support sets" in r.json()["detail"]


def test_support_sets_count_in_the_quota_and_are_given_back(client, db, alice, bob):
    task = create(client, alice)
    cid = client_id_of(db, alice)
    with db.session() as session:
        count, size = crud.stored(session, client_id=cid)
        row = crud.get_task(session, client_id=cid, task_id=task["id"], with_support=True)
        assert row.support is not None and size == row.weights_bytes + row.support_bytes
    r = client.post(f"/tasks/{task['id']}/examples", headers=alice, json={"x": [1.0], "y": [0.0]})
    assert r.status_code == 200
    with db.session() as session:
        grown = crud.stored(session, client_id=cid)[1]
    assert grown > size
    with db.session() as session:  # a limit just under the next addition
        crud.set_limits(session, client_id=cid, limits={"max_stored_bytes": grown})
    r = client.post(f"/tasks/{task['id']}/examples", headers=alice, json={"x": [2.0], "y": [0.0]})
    assert r.status_code == 429 and "this update" in r.json()["detail"]
    assert client.get(f"/tasks/{task['id']}", headers=alice).json()["revision"] == 2
    assert (
        client.post(
            f"/tasks/{task['id']}/examples", headers=bob, json={"x": [1.0], "y": [0.0]}
        ).status_code
        == 404
    )
    assert client.delete(f"/tasks/{task['id']}", headers=alice).status_code == 204
    with db.session() as session:
        assert crud.stored(session, client_id=cid) == (0, 0)


def test_openapi_documents_the_updates(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/tasks/{task_id}/examples", "/tasks/{task_id}/readapt"):
        op = paths[path]["post"]
        assert {"200", "404", "409", "412", "422"} <= set(op["responses"])
        assert "ETag" in op["responses"]["200"]["headers"]
        assert any(p["name"] == "If-Match" for p in op["parameters"])
    assert "412" in paths["/tasks/{task_id}"]["delete"]["responses"]


def test_export_predicts_offline_exactly_as_the_service(client, alice, tmp_path: Path):
    x, y = sinusoid_task(8, seed=5)
    task = create(client, alice, support={"x": x, "y": y})
    r = client.get(f"/tasks/{task['id']}/model", headers=alice)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert r.headers["etag"] == '"1"'
    assert f'filename="task-{task["id"]}.tar"' in r.headers["content-disposition"]
    path = tmp_path / "task.tar"
    path.write_bytes(r.content)
    art = load_artifact(path)
    assert art.name == f"sinusoid-task-{task['id']}" and art.version == "1"
    record = art.manifest.task
    assert record is not None and record.id == task["id"] and record.support_size == 8
    assert record.adapted_from.name == "sinusoid" and record.adapted_from.version == "1.0.0"
    offline = art.predictor(art.params)(np.array(ASK["x"], dtype=np.float32).reshape(-1, 1))
    assert offline.reshape(-1).tolist() == predict(client, alice, task["id"])
    # Tampering is caught by the content hash, as for any artifact.
    (tmp_path / "bad").mkdir()
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "bad", filter="data")
    manifest = json.loads((tmp_path / "bad" / MANIFEST).read_text())
    manifest["task"]["labels"] = [1]
    (tmp_path / "bad" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_artifact(tmp_path / "bad")
    assert client.get(f"/tasks/{task['id']}/model").status_code == 401
    assert (
        client.get(f"/tasks/{task['id']}/model", headers={"Authorization": "Bearer x"}).status_code
        == 401
    )


def test_export_of_a_classifier_names_its_labels(client, alice, bob, tmp_path: Path):
    rows = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)).tolist()
    body = {"model": "omniglot-5w1s", "support": {"x": rows[:3], "y": ["z", "y", 7]}}
    task = client.post("/tasks", headers=alice, json=body).json()
    r = client.get(f"/tasks/{task['id']}/model", headers=alice)
    path = tmp_path / "task.tar"
    path.write_bytes(r.content)
    art = load_artifact(path)
    assert art.manifest.task is not None and art.manifest.task.labels == [7, "y", "z"]
    logits = art.predictor(art.params)(np.array(rows, dtype=np.float32))[:, :3]
    served = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": rows}).json()
    offline = [art.manifest.task.labels[i] for i in logits.argmax(axis=1)]
    assert offline == [p["label"] for p in served["predictions"]]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (exp / exp.sum(axis=1, keepdims=True)).tolist()
    assert probs == [p["probabilities"] for p in served["predictions"]]
    assert client.get(f"/tasks/{task['id']}/model", headers=bob).status_code == 404


def test_an_archive_is_read_never_extracted(tmp_path: Path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ArtifactError, match="missing manifest.json"):
        load_artifact(path)
    assert not (tmp_path.parent / "manifest.json").exists()
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ArtifactError, match="not an artifact directory or archive"):
        load_artifact(tmp_path / "junk.tar")
