"""ORM tables (SQLAlchemy 2.0): API clients, and tasks with their adapted weights.

"Row" names a table's class, to keep it apart from a meta-model (an artifact) and from the
API's task schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, query_expression

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ClientRow(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Overrides of the service's per-client limits (app/services/limits.py), or None.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the client stores, kept by every task write (crud), for the storage quotas.
    task_count: Mapped[int] = mapped_column(Integer, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class TaskRow(Base):
    __tablename__ = "tasks"
    # A client's listing, newest first, reads the index in order.
    __table_args__ = (Index("ix_tasks_client_id_created_at_id", "client_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    meta_model_name: Mapped[str] = mapped_column("model_name", String(200))
    meta_model_version: Mapped[str] = mapped_column("model_version", String(50))
    # The artifact's content hash: with name and version, what the task is pinned to ("" for
    # tasks made before it was recorded: name and version alone).
    meta_model_hash: Mapped[str] = mapped_column("model_hash", String(80), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    support_size: Mapped[int] = mapped_column(Integer)
    inner_steps: Mapped[int] = mapped_column(Integer)
    inner_lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    adapt_ms: Mapped[float] = mapped_column(Float)
    labels: Mapped[list[int | str] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    # How ``weights`` holds the adapted model (app/services/weights.py FORMATS): float32 (as
    # every task stored before there was a choice), float16 or bfloat16 (the change from the
    # meta-model), or support (nothing: the task is re-adapted from its support set).
    storage: Mapped[str] = mapped_column(String(16), default="float32")
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_bytes: Mapped[int] = mapped_column(BigInteger)  # len(weights), for the quota
    # The support set as validated (images and recordings as their preprocessed arrays):
    # safetensors bytes ``x`` and ``y`` (targets, or indices into ``labels``), for
    # re-adaptation; None for tasks made before it was kept. Counted in the quota with the
    # weights.
    support: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    support_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    support_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # The support set where a predict needs it (tasks stored as ``support``), else None: read
    # by crud.get_task(with_weights=True) in the same query, and not otherwise.
    support_to_readapt: Mapped[bytes | None] = query_expression()
    # One more at each update (examples, re-adaptation): the task's ETag, for If-Match.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # None: kept until deleted. Past it, the task is gone to every read, and purged.
    expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
