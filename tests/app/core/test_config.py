"""The service's settings."""

from __future__ import annotations

import pytest

from app.core.config import Settings


def test_settings_refuse_sqlite_in_production():
    with pytest.raises(ValueError, match="ENVIRONMENT=production needs DATABASE_URL"):
        Settings(environment="production")
    Settings(environment="production", database_url="postgresql+psycopg://u@h/db")


def test_settings_refuse_audio_rates_out_of_order():
    with pytest.raises(
        ValueError, match=r"MIN_AUDIO_RATE \(48000\) must be at most MAX_AUDIO_RATE"
    ):
        Settings(min_audio_rate=48000, max_audio_rate=44100)
    with pytest.raises(ValueError, match="max_audio_seconds"):
        Settings(max_audio_seconds=0)
    Settings(min_audio_rate=16000, max_audio_rate=16000)  # one rate only
