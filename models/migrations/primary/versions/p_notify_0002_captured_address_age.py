"""notify: when a notice row's address was captured (bounds how long it is kept)

Revision ID: p_notify_0002
Revises: p_notify_0001
Create Date: 2026-12-07 06:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_notify_0002"
down_revision: str | Sequence[str] | None = "p_notify_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_notice_recipients") as t:
        t.add_column(sa.Column("address_captured_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_lifecycle_notice_recipients_captured",
        "lifecycle_notice_recipients",
        ["address_captured_at"],
    )
    # Addresses captured before this column existed: the row was created when its address was
    # captured, so they age from then (and the first nightly run clears those already due).
    op.execute(
        "UPDATE lifecycle_notice_recipients SET address_captured_at = created_at "
        "WHERE address IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index(
        "ix_lifecycle_notice_recipients_captured", table_name="lifecycle_notice_recipients"
    )
    with op.batch_alter_table("lifecycle_notice_recipients") as t:
        t.drop_column("address_captured_at")
