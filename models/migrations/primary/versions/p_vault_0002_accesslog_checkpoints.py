"""access log checkpoints

Revision ID: p_vault_0002
Revises: p_vault_0001
Create Date: 2026-12-07 06:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_vault_0002"
down_revision: str | Sequence[str] | None = "p_vault_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_accesslog_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_accesslog_checkpoints")),
        sa.UniqueConstraint("seq", name=op.f("uq_lifecycle_accesslog_checkpoints_seq")),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_accesslog_checkpoints")
