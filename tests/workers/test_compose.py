"""docker-compose.yml starts on a fresh volume by construction.

No container engine runs here, so each piece is checked where it can really run: the file with
a compose client's own `config` (Debian's `docker-compose`, installed by .ci/run, or the
`docker compose` plugin), the PostgreSQL init script and healthcheck against a throwaway
PostgreSQL, the worker's SMTP guard with `sh`, the worker and beat healthchecks against a real
worker and beat, and the secrets script in a scratch directory.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.helpers import REPO, LifecycleEnv, free_port, stop_group, wait_until
from tests.pg_server import PgServer, _as_postgres, start_postgres
from workers.config import TASK_SOFT_TIME_LIMIT, TASK_TIME_LIMIT

COMPOSE = REPO / "docker-compose.yml"
SERVICES: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
LIFECYCLE_SERVICES = ("migrate", "worker", "beat", "flower")
# Quote, backslash, semicolon, comment, dollar, colon, percent, non-ASCII: each once broke a
# password pasted into SQL or a shell.
NASTY_PASSWORDS = ("it's; DROP ROLE postgres; --", 'b\\a"ck$HOME:%s 비밀번호')


def _compose_cmd() -> list[str] | None:
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _need_compose() -> list[str]:
    cmd = _compose_cmd()
    if cmd is None:
        if os.environ.get("CI"):
            pytest.fail("no compose client: .ci/run installs Debian's docker-compose")
        pytest.skip("no compose client (apt-get install docker-compose)")
    return cmd


def _clean_env(**more: str) -> dict[str, str]:
    """The caller's environment without anything compose would interpolate from it."""
    names = ("LIFECYCLE_", "POSTGRES_", "PRIMARY_DB", "ARCHIVE_DB", "FLOWER_", "COMPOSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    return env | more


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    cmd = _need_compose()
    return subprocess.run(
        [*cmd, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _unescape(value: str) -> str:
    # Compose turns `$$` into `$` before handing a command to the container.
    return value.replace("$$", "$")


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "make-secrets.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return tmp_path


# -- the file, checked by a compose client ------------------------------------------------------


def test_docker_compose_config_is_valid(secrets_dir: Path) -> None:
    env_file = secrets_dir / ".env"
    with env_file.open("a") as fh:
        fh.write("LIFECYCLE_SMTP_URL=smtp+starttls://ops:pw@mail.example.com:587\n")
    r = _compose_config(env_file)
    assert r.returncode == 0, r.stderr


def test_compose_refuses_to_run_without_an_smtp_setting(secrets_dir: Path) -> None:
    # The passwords alone (what make-secrets.sh writes) are not enough: a deploy that never
    # thought about mail must not come up and silently deliver no legal notice.
    r = _compose_config(secrets_dir / ".env")
    assert r.returncode != 0
    assert "LIFECYCLE_SMTP_URL" in r.stderr


def test_compose_declares_the_production_shape() -> None:
    # The invariants ops rely on are in the file.
    services = SERVICES
    assert {"postgres", "redis", "worker", "beat", "flower", "migrate"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "noeviction" in redis_cmd and "--appendonly yes" in redis_cmd
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert all(p.startswith("127.0.0.1:") for p in services["flower"]["ports"])
    assert "LIFECYCLE_METRICS_PASSWORD" in services["metrics"]["environment"]
    assert all(p.startswith("127.0.0.1:") for p in services["metrics"]["ports"])
    env = services["worker"]["environment"]
    assert env["LIFECYCLE_PRIMARY_DATABASE_URL"] != env["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    assert "lifecycle_archive" in env["LIFECYCLE_ARCHIVE_DATABASE_URL"]


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name in ("postgres", "redis", "worker", "beat", "flower", "metrics"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), name
    # Flower's is its one page served without a login.
    assert "/healthcheck" in " ".join(SERVICES["flower"]["healthcheck"]["test"])


def test_worker_grace_period_outlasts_the_task_time_limits() -> None:
    # Docker's default 10 s would SIGKILL a running job on every `docker compose down`.
    grace = _seconds(SERVICES["worker"]["stop_grace_period"])
    assert grace > TASK_SOFT_TIME_LIMIT
    assert grace > TASK_TIME_LIMIT


def test_mounted_paths_exist_in_the_image_owned_by_its_user() -> None:
    # A named volume is initialised from the image's directory at the mount point, owner and
    # all; a path the image lacks comes up root-owned and the non-root user cannot write it.
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] != "root"
    user = users[-1]
    owned: set[str] = set()
    for m in re.finditer(r"install\s+-d\s+((?:-\S+\s+\S+\s+)*)((?:/\S+\s*)+)", dockerfile):
        if f"-o {user}" in m.group(1):
            owned.update(m.group(2).split())
    assert owned
    for name in LIFECYCLE_SERVICES:
        svc = SERVICES[name]
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            if not source.startswith((".", "/")):  # a named volume
                assert target in owned, f"{name}: {target} is not created for {user}"
        var_dir = svc["environment"]["LIFECYCLE_VAR_DIR"]
        assert var_dir in owned, f"{name}: {var_dir}"


# -- the worker's SMTP guard ------------------------------------------------------------------


def _run_worker_entrypoint(**env: str) -> subprocess.CompletedProcess[str]:
    entrypoint = [_unescape(a) for a in SERVICES["worker"]["entrypoint"]]
    # What follows the entrypoint is the service's command; a stand-in shows whether it ran.
    argv = [*entrypoint, sys.executable, "-c", "print('worker started')"]
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run(argv, env=base | env, capture_output=True, text=True, timeout=30)


def test_worker_refuses_to_start_without_smtp_unless_told() -> None:
    r = _run_worker_entrypoint(LIFECYCLE_SMTP_URL="", LIFECYCLE_NOTICES_RECORD_ONLY="0")
    assert r.returncode != 0
    assert "worker started" not in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1
    assert "LIFECYCLE_SMTP_URL" in r.stderr and "LIFECYCLE_NOTICES_RECORD_ONLY=1" in r.stderr

    told = _run_worker_entrypoint(LIFECYCLE_SMTP_URL="", LIFECYCLE_NOTICES_RECORD_ONLY="1")
    assert told.returncode == 0 and "worker started" in told.stdout, told.stderr
    smtp = _run_worker_entrypoint(LIFECYCLE_SMTP_URL="smtp://mail.example.com:25")
    assert smtp.returncode == 0 and "worker started" in smtp.stdout, smtp.stderr
    assert SERVICES["worker"]["environment"]["LIFECYCLE_NOTICES_RECORD_ONLY"].startswith("${")


# -- PostgreSQL: init script and healthcheck -----------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres(free_port())
    # As the image does: trust on the socket (for the init scripts), passwords over TCP.
    (server.data / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    server._ctl("reload")
    yield server
    server.destroy()


def _restart(server: PgServer, listen: str) -> None:
    server.stop()
    opts = f"-p {server.port} -k {server.dir} -c listen_addresses='{listen}' -c fsync=off"
    server._ctl("-l", str(server.dir / "server.log"), "-w", "-o", opts, "start")


def test_postgres_init_script_quotes_any_password(pg: PgServer) -> None:
    env = _clean_env(
        PGHOST=str(pg.dir),
        PGPORT=str(pg.port),
        POSTGRES_USER="postgres",
        PRIMARY_DB_PASSWORD=NASTY_PASSWORDS[0],
        ARCHIVE_DB_PASSWORD=NASTY_PASSWORDS[1],
    )
    # The postgres user may not be able to read the checkout (a clone under `mktemp -d` is 0700
    # root's): give it its own readable copy, beside its server.
    script = pg.dir / "postgres-init.sh"
    shutil.copyfile(REPO / "deploy" / "postgres-init.sh", script)
    script.chmod(0o644)
    r = subprocess.run(
        _as_postgres(["sh", str(script)]),
        env=env,
        cwd=pg.dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # Log in over TCP with exactly those passwords, as the containers do.
    for user, db, pw in (
        ("lifecycle_primary", "primary_db", NASTY_PASSWORDS[0]),
        ("lifecycle_archive", "archive_db", NASTY_PASSWORDS[1]),
    ):
        with psycopg.connect(
            host="127.0.0.1", port=pg.port, user=user, dbname=db, password=pw
        ) as c:
            assert c.execute("SELECT current_user").fetchone() == (user,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=pg.port, user=user, dbname=db, password=pw[:-1])
    # The website's user cannot open the archive.
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(
            host="127.0.0.1",
            port=pg.port,
            user="lifecycle_primary",
            dbname="archive_db",
            password=NASTY_PASSWORDS[0],
        )
    with psycopg.connect(host=str(pg.dir), port=pg.port, user="postgres") as c:
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'").fetchone()[0]


def test_postgres_init_script_refuses_a_missing_password(tmp_path: Path) -> None:
    r = subprocess.run(
        ["/bin/sh", str(REPO / "deploy" / "postgres-init.sh")],
        env=_clean_env(PRIMARY_DB_PASSWORD="x", PATH=str(tmp_path)),  # no psql reachable
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0 and "ARCHIVE_DB_PASSWORD" in r.stderr


def test_postgres_healthcheck_waits_for_tcp(pg: PgServer) -> None:
    test = SERVICES["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    env = _clean_env(
        PATH=f"{pg.bindir}:{os.environ['PATH']}", PGHOST=str(pg.dir), PGPORT=str(pg.port)
    )

    def healthy() -> bool:
        return subprocess.run(["sh", "-c", test[1]], env=env, capture_output=True).returncode == 0

    try:
        # The image runs its init scripts against a temporary server on the Unix socket only.
        _restart(pg, "")
        assert not healthy(), "healthy while the init scripts could still be running"
        _restart(pg, "127.0.0.1")
        assert healthy()
    finally:
        _restart(pg, "127.0.0.1")


# -- worker and beat healthchecks, run for real --------------------------------------------------


def test_worker_healthcheck_answers_only_while_the_worker_runs(
    lifecycle_env: LifecycleEnv, start_worker: Any
) -> None:
    test = SERVICES["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    host = os.uname().nodename
    env = lifecycle_env.environ(LIFECYCLE_HOST_NAME=host)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    def check() -> int:
        return subprocess.run(
            ["sh", "-c", _unescape(test[1])],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=60,
        ).returncode

    w = start_worker(lifecycle_env, name="lifecycle", LIFECYCLE_HOST_NAME=host)
    assert check() == 0
    w.stop()
    assert check() != 0


def test_beat_healthcheck_follows_the_scheduler_loop(
    lifecycle_env: LifecycleEnv, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "beat.heartbeat"
    env = lifecycle_env.environ(LIFECYCLE_BEAT_HEARTBEAT_FILE=str(heartbeat))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    argv = SERVICES["beat"]["entrypoint"]
    assert argv[0] == "celery"
    test = SERVICES["beat"]["healthcheck"]["test"]
    assert test[0] == "CMD"

    def check(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=30)

    # Before beat starts: no tick yet, unhealthy. (Asked once beat runs, a slow check could
    # find beat's first tick already written.)
    assert check(test[1:]).returncode != 0
    log = (tmp_path / "beat.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(heartbeat.exists, timeout=60, what="beat's first tick")
        first = heartbeat.stat().st_mtime
        wait_until(lambda: heartbeat.stat().st_mtime > first, timeout=30, what="a later tick")
        assert check(test[1:]).returncode == 0
    finally:
        stop_group(proc)
        log.close()
    last = heartbeat.stat().st_mtime
    stale_cmd = [sys.executable, "-m", "workers.beat_heartbeat", "--check", "--max-age", "0.5"]
    wait_until(lambda: time.time() - last > 0.6, timeout=5, what="the heartbeat to age")
    stale = check(stale_cmd)
    assert stale.returncode == 1 and "last tick" in stale.stderr
    assert proc.returncode in (0, -signal.SIGTERM)


# -- secrets --------------------------------------------------------------------------------


def test_make_secrets_writes_owner_only_files_once(secrets_dir: Path) -> None:
    key = secrets_dir / "secrets" / "master.key"
    env_file = secrets_dir / ".env"
    assert key.stat().st_mode & 0o777 == 0o600
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert (secrets_dir / "secrets").stat().st_mode & 0o777 == 0o700
    assert len(base64.b64decode(key.read_text().strip(), validate=True)) == 32
    if os.geteuid() == 0:
        # Compose bind-mounts the file as it is: the image's user (uid 1000) must own it.
        assert key.stat().st_uid == 1000
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    for var in ("POSTGRES_PASSWORD", "PRIMARY_DB_PASSWORD", "ARCHIVE_DB_PASSWORD"):
        # Pasted into connection URLs by compose: only characters a URL keeps as they are.
        assert re.fullmatch(r"[0-9a-f]{32,}", values[var]), var
    assert re.fullmatch(r"ops:[0-9a-f]{32,}", values["FLOWER_BASIC_AUTH"])
    assert len(set(values.values())) == len(values)

    before = (key.read_bytes(), env_file.read_bytes())
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "make-secrets.sh"), str(secrets_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (key.read_bytes(), env_file.read_bytes()) == before
    assert "LIFECYCLE_SMTP_URL" in r.stderr
