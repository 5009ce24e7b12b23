"""Replacing a running app's shared objects through FastAPI's dependency overrides."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.deps import get_services
from app.services.state import Services


def override_services(app: FastAPI, **changes: Any) -> Services:
    """Every route sees the app's services with ``changes`` (e.g. ``cache=ModelCache(0)``)
    until ``app.dependency_overrides`` is cleared; returns the replacement."""
    current: Services = app.state.services
    replaced = current.replace(**changes)
    app.dependency_overrides[get_services] = lambda: replaced
    return replaced
