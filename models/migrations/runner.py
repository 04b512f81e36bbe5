"""What both Alembic environments do; each env.py only names its metadata and version table."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run_migrations(target_metadata: MetaData, version_table: str) -> None:
    connectable = context.config.attributes.get("connection")
    if connectable is None:
        from sqlalchemy import create_engine

        url = context.config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("alembic: no connection given and no sqlalchemy.url configured")
        engine = create_engine(url)
        with engine.connect() as conn:
            _run(conn, target_metadata, version_table)
    else:
        _run(connectable, target_metadata, version_table)


def _run(conn, target_metadata: MetaData, version_table: str) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    )
    with context.begin_transaction():
        context.run_migrations()
