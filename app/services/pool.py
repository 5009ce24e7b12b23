"""The adaptation pool: CPU-heavy inner loops run on threads, off the event loop, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client import Counter

from app.core.errors import Overloaded

T = TypeVar("T")


class AdaptationPool:
    """Runs adaptations ``concurrency`` at once, ``queue`` more waiting; beyond that it answers
    503 with Retry-After (and counts the rejection) instead of queueing without limit."""

    def __init__(self, concurrency: int, queue: int, retry_after: int, rejected: Counter) -> None:
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="adapt")
        self.capacity = concurrency + queue
        self.retry_after = retry_after
        self.rejected = rejected
        self.in_flight = 0

    async def run(self, fn: Callable[[], T]) -> T:
        if self.in_flight >= self.capacity:
            self.rejected.inc()
            raise Overloaded(
                f"{self.in_flight} adaptations are in progress; retry shortly",
                retry_after=self.retry_after,
            )
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn)
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
