"""Engines and sessions for the primary and archive databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lifecycle.core.dbkind import MYSQL_BACKENDS, mysql_connect_args, normalise_mysql_url
from lifecycle.core.errors import DatabaseUnavailable
from lifecycle.core.mysql_conv import DIVE_MARK, dive_marked
from lifecycle.core.settings import get_settings

Which = Literal["primary", "archive"]


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets the worker, beat and CLI read while one writes; busy_timeout waits instead of
    # failing with "database is locked" under the embedded default's concurrency.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# Every engine made in this process, for close_all.
_made: list[Engine] = []


@lru_cache(maxsize=8)
def engine_for_url(url: str) -> Engine:
    eng = _create(url)
    _made.append(eng)
    return eng


def _create(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() in MYSQL_BACKENDS:
        url = normalise_mysql_url(url) or url
        kwargs["connect_args"] = mysql_connect_args()
        # MySQL closes connections idle past wait_timeout (8 h by default, often less on shared
        # hosting); recycling earlier saves the pre-ping a failed round trip.
        kwargs["pool_recycle"] = 3600
    # hide_parameters: an error's text (logs, exceptions) never carries the bound values,
    # which are members' personal data.
    eng = create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True, **kwargs
    )
    if "connect_args" in kwargs:
        event.listen(eng, "before_cursor_execute", _dive_marked, retval=True)
    return eng


def _dive_marked(
    conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
) -> tuple[str, Any]:
    # MariaDB alone has SET STATEMENT (and the lists that need it; mysql_conv.DIVE_MARK).
    if DIVE_MARK in statement and conn.dialect.is_mariadb:
        statement = dive_marked(statement)
    return statement, parameters


def engine(which: Which) -> Engine:
    return engine_for_url(get_settings().sqlalchemy_url(which))


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for_url(url), expire_on_commit=False)


@contextmanager
def session(which: Which) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception."""
    maker = _sessionmaker(get_settings().sqlalchemy_url(which))
    with maker() as s, s.begin():
        yield s


def is_postgres(eng: Engine) -> bool:
    return eng.dialect.name == "postgresql"


def check_reachable(which: Which) -> None:
    eng = engine(which)
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        url = eng.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise DatabaseUnavailable(
            f"{which} database {url} is unreachable ({reason}); "
            f"check LIFECYCLE_{which.upper()}_DATABASE_URL and that the server is running"
        ) from None


def dispose_all() -> None:
    """Forked worker children must not share the parent's sockets."""
    for fn in (engine_for_url, _sessionmaker):
        fn.cache_clear()
    _made.clear()


def close_all() -> None:
    """Close every pooled connection, as the interpreter's own exit does: a process that ends
    without it (the CLI's quick exit) would leave SQLite's WAL un-checkpointed beside the
    database file, and servers would log a dropped connection."""
    for eng in _made:
        eng.dispose()
