"""tasks record how their adapted model is stored (``storage``): float32 as before, float16 or
bfloat16 (the change from the meta-model), or support (no weights: re-adapted from the support
set); every existing task is float32. A stored blob may now be zlib-compressed (it says so in
its first bytes, so no column records it).

Downgrading refuses while any task is stored otherwise than as uncompressed float32, which the
older code would misread: rewrite them first (``python -m app tasks store --storage
float32 --compression none``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ZLIB = b"\x00\x00\x00\x00zlib"  # app/services/weights.py: how a compressed blob starts


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("storage", sa.String(length=16), nullable=False, server_default="float32")
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("storage", server_default=None)


def downgrade() -> None:
    tasks = sa.table(
        "tasks",
        sa.column("storage", sa.String),
        sa.column("weights", sa.LargeBinary),
        sa.column("support", sa.LargeBinary),
    )
    prefix = sa.literal(ZLIB, sa.LargeBinary)
    head = lambda column: sa.func.substr(column, 1, len(ZLIB))  # noqa: E731
    newer = op.get_bind().scalar(
        sa.select(sa.func.count())
        .select_from(tasks)
        .where(
            (tasks.c.storage != "float32")
            | (head(tasks.c.weights) == prefix)
            | (head(tasks.c.support) == prefix)
        )
    )
    if newer:
        raise RuntimeError(
            f"{newer} tasks are stored compressed or otherwise than as float32 weights, which "
            "revision 0006 cannot read: run `python -m app tasks store --storage float32 "
            "--compression none`, then downgrade"
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("storage")
