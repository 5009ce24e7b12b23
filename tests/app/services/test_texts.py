"""A text meta-model over HTTP: sentences in, adapted and predicted; the same answer as its
embeddings sent as numbers and as the exported task offline; every bound a clear 422 that
stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.errors import InvalidInput
from app.main import create_app
from app.services.texts import TextLimits, check_text
from app.services.versions import check_fits
from meta_core.artifact import load_artifact
from tests.utils.problem import assert_problem
from tests.utils.text import train_tiny_text

pytestmark = pytest.mark.text_encoder

SUPPORT = {
    "x": [
        "Please refund the lamp I returned",
        "I want my money back for the shoes",
        "Where is my jacket, it has not arrived",
        "The blender is late, when will it come",
        "I forgot my password",
        "How do I reset the password of my account",
    ],
    "y": ["refund", "refund", "delivery", "delivery", "password", "password"],
}
ASK = ["Hi, refund the chair please", "My book has not arrived yet", "I lost my password!"]


@pytest.fixture(scope="module")
def text_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    train_tiny_text(root)
    return root / "models"


@pytest.fixture
def text_client(settings, db, text_models):
    with TestClient(create_app(settings.model_copy(update={"model_dir": text_models}))) as c:
        yield c


def create(client, headers, **body):
    return client.post("/tasks", headers=headers, json={"model": "intents", **body})


def test_sentences_adapt_and_predict_as_their_embeddings_and_the_export_do(
    text_client, alice, text_models
):
    shown = text_client.get("/models/intents", headers=alice).json()
    encoder = shown["preprocessing"]["encoder"]
    assert shown["preprocessing"]["type"] == "text" and shown["input_shape"] == [384]
    assert encoder["name"] == "all-MiniLM-L6-v2" and encoder["max_tokens"] == 256
    assert encoder["sha256"].startswith("53aa5117")
    r = create(text_client, alice, support=SUPPORT)
    assert r.status_code == 201, r.text
    task = r.json()["id"]
    out = text_client.post(f"/tasks/{task}/predict", headers=alice, json={"x": ASK})
    assert out.status_code == 200, out.text
    assert out.json()["labels"] == ["delivery", "password", "refund"]
    guessed = [row["label"] for row in out.json()["predictions"]]
    assert guessed == ["refund", "delivery", "password"]
    probabilities = [row["probabilities"] for row in out.json()["predictions"]]
    # The embeddings as numbers: the same answer (to float32 rounding).
    art = load_artifact(text_models / "intents")
    rows = art.embed(ASK).tolist()
    same = text_client.post(f"/tasks/{task}/predict", headers=alice, json={"x": rows})
    np.testing.assert_allclose(
        [p["probabilities"] for p in same.json()["predictions"]], probabilities, atol=1e-5
    )
    # One sentence alone: the same answer as among the others.
    alone = text_client.post(f"/tasks/{task}/predict", headers=alice, json={"x": ASK[1:2]})
    assert alone.json()["predictions"][0]["probabilities"] == pytest.approx(
        probabilities[1], abs=1e-5
    )
    # The exported task predicts offline as the service does, with the same installed encoder.
    archive = text_client.get(f"/tasks/{task}/model", headers=alice)
    path = text_models.parent / "task.tar"
    path.write_bytes(archive.content)
    exported = load_artifact(path)
    assert exported.encoder is art.encoder  # named, not copied: one per process
    logits = exported.predictor(exported.params)(exported.embed(ASK))[:, :3]
    offline = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(offline, probabilities, atol=1e-5)
    assert len(archive.content) < 2**20  # the encoder's 90 MB stay out


def test_examples_and_readapt_use_the_stored_embeddings(text_client, alice):
    task = create(text_client, alice, support=SUPPORT).json()
    more = {"x": ["Cancel my order of the lamp", "I no longer want the book"], "y": ["cancel"] * 2}
    r = text_client.post(f"/tasks/{task['id']}/examples", headers=alice, json=more)
    assert_problem(r, 422, "y brings the task to 4 classes; model 'intents' takes at most 3")
    more = {
        "x": ["the lamp came too late", "my password is not accepted"],
        "y": ["delivery", "password"],
    }
    r = text_client.post(f"/tasks/{task['id']}/examples", headers=alice, json=more)
    assert r.status_code == 200, r.text
    assert r.json()["support_size"] == 8
    again = text_client.post(f"/tasks/{task['id']}/readapt", headers=alice, json={})
    assert again.status_code == 200, again.text
    out = text_client.post(
        f"/tasks/{task['id']}/predict", headers=alice, json={"x": ["my password is wrong"]}
    )
    assert out.json()["predictions"][0]["label"] == "password"


@pytest.mark.parametrize(
    ("x", "detail"),
    [
        (["a sentence", 3], "support.x[1] must be a sentence (a string)"),
        (["a sentence", "   "], "support.x[1] is empty"),
        (["a sentence", "x" * 2001], "support.x[1] has 2001 characters; the limit is 2000"),
        (["a sentence", "\ud800"], "support.x[1] is not valid Unicode (a lone surrogate)"),
    ],
)
def test_bad_sentences_are_a_clear_422_and_store_nothing(text_client, alice, x, detail):
    body = {"model": "intents", "support": {"x": x, "y": ["a", "b"]}}
    headers = alice | {"Content-Type": "application/json"}
    # json.dumps escapes a lone surrogate as \ud800, as a client's JSON may carry it.
    r = text_client.post("/tasks", headers=headers, content=json.dumps(body))
    assert_problem(r, 422, detail)
    assert text_client.get("/tasks", headers=alice).json()["items"] == []


def test_tokens_are_bounded_per_request_and_counted_in_the_cost(settings, db, alice, text_models):
    tight = settings.model_copy(update={"model_dir": text_models, "max_request_tokens": 40})
    with TestClient(create_app(tight)) as c:
        r = create(c, alice, support=SUPPORT)
        assert_problem(
            r, 422, "support.x's sentences are 59 tokens; the limit is 40 tokens per request"
        )
        ok = create(c, alice, support={"x": SUPPORT["x"][:2], "y": ["a", "b"]})
        assert ok.status_code == 201, ok.text
        # The query set's sentences count with the support set's.
        r = create(
            c,
            alice,
            support={"x": SUPPORT["x"][:2], "y": ["a", "b"]},
            query={"x": SUPPORT["x"][2:4], "y": ["a", "b"]},
        )
        assert_problem(
            r,
            422,
            "query.x's sentences are 23 tokens, 42 with the request's other sentences; the "
            "limit is 40 tokens per request",
        )
    cheap = settings.model_copy(update={"model_dir": text_models, "max_adapt_flops": 1e8})
    with TestClient(create_app(cheap)) as c:
        r = create(c, alice, support=SUPPORT)
        assert r.status_code == 422 and "tokens to encode at" in r.json()["detail"], r.text
        assert "shorter sentences" in r.json()["detail"]
        assert len(c.get("/tasks", headers=alice).json()["items"]) == 1  # the one made above


def test_check_text_and_the_request_token_count():
    assert check_text("héllo wörld", "x[0]", 20) == "héllo wörld"
    limits = TextLimits(max_chars=10, max_request_tokens=5)
    limits.spend(3, "x")
    with pytest.raises(InvalidInput, match="x's sentences are 3 tokens, 6 with the request's"):
        limits.spend(3, "x")
    spent = []
    TextLimits(10, 100, cost=spent.append).spend(7, "x")
    assert spent == [7]


def test_a_support_set_of_other_rows_cannot_adapt_a_text_meta_model(text_models):
    art = load_artifact(text_models / "intents")
    with pytest.raises(InvalidInput) as info:
        check_fits(art, None, torch.zeros(2, 384), ["a", "b"], None)  # type: ignore[arg-type]
    assert str(info.value) == (
        "version 1.0.0 of 'intents' takes all-MiniLM-L6-v2 embeddings (sha256:"
        f"{art.manifest.preprocessing.encoder.sha256}); the task's support set holds rows of "
        "numbers, which it cannot adapt from: adapt a new task from its examples (POST /tasks)"
    )
