"""Alembic environment for the primary database (driven by `lifecycle db upgrade`)."""

from alembic import context

import models.all  # noqa: F401  (registers every table on the metadata)
from models.base import PrimaryBase

target_metadata = PrimaryBase.metadata
# Our own version table name: the website may run Alembic on the same primary DB.
VERSION_TABLE = "lifecycle_alembic_version"


def run_migrations_online() -> None:
    connectable = context.config.attributes.get("connection")
    if connectable is None:
        from sqlalchemy import create_engine

        connectable = create_engine(context.config.get_main_option("sqlalchemy.url"))
        with connectable.connect() as conn:
            _run(conn)
    else:
        _run(connectable)


def _run(conn) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
