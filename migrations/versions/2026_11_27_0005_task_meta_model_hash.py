"""tasks.model_hash: the content hash of the exact artifact a task was adapted from (with its
name and version, the task's pin); empty for tasks made before it was recorded

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 23:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("model_hash", sa.String(length=80), nullable=False, server_default="")
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("model_hash", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("model_hash")
