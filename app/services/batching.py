"""Predicts of different tasks, of different clients, encoded together by the text encoder
their meta-models share: opportunistic batching, with no wait added.

A text meta-model's predict costs almost only its frozen encoder, the same for every task, and
one call on 16 short sentences costs about 0.7 of one call each (one torch thread;
``benchmarks/cross_task_batching.py``). A request checks and tokenizes its own sentences first
(a bad one is its own 422), leaves its tokens pending with its encoder's :class:`EncodeBatcher`,
then submits a job to the predictions pool as any predict does, within its client's share. The
job, when it runs, encodes everything pending in one call, up to ``max_tokens``, and finishes
each request (its task's head) with that request's rows; a job whose request was already taken
by an earlier one returns at once. Alone, a request is encoded at once, as before; behind a busy
pool, the requests waiting are encoded together. The pool's bounds hold: a request is queued
here only while its own job is admitted (a refused or cancelled one is withdrawn), and a job
encoding other clients' sentences with its own holds one thread, for at most ``max_tokens``.
Only the encoder is batched: for the Conv4 and MLP models, batching tasks was measured not to
pay on a CPU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

import numpy as np

from app.services.pool import WorkPool
from meta_core.encoders import TextEncoder

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Pending(Generic[T]):
    """One request's sentences, waiting for a job to encode them; ``finish`` turns their rows
    into the request's answer (on the pool thread), which ``future`` receives."""

    tokens: Sequence[Sequence[int]]
    finish: Callable[[np.ndarray], T]
    future: asyncio.Future[T]
    waiting: bool = True  # in the batcher's queue: neither taken by a job nor withdrawn

    @property
    def size(self) -> int:
        return sum(len(row) for row in self.tokens)


class EncodeBatcher:
    """The requests pending for one encoder, taken in arrival order. ``max_tokens`` bounds one
    batch: the service's MAX_REQUEST_TOKENS, so that a batched encode holds a pool thread no
    longer than the largest request may alone, while one-sentence predicts, a few dozen tokens
    each, still gather by the hundred: a short sentence costs about 10 ms encoded alone, 6 to
    9 ms in one call of 16 to 128 (one torch thread, measured)."""

    def __init__(self, encoder: TextEncoder, max_tokens: int) -> None:
        self.encoder = encoder
        self.max_tokens = max_tokens
        self._queue: deque[Pending[Any]] = deque()
        self._lock = threading.Lock()  # the event loop adds, pool threads take

    async def run(
        self,
        tokens: Sequence[Sequence[int]],
        finish: Callable[[np.ndarray], T],
        pool: WorkPool,
        client_id: int,
        share: int | None,
    ) -> T:
        """``finish`` of the embeddings of ``tokens``, encoded with whatever else is pending
        when a job runs; the job is one of ``pool``'s, counted in ``client_id``'s ``share``
        (429 or 503 as for any predict)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = Pending(tokens, finish, future)
        with self._lock:
            self._queue.append(item)
        try:
            await pool.run(partial(self._drain, item), client_id, share)
            return await item.future
        finally:
            # Refused, or its client gone: no job may take it now, and whatever one that took
            # it already sends is dropped.
            self._withdraw(item)
            item.future.cancel()

    def _withdraw(self, item: Pending[Any]) -> None:
        with self._lock:
            if item.waiting:
                item.waiting = False
                self._queue.remove(item)

    def _drain(self, item: Pending[Any]) -> None:
        """``item``'s job, on a pool thread: batches from the queue's head until ``item`` has
        been taken (by this job or an earlier one)."""
        while True:
            with self._lock:
                if not item.waiting:
                    return
                batch = self._take()
            self._encode(batch)

    def _take(self) -> list[Pending[Any]]:
        """The oldest requests, up to ``max_tokens`` (at least one), out of the queue."""
        batch: list[Pending[Any]] = []
        tokens = 0
        while self._queue and (not batch or tokens + self._queue[0].size <= self.max_tokens):
            taken = self._queue.popleft()
            taken.waiting = False
            tokens += taken.size
            batch.append(taken)
        return batch

    def _encode(self, batch: list[Pending[Any]]) -> None:
        """One ``encode_tokens`` call for the whole batch, then each request finished with its
        own rows; an error in the encoder reaches every request, one in a finish its own."""
        start = time.perf_counter()
        try:
            rows = self.encoder.encode_tokens([row for item in batch for row in item.tokens])
        except Exception as exc:
            for item in batch:
                settle(item.future, error=exc)
            return
        logger.debug(
            "encoded %d sentences of %d requests in one call in %.1f ms",
            len(rows),
            len(batch),
            (time.perf_counter() - start) * 1000,
        )
        first = 0
        for item in batch:
            mine, first = rows[first : first + len(item.tokens)], first + len(item.tokens)
            try:
                answer = item.finish(mine)
            except Exception as exc:
                settle(item.future, error=exc)
            else:
                settle(item.future, answer)


def settle(
    future: asyncio.Future[T], answer: T | None = None, error: BaseException | None = None
) -> None:
    """Resolve ``future`` from a pool thread, on its event loop: with ``error`` if given, else
    ``answer``. Dropped if its request was cancelled, or its loop closed (the service stopping:
    nobody waits any more)."""

    def resolve() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, answer))

    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(resolve)


class EncodeBatchers:
    """One :class:`EncodeBatcher` per text encoder, made when a predict first needs it (the
    meta-models, and so the encoders, can change while the service runs). Used from the event
    loop only."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._by_encoder: dict[TextEncoder, EncodeBatcher] = {}

    def of(self, encoder: TextEncoder) -> EncodeBatcher:
        batcher = self._by_encoder.get(encoder)
        if batcher is None:
            batcher = self._by_encoder[encoder] = EncodeBatcher(encoder, self.max_tokens)
        return batcher
