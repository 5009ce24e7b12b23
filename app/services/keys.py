"""Checked API keys, remembered briefly: an accepted key (by its sha256) maps to its caller for
AUTH_CACHE_SECONDS, so a client's predicts need no database read; a rejected one is remembered
for AUTH_REJECT_SECONDS, so a stream of requests with a wrong key costs one read, not one each.
Bounded: past ``capacity`` entries, the oldest go first. Where changes are announced
(app/core/events.py) an accepted key is trusted until its client changes
(:meth:`forget_client`)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from app.services.limits import Limits


@dataclass(frozen=True)
class Caller:
    """An authenticated client: its id and its limits."""

    client_id: int
    limits: Limits


class KeyCache:
    def __init__(self, accept_seconds: float, reject_seconds: float, capacity: int = 100_000):
        self.accept_seconds, self.reject_seconds = accept_seconds, reject_seconds
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[Caller | None, float]] = OrderedDict()  # -> (, at)
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[bool, Caller | None]:
        """(whether the key's verdict is remembered, its caller or None if rejected)."""
        entry = self._items.get(key_hash)
        if entry is None:
            return False, None
        caller, at = entry
        ttl = self.reject_seconds if caller is None else self.accept_seconds
        if time.monotonic() - at >= ttl:
            return False, None
        return True, caller

    def accept(self, key_hash: str, caller: Caller) -> None:
        self._put(key_hash, caller, self.accept_seconds)

    def reject(self, key_hash: str) -> None:
        self._put(key_hash, None, self.reject_seconds)

    def forget_client(self, client_id: int) -> None:
        """Drop the client's accepted keys (it was revoked, given a new key or new limits)."""
        with self._lock:
            for key in [k for k, (c, _) in self._items.items() if c and c.client_id == client_id]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _put(self, key_hash: str, caller: Caller | None, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._items[key_hash] = (caller, time.monotonic())
            self._items.move_to_end(key_hash)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
