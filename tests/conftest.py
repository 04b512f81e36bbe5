"""Fixtures that give every test clean, real servers.

- PostgreSQL: the machine's server (LIFECYCLE_TEST_PG_URL, default 127.0.0.1:5432 as postgres);
  each test gets two fresh databases cloned from migrated templates, dropped afterwards.
- Redis: a private redis-server per test session on a free port (flushed per test), so test
  runs never touch anyone's data and parallel runs never collide.
- Celery workers: real `celery worker` subprocesses (see `start_worker`).
- SMTP and webhooks: an aiosmtpd sink and HTTP receivers that verify signatures, on loopback.

Only fixtures and hooks live here; the classes and functions they use are in tests/helpers.py,
which tests import directly. Tests that use a server-backed fixture are marked `integration`
(see the end of this file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

# Helpers hold asserts too (exact accounting): rewrite them like the tests' own.
pytest.register_assert_rewrite("tests.helpers")
from tests.helpers import (  # noqa: E402
    MYSQL_ADMIN,
    REPO,
    Databases,
    Gnuboard5Site,
    LifecycleEnv,
    RedisServer,
    SmtpSink,
    WebhookReceiver,
    WorkerProc,
    apply_env,
    mysql_clone,
    mysql_clone_script,
    mysql_connect,
    mysql_exec,
    mysql_url,
    pg_exec,
    pg_url,
    platform_site,
    start_redis,
    wait_worker_ready,
    write_master_key,
)

# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Migrated template databases (built once per session by `lifecycle db upgrade`)."""
    tag = uuid.uuid4().hex[:8]
    names = {"primary": f"lct_{tag}_tpl_p", "archive": f"lct_{tag}_tpl_a"}
    for name in names.values():
        pg_exec(f'CREATE DATABASE "{name}"')
    env = os.environ | {
        "LIFECYCLE_VAR_DIR": str(tmp_path_factory.mktemp("tplvar")),
        "LIFECYCLE_PRIMARY_DATABASE_URL": pg_url(names["primary"]),
        "LIFECYCLE_ARCHIVE_DATABASE_URL": pg_url(names["archive"]),
    }
    subprocess.run(
        [sys.executable, "-m", "lifecycle.cli.main", "db", "upgrade"],
        env=env,
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    yield names
    for name in names.values():
        pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_databases(pg_templates: dict[str, str]) -> Iterator[Databases]:
    """Two fresh, migrated, empty PostgreSQL databases for this test."""
    tag = uuid.uuid4().hex[:8]
    names = {k: f"lct_{tag}_{k[0]}" for k in pg_templates}
    for k, name in names.items():
        pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_templates[k]}"')
    yield Databases(pg_url(names["primary"]), pg_url(names["archive"]), names)
    for name in names.values():
        pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- MariaDB / MySQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mysql_server() -> str:
    """The MariaDB/MySQL server (scripts/services.sh starts one); skips if none answers."""
    try:
        conn = mysql_connect()
    except Exception as exc:  # the server is optional for the rest of the suite
        pytest.skip(f"no MariaDB/MySQL at {MYSQL_ADMIN} ({exc}); run scripts/services.sh")
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    conn.close()
    return str(version)


@pytest.fixture
def mysql_database(mysql_server: str) -> Iterator[str]:
    """A fresh, empty, uniquely-named MariaDB database (its URL), dropped afterwards."""
    name = f"lct_{uuid.uuid4().hex[:10]}"
    mysql_exec(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield mysql_url(name)
    mysql_exec(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="session")
def mysql_template(
    mysql_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A primary database migrated once per session by `lifecycle db upgrade`: its name and
    the script that rebuilds its tables (`mysql_clone_script`)."""
    name = f"lct_{uuid.uuid4().hex[:8]}_tpl"
    mysql_exec(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    var = tmp_path_factory.mktemp("mysqltplvar")
    env = os.environ | {
        "LIFECYCLE_VAR_DIR": str(var),
        "LIFECYCLE_PRIMARY_DATABASE_URL": mysql_url(name),
        "LIFECYCLE_ARCHIVE_DATABASE_URL": f"sqlite:///{var / 'archive.sqlite3'}",
    }
    subprocess.run(
        [sys.executable, "-m", "lifecycle.cli.main", "db", "upgrade"],
        env=env,
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    yield name, mysql_clone_script(name)
    mysql_exec(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mysql_primary(mysql_template: tuple[str, str]) -> Iterator[str]:
    """A fresh MariaDB primary database with the lifecycle tables migrated (its URL).

    MariaDB has no CREATE DATABASE ... TEMPLATE: the template's tables are rebuilt from their
    own SHOW CREATE TABLE in one multi-statement round trip (about a third of the time of
    CREATE TABLE ... LIKE per table, which also lost foreign keys and their ON DELETE rules).
    """
    name = f"lct_{uuid.uuid4().hex[:10]}_p"
    mysql_clone(name, mysql_template[1])
    yield mysql_url(name)
    mysql_exec(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mariadb_platform_site(
    tmp_path: Path,
    pg_databases: Databases,
    redis_url: str,
    mysql_primary: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., AbstractContextManager[Any]]:
    """`platform_site` (tests/helpers.py) on this test's MariaDB primary, archive and Redis:
    call it with the site type, ``map_source``, ``organisation`` and ``install``."""
    return partial(platform_site, tmp_path=tmp_path, monkeypatch=monkeypatch,
                   primary=mysql_primary, archive=pg_databases.archive_url,
                   redis_url=redis_url)  # fmt: skip


@pytest.fixture
def gnuboard5_site(mysql_database: str, tmp_path: Path) -> Gnuboard5Site:
    """Gnuboard5 5.6 with its shop, as installed (MyISAM), seeded, in a fresh MariaDB database."""
    from tests.fixtures import gnuboard5

    tables = gnuboard5.build(mysql_database)
    root = tmp_path / "www"
    return Gnuboard5Site(mysql_database, root, tables, gnuboard5.seed(mysql_database, root))


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if os.environ.get("LIFECYCLE_TEST_REDIS_URL"):
        port = int(os.environ["LIFECYCLE_TEST_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        yield RedisServer(port, None, tmp_path_factory.mktemp("redis"))
        return
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (scripts/services.sh installs it)")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    assert server.proc is not None
    server.proc.terminate()
    server.proc.wait(10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


# -- Settings / environment --------------------------------------------------------------------


def _server_env(tmp_path: Path, primary_url: str, archive_url: str, redis_url: str) -> LifecycleEnv:
    """Settings of a server install: the two databases, Redis, a master key and a file root."""
    var = tmp_path / "var"
    files = tmp_path / "files"
    var.mkdir()
    files.mkdir()
    write_master_key(var / "master.key")
    return LifecycleEnv(
        vars={
            "LIFECYCLE_VAR_DIR": str(var),
            "LIFECYCLE_PRIMARY_DATABASE_URL": primary_url,
            "LIFECYCLE_ARCHIVE_DATABASE_URL": archive_url,
            "LIFECYCLE_BROKER_URL": redis_url,
            "LIFECYCLE_RESULT_BACKEND": redis_url,
            "LIFECYCLE_FILE_ROOTS": str(files),
            "LIFECYCLE_HOST_NAME": "testhost",
            "LIFECYCLE_LOG_JSON": "true",
            # The test site is the demo centre, also where a test swaps in a map of its own.
            "LIFECYCLE_ORGANISATION_NAME": "마음터심리상담센터",
        },
        var_dir=var,
        file_root=files,
    )


def _applied(monkeypatch: pytest.MonkeyPatch, env: LifecycleEnv) -> Iterator[LifecycleEnv]:
    """Set ``env`` for the test, then restore the process's settings and Celery app."""
    apply_env(monkeypatch, env)
    yield env
    from workers.app import reconfigure

    monkeypatch.undo()
    reconfigure()


@pytest.fixture
def lifecycle_env(
    tmp_path: Path, pg_databases: Databases, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LifecycleEnv]:
    """Production-shaped settings: PostgreSQL primary/archive, Redis broker and backend."""
    env = _server_env(tmp_path, pg_databases.primary_url, pg_databases.archive_url, redis_url)
    yield from _applied(monkeypatch, env)


@pytest.fixture
def pg_archive(pg_templates: dict[str, str]) -> Iterator[str]:
    """One fresh, migrated PostgreSQL archive database (its URL), for a primary elsewhere."""
    name = f"lct_{uuid.uuid4().hex[:8]}_a"
    pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_templates["archive"]}"')
    yield pg_url(name)
    pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgresql", "mariadb"])
def primary_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LifecycleEnv]:
    """`lifecycle_env` with the website's (primary) database on PostgreSQL, then on MariaDB.

    The archive stays PostgreSQL in both: it is the lifecycle's own, separate database. The
    MariaDB run creates no PostgreSQL primary it would not use: each dropped database costs
    PostgreSQL a checkpoint (0.3-3 s on a busy machine).
    """
    if request.param == "mariadb":
        primary = request.getfixturevalue("mysql_primary")
        archive = request.getfixturevalue("pg_archive")
    else:
        dbs: Databases = request.getfixturevalue("pg_databases")
        primary, archive = dbs.primary_url, dbs.archive_url
    env = _server_env(tmp_path, primary, archive, redis_url)
    yield from _applied(monkeypatch, env)


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LifecycleEnv]:
    """The no-configuration default: SQLite + filesystem transport under tmp/var."""
    var = tmp_path / "var"
    env = LifecycleEnv(vars={"LIFECYCLE_VAR_DIR": str(var)}, var_dir=var, file_root=var / "files")
    yield from _applied(monkeypatch, env)


# -- Celery workers ----------------------------------------------------------------------------


@pytest.fixture
def start_worker(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProc]]:
    """Factory: start a real `celery worker` subprocess and wait until it answers a ping."""
    started: list[WorkerProc] = []

    def _start(
        env: LifecycleEnv,
        *,
        queues: list[str] | None = None,
        concurrency: int = 2,
        name: str | None = None,
        extra_args: list[str] | None = None,
        wait: bool = True,
        **more_env: str,
    ) -> WorkerProc:
        name = name or f"w{len(started) + 1}-{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"{name}.log"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        if queues is None:
            from lifecycle.core.queues import worker_queues

            queues = worker_queues(env.vars.get("LIFECYCLE_HOST_NAME", os.uname().nodename))
        args += ["-Q", ",".join(queues)]
        args += extra_args or []
        fh = log.open("wb")
        proc = subprocess.Popen(
            args,
            env=env.environ(**more_env),
            cwd=env.var_dir.parent,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        w = WorkerProc(proc, log, name)
        started.append(w)
        if wait:
            wait_worker_ready(w)
        return w

    yield _start
    # The test is over and its databases and Redis are thrown away: a warm shutdown (about 2 s
    # of Celery closing its pool) would only add time to every test that started a worker.
    for w in started:
        w.kill()


# -- SMTP and webhook receivers ------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., WebhookReceiver]]:
    made: list[WebhookReceiver] = []

    def make(**kw: Any) -> WebhookReceiver:
        from lifecycle.channels.webhooks import generate_secret

        kw.setdefault("secret", generate_secret())
        r = WebhookReceiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- the integration marker ----------------------------------------------------------------------

# Fixtures that need a server (PostgreSQL, MariaDB, Redis, a Celery worker, SMTP, HTTP). A test
# that uses one, directly or through another fixture, is an integration test; `pytest -m "not
# integration"` runs the rest with no server at all. Tests that start servers themselves (or
# reach one through `request.getfixturevalue`) carry the marker explicitly.
SERVER_FIXTURES = frozenset(
    {
        "pg_templates",
        "pg_databases",
        "pg_archive",
        "redis_server",
        "redis_url",
        "lifecycle_env",
        "start_worker",
        "smtp_sink",
        "receivers",
    }
)
SERVER_FIXTURE_PREFIXES = ("mysql_", "mariadb_")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow"):
            # The fault tests kill workers and servers and time their faults: under
            # scripts/test.sh's parallel run they share one process, one after another.
            item.add_marker(pytest.mark.xdist_group("faults"))
        names = getattr(item, "fixturenames", ())
        if SERVER_FIXTURES.intersection(names) or any(
            n.startswith(SERVER_FIXTURE_PREFIXES) for n in names
        ):
            item.add_marker(pytest.mark.integration)


def _is_server_fixture(name: str) -> bool:
    return name in SERVER_FIXTURES or name.startswith(SERVER_FIXTURE_PREFIXES)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> None:
    # A server fixture reached through request.getfixturevalue is invisible to the hook above:
    # such a test must carry the marker itself, else `-m "not integration"` needs a server.
    # Failing here shows the missing marker on any run, not only on a machine without servers.
    if fixturedef.scope != "function" or not _is_server_fixture(fixturedef.argname):
        return
    node = request.node
    if isinstance(node, pytest.Item) and node.get_closest_marker("integration") is None:
        pytest.fail(
            f"{node.nodeid} uses the server fixture {fixturedef.argname!r} but is not marked "
            "integration (mark it, e.g. pytest.param(..., marks=pytest.mark.integration))",
            pytrace=False,
        )
