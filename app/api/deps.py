"""Dependencies, defined once: the database session, the registry, the calling client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.errors import Unauthorized
from app.core.security import hash_key
from app.models import Client
from app.services.registry import ModelRegistry


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _lookup_client(request: Request, key_hash: str) -> int | None:
    with request.app.state.sessionmaker() as session:
        return session.scalar(
            select(Client.id).where(Client.key_hash == key_hash, Client.revoked_at.is_(None))
        )


async def current_client(request: Request) -> int:
    """The calling client's id, from ``Authorization: Bearer <key>`` (401 otherwise). Checked
    keys are trusted for AUTH_CACHE_SECONDS, so the predict path needs no database read."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key_hash = hash_key(key.strip())
    cache: dict[str, tuple[int, float]] = request.app.state.auth_cache
    hit = cache.get(key_hash)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    client_id = await run_in_threadpool(_lookup_client, request, key_hash)
    if client_id is None:
        cache.pop(key_hash, None)
        raise Unauthorized("invalid or revoked API key")
    cache[key_hash] = (client_id, now + request.app.state.settings.auth_cache_seconds)
    return client_id


SessionDep = Annotated[Session, Depends(get_session)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
CurrentClient = Annotated[int, Depends(current_client)]
