"""The objects a running service shares between requests, in one container built at start."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.core.db import Database
from app.core.events import Listener
from app.core.metrics import Metrics
from app.services.batching import EncodeBatchers
from app.services.cache import ModelCache
from app.services.keys import KeyCache
from app.services.limits import RateLimiter
from app.services.pool import WorkPool
from app.services.registry import MetaModelRegistry
from app.services.tasks import TaskService


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    registry: MetaModelRegistry
    cache: ModelCache
    adapt_pool: WorkPool  # adaptations
    predict_pool: WorkPool  # predictions too large or slow for the event loop
    metrics: Metrics
    keys: KeyCache
    rates: RateLimiter
    tasks: TaskService  # made of the fields above
    listener: Listener | None = None  # PostgreSQL's change announcements (events.py)
    batchers: EncodeBatchers | None = None  # text predicts' encoding (PREDICT_BATCHING)

    @classmethod
    def start(cls, settings: Settings, db: Database, metrics: Metrics) -> Services:
        """A process's container: the meta-models loaded, the cache, the two pools, the key
        cache, the rate limiter, the task service over them, and (PREDICT_BATCHING) the
        batchers of text predicts' encoding."""

        def pool(what: str, concurrency: int, queue: int) -> WorkPool:
            return WorkPool(
                what, concurrency, queue, settings.retry_after_seconds, metrics.rejected
            )

        registry = MetaModelRegistry.load(settings.model_dir, settings.trained_model_dir)
        cache = ModelCache(settings.cache_size, settings.cache_bytes, settings.cache_ttl_seconds)
        adapt_pool = pool("adaptations", settings.adapt_concurrency, settings.adapt_queue)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            cache=cache,
            adapt_pool=adapt_pool,
            predict_pool=pool("predictions", settings.predict_concurrency, settings.predict_queue),
            metrics=metrics,
            keys=KeyCache(settings.auth_cache_seconds, settings.auth_reject_seconds),
            rates=RateLimiter(),
            tasks=TaskService(settings, db, registry, adapt_pool, cache, metrics),
            batchers=(
                EncodeBatchers(settings.max_request_tokens) if settings.predict_batching else None
            ),
        )

    def replace(self, **changes: Any) -> Services:
        """The container with ``changes``, its task service made of the new fields (unless
        ``tasks`` is among them)."""
        new = dataclasses.replace(self, **changes)
        if "tasks" in changes:
            return new
        tasks = TaskService(
            new.settings, new.db, new.registry, new.adapt_pool, new.cache, new.metrics
        )
        return dataclasses.replace(new, tasks=tasks)
