"""The objects a running service shares between requests, in one container built at start."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.core.db import Database
from app.core.events import Listener
from app.core.metrics import Metrics
from app.services.cache import ModelCache
from app.services.keys import KeyCache
from app.services.limits import RateLimiter
from app.services.pool import WorkPool
from app.services.registry import MetaModelRegistry


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    registry: MetaModelRegistry
    cache: ModelCache
    pool: WorkPool  # adaptations
    predict_pool: WorkPool  # predictions too large or slow for the event loop
    metrics: Metrics
    keys: KeyCache
    rates: RateLimiter
    listener: Listener | None = None  # PostgreSQL's change announcements (events.py)
