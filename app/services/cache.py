"""A thread-safe LRU cache of adapted models, so a predict reads the database only on a miss.

Entries older than ``ttl`` seconds are returned as stale: the caller re-checks that the task
still exists (another worker process may have deleted it) and then ``touch``es the entry."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from meta_core.artifact import Artifact
from meta_core.networks import Predictor


@dataclass(frozen=True)
class AdaptedModel:
    """A task's adapted model, ready to predict: the meta-model's network with the task's
    parameters (meta-parameters overlaid with the adapted ones), as a function of float32
    arrays (:meth:`~meta_core.artifact.Artifact.predictor`)."""

    client_id: int
    meta_model: Artifact
    predict: Predictor
    expires_at: datetime | None  # past it the task is gone, cached or not
    labels: list[int | str] | None  # client label of each output unit (classification)

    def expired(self) -> bool:
        if self.expires_at is None:
            return False
        at = self.expires_at  # SQLite gives a stored time back without its zone: UTC
        return (at if at.tzinfo else at.replace(tzinfo=UTC)) <= datetime.now(UTC)


class LRUCache:
    def __init__(self, capacity: int, ttl: float = float("inf")) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[AdaptedModel, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[AdaptedModel | None, bool]:
        """The entry (or None) and whether it was checked within ``ttl``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None, False
            self._items.move_to_end(key)
            return entry[0], time.monotonic() - entry[1] < self.ttl

    def touch(self, key: str) -> None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items[key] = (entry[0], time.monotonic())

    def put(self, key: str, item: AdaptedModel) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = (item, time.monotonic())
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
