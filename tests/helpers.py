"""Plain code the tests and the benchmarks share: paths and settings of the test servers,
throwaway Redis, the `lifecycle` environment of one test, Celery worker processes, an SMTP sink
and webhook receivers, demo data, exact accounting of a sweep and scans for personal data.

Fixtures and hooks live in conftest.py and build on these. No pytest import here, so the
benchmarks under bench/ can use this module too.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import email
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pymysql
import redis
from aiosmtpd.controller import Controller
from pymysql.constants import CLIENT
from sqlalchemy import Connection, Engine, bindparam, create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url
from standardwebhooks import Webhook, WebhookVerificationError

from lifecycle.core import db
from lifecycle.core.dbkind import MYSQL_BACKENDS, mysql_connect_args
from lifecycle.datamap.loader import load_datamap
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.engine.context import clear_context_cache
from lifecycle.ops.demo_seed import seed
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.shred.jobs import run_job
from models import demo_site
from models.shred import ShredJob

if TYPE_CHECKING:
    import pytest

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get(
    "LIFECYCLE_TEST_PG_URL",
    f"postgresql://postgres@127.0.0.1:{os.environ.get('LIFECYCLE_TEST_PG_PORT', '5432')}/postgres",
)


# -- loopback ports and processes --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout, f"a listener on 127.0.0.1:{port}", interval=0.05)


def wait_until(
    pred: Callable[[], Any], timeout: float = 60, what: str = "condition", interval: float = 0.1
) -> Any:
    """Poll ``pred`` every ``interval`` seconds until it returns something truthy (returned);
    TimeoutError otherwise. Waiting on what a test can observe, never a fixed sleep: a fixed
    sleep is too short on a loaded machine and wasted time on an idle one."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached after {timeout}s")
        time.sleep(interval)


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the process group ``proc`` leads (a Celery worker and its prefork children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(30)


def stop_group(proc: subprocess.Popen[Any], grace: float = 30) -> None:
    """SIGTERM the group (a warm shutdown), SIGKILL it if it is still there after ``grace``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_group(proc)


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_exec(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def pg_url(db: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{db}"


@dataclass
class Databases:
    primary_url: str
    archive_url: str
    names: dict[str, str]


# -- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes] | None
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        redis.Redis(port=self.port).flushall()


def start_redis(tmp: Path, port: int | None = None, *, aof: bool = False) -> RedisServer:
    """A throwaway redis-server (also used by tests that restart Redis under load)."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    args = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(tmp),
        "--save",
        "",
        "--appendonly",
        "yes" if aof else "no",
        "--logfile",
        "redis.log",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return RedisServer(port, proc, tmp)


# -- Settings / environment --------------------------------------------------------------------


@dataclass
class LifecycleEnv:
    """The LIFECYCLE_* variables of one test, applied in-process and given to subprocesses."""

    vars: dict[str, str]
    var_dir: Path
    file_root: Path
    extra: dict[str, str] = field(default_factory=dict)

    def environ(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        # `lifecycle up` starts the console and the metrics endpoint too: tests running side by
        # side must not all bind their default ports (one failing child stops the others).
        env["LIFECYCLE_CONSOLE_PORT"] = str(self._port("console_port"))
        env["LIFECYCLE_METRICS_PORT"] = str(self._port("metrics_port"))
        env.update(self.vars)
        env.update(more)
        env["PYTHONPATH"] = str(REPO)
        return env

    def _port(self, name: str) -> int:
        if name not in self.extra:
            self.extra[name] = str(free_port())
        return int(self.extra[name])

    def run(
        self, *args: str, check: bool = False, timeout: float = 300, **more: str
    ) -> subprocess.CompletedProcess[str]:
        """Run the `lifecycle` CLI as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "lifecycle.cli.main", *args],
            env=self.environ(**more),
            cwd=self.var_dir.parent,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )


_sqlite_template: Path | None = None


def migrate_embedded(env: LifecycleEnv) -> None:
    """What `lifecycle db upgrade` leaves in an embedded (SQLite) var dir, copied from a var dir
    this process migrated once with that command. Each upgrade costs seconds of fsyncs, and many
    tests without a server start from a migrated embedded default."""
    global _sqlite_template
    if _sqlite_template is None:
        tmp = Path(tempfile.mkdtemp(prefix="lifecycle-sqlite-template-"))
        atexit.register(shutil.rmtree, tmp, True)
        var = tmp / "var"
        r = LifecycleEnv({"LIFECYCLE_VAR_DIR": str(var)}, var, var / "files").run("db", "upgrade")
        assert r.returncode == 0, r.stderr
        _sqlite_template = var
    env.var_dir.mkdir(parents=True, exist_ok=True)
    for db_file in sorted(_sqlite_template.glob("*.sqlite3")):
        shutil.copyfile(db_file, env.var_dir / db_file.name)


def write_master_key(path: Path) -> Path:
    """The install's master key (a server archive DB never gets one made up on the fly)."""
    from lifecycle.core.settings import create_master_key_file

    create_master_key_file(path)
    return path


def apply_env(monkeypatch: pytest.MonkeyPatch, env: LifecycleEnv) -> None:
    # workers.app is imported here and in set_env, not at the top: importing it builds the Celery
    # app from the settings of that moment, which must be the test's, not the shell's.
    for k in list(os.environ):
        if k.startswith("LIFECYCLE_"):
            monkeypatch.delenv(k)
    for k, v in env.vars.items():
        monkeypatch.setenv(k, v)
    from workers.app import reconfigure

    reconfigure()


def set_env(env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Add LIFECYCLE_* settings for the CLI, the workers and this process alike."""
    from workers.app import reconfigure

    for k, v in values.items():
        env.vars[k] = v
        monkeypatch.setenv(k, v)
    reconfigure()


# -- Celery workers ----------------------------------------------------------------------------


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    name: str

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (main process and prefork children)."""
        kill_group(self.proc, sig)

    def stop(self) -> None:
        stop_group(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_worker_ready(w: WorkerProc, timeout: float = 60) -> None:
    def ready() -> bool:
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{w.output()[-3000:]}")
        return " ready." in w.output()

    try:
        wait_until(ready, timeout)
    except TimeoutError:
        raise TimeoutError(f"worker not ready after {timeout}s:\n{w.output()[-3000:]}") from None


# -- SMTP sink ---------------------------------------------------------------------------------


@dataclass
class Received:
    rcpt: str
    message_id: str
    subject: str
    body: str
    raw: bytes


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.sink.refuse:
            return "550 5.1.1 no such user"
        if address in self.sink.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_content() if not msg.is_multipart() else ""
        with self.sink.lock:
            for rcpt in envelope.rcpt_tos:
                self.sink.messages.append(
                    Received(
                        rcpt, str(msg["Message-ID"]), str(msg["Subject"]), body, envelope.content
                    )
                )
        return "250 OK"


class SmtpSink:
    """aiosmtpd on a free loopback port; collects every accepted message."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self.refuse: set[str] = set()
        self.defer: set[str] = set()
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(m.rcpt for m in self.messages)

    def distinct_ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self.lock:
            for m in self.messages:
                out.setdefault(m.rcpt, set()).add(m.message_id)
        return out

    def write_mail_log(self, path: Path, aborted: tuple[str, ...] = ()) -> Path:
        """What Postfix would have logged for the accepted messages, as an MTA log.

        Per accepted message, cleanup's ``message-id=<...>`` line and qmgr's ``from=<...>``
        line (queued) under one queue id, with unrelated lines between, as in a real maillog.
        ``aborted`` Message-IDs get only the cleanup line: Postfix logs that while the message
        is still arriving, so a message dropped before the end of DATA has one too.
        """
        with self.lock:
            ids = [m.message_id.strip("<>") for m in self.messages]
        lines = ["Jan  1 09:00:00 mx postfix/master[100]: daemon started -- version 3.8.6"]
        for n, mid in enumerate(ids, start=1):
            qid = f"4F{n:08X}"
            lines += [
                f"Jan  1 09:00:01 mx postfix/smtpd[201]: {qid}: client=localhost[127.0.0.1]",
                f"Jan  1 09:00:01 mx postfix/cleanup[202]: {qid}: message-id=<{mid}>",
                f"Jan  1 09:00:01 mx postfix/qmgr[103]: {qid}: from=<privacy@maumteo.example>, "
                "size=1234, nrcpt=1 (queue active)",
                f"Jan  1 09:00:02 mx postfix/smtp[204]: {qid}: to=<redacted>, "
                "relay=none, delay=0.1, status=sent (250 2.0.0 Ok)",
            ]
        for n, mid in enumerate(aborted, start=1):
            qid = f"5A{n:08X}"
            lines += [
                f"Jan  1 09:00:03 mx postfix/cleanup[202]: {qid}: message-id=<{mid}>",
                "Jan  1 09:00:03 mx postfix/smtpd[201]: lost connection after DATA "
                "(512 bytes) from localhost[127.0.0.1]",
            ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def wait_count(self, n: int, timeout: float = 60) -> None:
        try:
            wait_until(lambda: len(self.messages) >= n, timeout, interval=0.05)
        except TimeoutError:
            got = [m.subject for m in self.messages]
            raise TimeoutError(f"SMTP sink got {len(got)} of {n} messages: {got}") from None

    def wait_matching(
        self, pred: Callable[[Received], bool], n: int = 1, timeout: float = 30
    ) -> list[Received]:
        """The messages ``pred`` accepts, once there are at least ``n`` of them. A request's
        written answer goes out on the notify queue after the request itself is done, so a
        test that reads it right after ``--wait`` must wait for it, not assume it is there."""

        def matching() -> list[Received] | None:
            hits = [m for m in list(self.messages) if pred(m)]
            return hits if len(hits) >= n else None

        try:
            return wait_until(matching, timeout, interval=0.05)
        except TimeoutError:
            got = [m.subject for m in self.messages]
            raise TimeoutError(f"SMTP sink: fewer than {n} matching messages in {got}") from None


# -- webhook receivers -------------------------------------------------------------------------


@dataclass
class Hit:
    msg_id: str
    verified: bool
    status: int
    payload: Any
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """A third party's endpoint. ``script`` gives the status of each successive request
    (then ``default``); the signature is verified with the shared secret on every request."""

    secret: str
    script: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = None, False
                with receiver._lock:
                    n = len(receiver.hits)
                    status = receiver.script[n] if n < len(receiver.script) else receiver.default
                    if not verified:
                        status = 401
                    receiver.hits.append(
                        Hit(headers.get("webhook-id", ""), verified, status, payload, body, headers)
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pipa"

    def accepted(self) -> list[Hit]:
        """Requests the receiver processed (verified and answered 2xx)."""
        return [h for h in self.hits if h.verified and 200 <= h.status < 300]

    def unique_accepted(self) -> dict[str, Hit]:
        """What a receiver that dedupes by webhook-id (as the spec asks) acts on."""
        out: dict[str, Hit] = {}
        for h in self.accepted():
            out.setdefault(h.msg_id, h)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- demo site data ----------------------------------------------------------------------------


def seed_site(
    primary_url: str, members: int, *, files: bool = False, file_root: Path | None = None
) -> dict[str, int]:

    eng = site_engine(primary_url)
    try:
        return seed(eng, members, files=files, file_root=file_root or Path("/nonexistent"))
    finally:
        eng.dispose()


def withdraw_all(primary_url: str, where: str = "TRUE") -> int:
    eng = site_engine(primary_url)
    try:
        with eng.begin() as c:
            return c.execute(
                text(
                    "UPDATE members SET status = 'withdrawn', withdrawn_at = "
                    f"coalesce(withdrawn_at, CURRENT_TIMESTAMP) WHERE {where}"
                )
            ).rowcount
    finally:
        eng.dispose()


def active_members(url: str, n: int) -> list[int]:
    """The first ``n`` members still with the site, by id."""
    rows = sql_rows(url, "SELECT id FROM members WHERE status = 'active' ORDER BY id")
    return [r[0] for r in rows][:n]


# The addresses and numbers of seven members a..g in the guest-row tests: c and d (both with
# the site) share an address, written differently; f leaves (on the site) with an address g,
# who stays, holds too.
GUEST_ROW_IDENTITIES = (
    ("kim.a@example.com", "010-1234-5678"),
    ("lee.b@example.com", "010-2222-3333"),
    ("shared@example.com", "010-4444-5555"),
    ("  Shared@Example.COM", "010-4444-6666"),
    ("leaver@example.com", "010-7777-8888"),
    ("twin@example.com", "010-1111-0001"),
    ("TWIN@example.com", "010-1111-0002"),
)


def give_guest_row_identities(conn: Any, members: list[int]) -> dict[int, tuple[str, str]]:
    """Members a..g (``members``) take :data:`GUEST_ROW_IDENTITIES`; no member keeps an RRN.
    Returns member id -> (email, mobile)."""
    conn.execute(text("UPDATE members SET rrn = NULL"))
    people = dict(zip(members, GUEST_ROW_IDENTITIES, strict=True))
    for m, (addr, mobile) in people.items():
        conn.execute(
            text("UPDATE members SET email = :e, mobile = :m WHERE id = :i"),
            {"e": addr, "m": mobile, "i": m},
        )
    return people


def withdraw_on_site(primary_url: str, at: datetime, *members: int) -> None:
    """``members`` withdraw through the site itself (status and time), not through us."""
    eng = site_engine(primary_url)
    try:
        with eng.begin() as c:
            c.execute(
                text("UPDATE members SET status = 'withdrawn', withdrawn_at = :t "
                     "WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
                {"t": at, "ids": list(members)},
            )  # fmt: skip
    finally:
        eng.dispose()


def table_counts(url: str) -> dict[str, int]:
    eng = site_engine(url)
    try:
        from sqlalchemy import inspect

        names = inspect(eng).get_table_names()
        with eng.connect() as c:
            return {
                n: c.execute(text(f"SELECT count(*) FROM {q(eng, n)}")).scalar_one() for n in names
            }
    finally:
        eng.dispose()


def create_demo_schema() -> Engine:
    eng = db.engine("primary")
    demo_site.metadata.create_all(eng)
    return eng


def add_members(
    eng: Engine, count: int, *, start: int = 1, status: str = "active", **overrides: Any
) -> list[int]:
    rows = []
    for i in range(start, start + count):
        row = {
            "id": i,
            "login_id": f"user{i:06d}",
            "password_hash": "argon2$demo",
            "name": f"회원{i}",
            "birth_date": date(1985, 1, 1),
            "sex": "F" if i % 2 else "M",
            "mobile": f"010-0000-{i:04d}",
            "email": f"member{i}@example.test",
            "status": status,
            "joined_at": datetime(2020, 1, 1, tzinfo=UTC),
            "marketing_consent": False,
        }
        row.update(overrides)
        rows.append(row)
    with eng.begin() as conn:
        conn.execute(insert(demo_site.members), rows)
        if eng.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('members','id'), "
                    "(SELECT max(id) FROM members))"
                )
            )
    return [r["id"] for r in rows]


# -- snapshots and exact accounting ------------------------------------------------------------


@dataclass
class SiteSnapshot:
    """Every row of every mapped table, by (table, pk), with its member."""

    rows: dict[tuple[str, str], Any] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    personal: set[str] = field(default_factory=set)


def snapshot_site(primary_url: str) -> SiteSnapshot:
    eng = site_engine(primary_url)
    try:
        dm = load_datamap(SHIPPED_DEMO_MAP, engine=eng)
        snap = SiteSnapshot()
        with eng.connect() as c:
            for tm in dm.tables.values():
                snap.categories[tm.name] = list(tm.columns)
                rel = tm.subject_column
                sql = f"SELECT {q(eng, tm.key)}, {q(eng, rel)} FROM {q(eng, tm.name)}"
                for pk, m in c.execute(text(sql)):
                    snap.rows[(tm.name, str(pk))] = m
            # Korean names are three characters: keep them, but not ones that happen to occur
            # in the map's own texts (legal bases), which do appear in the ledger.
            shipped = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
            for name, email, mobile, rrn, phone, addr in c.execute(
                text("SELECT name, email, mobile, rrn, home_phone, home_address FROM members")
            ):
                for v in (name, email, mobile, rrn, phone, addr):
                    if v and len(v) >= 3 and v not in shipped:
                        snap.personal.add(v)
        return snap
    finally:
        eng.dispose()


def remaining_rows(primary_url: str, snap: SiteSnapshot) -> set[tuple[str, str]]:
    eng = site_engine(primary_url)
    out: set[tuple[str, str]] = set()
    try:
        dm = load_datamap(SHIPPED_DEMO_MAP, engine=eng)
        with eng.connect() as c:
            for tm in dm.tables.values():
                for (pk,) in c.execute(text(f"SELECT {q(eng, tm.key)} FROM {q(eng, tm.name)}")):
                    out.add((tm.name, str(pk)))
        return out
    finally:
        eng.dispose()


@dataclass
class Accounting:
    archived: Counter[tuple[str, str]]  # archive_records per (table, category)
    ledger_archive: Counter[tuple[str, str]]
    ledger_destroy: Counter[tuple[str, str]]
    records: set[tuple[str, str, str]]
    outbox: int
    ledger_ok: bool
    ledger_message: str


def accounting(primary_url: str, archive_url: str) -> Accounting:
    a = site_engine(archive_url)
    p = site_engine(primary_url)
    try:
        with a.connect() as c:
            records: set[tuple[str, str, str]] = set()
            archived: Counter[tuple[str, str]] = Counter()
            for t, pk, cat in c.execute(
                text("SELECT source_table, source_pk, category FROM archive_records")
            ):
                assert (t, pk, cat) not in records, "duplicate archive record"
                records.add((t, pk, cat))
                archived[(t, cat)] += 1
            la: Counter[tuple[str, str]] = Counter()
            ld: Counter[tuple[str, str]] = Counter()
            for action, cats, tables, rows in c.execute(
                text("SELECT action, categories, tables, rows FROM ledger_entries")
            ):
                cats = json.loads(cats) if isinstance(cats, str) else cats
                tables = json.loads(tables) if isinstance(tables, str) else tables
                if action in ("archive", "destroy") and len(cats) == 1 and len(tables) == 1:
                    (la if action == "archive" else ld)[(tables[0], cats[0])] += int(rows)
        from sqlalchemy.orm import Session

        from lifecycle.vault import ledger

        with Session(a) as s:
            res = ledger.verify(s)
        with p.connect() as c:
            outbox = c.execute(text("SELECT count(*) FROM lifecycle_ledger_outbox")).scalar_one()
        return Accounting(archived, la, ld, records, outbox, res.ok, res.message())
    finally:
        a.dispose()
        p.dispose()


def check_exact_accounting(
    snap: SiteSnapshot, remaining: set[tuple[str, str]], acc: Accounting
) -> None:
    """Every row that left the primary DB is, per category, archived exactly once or destroyed
    with a ledger entry; nothing archived is still in the primary DB; the ledger verifies."""
    assert acc.ledger_ok, acc.ledger_message
    assert acc.outbox == 0, "destruction entries still parked in the outbox"
    gone: Counter[str] = Counter()
    for key in snap.rows:
        if key not in remaining:
            gone[key[0]] += 1
    for t, pk, _cat in acc.records:
        assert (t, pk) in snap.rows, f"archive record for a row that never existed: {t}"
        assert (t, pk) not in remaining, f"{t} row is both archived and still in primary"
    for table, cats in snap.categories.items():
        for cat in cats:
            archived = acc.archived[(table, cat)]
            destroyed = acc.ledger_destroy[(table, cat)]
            assert acc.ledger_archive[(table, cat)] == archived, (
                f"{table}/{cat}: ledger says {acc.ledger_archive[(table, cat)]} archived, "
                f"archive holds {archived}"
            )
            assert archived + destroyed == gone[table], (
                f"{table}/{cat}: {gone[table]} rows left primary but {archived} archived + "
                f"{destroyed} destroyed in the ledger"
            )


# -- scans for personal data -------------------------------------------------------------------


def redis_dump_decoded(port: int) -> bytes:
    """Every key and value in a Redis server, with kombu's base64 message bodies decoded."""
    import redis

    r = redis.Redis(port=port)
    out: list[bytes] = []

    def add(v: bytes) -> None:
        out.append(v)
        try:
            msg = json.loads(v)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(msg, dict) and isinstance(msg.get("body"), str):
            with contextlib.suppress(ValueError):
                out.append(base64.b64decode(msg["body"]))

    for key in r.scan_iter(count=1000):
        out.append(key)
        kind = r.type(key)
        if kind == b"string":
            add(r.get(key) or b"")
        elif kind == b"list":
            for v in r.lrange(key, 0, -1):
                add(v)
        elif kind == b"hash":
            for k, v in r.hgetall(key).items():
                out += [k]
                add(v)
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"zset":
            out += [m for m in r.zrange(key, 0, -1)]
    return b"\n".join(out)


def redis_dump_repr(url: str) -> str:
    """Every key and value in the broker/result Redis, one ``repr`` line per key (to search
    the text for old values)."""
    r = redis.Redis.from_url(url)
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            val: Any = r.get(key)
        elif kind == "list":
            val = r.lrange(key, 0, -1)
        elif kind == "hash":
            val = r.hgetall(key)
        elif kind == "set":
            val = r.smembers(key)
        elif kind == "zset":
            val = r.zrange(key, 0, -1, withscores=True)
        else:
            val = kind
        out.append(f"{key!r} {val!r}")
    return "\n".join(out)


def database_dump(url: str) -> bytes:
    """Every table of a database as text (bytea shows as hex, so ciphertexts stay opaque)."""
    eng: Engine = site_engine(url)
    try:
        from sqlalchemy import inspect

        chunks: list[bytes] = []
        with eng.connect() as c:
            for name in inspect(eng).get_table_names():
                for row in c.execute(text(f"SELECT * FROM {q(eng, name)}")):
                    chunks.append(repr(tuple(row)).encode())
                    for v in row:
                        if isinstance(v, str):
                            chunks.append(v.encode())
        return b"\n".join(chunks)
    finally:
        eng.dispose()


def table_dump(eng: Engine, prefix: str = "lifecycle_") -> str:
    """Every row of every table starting with ``prefix``, as text (to search for old values)."""
    out = []
    with eng.connect() as conn:
        for name in sorted(inspect(eng).get_table_names()):
            if not name.startswith(prefix):
                continue
            for row in conn.execute(text(f"SELECT * FROM {q(eng, name)}")):
                out.append(f"{name}: {json.dumps(list(row), default=str, ensure_ascii=False)}")
    return "\n".join(out)


def leaks(blob: bytes, values: set[str]) -> list[str]:
    """Which personal values occur in ``blob`` (reported masked, so a failure leaks nothing)."""
    found = []
    for v in values:
        if v.encode() in blob:
            found.append(v[:2] + "*" * (len(v) - 2))
    return found


def sql_rows(url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """The rows of one query against ``url``: a test's own look at a database."""
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params)]
    finally:
        eng.dispose()


def sql_one(url: str, sql: str, **params: object) -> int:
    """The single integer a query returns (a count)."""
    return int(sql_rows(url, sql, **params)[0][0])


def site_engine(url: str) -> Engine:
    """An engine on ``url`` set up as the workers' are (on MySQL: UTC session, zero dates)."""
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() in MYSQL_BACKENDS:
        return create_engine(url, connect_args=mysql_connect_args())
    return create_engine(url)


def q(eng: Engine, name: str) -> str:
    """``name`` quoted for the engine's SQL dialect (MySQL uses backticks)."""
    return eng.dialect.identifier_preparer.quote_identifier(name)


def insert_id(conn: Any, sql: str, params: dict[str, Any]) -> int:
    """Run an INSERT and return the new row's id (RETURNING where the server has it)."""
    if conn.dialect.name in MYSQL_BACKENDS:
        return int(conn.execute(text(sql), params).lastrowid)
    return int(conn.execute(text(sql + " RETURNING id"), params).scalar_one())


def ago(**kw: float) -> Any:
    """A UTC instant in the past, to bind instead of a dialect's interval arithmetic."""
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(**kw)


# -- A small site of a test's own, on either primary ----------------------------------------

# What a small site's DDL names in braces, in each primary's terms.
SMALL_SITE_TERMS = {
    "postgresql": {"pk": "id SERIAL PRIMARY KEY", "ts": "TIMESTAMP WITH TIME ZONE", "engine": ""},
    "mysql": {
        "pk": "id INT AUTO_INCREMENT PRIMARY KEY",
        "ts": "DATETIME",
        "engine": " ENGINE=InnoDB",
    },
}


@dataclass
class SmallSite:
    primary: str
    archive: str
    map_path: Path


def small_site(
    env: LifecycleEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    datamap: str,
    ddl: Sequence[str],
    fill: Callable[[Connection], None],
) -> SmallSite:
    """A site of a few tables on the test's primary (PostgreSQL or MariaDB), its map in force.

    Each statement of ``ddl`` runs with ``{pk}`` (an ``id`` primary key the server numbers),
    ``{ts}`` (a timestamp type) and ``{engine}`` (MariaDB's table options) in the primary's
    terms; ``fill`` then adds the rows in the same transaction. ``datamap`` becomes the data
    map of this process (settings, Celery app, engine context) and of the CLI ``env`` runs.
    """
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = site_engine(primary)
    terms = SMALL_SITE_TERMS["postgresql" if eng.dialect.name == "postgresql" else "mysql"]
    with eng.begin() as c:
        for stmt in ddl:
            c.execute(text(stmt.format(**terms)))
        fill(c)
    eng.dispose()
    path = tmp_path / "datamap.yaml"
    path.write_text(datamap, encoding="utf-8")
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(path))
    # Imported here for the reason apply_env gives.
    from workers.app import reconfigure

    reconfigure()
    clear_context_cache()
    return SmallSite(primary, env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"], path)


def add_small_site_members(c: Connection, table: str, ids: Sequence[int], *, nick: bool) -> None:
    """Active members as small sites hold them: login ``user<id>``, email
    ``user<id>@example.org`` and, with ``nick``, the nickname ``닉<id>``."""
    cols = "id, login, email, nick, status" if nick else "id, login, email, status"
    for i in ids:
        row = {"id": i, "login": f"user{i}", "email": f"user{i}@example.org"}
        if nick:
            row["nick"] = f"닉{i}"
        marks = ", ".join(f":{k}" for k in row)
        c.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({marks}, 'active')"), row)


def access_package(member_id: int, tmp_path: Path) -> dict[str, str]:
    """The member's access package, made through the lifecycle without a password: the text of
    each of its files, by name."""
    out = tmp_path / f"access-{member_id}.zip"
    rid = submit_access(member_id, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    with zipfile.ZipFile(out) as zf:
        return {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}


# -- MariaDB / MySQL ---------------------------------------------------------------------------

MYSQL_ADMIN = os.environ.get(
    "LIFECYCLE_TEST_MYSQL_URL",
    f"mysql://root@127.0.0.1:{os.environ.get('LIFECYCLE_TEST_MYSQL_PORT', '3306')}/",
)


def mysql_site_connect(url: str, *, sql_mode: str | None = "") -> Any:
    """A raw PyMySQL connection to the site database ``url`` names, by default in the
    permissive SQL mode a PHP site like Gnuboard5 runs with (``sql_mode = ''``: zero dates,
    implicit defaults); ``sql_mode=None`` keeps the server's."""
    u = make_url(url)
    conn = pymysql.connect(
        host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
        password=u.password or "", database=u.database, charset="utf8mb4", autocommit=True,
    )  # fmt: skip
    if sql_mode is not None:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
    return conn


# -- a real platform's site on a MariaDB primary (Gnuboard5, Rhymix) ----------------------------


def platform_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(var, files, root)`` for a platform site: the var dir holding the master key, the
    storage root, and the site's install directory under it (the map's ``site.root``)."""
    var, files = tmp_path / "var", tmp_path / "files"
    root = files / "www"
    var.mkdir()
    write_master_key(var / "master.key")
    root.mkdir(parents=True)
    return var, files, root


def platform_env(
    var: Path,
    files: Path,
    primary: str,
    archive: str,
    redis_url: str,
    map_path: Path,
    **extra: str,
) -> LifecycleEnv:
    """The settings of a platform site on ``primary`` with its own map (``extra``: more
    ``LIFECYCLE_*`` variables, e.g. the organisation's name)."""
    return LifecycleEnv(
        vars={
            "LIFECYCLE_VAR_DIR": str(var),
            "LIFECYCLE_PRIMARY_DATABASE_URL": primary,
            "LIFECYCLE_ARCHIVE_DATABASE_URL": archive,
            "LIFECYCLE_BROKER_URL": redis_url,
            "LIFECYCLE_RESULT_BACKEND": redis_url,
            "LIFECYCLE_FILE_ROOTS": str(files),
            "LIFECYCLE_HOST_NAME": "testhost",
            "LIFECYCLE_DATA_MAP": str(map_path),
            **extra,
        },
        var_dir=var,
        file_root=files,
    )


@contextlib.contextmanager
def platform_env_applied(monkeypatch: pytest.MonkeyPatch, env: LifecycleEnv) -> Iterator[None]:
    """``env`` in force for this process (settings, engine context, Celery app) until the
    block ends, then the shell's again."""
    apply_env(monkeypatch, env)
    clear_context_cache()
    try:
        yield
    finally:
        clear_context_cache()
        from workers.app import reconfigure

        monkeypatch.undo()
        reconfigure()


def mysql_site_sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the site at ``url`` (:func:`mysql_site_connect`); its rows."""
    conn = mysql_site_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            return list(cur.fetchall())
    finally:
        conn.close()


def platform_map(path: Path, source: Path, root: Path | str, *edits: tuple[str, str]) -> Path:
    """The shipped map ``source`` written at ``path`` with the site's install directory ``root``
    for the one it ships with (``root: /var/www/...``), and each ``(old, new)`` of ``edits``."""
    text = source.read_text(encoding="utf-8")
    shipped = re.search(r"^\s*root: (/var/www/\S+)$", text, re.M)
    assert shipped, f"{source} names no /var/www root"
    text = text.replace(f"root: {shipped[1]}", f"root: {root}")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class PlatformSite:
    """A real platform's site on a MariaDB primary with its shipped map; a test's own site
    type adds one field, what ``install`` returned (:func:`platform_site`)."""

    env: LifecycleEnv
    primary: str
    archive: str
    root: Path
    map_path: Path

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        return mysql_site_sql(self.primary, statement, *params)


SiteT = TypeVar("SiteT", bound=PlatformSite)


@contextlib.contextmanager
def platform_site(
    site_type: Callable[..., SiteT],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    primary: str,
    archive: str,
    redis_url: str,
    map_source: Path,
    organisation: str,
    install: Callable[[str, Path], Any],
) -> Iterator[SiteT]:
    """The site in ``tmp_path``: its directories, ``map_source`` pointed at its install
    directory, ``install(primary, root)`` (build and seed its tables), and its settings in
    force for this process until the block ends (:func:`platform_env_applied`)."""
    var, files, root = platform_dirs(tmp_path)
    map_path = platform_map(tmp_path / map_source.name, map_source, root)
    installed = install(primary, root)
    env = platform_env(var, files, primary, archive, redis_url, map_path,
                       LIFECYCLE_ORGANISATION_NAME=organisation)  # fmt: skip
    with platform_env_applied(monkeypatch, env):
        yield site_type(env, primary, archive, root, map_path, installed)


def mysql_rows_by_content(url: str, like: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of every table whose name is ``LIKE like``, keyed by its whole content."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    conn = mysql_site_connect(url)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW TABLES LIKE %s", (like,))
            for t in [next(iter(r.values())) for r in cur.fetchall()]:
                cur.execute(f"SELECT * FROM `{t}`")
                out[t] = {tuple(sorted(r.items())): r for r in cur.fetchall()}
    finally:
        conn.close()
    return out


def run_every_shred_job(primary: str) -> list[int]:
    """Run every shred job the engine wrote, here (the worker on the files' host does this)."""
    eng = site_engine(primary)
    with eng.connect() as c:
        jobs = [r[0] for r in c.execute(select(ShredJob.id).order_by(ShredJob.id))]
    eng.dispose()
    for j in jobs:
        run_job(j)
    return jobs


def mysql_connect(db: str | None = None, *, multi_statements: bool = False) -> Any:
    u = make_url(MYSQL_ADMIN)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=db,
        autocommit=True,
        charset="utf8mb4",
        client_flag=CLIENT.MULTI_STATEMENTS if multi_statements else 0,
    )


def mysql_clone_script(template: str) -> str:
    """The statements that rebuild ``template``'s tables in the current database.

    Each table exactly as the server reports it (``SHOW CREATE TABLE``: keys, checks and
    foreign keys with their ``ON DELETE`` rules), then the rows of the tables that have any.
    Built once per session; :func:`mysql_clone` runs it in one round trip per test.
    """
    conn = mysql_connect(template)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY table_name",
                (template,),
            )
            tables = [r[0] for r in cur.fetchall()]
            # Tables are created in name order, before the ones their keys reference.
            creates = ["SET FOREIGN_KEY_CHECKS = 0"]
            fills = []
            for t in tables:
                cur.execute(f"SHOW CREATE TABLE `{t}`")
                # The template's counter is not part of the schema (CREATE ... LIKE drops it too).
                creates.append(re.sub(r" AUTO_INCREMENT=\d+", "", cur.fetchone()[1]))
                cur.execute(f"SELECT EXISTS (SELECT 1 FROM `{t}`)")
                if cur.fetchone()[0]:
                    fills.append(f"INSERT INTO `{t}` SELECT * FROM `{template}`.`{t}`")
    finally:
        conn.close()
    return ";\n".join([*creates, *fills, "SET FOREIGN_KEY_CHECKS = 1"])


def mysql_clone(name: str, script: str) -> None:
    """Create database ``name`` and run ``script`` (:func:`mysql_clone_script`) in it."""
    conn = mysql_connect(multi_statements=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4;\nUSE `{name}`;\n{script}")
            while cur.nextset():  # every statement's result, so an error in any one is raised
                pass
    finally:
        conn.close()


def mysql_exec(sql: str, db: str | None = None) -> None:
    conn = mysql_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def mysql_url(db: str) -> str:
    base = MYSQL_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"mysql+pymysql://{base}/{db}?charset=utf8mb4"


@dataclass
class Gnuboard5Site:
    url: str  # its MariaDB database
    root: Path  # the install directory (data/file/..., data/member/...)
    tables: list[str]
    seeded: Any  # tests.fixtures.gnuboard5.Seeded


def assert_map_fits_with_demo_rrns(r: subprocess.CompletedProcess[str]) -> None:
    """`datamap check` on a demo-seeded site: the map fits, and the check still exits 1 because
    the demo's members hold RRNs the demo map flags without a statutory basis (on purpose)."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "fits (" in r.stdout and "without a statutory basis: rrn" in r.stdout, r.stdout
    assert ": OK" not in r.stdout


def wait_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The one error line a failed `--wait` command ends with.

    `--wait` prints a progress line whenever what a request waits for changes ("request 1
    (dispatched): waiting for a worker to pick it up"); how many depends on timing, so only
    their form is checked. The error itself is exactly one line.
    """
    *progress, last = r.stderr.strip().splitlines() or [""]
    # The forms lifecycle/cli/waiting.py prints: a request's reason, or a job's task hand-over.
    form = re.compile(r"request \d+ \([\w ]+\): |[\w ]+: (following task|task \S+ ended) ")
    assert all(form.match(line) for line in progress), r.stderr
    assert last.startswith("lifecycle: error: "), r.stderr
    return last


def start_beat(env: LifecycleEnv, log: Path, loglevel: str = "INFO") -> subprocess.Popen[bytes]:
    """A real `celery beat` with ``env``'s settings, logging to ``log``, in its own session (so
    `stop_group` stops it and nothing it started)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", loglevel],
        env=env.environ(),
        cwd=env.var_dir.parent,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
