"""findings: the data-map checks' findings (discovery, linkage), stored

Revision ID: p_findings_0001
Revises: p0001
Create Date: 2026-12-07 18:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_findings_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_datamap_findings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("column_name", sa.String(length=128), nullable=False),
        sa.Column("patterns", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("coverage", sa.String(length=32), nullable=False),
        sa.Column("covered", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by_run", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("ack_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_datamap_findings")),
    )
    op.create_index(
        "ix_lifecycle_datamap_findings_kind_closed",
        "lifecycle_datamap_findings",
        ["kind", "closed_at"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_lifecycle_datamap_findings_kind_closed", table_name="lifecycle_datamap_findings"
    )
    op.drop_table("lifecycle_datamap_findings")
