"""How tasks are stored: each meta-model's format chosen by the settings and recorded per row,
a model read back (decoded, or re-adapted from the support set) predicting as the one adapted
at creation, compressed blobs, and rows stored before there was a choice still read."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import select, update

from app.core.config import Settings
from app.core.errors import StoredWeightsCorrupt
from app.main import create_app
from app.services import weights
from app.services.adaptation import adapt, readapt
from app.services.inputs import AdaptationRequest
from app.services.storage import storage_for
from app.tables import TaskRow
from meta_core.artifact import load_artifact
from tests.conftest import ROOT
from tests.utils.problem import assert_problem
from tests.utils.tasks import sinusoid_task

SINUSOID = load_artifact(ROOT / "models" / "sinusoid")
OMNIGLOT = load_artifact(ROOT / "models" / "omniglot-5w1s")


@contextmanager
def serving(settings: Settings, **changes: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes))) as c:
        yield c


def images(n: int, seed: int) -> list[Any]:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).tolist()


def omniglot_body(seed: int = 0) -> dict[str, Any]:
    return {"model": "omniglot-5w1s", "support": {"x": images(5, seed), "y": list("abcde")}}


def sinusoid_body(**extra: Any) -> dict[str, Any]:
    x, y = sinusoid_task()
    return {"model": "sinusoid", "support": {"x": x, "y": y}} | extra


def predict(client: TestClient, headers: dict[str, str], tid: str, x: list[Any]) -> Any:
    r = client.post(f"/tasks/{tid}/predict", headers=headers, json={"x": x})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def cold(client: TestClient) -> None:
    """Forget every cached model, as another worker (or this one, restarted) starts."""
    client.app.state.services.cache.clear()


def row(db, tid: str) -> TaskRow:
    with db.session() as session:
        task = session.get(TaskRow, tid)
        session.expunge(task)
        return task


@pytest.mark.parametrize("meta_model", [SINUSOID, OMNIGLOT], ids=["sinusoid", "omniglot"])
def test_readapting_the_stored_support_set_gives_the_adapted_model_bit_for_bit(meta_model):
    g = torch.Generator().manual_seed(3)
    x = torch.rand((5, *meta_model.row_shape), generator=g)
    if meta_model.task_kind == "classification":
        y, labels = torch.tensor([0, 1, 2, 3, 4]), list(range(5))
    else:
        y, labels = torch.randn(5, 1, generator=g), None
    for steps, lr in [(meta_model.manifest.inner_loop.steps, None), (3, 0.05)]:
        adapted = adapt(meta_model, AdaptationRequest(x, y, None, labels, steps, lr))
        again = readapt(meta_model, x, y, steps=steps, lr=lr)
        assert again.keys() == adapted.params.keys()
        for k, v in adapted.params.items():
            assert torch.equal(again[k], v), k


def test_a_task_stored_as_its_support_set_predicts_the_same_after_a_cache_miss(settings, db, alice):
    query = images(5, 9)
    with serving(settings, task_storage="support") as client:
        task = client.post("/tasks", headers=alice, json=omniglot_body()).json()
        assert (task["storage"], task["readaptable"]) == ("support", True)
        warm = predict(client, alice, task["id"], query)
        cold(client)
        assert predict(client, alice, task["id"], query) == warm  # re-adapted: equal floats
        stored = row(db, task["id"])
        assert (stored.weights, stored.weights_bytes) == (b"", 0)
        assert stored.support_bytes == task["stored_bytes"] < 20_000


def test_auto_stores_support_sets_where_re_adapting_is_cheap_and_weights_elsewhere(monkeypatch):
    settings = Settings(readapt_max_flops=1e9, readapt_min_bytes=16_384)
    omniglot_20 = load_artifact(ROOT / "models" / "omniglot-20w1s")
    assert storage_for(SINUSOID, settings, rows=10, steps=5) == "float32"  # 7 KB of weights
    small = settings.model_copy(update={"readapt_min_bytes": 0})
    assert storage_for(SINUSOID, small, rows=10, steps=100) == "support"  # 10 MFLOPs
    assert storage_for(OMNIGLOT, settings, rows=5, steps=1) == "support"  # 0.3 GFLOPs
    assert storage_for(OMNIGLOT, settings, rows=25, steps=10) == "float32"  # 15 GFLOPs
    assert storage_for(omniglot_20, settings, rows=20, steps=5) == "float32"
    named = settings.model_copy(update={"task_storage_by_model": {"omniglot-5w1s": "float16"}})
    assert storage_for(OMNIGLOT, named, rows=5, steps=1) == "float16"
    assert storage_for(SINUSOID, named, rows=10, steps=1) == "float32"
    monkeypatch.setenv("TASK_STORAGE_BY_MODEL", '{"sinusoid": "bfloat16"}')
    assert Settings().task_storage_by_model == {"sinusoid": "bfloat16"}
    monkeypatch.setenv("TASK_STORAGE_BY_MODEL", '{"sinusoid": "int8"}')
    with pytest.raises(ValueError, match="task_storage_by_model.sinusoid"):
        Settings()


@pytest.mark.parametrize("form", ["float16", "bfloat16"])
def test_half_precision_stores_half_the_bytes_and_every_read_serves_the_same_model(
    settings, db, alice, form
):
    query = images(5, 9)
    with serving(settings, task_storage=form) as client:
        exact = client.post("/tasks", headers=alice, json=omniglot_body() | {"name": "x"})
        with serving(settings, task_storage="float32") as full:
            reference = full.post("/tasks", headers=alice, json=omniglot_body()).json()
            wanted = predict(full, alice, reference["id"], query)
        task = exact.json()
        assert task["storage"] == form
        assert row(db, task["id"]).weights_bytes < 0.51 * row(db, reference["id"]).weights_bytes
        served = predict(client, alice, task["id"], query)  # the model cached at creation
        cold(client)
        assert predict(client, alice, task["id"], query) == served  # the one read back
    worst = max(
        abs(p - q)
        for a, b in zip(served, wanted, strict=True)
        for p, q in zip(a["probabilities"], b["probabilities"], strict=True)
    )
    assert worst < (1e-3 if form == "float16" else 1e-2)
    assert [p["label"] for p in served] == [p["label"] for p in wanted]


def test_weights_are_compressed_only_where_it_pays_and_old_blobs_read_as_they_are():
    support = save({"x": torch.zeros(5, 1, 28, 28), "y": torch.arange(5)})
    packed = weights.compress(support)
    assert packed.startswith(weights.ZLIB) and len(packed) < len(support) / 10
    assert weights.inflate(packed, "support set") == support
    noise = save({"w": torch.rand(1000, generator=torch.Generator().manual_seed(0))})
    assert weights.compress(noise) == noise  # float noise: kept as it is
    assert weights.inflate(noise, "weights") == noise  # a blob stored before compression
    with pytest.raises(StoredWeightsCorrupt, match="unreadable"):
        weights.inflate(weights.ZLIB + b"not zlib", "weights")
    with pytest.raises(StoredWeightsCorrupt, match="truncated or too large"):
        weights.inflate(packed[:-5], "support set")


def test_a_stored_blob_that_inflates_beyond_the_bound_is_refused(monkeypatch):
    monkeypatch.setattr(weights, "MAX_INFLATED", 10_000)
    bomb = weights.ZLIB + zlib.compress(bytes(10_001))
    with pytest.raises(StoredWeightsCorrupt, match="truncated or too large"):
        weights.inflate(bomb, "support set")


def test_float32_rows_made_before_there_was_a_choice_still_predict(settings, db, alice):
    with serving(settings, task_storage="float32", task_compression="none") as client:
        task = client.post("/tasks", headers=alice, json=sinusoid_body()).json()
        before = predict(client, alice, task["id"], [0.5, 1.5])
    assert row(db, task["id"]).storage == "float32"
    with serving(settings) as client:  # the default now: auto, zlib
        assert predict(client, alice, task["id"], [0.5, 1.5]) == before
        moved = client.post(f"/tasks/{task['id']}/readapt", headers=alice, json={}).json()
        assert moved["storage"] == "float32" and moved["revision"] == 2
        assert moved["stored_bytes"] < task["stored_bytes"]  # its support set compressed
        cold(client)
        assert predict(client, alice, task["id"], [0.5, 1.5]) == before


def test_an_unreadable_support_set_of_a_support_task_is_a_500_that_changes_nothing(
    settings, db, alice
):
    with serving(settings, task_storage="support") as client:
        task = client.post("/tasks", headers=alice, json=sinusoid_body()).json()
        with db.session() as session:
            session.execute(
                update(TaskRow).where(TaskRow.id == task["id"]).values(support=b"tampered")
            )
        cold(client)
        r = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": [0.5]})
        assert_problem(r, 500, "the stored support set failed its sha256 check")
        with db.session() as session:
            unknown = weights.serialize(SINUSOID, {}, "float32")
            session.execute(
                update(TaskRow)
                .where(TaskRow.id == task["id"])
                .values(storage="int4", weights=unknown[0], weights_sha256=unknown[1])
            )
        r = client.post(f"/tasks/{task['id']}/predict", headers=alice, json={"x": [0.5]})
        assert_problem(r, 500, "the task's storage 'int4' is unknown to this version")
    with db.session() as session:
        assert session.scalar(select(TaskRow.support).where(TaskRow.id == task["id"])) == (
            b"tampered"
        )


def test_an_exported_support_task_holds_the_re_adapted_weights(settings, db, alice, tmp_path):
    with serving(settings, task_storage="support") as client:
        task = client.post("/tasks", headers=alice, json=sinusoid_body()).json()
        cold(client)
        r = client.get(f"/tasks/{task['id']}/model", headers=alice)
        assert r.status_code == 200
        path = tmp_path / "task.tar"
        path.write_bytes(r.content)
        exported = load_artifact(path)
        x = torch.tensor([[0.5], [1.5]])
        offline = exported.predictor(exported.params)(x.numpy()).reshape(-1).tolist()
        assert predict(client, alice, task["id"], [0.5, 1.5]) == pytest.approx(offline, abs=1e-6)
        assert exported.manifest.task is not None
        assert exported.manifest.task.storage == "support"


def test_the_support_set_is_read_with_a_predict_only_where_it_stands_in_for_weights(db, alice):
    """``get_task(with_weights=True)`` selects the support set only for ``support`` rows."""
    from app import crud
    from tests.utils.database import client_id_of
    from tests.utils.tasks import stored_task

    owner = client_id_of(db, alice)
    kept = weights.serialize_support(torch.zeros(2, 1), torch.zeros(2, 1))
    float_task = stored_task(db, owner, support=kept)
    support_task = stored_task(db, owner, support=kept, storage="support")
    with db.session() as session:
        a = crud.get_task(session, client_id=owner, task_id=float_task, with_weights=True)
        b = crud.get_task(session, client_id=owner, task_id=support_task, with_weights=True)
        assert a.support_to_readapt is None
        assert b.support_to_readapt == kept[0]
    assert hashlib.sha256(kept[0]).hexdigest() == kept[1]
