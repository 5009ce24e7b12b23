"""tasks: one index for a client's listing, (client_id, created_at, id), instead of two
single-column ones

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:10:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_client_id_created_at_id", ["client_id", "created_at", "id"], unique=False
        )
        batch_op.drop_index("ix_tasks_client_id")
        batch_op.drop_index("ix_tasks_created_at")


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_tasks_client_id", ["client_id"], unique=False)
        batch_op.drop_index("ix_tasks_client_id_created_at_id")
