"""rights: requester identity, legal deadline and written answer on requests; provision purpose

Revision ID: p_rights_0001
Revises: p_notify_0001
Create Date: 2026-11-26 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_rights_0001"
down_revision: str | Sequence[str] | None = "p_notify_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_requests") as t:
        t.add_column(
            sa.Column("requester_kind", sa.String(16), nullable=False, server_default="member")
        )
        t.add_column(sa.Column("requester_name", sa.String(100), nullable=True))
        t.add_column(sa.Column("requester_contact", sa.String(200), nullable=True))
        t.add_column(
            sa.Column("verified_by", sa.String(16), nullable=False, server_default="login")
        )
        t.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("extension_reason", sa.Text(), nullable=True))
        t.add_column(sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("answer_notice_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_lifecycle_requests_member_kind", "lifecycle_requests", ["member_id", "kind"]
    )
    with op.batch_alter_table("lifecycle_provisions") as t:
        t.add_column(sa.Column("purpose", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_provisions") as t:
        t.drop_column("purpose")
    op.drop_index("ix_lifecycle_requests_member_kind", table_name="lifecycle_requests")
    with op.batch_alter_table("lifecycle_requests") as t:
        for col in (
            "answer_notice_id",
            "answered_at",
            "extension_reason",
            "due_at",
            "verified_by",
            "requester_contact",
            "requester_name",
            "requester_kind",
        ):
            t.drop_column(col)
