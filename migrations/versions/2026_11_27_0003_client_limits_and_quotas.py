"""clients.limits (per-client overrides of the service's limits), and clients.task_count and
clients.stored_bytes (what a client stores, kept by every write so the quotas are checked and
reserved in one conditional update), with tasks.weights_bytes (what deleting a task gives back)

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
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("weights_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("task_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE tasks SET weights_bytes = length(weights)")
    op.execute(
        "UPDATE clients SET task_count = (SELECT count(*) FROM tasks WHERE tasks.client_id = "
        "clients.id), stored_bytes = (SELECT coalesce(sum(weights_bytes), 0) FROM tasks "
        "WHERE tasks.client_id = clients.id)"
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("weights_bytes", server_default=None)
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.alter_column("task_count", server_default=None)
        batch_op.alter_column("stored_bytes", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("stored_bytes")
        batch_op.drop_column("task_count")
        batch_op.drop_column("limits")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("weights_bytes")
