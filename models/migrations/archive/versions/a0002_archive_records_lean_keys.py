"""archive_records: natural primary key, no surrogate id, no key_id index or foreign key

Every archived part costs index maintenance on its way in, and the sweep writes millions of
them. The surrogate ``id`` duplicated the natural identity (table, source key, category) that
already had to be unique for idempotent moves; the purge finds a bucket's rows by
``retain_until`` (the bucket's day) and ``key_id`` together, so the ``key_id`` index is
redundant; and the foreign key to ``archive_data_keys`` ran a lookup per row for a key row
that is never deleted (destroying a key only clears ``wrapped_key``). Together they cost more
database time than the rest of the archive write.

Revision ID: a0002
Revises: a_vault_0001
Create Date: 2026-11-25 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a0002"
down_revision: str | Sequence[str] | None = "a_vault_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("archive_records", schema=None) as batch_op:
        batch_op.drop_index("ix_archive_records_key")
        batch_op.drop_constraint("fk_archive_records_key_id_archive_data_keys", type_="foreignkey")
        batch_op.drop_constraint("uq_archive_source", type_="unique")
        batch_op.drop_constraint("pk_archive_records", type_="primary")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_archive_records", ["source_table", "source_pk", "category"])


def downgrade() -> None:
    with op.batch_alter_table("archive_records", schema=None) as batch_op:
        batch_op.drop_constraint("pk_archive_records", type_="primary")
        batch_op.add_column(
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                sa.Identity(),
                nullable=False,
            )
        )
        batch_op.create_primary_key("pk_archive_records", ["id"])
        batch_op.create_unique_constraint(
            "uq_archive_source", ["source_table", "source_pk", "category"]
        )
        batch_op.create_foreign_key(
            "fk_archive_records_key_id_archive_data_keys",
            "archive_data_keys",
            ["key_id"],
            ["id"],
        )
        batch_op.create_index("ix_archive_records_key", ["key_id"], unique=False)
