"""tasks.expires_at: a task may expire (optional per-task ttl, or the service's default); the
index serves the purge

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 23:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_tasks_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_expires_at")
        batch_op.drop_column("expires_at")
