"""One runner at a time for a nightly job, released by the OS/server if the holder dies.

PostgreSQL: a session-level advisory lock on a dedicated connection; a SIGKILLed worker's
connection closes and the server drops the lock with it. SQLite (embedded default): an
``flock`` on a file under ``var/``, which the kernel drops when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

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
        return self.engine.dialect.name == "postgresql"

    def acquire(self) -> bool:
        if self.pg:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:ns, :k)"),
                    {"ns": _NAMESPACE, "k": _key(self.name)},
                ).scalar()
            )
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
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:ns, :k)"),
                    {"ns": _NAMESPACE, "k": _key(self.name)},
                )
            self._drop_conn()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
