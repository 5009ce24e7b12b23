"""The service's settings."""

from __future__ import annotations

import pytest

from app.core.config import Settings


def test_settings_refuse_sqlite_in_production():
    with pytest.raises(ValueError, match="ENVIRONMENT=production needs DATABASE_URL"):
        Settings(environment="production")
    Settings(environment="production", database_url="postgresql+psycopg://u@h/db")
