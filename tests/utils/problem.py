"""problem+json (RFC 9457) assertions."""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"


def assert_problem(r: Any, status: int, detail: str) -> None:
    """``r`` is a problem+json answer with this status and exactly this detail."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["detail"] == detail and body["title"]
