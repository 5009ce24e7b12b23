"""Text predicts encoded together: the batcher's queue against a stand-in encoder (split at its
bound, an encoder's error for every waiter, a finish's for its own, cancelled and refused
requests withdrawn), and the service on the shipped text meta-model, whose predicts of many
clients' tasks, queued behind a busy pool, are encoded in one call and answer as each does
alone; batching off answers the same."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from app.core.config import Settings
from app.core.errors import InvalidInput, Overloaded
from app.main import create_app
from app.services.batching import EncodeBatcher
from app.services.pool import WorkPool
from app.services.prediction import BATCHED_BODY_BYTES, batched_encoder
from meta_core.artifact import load_artifact
from meta_core.encoders import MINILM, load_encoder
from tests.conftest import ROOT
from tests.utils.database import make_key
from tests.utils.problem import assert_problem
from tests.utils.text import TEXT_MODEL


class StubEncoder:
    """An encoder stand-in: a row's embedding is [its length, its first token]; each call's
    rows are kept. ``entered`` is set on each call, which then waits for ``go``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[list[list[int]]] = []
        self.error = error
        self.entered = threading.Event()
        self.go = threading.Event()
        self.go.set()

    def encode_tokens(self, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        self.calls.append([list(row) for row in tokens])
        self.entered.set()
        self.go.wait()
        if self.error is not None:
            raise self.error
        return np.array([[len(row), row[0]] for row in tokens], dtype=np.float32)


HANG = 60.0  # seconds a held pool waits at most: a test that miscounts fails, never hangs


def one_thread_pool(queue: int = 16) -> WorkPool:
    rejected = Counter("r", "r", ["pool", "reason"], registry=CollectorRegistry())
    return WorkPool("predictions", 1, queue, 1, rejected)


def counted(pool: WorkPool, n: int, arrived: Callable[[], None]) -> None:
    """``arrived()`` once ``pool`` has been asked to run its ``n``-th job (the batcher queues a
    request before it submits the request's job: by then all ``n`` are queued)."""
    run, jobs = pool.run, itertools.count(1)

    async def counting(fn: Any, client_id: int | None = None, share: int | None = None) -> Any:
        if next(jobs) == n:
            arrived()
        return await run(fn, client_id, share)

    pool.run = counting  # type: ignore[method-assign]


def as_is(rows: np.ndarray) -> list[list[float]]:
    return rows.tolist()


def behind_a_busy_pool(
    batcher: EncodeBatcher,
    requests: list[list[list[int]]],
    finish: Callable[[np.ndarray], Any] = as_is,
    *,
    cancel: Sequence[int] = (),
) -> list[Any]:
    """Each request's answer (or exception), its job submitted while the pool's one thread is
    held, so that all are queued when it frees; those at ``cancel`` are cancelled first."""
    pool, release = one_thread_pool(), threading.Event()

    async def main() -> list[Any]:
        arrived = asyncio.Event()
        # Submitted first, so it runs first; the requests' jobs queue behind it.
        blocker = asyncio.ensure_future(pool.run(partial(release.wait, HANG)))
        counted(pool, len(requests), arrived.set)
        runs = [
            asyncio.ensure_future(batcher.run(tokens, finish, pool, i, None))
            for i, tokens in enumerate(requests)
        ]
        await arrived.wait()
        for i in cancel:
            runs[i].cancel()
        if cancel:  # gone before the pool frees
            await asyncio.wait([runs[i] for i in cancel])
        release.set()
        await blocker
        return await asyncio.gather(*runs, return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()


def test_queued_requests_are_encoded_in_one_call_each_given_its_own_rows():
    stub = StubEncoder()
    batcher = EncodeBatcher(stub, max_tokens=100)  # type: ignore[arg-type]
    requests = [[[1, 2, 3]], [[4], [5, 6]], [[7, 8]]]
    answers = behind_a_busy_pool(batcher, requests)
    assert answers == [[[3, 1]], [[1, 4], [2, 5]], [[2, 7]]]
    assert stub.calls == [[[1, 2, 3], [4], [5, 6], [7, 8]]]


def test_a_batch_stops_at_its_bound_and_the_rest_follows():
    stub = StubEncoder()
    batcher = EncodeBatcher(stub, max_tokens=10)  # type: ignore[arg-type]
    requests = [[[i] * 4] for i in range(1, 6)] + [[[9] * 12]]  # the last alone is over 10
    answers = behind_a_busy_pool(batcher, requests)
    assert answers == [[[4, i]] for i in range(1, 6)] + [[[12, 9]]]
    assert [[len(row) for row in call] for call in stub.calls] == [[4, 4], [4, 4], [4], [12]]


def test_an_encoder_error_reaches_every_request_of_the_batch():
    boom = RuntimeError("the encoder failed")
    stub = StubEncoder(boom)
    batcher = EncodeBatcher(stub, max_tokens=100)  # type: ignore[arg-type]
    answers = behind_a_busy_pool(batcher, [[[1]], [[2]], [[3]]])
    assert answers == [boom, boom, boom] and len(stub.calls) == 1
    stub.error = None  # nothing left behind: the next request is encoded
    assert behind_a_busy_pool(batcher, [[[4]]]) == [[[1, 4]]]


def test_a_finish_error_is_its_own_requests():
    batcher = EncodeBatcher(StubEncoder(), max_tokens=100)  # type: ignore[arg-type]

    def finish(rows: np.ndarray) -> list[list[float]]:
        if rows[0, 1] == 2:
            raise InvalidInput("the predictions for rows [0] of x are not finite")
        return as_is(rows)

    answers = behind_a_busy_pool(batcher, [[[1]], [[2]], [[3]]], finish)
    assert answers[0] == [[1, 1]] and answers[2] == [[1, 3]]
    assert isinstance(answers[1], InvalidInput)
    assert str(answers[1]) == "the predictions for rows [0] of x are not finite"


def test_a_cancelled_request_is_withdrawn_and_the_others_answered():
    stub = StubEncoder()
    batcher = EncodeBatcher(stub, max_tokens=100)  # type: ignore[arg-type]
    answers = behind_a_busy_pool(batcher, [[[1]], [[2]], [[3]]], cancel=[1])
    assert answers[0] == [[1, 1]] and answers[2] == [[1, 3]]
    assert isinstance(answers[1], asyncio.CancelledError)
    assert stub.calls == [[[1], [3]]]  # its sentences were not encoded


def test_a_request_cancelled_while_its_batch_is_encoded_leaves_the_others_theirs():
    stub = StubEncoder()
    stub.go.clear()
    batcher = EncodeBatcher(stub, max_tokens=100)  # type: ignore[arg-type]
    pool = one_thread_pool()

    async def main() -> list[Any]:
        runs = [asyncio.ensure_future(batcher.run([[i]], as_is, pool, i, None)) for i in (1, 2, 3)]
        await asyncio.to_thread(stub.entered.wait)  # the first job took the first request
        runs[0].cancel()
        stub.go.set()
        return await asyncio.gather(*runs, return_exceptions=True)

    answers = asyncio.run(main())
    pool.shutdown()
    assert isinstance(answers[0], asyncio.CancelledError)
    assert answers[1:] == [[[1, 2]], [[1, 3]]]


def test_a_refused_request_leaves_nothing_queued():
    stub = StubEncoder()
    batcher = EncodeBatcher(stub, max_tokens=100)  # type: ignore[arg-type]
    pool, release = one_thread_pool(queue=0), threading.Event()

    async def main() -> None:
        arrived = asyncio.Event()
        counted(pool, 1, arrived.set)
        blocker = asyncio.ensure_future(pool.run(partial(release.wait, HANG)))
        await arrived.wait()  # the blocker holds the pool's one place
        with pytest.raises(Overloaded, match=r"^1 predictions are in progress; retry shortly$"):
            await batcher.run([[1]], as_is, pool, 1, None)
        release.set()
        await blocker
        assert await batcher.run([[2]], as_is, pool, 1, None) == [[1, 2]]

    asyncio.run(main())
    pool.shutdown()
    assert stub.calls == [[[2]]]


# The service, on the shipped text meta-model.

INTENTS = {
    "refund": ["Please refund the lamp I returned", "I want my money back for the shoes"],
    "delivery": ["Where is my jacket, it has not arrived", "The blender is late, when is it due"],
    "password": ["I forgot my password", "How do I reset the password of my account"],
}
# Short and long sentences, so that a batch pads most of its rows.
ASK = [
    ["refund it"],
    ["My parcel with the new winter boots has still not arrived after three weeks of waiting"],
    ["I lost my password!", "money back please"],
    ["when will the order come"],
    ["reset my login", "the chair is broken, I want a refund of the full price", "late"],
    ["password"],
]


@pytest.fixture
def busy(settings: Settings) -> Settings:
    """One predict at a time, so that the others queue; four per client."""
    return settings.model_copy(
        update={"predict_concurrency": 1, "predict_per_client": 4, "predict_queue": 32}
    )


@pytest.fixture
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of each of the encoder's calls from here on."""
    encoder, calls = load_encoder(MINILM), []
    encode = encoder.encode_tokens

    def counting(tokens: Sequence[Sequence[int]], **kwargs: Any) -> np.ndarray:
        calls.append(len(tokens))
        return encode(tokens, **kwargs)

    monkeypatch.setattr(encoder, "encode_tokens", counting)
    return calls


@contextmanager
def serve(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


Ask = tuple[dict[str, str], str, list[Any]]  # a client's headers, its task, the x to predict


def clients_tasks(c: TestClient, db: Any) -> list[Ask]:
    """Two tasks for each of three clients, each with its own labelling of the intents, and
    each task's sentences of ASK."""
    made: list[Ask] = []
    for n, name in enumerate(("ann", "ben", "cat")):
        headers = {"Authorization": f"Bearer {make_key(db, name)}"}
        for t in range(2):
            order = list(INTENTS)[n + t :] + list(INTENTS)[: n + t]
            labels = {intent: f"{name}-{t}-{i}" for i, intent in enumerate(order)}
            x = [s for intent in INTENTS for s in INTENTS[intent]]
            y = [labels[intent] for intent in INTENTS for _ in INTENTS[intent]]
            r = c.post(
                "/tasks", headers=headers, json={"model": TEXT_MODEL, "support": {"x": x, "y": y}}
            )
            assert r.status_code == 201, r.text
            made.append((headers, r.json()["id"], ASK[len(made)]))
    return made


def at_once(c: TestClient, asks: list[Ask], queued: int) -> list[Any]:
    """The predicts of ``asks``, all sent at once, each from its own thread, while the
    predictions pool's one thread is held until ``queued`` of them have reached the pool."""
    pool = c.app.state.services.predict_pool
    release = threading.Event()
    counted(pool, queued, release.set)
    blocker = pool.executor.submit(release.wait, HANG)
    with ThreadPoolExecutor(len(asks)) as threads:
        answers = list(
            threads.map(
                lambda ask: c.post(f"/tasks/{ask[1]}/predict", headers=ask[0], json={"x": ask[2]}),
                asks,
            )
        )
    assert blocker.result(), f"fewer than {queued} predicts reached the pool"
    del pool.run  # the pool's own method again
    return answers


def assert_same(batched: dict[str, Any], alone: dict[str, Any]) -> None:
    """The same labels, and probabilities within 1e-5 (a batch pads a row to its batch's
    longest: float rounding, measured below 1e-6)."""
    assert batched["labels"] == alone["labels"]
    assert [p["label"] for p in batched["predictions"]] == [
        p["label"] for p in alone["predictions"]
    ]
    np.testing.assert_allclose(
        [p["probabilities"] for p in batched["predictions"]],
        [p["probabilities"] for p in alone["predictions"]],
        atol=1e-5,
    )


def alone(c: TestClient, asks: list[Ask]) -> list[dict[str, Any]]:
    """Each predict of ``asks``, one at a time (its task's model cached from then on)."""
    answers = []
    for headers, task, x in asks:
        r = c.post(f"/tasks/{task}/predict", headers=headers, json={"x": x})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


@pytest.mark.text_encoder
def test_many_clients_predicts_are_encoded_together_and_answer_as_alone(busy, db, encoder_calls):
    with serve(busy) as c:
        made = clients_tasks(c, db)
        one_by_one = alone(c, made)
        assert encoder_calls[-len(made) :] == [len(x) for x in ASK]
        encoder_calls.clear()
        # Each task asked twice at once: 12 predicts of 6 clients' tasks, queued together.
        answers = at_once(c, made * 2, 2 * len(made))
        assert encoder_calls == [2 * sum(len(x) for x in ASK)]  # one call for all
        for r, expected in zip(answers, one_by_one * 2, strict=True):
            assert r.status_code == 200, r.text
            assert_same(r.json(), expected)
    # Batching off: each predict encoded on its own, the same answers.
    encoder_calls.clear()
    with serve(busy.model_copy(update={"predict_batching": False})) as c:
        assert c.app.state.services.batchers is None
        for r, expected in zip(alone(c, made), one_by_one, strict=True):
            assert_same(r, expected)
        encoder_calls.clear()
        answers = at_once(c, made, len(made))
        assert sorted(encoder_calls) == sorted(len(x) for x in ASK)
        for r, expected in zip(answers, one_by_one, strict=True):
            assert r.status_code == 200, r.text
            assert_same(r.json(), expected)


@pytest.mark.text_encoder
def test_a_bad_request_among_a_batch_gets_its_own_422(busy, db, encoder_calls):
    with serve(busy) as c:
        made = clients_tasks(c, db)
        one_by_one = alone(c, made)
        encoder_calls.clear()
        asks = list(made)
        asks[2:2] = [(*made[0][:2], ["fine", "   "]), (*made[3][:2], ["fine", 3])]
        answers = at_once(c, asks, len(made))
        assert_problem(answers[2], 422, "x[1] is empty")
        assert_problem(answers[3], 422, "x[1] must be a sentence (a string)")
        assert encoder_calls == [sum(len(x) for x in ASK)]
        for r, expected in zip(answers[:2] + answers[4:], one_by_one, strict=True):
            assert r.status_code == 200, r.text
            assert_same(r.json(), expected)


@pytest.mark.text_encoder
def test_an_encoder_failure_answers_every_request_of_its_batch(busy, db, monkeypatch):
    with serve(busy) as c:
        made = clients_tasks(c, db)
        alone(c, made)  # cached
        encoder = load_encoder(MINILM)
        encode = encoder.encode_tokens

        def failing(tokens: Sequence[Sequence[int]], **kwargs: Any) -> np.ndarray:
            raise RuntimeError("the encoder failed")

        monkeypatch.setattr(encoder, "encode_tokens", failing)
        answers = at_once(c, made, len(made))
        assert [r.status_code for r in answers] == [500] * len(made)
        monkeypatch.setattr(encoder, "encode_tokens", encode)
        headers, task, x = made[0]
        r = c.post(f"/tasks/{task}/predict", headers=headers, json={"x": x})
        assert r.status_code == 200, r.text


@pytest.mark.text_encoder
def test_only_small_bodies_of_sentences_join_a_batch():
    settings = Settings(max_predict_rows=5)
    text = load_artifact(ROOT / "models" / TEXT_MODEL)
    assert batched_encoder(text, ["a sentence"], 100, settings) is text.encoder
    # The others go to the pool whole: a large body is a batch of its own, and what
    # to_inputs refuses past the sentences' tokens gets its 422 there.
    assert batched_encoder(text, ["a sentence"], BATCHED_BODY_BYTES + 1, settings) is None
    assert batched_encoder(text, ["a"] * 6, 100, settings) is None  # over MAX_PREDICT_ROWS
    assert batched_encoder(text, [[0.5] * 384], 100, settings) is None
    assert (
        batched_encoder(load_artifact(ROOT / "models" / "sinusoid"), ["a"], 100, settings) is None
    )
