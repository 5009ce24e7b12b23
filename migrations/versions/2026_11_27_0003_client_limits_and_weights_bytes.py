"""clients.limits (per-client overrides of the service's limits) and tasks.weights_bytes (so a
client's stored bytes are counted without reading weights)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", sa.JSON(), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("weights_bytes", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE tasks SET weights_bytes = length(weights)")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("weights_bytes", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("weights_bytes")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("limits")
