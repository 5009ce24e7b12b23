"""Bounded thread pools for CPU-heavy request work (adaptations; large, image, recording or text
predictions), off the event loop. Each runs ``concurrency`` jobs at once with ``queue`` more
waiting, and at most a client's share of them for one client: beyond the client's share it
answers 429, beyond the pool's capacity 503, both with Retry-After, instead of queueing
without limit."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client import Counter

from app.core.errors import Overloaded, TooManyRequests

T = TypeVar("T")


class WorkPool:
    def __init__(
        self,
        what: str,
        concurrency: int,
        queue: int,
        retry_after: int,
        rejected: Counter,
    ) -> None:
        self.what = what  # "adaptations", "predictions": named in refusals and metrics
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix=what)
        self.capacity = concurrency + queue
        self.retry_after = retry_after
        self.rejected = rejected
        self.in_flight = 0
        self._by_client: Tally[int] = Tally()

    async def run(
        self, fn: Callable[[], T], client_id: int | None = None, share: int | None = None
    ) -> T:
        """``fn`` on a pool thread, for ``client_id``, who may have ``share`` jobs here."""
        mine = self._by_client[client_id] if client_id is not None else 0
        if share is not None and mine >= share:
            self.rejected.labels(self.what, "client").inc()
            raise TooManyRequests(
                f"you have {mine} {self.what} in progress, the most one client may have "
                f"(limit: {share}); retry when one finishes",
                retry_after=self.retry_after,
            )
        if self.in_flight >= self.capacity:
            self.rejected.labels(self.what, "capacity").inc()
            raise Overloaded(
                f"{self.in_flight} {self.what} are in progress; retry shortly",
                retry_after=self.retry_after,
            )
        self.in_flight += 1
        if client_id is not None:
            self._by_client[client_id] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn)
        finally:
            self.in_flight -= 1
            if client_id is not None:
                self._by_client[client_id] -= 1
                if not self._by_client[client_id]:
                    del self._by_client[client_id]

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
