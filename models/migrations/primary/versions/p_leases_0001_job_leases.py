"""leases: one heartbeat row per long job, for the watchdog

Revision ID: p_leases_0001
Revises: p0001
Create Date: 2026-11-26 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_leases_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_job_leases",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("args", sa.JSON(), nullable=True),
        sa.Column("kwargs", sa.JSON(), nullable=True),
        sa.Column("queue", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("first_task_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redispatches", sa.Integer(), nullable=False),
        sa.Column("last_redispatch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lifecycle_job_leases")),
        sa.UniqueConstraint("key", name=op.f("uq_lifecycle_job_leases_key")),
    )
    with op.batch_alter_table("lifecycle_job_leases", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lifecycle_job_leases_state_expires", ["state", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_job_leases", schema=None) as batch_op:
        batch_op.drop_index("ix_lifecycle_job_leases_state_expires")
    op.drop_table("lifecycle_job_leases")
