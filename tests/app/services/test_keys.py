"""The cache of checked API keys: accepted and rejected keys kept apart, each bounded, and the
key format checked before any of it."""

from __future__ import annotations

from app.core.config import Settings
from app.core.security import new_key
from app.services.keys import Caller, KeyCache, well_formed
from app.services.limits import Limits

LIMITS = Limits.of(Settings())


def test_wrong_keys_never_evict_an_accepted_one():
    keys = KeyCache(60, 60, capacity=2)
    keys.accept("good", Caller(1, LIMITS))
    for i in range(10):
        keys.reject(f"wrong{i}")
    assert keys.get("good") == (True, Caller(1, LIMITS))
    assert keys.get("wrong9") == (True, None) and keys.get("wrong0") == (False, None)
    assert len(keys) == 3  # one accepted, the two newest rejected


def test_only_keys_of_the_format_keys_are_made_in_are_looked_up():
    assert all(well_formed(new_key()) for _ in range(100))
    key = new_key()
    for wrong in ("", "no", key[:-1], key + "x", "mk-" + key[3:], key[:-1] + "=", key + "\n"):
        assert not well_formed(wrong), wrong
