"""A throwaway PostgreSQL server for tests that restart (or crash) the database under load.

Never the machine's shared server: initdb into a fresh directory under /tmp (the postgres user
must be able to reach it, and pytest's own tmp dirs are private to root), listen on a free
loopback port, and remove everything afterwards. As root, the server runs as ``postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.helpers import wait_until


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        import pytest

        pytest.skip("PostgreSQL server binaries are not installed")
    return Path(found[-1]).parent


@dataclass
class PgServer:
    port: int
    dir: Path
    bindir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            # Test data: skip fsync. An immediate stop is still a crash PostgreSQL must
            # recover from (its WAL is in the OS cache); only an OS crash would lose data.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._ctl("-l", str(self.dir / "server.log"), "-w", "-o", opts, "start")

        def accepts() -> bool:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_until(accepts, 30, "PostgreSQL accepting connections", interval=0.2)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def crash_and_restart(self) -> None:
        """Stop without a shutdown checkpoint (like a crash), then start: WAL recovery runs."""
        self.stop("immediate")
        self.start()

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        with contextlib.suppress(Exception):  # already down
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(port: int) -> PgServer:
    bindir = _bindir()
    d = Path(tempfile.mkdtemp(prefix="lc-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(d, "postgres", "postgres")
    server = PgServer(port, d, bindir)
    subprocess.run(
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    server.start()
    return server
