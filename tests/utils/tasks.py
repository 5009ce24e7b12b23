"""Sinusoid tasks for the service tests."""

from __future__ import annotations

from typing import Any

import torch


def sinusoid_task(
    n: int = 10, amp: float = 2.0, phase: float = 1.0, seed: int = 0
) -> tuple[list[float], list[float]]:
    """``n`` support points of ``amp * sin(x - phase)`` on [-5, 5]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * 10 - 5
    return x.tolist(), (amp * torch.sin(x - phase)).tolist()


def create(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST a sinusoid task (201 asserted); its JSON."""
    x, y = sinusoid_task()
    payload = {"model": "sinusoid", "support": {"x": x, "y": y}} | body
    r = client.post("/tasks", headers=headers, json=payload)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out
