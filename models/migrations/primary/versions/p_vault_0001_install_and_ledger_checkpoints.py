"""install identity; ledger checkpoints

Revision ID: p_vault_0001
Revises: p0001
Create Date: 2026-11-26 10:00:00

"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "p_vault_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    install = op.create_table(
        "lifecycle_install",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("install_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_install")),
    )
    # Random per database: a re-created database is a new install to the MTA log too.
    op.bulk_insert(
        install, [{"id": 1, "install_id": uuid.uuid4().hex, "created_at": datetime.now(UTC)}]
    )
    op.create_table(
        "lifecycle_ledger_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_ledger_checkpoints")),
        sa.UniqueConstraint("seq", name=op.f("uq_lifecycle_ledger_checkpoints_seq")),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_ledger_checkpoints")
    op.drop_table("lifecycle_install")
