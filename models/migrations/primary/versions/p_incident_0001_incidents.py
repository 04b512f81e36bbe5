"""incident: personal-data breaches (제34조) and the members each one affects

Revision ID: p_incident_0001
Revises: p0001
Create Date: 2026-12-07 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_incident_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_incidents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_by", sa.String(length=128), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("whole_tables", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("external_access", sa.Boolean(), nullable=False),
        sa.Column("affected", sa.Integer(), nullable=False),
        sa.Column("affected_rows", sa.Integer(), nullable=False),
        sa.Column("no_contact", sa.Integer(), nullable=False),
        sa.Column("former_in_window", sa.Integer(), nullable=False),
        sa.Column("former_archived_before", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.BigInteger(), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=128), nullable=True),
        sa.Column("closing_record", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_incidents")),
    )
    op.create_index("ix_lifecycle_incidents_state", "lifecycle_incidents", ["state"])
    op.create_table(
        "lifecycle_incident_members",
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["lifecycle_incidents.id"],
            name=op.f("fk_lifecycle_incident_members_incident_id_lifecycle_incidents"),
        ),
        sa.PrimaryKeyConstraint(
            "incident_id", "member_id", name=op.f("pk_lifecycle_incident_members")
        ),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_incident_members")
    op.drop_index("ix_lifecycle_incidents_state", table_name="lifecycle_incidents")
    op.drop_table("lifecycle_incidents")
