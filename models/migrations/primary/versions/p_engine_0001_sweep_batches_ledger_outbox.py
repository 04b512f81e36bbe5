"""engine: sweep batches and the ledger outbox

Revision ID: p_engine_0001
Revises: p0001
Create Date: 2026-11-25 12:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_engine_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_sweep_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_sweep_batches")),
        sa.UniqueConstraint("run_id", "kind", "table_name", "first_id", name="uq_sweep_batch"),
    )
    with op.batch_alter_table("lifecycle_sweep_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lifecycle_sweep_batches_run_state", ["run_id", "state"], unique=False
        )

    op.create_table(
        "lifecycle_ledger_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_ledger_outbox")),
        sa.UniqueConstraint("token", name=op.f("uq_lifecycle_ledger_outbox_token")),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_ledger_outbox")
    with op.batch_alter_table("lifecycle_sweep_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_lifecycle_sweep_batches_run_state")
    op.drop_table("lifecycle_sweep_batches")
