"""incident: the report to the regulator as submitted (when, to whom, 접수번호), and the reason
an incident whose report was due was closed without one

Revision ID: p_incident_0002
Revises: p_incident_0001
Create Date: 2026-12-08 04:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_incident_0002"
down_revision: str | Sequence[str] | None = "p_incident_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_incidents") as t:
        t.add_column(sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column("submitted_to", sa.String(length=8), nullable=True))
        t.add_column(sa.Column("submission_receipt", sa.String(length=40), nullable=True))
        t.add_column(sa.Column("submitted_by", sa.String(length=128), nullable=True))
        # Existing rows have no recorded submission: revision 0, nothing corrected.
        t.add_column(
            sa.Column(
                "submission_revision", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )
        t.add_column(sa.Column("no_report_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_incidents") as t:
        t.drop_column("no_report_reason")
        t.drop_column("submission_revision")
        t.drop_column("submitted_by")
        t.drop_column("submission_receipt")
        t.drop_column("submitted_to")
        t.drop_column("submitted_at")
