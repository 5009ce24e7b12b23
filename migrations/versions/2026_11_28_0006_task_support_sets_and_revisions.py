"""tasks keep their support set (safetensors bytes with a sha256, counted in the quota as
support_bytes) and a revision (the ETag; each update adds one), with the time of the last
update; tasks made before have no support set (re-adaptation answers 409 for them)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 00:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("support", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("support_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("support_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("support_bytes", server_default=None)
        batch_op.alter_column("revision", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("revision")
        batch_op.drop_column("support_bytes")
        batch_op.drop_column("support_sha256")
        batch_op.drop_column("support")
