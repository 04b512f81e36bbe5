"""archive secrets table; ledger head row

Revision ID: a_vault_0001
Revises: a0001
Create Date: 2026-11-25 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a_vault_0001"
down_revision: str | Sequence[str] | None = "a0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SHA-256 of b"pipa-lifecycle ledger genesis" (lifecycle.vault.chain.GENESIS_HASH); frozen here
# because a migration must not change when the code does.
GENESIS_HASH = "e5ff990caf63d8286bfe16fea0c97d90abfb5002e4c7cb8fe8a8a5c519857b6c"


def upgrade() -> None:
    op.create_table(
        "archive_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_archive_secrets")),
    )
    # The single row every ledger writer locks; created here so the first appends never race
    # to create it (ledger.append still creates it if missing, e.g. after a manual restore).
    head = sa.table(
        "ledger_head",
        sa.column("id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.String),
    )
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM ledger_head WHERE id = 1")).scalar() == 0:
        op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("archive_secrets")
