"""Dependencies, defined once as ``Annotated`` aliases: whatever a route touches arrives through
one of these, so its signature says what it uses. They are the only code that reads
``app.state``; tests replace any of them with ``app.dependency_overrides``.

The shared objects form one :class:`~app.services.state.Services` container
(``get_services``); the narrower dependencies are views of it, so overriding
``get_services`` (e.g. with ``dataclasses.replace(services, cache=...)``) reaches every route.
The simple ones are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on a
worker thread, a needless hop on the predict path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import crud
from app.core.config import Settings
from app.core.errors import Unauthorized
from app.core.metrics import Metrics
from app.core.security import hash_key
from app.services import prediction
from app.services.cache import AdaptedModel
from app.services.keys import Caller, well_formed
from app.services.limits import Limits
from app.services.registry import MetaModelRegistry
from app.services.state import Services
from app.services.tasks import TaskService
from app.tables import TaskRow


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def services_of(app: FastAPI) -> Services:
    """``get_services`` for code that resolves its own dependencies (the admission middleware,
    the predict route): the app's container, or its replacement in
    ``app.dependency_overrides``."""
    override = app.dependency_overrides.get(get_services)
    services: Services = override() if override is not None else app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CALLER = "caller"  # where the middleware leaves the Caller, in the request's state


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_registry(services: ServicesDep) -> MetaModelRegistry:
    return services.registry


async def get_tasks(services: ServicesDep) -> TaskService:
    return services.tasks


async def get_metrics(services: ServicesDep) -> Metrics:
    return services.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[MetaModelRegistry, Depends(get_registry)]
TasksDep = Annotated[TaskService, Depends(get_tasks)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """The request's transaction, committed before the response is sent (scope "function")."""
    with services.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def authenticate(header: str, services: Services) -> Caller:
    """The calling client and its limits, from the ``Authorization: Bearer <key>`` header (401
    otherwise), checked before anything reads the body (the ``Admission`` middleware calls
    this). A key not of the service's format is refused unread; a key's verdict is remembered
    briefly (:class:`~app.services.keys.KeyCache`)."""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not well_formed(key.strip()):  # no key of ours: no database read
        raise Unauthorized("invalid or revoked API key")
    key_hash = hash_key(key.strip())
    keys, db = services.keys, services.db
    known, caller = keys.get(key_hash)
    if not known:

        def lookup() -> Caller | None:
            with db.session() as session:
                found = crud.active_client(session, key_hash=key_hash)
            if found is None:
                return None
            return Caller(found[0], Limits.of(services.settings, found[1]))

        caller = await run_in_threadpool(lookup)
        if caller is None:
            keys.reject(key_hash)
        else:
            keys.accept(key_hash, caller)
    if caller is None:
        raise Unauthorized("invalid or revoked API key")
    return caller


async def current_caller(request: Request) -> Caller:
    """The client the ``Admission`` middleware identified (app/api/middleware.py)."""
    caller: Caller | None = request.scope.get("state", {}).get(CALLER)
    if caller is None:  # a route left public by mistake must not run unauthenticated
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    return caller


async def current_client(request: Request) -> int:
    """The id of the client the ``Admission`` middleware identified."""
    return (await current_caller(request)).client_id


CurrentCaller = Annotated[Caller, Depends(current_caller)]
CurrentClient = Annotated[int, Depends(current_client)]


def owned_task(task_id: str, client_id: CurrentClient, session: SessionDep) -> TaskRow:
    """The client's task ``task_id`` without its weights, or 404."""
    return crud.get_task(session, client_id=client_id, task_id=task_id)


OwnedTask = Annotated[TaskRow, Depends(owned_task)]


async def adapted_model(task_id: str, caller: CurrentCaller, services: ServicesDep) -> AdaptedModel:
    """The client's adapted model for ``task_id`` (from the cache, else the database), or 404.
    It takes the service container whole: on the predict path each dependency costs time."""
    return await prediction.load_adapted(task_id, caller=caller, services=services)


Adapted = Annotated[AdaptedModel, Depends(adapted_model)]
