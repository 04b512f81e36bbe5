"""guards: legal holds; the actor of a request

Revision ID: p_guards_0001
Revises: p0001
Create Date: 2026-11-26 10:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_guards_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_holds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.Column("request_id", sa.BigInteger(), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_holds")),
    )
    op.create_index("ix_lifecycle_holds_member", "lifecycle_holds", ["member_id"])
    op.create_index("ix_lifecycle_holds_open", "lifecycle_holds", ["released_at", "until"])
    # Nullable and written by the website if it wants: existing inserts keep working.
    with op.batch_alter_table("lifecycle_requests") as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_requests") as batch_op:
        batch_op.drop_column("actor")
    op.drop_index("ix_lifecycle_holds_open", table_name="lifecycle_holds")
    op.drop_index("ix_lifecycle_holds_member", table_name="lifecycle_holds")
    op.drop_table("lifecycle_holds")
