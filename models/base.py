"""Declarative bases, one per database, so each Alembic environment sees only its own tables."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints keep Alembic migrations identical on PostgreSQL and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class PrimaryBase(DeclarativeBase):
    """Tables the lifecycle owns inside the website's primary database."""

    metadata = MetaData(naming_convention=NAMING)


class ArchiveBase(DeclarativeBase):
    """Tables of the separate archive database (encrypted rows, wrapped keys, ledger)."""

    metadata = MetaData(naming_convention=NAMING)
