"""visibility: the steps a request has done, kept when it fails (so it can be retried)

Revision ID: p_visibility_0001
Revises: p0001
Create Date: 2026-12-07 06:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "p_visibility_0001"
down_revision: str | Sequence[str] | None = "p0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_requests") as t:
        t.add_column(sa.Column("steps_done", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycle_requests") as t:
        t.drop_column("steps_done")
