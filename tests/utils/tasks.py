"""Sinusoid tasks for the service tests, and task rows written straight to the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from app import crud
from app.core.db import Database
from app.services import weights
from meta_core.artifact import load_artifact

MODELS = Path(__file__).resolve().parents[2] / "models"


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


def stored_task(db: Database, client_id: int, meta_model: str = "sinusoid", **fields: Any) -> str:
    """A task row written straight to the database (no adaptation), as an older service may
    have left it: the meta-model's own weights unless ``weights`` are given; ``expires_at``,
    ``support`` (bytes and sha256) or any other ``crud.AdaptedState`` field may be given too."""
    art = load_artifact(MODELS / meta_model)
    form = fields.pop("storage", "float32")
    data, digest = weights.serialize(art, fields.pop("weights", art.params), form)
    expires_at = fields.pop("expires_at", None)
    support, support_sha256 = fields.pop("support", (None, None))
    state = {
        "meta_model_name": art.name,
        "meta_model_version": art.version,
        "meta_model_hash": "",
        "support_size": 2,
        "inner_steps": 1,
        "inner_lr": None,
        "adapt_ms": 1.0,
        "labels": None,
        "metrics": {"support_loss_before": 1.0},
        "storage": form,
        "weights": data,
        "weights_sha256": digest,
        "support": support,
        "support_sha256": support_sha256,
    } | fields
    with db.session() as session:
        task = crud.create_task(
            session,
            client_id=client_id,
            name=None,
            state=crud.AdaptedState(**state),
            expires_at=expires_at,
        )
        return task.id
