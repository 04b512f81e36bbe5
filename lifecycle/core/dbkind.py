"""What each supported primary-database server can do, and the MySQL/MariaDB driver set-up.

The primary database is the website's own: PostgreSQL, MySQL 8 / MariaDB 10.6+ (most small
PHP sites), or SQLite for the embedded default. Engine code asks this module what the server
supports (row locks, ``SKIP LOCKED``, ``DELETE ... RETURNING``) instead of testing dialect
names in place, so a new server family changes one file.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

# Re-exported: callers name them through dbkind, the module of the server families.
from lifecycle.core.mysql_conv import SqlList as SqlList
from lifecycle.core.mysql_conv import SqlRows as SqlRows
from lifecycle.core.mysql_conv import mysql_connect_args as mysql_connect_args

# Every MySQL-family URL runs on PyMySQL: pure Python, installed with the project, and it speaks
# to MySQL and MariaDB alike. mysqlclient (mysql+mysqldb) needs a C toolchain and the client
# library on the host; the MariaDB Connector/C module likewise.
MYSQL_DRIVER = "pymysql"
MYSQL_BACKENDS = ("mysql", "mariadb")
_MYSQL_DRIVERS_MAPPED = (None, "", "pymysql", "mysqldb", "mariadbconnector")

Bindish = Engine | Connection | Session


def _dialect(bind: Bindish) -> Any:
    if isinstance(bind, Session):
        return bind.get_bind().dialect
    return bind.dialect


def family(bind: Bindish) -> str:
    """``postgresql``, ``mysql`` (MySQL and MariaDB) or ``sqlite``."""
    name = _dialect(bind).name
    return "mysql" if name in MYSQL_BACKENDS else name


def is_mysql(bind: Bindish) -> bool:
    return family(bind) == "mysql"


def is_mariadb(bind: Bindish) -> bool:
    # Like the version, known once the dialect has seen the server.
    return is_mysql(bind) and _version(bind) > (0,) and bool(_dialect(bind).is_mariadb)


def _version(bind: Bindish) -> tuple[int, ...]:
    dialect = _dialect(bind)
    if dialect.server_version_info is None:
        # The dialect learns the server's version on its first connection; a fresh process may
        # ask before any statement ran (the relay's first claim), so connect once to learn it.
        if isinstance(bind, Session):
            bind.connection()
        elif isinstance(bind, Engine):
            with bind.connect():
                pass
    return tuple(dialect.server_version_info or (0,))


def row_locks(bind: Bindish) -> bool:
    """``SELECT ... FOR UPDATE`` holds row locks (SQLite locks the whole file instead)."""
    return family(bind) in ("postgresql", "mysql")


def skip_locked(bind: Bindish) -> bool:
    """``FOR UPDATE SKIP LOCKED``: PostgreSQL, MySQL 8.0.1+, MariaDB 10.6+."""
    fam = family(bind)
    if fam == "postgresql":
        return True
    if fam != "mysql":
        return False
    return _version(bind) >= ((10, 6) if is_mariadb(bind) else (8, 0, 1))


def delete_returning(bind: Bindish) -> bool:
    """``DELETE ... RETURNING``: PostgreSQL, SQLite 3.35+, MariaDB 10.5+; not MySQL 8."""
    fam = family(bind)
    if fam == "mysql":
        return is_mariadb(bind) and _version(bind) >= (10, 5)
    return True


# Values one IN list binds. SQLite before 3.32 refuses statements of more than 999 bound
# parameters; PostgreSQL and MySQL/MariaDB take a batch's lists whole, a statement per list
# rather than per 500 values (each statement costs a round trip, see docs/engine.md).
SQLITE_IN_CHUNK = 500
SERVER_IN_CHUNK = 10_000


def in_chunk(bind: Bindish) -> int:
    """How many values to name in one ``IN`` list on this server."""
    return SQLITE_IN_CHUNK if family(bind) == "sqlite" else SERVER_IN_CHUNK


def for_update(stmt: Any, bind: Bindish, *, skip: bool = False, of: Any = None) -> Any:
    """``stmt`` locking its rows where the server has row locks; ``skip`` adds ``SKIP LOCKED``
    where the server has it and otherwise waits for the holder (same outcome, slower)."""
    if not row_locks(bind):
        return stmt
    kwargs: dict[str, Any] = {}
    if skip and skip_locked(bind):
        kwargs["skip_locked"] = True
    # MariaDB has no FOR UPDATE OF (SQLAlchemy drops it there); MySQL 8 and PostgreSQL do.
    if of is not None:
        kwargs["of"] = of
    return stmt.with_for_update(**kwargs)


def insert_ignoring_duplicates(bind: Bindish, table: Any, index_elements: list[str]) -> Any:
    """``INSERT`` that skips rows clashing with the unique key ``index_elements``."""
    fam = family(bind)
    if fam == "mysql":
        from sqlalchemy.dialects import mysql

        ins = mysql.insert(table)
        # A no-op update of the key rather than INSERT IGNORE, which would also turn
        # truncation and other errors into warnings.
        first = index_elements[0]
        return ins.on_duplicate_key_update({first: table.c[first]})
    if fam == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def mariadb_json_columns(engine: Engine, table: str) -> frozenset[str]:
    """Columns of ``table`` declared ``JSON`` on MariaDB (empty on any other server).

    MariaDB's JSON is an alias: the column is LONGTEXT with a ``CHECK (json_valid(col))``
    constraint, so reflection sees text. That check, named after the column, is the only trace
    of the declared type.
    """
    if not is_mariadb(engine):
        return frozenset()
    from sqlalchemy import text

    sql = text(
        "SELECT constraint_name, check_clause FROM information_schema.check_constraints "
        "WHERE constraint_schema = DATABASE() AND table_name = :t"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"t": table}).all()
    return frozenset(
        name for name, clause in rows if clause.replace(" ", "") == f"json_valid(`{name}`)"
    )


# -- URLs and the PyMySQL connection ----------------------------------------------------------


def normalise_mysql_url(url: str) -> str | None:
    """The ``mysql+pymysql://`` form of any MySQL/MariaDB URL, or None if ``url`` is not one.

    Raises ValueError for a MySQL-family driver this project does not ship.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() not in MYSQL_BACKENDS:
        return None
    driver = parsed.get_driver_name() if "+" in parsed.drivername else None
    if driver not in _MYSQL_DRIVERS_MAPPED:
        raise ValueError(
            f"MySQL/MariaDB driver {driver!r} is not supported; use mysql://USER:PASS@HOST/DB "
            "(the project connects with PyMySQL)"
        )
    query = dict(parsed.query)
    # Korean text needs 4-byte UTF-8 on the wire whatever the server's default is.
    query.setdefault("charset", "utf8mb4")
    out: URL = parsed.set(drivername=f"mysql+{MYSQL_DRIVER}", query=query)
    return out.render_as_string(hide_password=False)
