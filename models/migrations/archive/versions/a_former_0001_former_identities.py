"""former members' identities, as keyed hashes (issue 24)

Revision ID: a_former_0001
Revises: a_guards_0001
Create Date: 2026-12-07 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a_former_0001"
down_revision: str | Sequence[str] | None = "a_guards_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "former_identities",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("kept_until", sa.Date(), nullable=True),
        sa.Column("kept_live", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", "member_id", name=op.f("pk_former_identities")),
    )
    # The purge deletes a member's entries by their pseudonym, as it does their records.
    op.create_index(
        "ix_former_identities_subject_ref", "former_identities", ["subject_ref"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_former_identities_subject_ref", table_name="former_identities")
    op.drop_table("former_identities")
