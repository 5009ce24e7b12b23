"""API keys: shown once at creation, stored only as their sha256."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
