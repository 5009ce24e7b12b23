"""A thread-safe LRU cache of adapted models, so a predict reads the database only on a miss.

Entries older than ``ttl`` seconds are returned as stale: the caller re-checks that the task
still exists (another worker process may have deleted it) and then ``touch``es the entry. Where
changes are announced (PostgreSQL's LISTEN/NOTIFY, app/core/events.py) the ttl is infinite
and an announcement pops the entry.

A model read from the database before its task changed must not be cached after the change
dropped the entry: :meth:`put` takes the time the read began and ignores the model if the task
was dropped (:meth:`pop`, :meth:`clear`) since."""

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
    FORGET_AFTER = 60.0  # seconds a drop is remembered; no read of a task takes longer

    def __init__(self, capacity: int, ttl: float = float("inf")) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[AdaptedModel, float]] = OrderedDict()
        self._dropped: OrderedDict[str, float] = OrderedDict()  # task -> when, oldest first
        self._cleared = float("-inf")
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

    def put(self, key: str, item: AdaptedModel, read_at: float | None = None) -> None:
        """Cache ``item``, unless it was read (``read_at``, :func:`time.monotonic`) before
        its task was dropped."""
        if self.capacity == 0:
            return
        with self._lock:
            if read_at is not None and (
                read_at <= self._cleared or read_at <= self._dropped.get(key, float("-inf"))
            ):
                return
            self._items[key] = (item, time.monotonic())
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        """Drop the task's model (it was deleted or changed)."""
        now = time.monotonic()
        with self._lock:
            self._items.pop(key, None)
            self._dropped[key] = now
            self._dropped.move_to_end(key)
            while self._dropped and next(iter(self._dropped.values())) < now - self.FORGET_AFTER:
                self._dropped.popitem(last=False)

    def clear(self) -> None:
        """Drop every model (changes may have been missed)."""
        with self._lock:
            self._items.clear()
            self._dropped.clear()
            self._cleared = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)
