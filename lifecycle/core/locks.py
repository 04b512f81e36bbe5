"""One runner at a time for a nightly job, released by the OS/server if the holder dies.

PostgreSQL: a session-level advisory lock on a dedicated connection; a SIGKILLed worker's
connection closes and the server drops the lock with it. MySQL/MariaDB: ``GET_LOCK`` on a
dedicated connection, likewise released by the server when the connection ends. SQLite
(embedded default): an ``flock`` on a file under ``var/``, which the kernel drops when the
process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from lifecycle.core.dbkind import MYSQL_BACKENDS
from lifecycle.core.settings import get_settings

_NAMESPACE = 0x4C43454E  # "LCEN": keeps these keys apart from other advisory-lock users


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


class JobLock:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._conn: Any = None
        self._fd: int | None = None

    @property
    def pg(self) -> bool:
        """The lock lives on a server connection (PostgreSQL or MySQL), not in a file."""
        return self.engine.dialect.name in ("postgresql", *MYSQL_BACKENDS)

    @property
    def _mysql(self) -> bool:
        return self.engine.dialect.name in MYSQL_BACKENDS

    def _lock_sql(self, take: bool) -> tuple[str, dict[str, Any]]:
        if self._mysql:
            # Lock names are server-wide: the database name keeps two sites on one server apart.
            name = f"lc:{self.engine.url.database}:{self.name}"[:64]
            return ("SELECT GET_LOCK(:n, 0)" if take else "SELECT RELEASE_LOCK(:n)"), {"n": name}
        fn = "pg_try_advisory_lock" if take else "pg_advisory_unlock"
        return f"SELECT {fn}(:ns, :k)", {"ns": _NAMESPACE, "k": _key(self.name)}

    def acquire(self) -> bool:
        if self.pg:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            sql, params = self._lock_sql(True)
            got = bool(conn.execute(text(sql), params).scalar())
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True

        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        """False once the lock connection died (e.g. PostgreSQL restarted under us)."""
        if not self.pg:
            return self._fd is not None
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:
            self._drop_conn()
            return False

    def reacquire(self) -> bool:
        """After losing the connection: take the lock again unless someone else has it now."""
        if self.still_held():
            return True
        return self.acquire()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def discard(self) -> None:
        """Remove the lock's file (file locks only) once nobody will need this name again."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path())

    def _path(self) -> Path:
        return get_settings().var_dir / "locks" / f"{self.name}.lock"

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                sql, params = self._lock_sql(False)
                self._conn.execute(text(sql), params)
            self._drop_conn()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_held(conn: Connection, name: str) -> bool:
    """Whether any session holds the lock ``name`` now, asked without taking it.

    PostgreSQL lists advisory locks in ``pg_locks`` (a two-key lock shows its keys as
    ``classid``/``objid``, unsigned, with ``objsubid`` 2); MySQL/MariaDB answer
    ``IS_USED_LOCK``. A file lock can only be probed by trying it: a runner starting in that
    instant finds it taken and stands down (embedded SQLite only; the next trigger runs).
    """
    lock = JobLock(conn.engine, name)
    if lock._mysql:
        _sql, params = lock._lock_sql(True)
        return conn.execute(text("SELECT IS_USED_LOCK(:n)"), params).scalar() is not None
    if lock.pg:
        return bool(
            conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND objsubid = 2 AND classid::bigint = :ns "
                    "AND objid::bigint = :k AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()))"
                ),
                {"ns": _NAMESPACE, "k": _key(name) % 2**32},
            ).scalar()
        )
    if not lock.acquire():
        return True
    lock.release()
    return False


@contextlib.contextmanager
def job_lock(engine: Engine, name: str) -> Iterator[JobLock | None]:
    """Yields the held lock, or None when another runner holds it."""
    lock = JobLock(engine, name)
    if not lock.acquire():
        yield None
        return
    try:
        yield lock
    finally:
        lock.release()
