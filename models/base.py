"""Declarative bases, one per database, so each Alembic environment sees only its own tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Table
from sqlalchemy.ext.compiler import compiles
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


@compiles(DateTime, "mysql")
@compiles(DateTime, "mariadb")
def _mysql_datetime(type_: DateTime, compiler: Any, **kw: Any) -> str:
    # MySQL/MariaDB DATETIME keeps whole seconds unless told otherwise (and MySQL 8 rounds, so a
    # stored time could lie in the future); microseconds keep event order as on PostgreSQL.
    return "DATETIME(6)"


def utcnow() -> datetime:
    return datetime.now(UTC)


class PrimaryBase(DeclarativeBase):
    """Tables the lifecycle owns inside the website's primary database."""

    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:
        # SQLAlchemy types __table__ as any FromClause (a class may map a select); every class
        # here maps a Table, which update()/insert()/delete() and .name need.
        __table__: ClassVar[Table]


class ArchiveBase(DeclarativeBase):
    """Tables of the separate archive database (encrypted rows, wrapped keys, ledger)."""

    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:
        # SQLAlchemy types __table__ as any FromClause (a class may map a select); every class
        # here maps a Table, which update()/insert()/delete() and .name need.
        __table__: ClassVar[Table]
