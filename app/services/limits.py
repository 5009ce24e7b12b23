"""Per-client limits: the settings' defaults, overridden per client from the CLI
(``python -m app clients limits``), the token buckets of the request rate, and one request's
running total of what its rows decode (:func:`spend_request`).

Every limit holds per API process (each worker counts for itself): with WORKERS=N a client
may reach N times a rate or in-flight limit, never a storage quota, which the database
counts."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.core.errors import InvalidInput


def spend_request(
    spent: int,
    amount: int,
    limit: int,
    cost: Callable[[int], None] | None,
    *,
    field: str,
    rows: str,
    verb: str,
    unit: str,
) -> int:
    """One request's running total of what its rows decode (an image's pixels, a sentence's
    tokens) with ``amount`` more from ``field``: a 422 past the request's ``limit``, else
    ``cost`` (the caller's budget, which may refuse) is told the new total, which is
    returned."""
    total = spent + amount
    if total > limit:
        others = f", {total} with the request's other {rows}" if spent else ""
        raise InvalidInput(
            f"{field}'s {rows} {verb} {amount} {unit}{others}; the limit is {limit} {unit} "
            "per request"
        )
    if cost is not None:
        cost(total)
    return total


class Limits(BaseModel):
    """What one client may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_per_second: float = Field(gt=0, description="requests per second, sustained")
    rate_burst: int = Field(ge=1, description="requests at once above the sustained rate")
    adapt_in_flight: int = Field(ge=1, description="adaptations running or waiting")
    predict_in_flight: int = Field(ge=1, description="pooled predictions running or waiting")
    max_adapt_flops: float = Field(gt=0, description="the cost of one adaptation")
    max_adapt_bytes: int = Field(gt=0, description="the memory one adaptation may need")
    max_tasks: int = Field(ge=0, description="tasks stored")
    max_stored_bytes: int = Field(ge=0, description="bytes of weights and support sets stored")

    @classmethod
    def of(cls, settings: Settings, overrides: dict[str, Any] | None = None) -> Limits:
        defaults = {
            "rate_per_second": settings.rate_per_second,
            "rate_burst": settings.rate_burst,
            "adapt_in_flight": settings.adapt_per_client,
            "predict_in_flight": settings.predict_per_client,
            "max_adapt_flops": settings.max_adapt_flops,
            "max_adapt_bytes": settings.max_adapt_bytes,
            "max_tasks": settings.max_tasks_per_client,
            "max_stored_bytes": settings.max_stored_bytes_per_client,
        }
        known = {k: v for k, v in (overrides or {}).items() if k in cls.model_fields}
        return cls.model_validate(defaults | known)


class RateLimiter:
    """A token bucket per client: ``burst`` tokens, refilled at ``rate`` per second; a request
    takes one. Idle buckets are dropped once full again, so memory follows active clients."""

    def __init__(self) -> None:
        # client -> (tokens, at, rate, burst): each bucket refills at its own client's rate
        self._buckets: dict[int, tuple[float, float, float, int]] = {}
        self._lock = threading.Lock()

    def take(self, client_id: int, rate: float, burst: int) -> float:
        """0 if the request may proceed, else the seconds until it could."""
        now = time.monotonic()
        with self._lock:
            tokens, at, _, _ = self._buckets.get(client_id, (float(burst), now, rate, burst))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens < 1:
                self._buckets[client_id] = (tokens, now, rate, burst)
                return (1 - tokens) / rate
            self._buckets[client_id] = (tokens - 1, now, rate, burst)
            if len(self._buckets) > 10_000:  # forget clients whose buckets have refilled
                self._buckets = {
                    c: bucket
                    for c, bucket in self._buckets.items()
                    if bucket[0] + (now - bucket[1]) * bucket[2] < bucket[3]
                }
            return 0.0


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
