"""The adapted models a process keeps in memory, so a predict reads the database only on a miss.

Bounded by entries and by bytes, and shared fairly: when the cache is full, the entry evicted is
the least recently used one of the client holding the most bytes, so a client cycling through
many tasks evicts its own models, never a lighter client's (max-min fairness over clients).

Each entry knows its task's revision. Entries older than ``ttl`` seconds are returned as stale:
the caller re-checks the task's revision in the database (another worker process may have
changed or deleted it) and then :meth:`touch`es the entry, or drops it. Where changes are
announced (PostgreSQL's LISTEN/NOTIFY, app/core/events.py) the ttl is infinite and an
announcement drops the entry.

A model read before its task changed must never be cached after the change: :meth:`drop`
remembers when a task was dropped and, when the change is known, its new revision;
:meth:`put` refuses a model read (``read_at``) before the drop or older than that revision
(a slow request storing revision 2 cannot replace the revision 3 a faster one stored)."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from meta_core.artifact import Artifact
from meta_core.networks import Predictor

GONE = 2**62  # the revision floor of a deleted task: no model of it is cached again


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
    revision: int  # the task's revision this model was adapted at
    nbytes: int  # memory it holds beyond its meta-model's (what the cache counts)

    def expired(self) -> bool:
        if self.expires_at is None:
            return False
        at = self.expires_at  # SQLite gives a stored time back without its zone: UTC
        return (at if at.tzinfo else at.replace(tzinfo=UTC)) <= datetime.now(UTC)


class ModelCache:
    FORGET_AFTER = 60.0  # seconds a drop is remembered; no read of a task takes longer

    def __init__(self, capacity: int, max_bytes: int = 2**62, ttl: float = float("inf")) -> None:
        self.capacity = capacity  # entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[AdaptedModel, float]] = OrderedDict()
        self._by_client: dict[int, OrderedDict[str, None]] = {}  # each client's keys, LRU first
        self._client_bytes: Counter[int] = Counter()
        self._bytes = 0
        # task -> (when dropped, lowest revision that may be cached), oldest first
        self._dropped: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._cleared = float("-inf")
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[AdaptedModel | None, bool]:
        """The entry (or None) and whether it was checked within ``ttl``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None, False
            self._items.move_to_end(key)
            self._by_client[entry[0].client_id].move_to_end(key)
            return entry[0], time.monotonic() - entry[1] < self.ttl

    def touch(self, key: str, revision: int) -> None:
        """The entry was checked just now and is still the task's ``revision``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry[0].revision == revision:
                self._items[key] = (entry[0], time.monotonic())

    def put(self, key: str, item: AdaptedModel, read_at: float | None = None) -> bool:
        """Cache ``item`` (evicting as needed), unless it was read (``read_at``,
        :func:`time.monotonic`) before its task was dropped, or is older than a revision
        dropped or cached since; whether it was cached."""
        if self.capacity == 0 or item.nbytes > self.max_bytes:
            return False
        with self._lock:
            when, floor = self._dropped.get(key, (float("-inf"), 0))
            if item.revision < floor:
                return False
            if read_at is not None and (read_at <= self._cleared or read_at <= when):
                return False
            old = self._items.get(key)
            if old is not None:
                if old[0].revision > item.revision:
                    return False
                self._remove(key)
            self._items[key] = (item, time.monotonic())
            self._by_client.setdefault(item.client_id, OrderedDict())[key] = None
            self._client_bytes[item.client_id] += item.nbytes
            self._bytes += item.nbytes
            while len(self._items) > self.capacity or self._bytes > self.max_bytes:
                self._remove(self._victim(spare=key))
            return True

    def _victim(self, spare: str) -> str:
        """The least recently used entry of the client holding the most bytes (not ``spare``,
        the entry being added)."""
        heaviest = max(self._client_bytes, key=self._client_bytes.__getitem__)
        for key in self._by_client[heaviest]:
            if key != spare:
                return key
        # The heaviest holds only the entry being added: the next heaviest gives way.
        rest = [c for c in self._client_bytes if c != heaviest]
        return next(iter(self._by_client[max(rest, key=self._client_bytes.__getitem__)]))

    def _remove(self, key: str) -> None:
        item, _ = self._items.pop(key)
        client = item.client_id
        del self._by_client[client][key]
        self._client_bytes[client] -= item.nbytes
        self._bytes -= item.nbytes
        if not self._by_client[client]:
            del self._by_client[client], self._client_bytes[client]

    def drop(self, key: str, revision: int | None = None) -> None:
        """Drop the task's model: it was deleted (``revision`` :data:`GONE`), changed to
        ``revision``, or changed elsewhere (None). Models read before now, or older than
        ``revision``, are not cached again."""
        now = time.monotonic()
        with self._lock:
            if key in self._items:
                self._remove(key)
            floor = max(revision or 0, self._dropped.get(key, (0.0, 0))[1])
            self._dropped[key] = (now, floor)
            self._dropped.move_to_end(key)
            while self._dropped and next(iter(self._dropped.values()))[0] < now - self.FORGET_AFTER:
                self._dropped.popitem(last=False)

    def clear(self) -> None:
        """Drop every model (changes may have been missed); models read before now are not
        cached again, and the revisions remembered by :meth:`drop` still hold."""
        with self._lock:
            self._items.clear()
            self._by_client.clear()
            self._client_bytes.clear()
            self._bytes = 0
            self._cleared = time.monotonic()

    def client_bytes(self, client_id: int) -> int:
        with self._lock:
            return self._client_bytes[client_id]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
