"""Checked API keys, remembered briefly: an accepted key (by its sha256) maps to its caller for
AUTH_CACHE_SECONDS, so a client's predicts need no database read; a rejected one is remembered
for AUTH_REJECT_SECONDS, so a stream of requests with a wrong key costs one read, not one each.
The two are kept apart, each bounded (past its ``capacity`` entries, its oldest go first), so
that wrong keys, however many, never push an accepted one out. Where changes are announced
(app/core/events.py) an accepted key is trusted until its client changes
(:meth:`forget_client`).

Only a key of the format keys are made in (:func:`well_formed`) is looked up at all: any other
is refused without a database read, so the reads wrong keys cost are one per distinct key of
that format (2^256 of them), not one per any string."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from app.core.security import KEY_PREFIX
from app.services.limits import Limits

# app.core.security.new_key: the prefix and secrets.token_urlsafe(32), 43 characters.
V = TypeVar("V")
KEY_FORMAT = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


def well_formed(key: str) -> bool:
    """Whether ``key`` could be a key this service made (checked before any lookup)."""
    return KEY_FORMAT.fullmatch(key) is not None


@dataclass(frozen=True)
class Caller:
    """An authenticated client: its id and its limits."""

    client_id: int
    limits: Limits


class KeyCache:
    def __init__(
        self,
        accept_seconds: float,
        reject_seconds: float,
        capacity: int = 100_000,
        reject_capacity: int | None = None,
    ) -> None:
        self.accept_seconds, self.reject_seconds = accept_seconds, reject_seconds
        self.capacity = capacity  # accepted keys
        self.reject_capacity = capacity if reject_capacity is None else reject_capacity
        self._accepted: OrderedDict[str, tuple[Caller, float]] = OrderedDict()  # -> (, at)
        self._rejected: OrderedDict[str, float] = OrderedDict()  # -> at
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[bool, Caller | None]:
        """(whether the key's verdict is remembered, its caller or None if rejected)."""
        accepted = self._accepted.get(key_hash)
        if accepted is not None:
            if time.monotonic() - accepted[1] < self.accept_seconds:
                return True, accepted[0]
            return False, None
        at = self._rejected.get(key_hash)
        if at is not None and time.monotonic() - at < self.reject_seconds:
            return True, None
        return False, None

    def accept(self, key_hash: str, caller: Caller) -> None:
        if self.accept_seconds <= 0:
            return
        with self._lock:
            self._rejected.pop(key_hash, None)
            _put(self._accepted, key_hash, (caller, time.monotonic()), self.capacity)

    def reject(self, key_hash: str) -> None:
        if self.reject_seconds <= 0:
            return
        with self._lock:
            self._accepted.pop(key_hash, None)
            _put(self._rejected, key_hash, time.monotonic(), self.reject_capacity)

    def forget_client(self, client_id: int) -> None:
        """Drop the client's accepted keys (it was revoked, given a new key or new limits)."""
        with self._lock:
            for key in [k for k, (c, _) in self._accepted.items() if c.client_id == client_id]:
                del self._accepted[key]

    def clear(self) -> None:
        with self._lock:
            self._accepted.clear()
            self._rejected.clear()

    def __len__(self) -> int:
        return len(self._accepted) + len(self._rejected)


def _put(items: OrderedDict[str, V], key: str, value: V, capacity: int) -> None:
    items[key] = value
    items.move_to_end(key)
    while len(items) > capacity:
        items.popitem(last=False)
