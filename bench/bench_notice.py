"""Benchmark: a policy notice to N members (default 100,000) through a local SMTP sink.

Project figure: `lifecycle notice policy ... --wait` end to end (set-based fan-out of N rows,
batch tasks on real Celery workers over Redis, one reused SMTP connection per batch, every
member's row marked sent in PostgreSQL), in messages/s.
Baseline, same run, same sink: one Python process sending the same N messages (same bytes,
built by the same builder) over one reused ``smtplib`` connection, nothing recorded anywhere.

The sink is aiosmtpd in its own process with a handler that only counts (and checks that every
recipient got exactly one message).

Second baseline, when Postfix's test tools are installed (Debian package ``postfix``; the
daemon need not run): ``smtp-source`` (C) sending the same number of messages of the same size
to ``smtp-sink`` (C) over as many parallel, reused connections as the project has workers. That
is the SMTP protocol's limit on this machine, with no Python on either end.

The global rate limit is off (its default). Creates its own PostgreSQL databases
(lct_bench_notice_*) and its own redis-server, and removes both.

    .venv/bin/python bench/bench_notice.py [--members 100000] [--workers 3]
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lifecycle.channels.mailer import MessageBuilder  # noqa: E402
from lifecycle.channels.templates import policy_notice  # noqa: E402
from tests.helpers import free_port, stop_group, wait_port  # noqa: E402

MAIL_FROM = "privacy@maumteo.example"
VERSION = "bench-1"
TITLE = "상담기록 보존기간 변경"
BODY = (
    "제3조(처리하는 개인정보의 항목)이 변경됩니다.\n"
    "상담 예약 시 수집 항목에서 '직장'을 삭제합니다.\n"
)


def _sink_main(port: int, count, dupes, first, last, ready) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from aiosmtpd.controller import Controller

    seen: set[str] = set()

    class Counting:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            for rcpt in envelope.rcpt_tos:
                if rcpt in seen:
                    dupes.value += 1
                seen.add(rcpt)
            now = time.time()
            if count.value == 0:
                first.value = now
            last.value = now
            count.value += len(envelope.rcpt_tos)
            return "250 OK"

    ctl = Controller(Counting(), hostname="127.0.0.1", port=port)
    ctl.start()
    ready.set()
    signal.sigwait({signal.SIGTERM})
    ctl.stop()
    del asyncio


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        ctx = mp.get_context("spawn")
        self.count = ctx.Value("q", 0, lock=False)
        self.dupes = ctx.Value("q", 0, lock=False)
        self.first = ctx.Value("d", 0.0, lock=False)
        self.last = ctx.Value("d", 0.0, lock=False)
        ready = ctx.Event()
        self.proc = ctx.Process(
            target=_sink_main,
            args=(self.port, self.count, self.dupes, self.first, self.last, ready),
            daemon=True,
        )
        self.proc.start()
        ready.wait(30)

    def reset(self) -> None:
        # Only the parent writes here, between runs, while nothing is sending.
        self.count.value = 0

    def stop(self) -> None:
        if self.proc.pid:
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.join(10)


# -- baseline ------------------------------------------------------------------------------------


def baseline(port: int, n: int) -> float:
    from datetime import date

    r = policy_notice(VERSION, TITLE, BODY, date(2026, 12, 1))
    builder = MessageBuilder(MAIL_FROM, r.subject, r.body)
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    started = time.perf_counter()
    for i in range(1, n + 1):
        to = f"base{i}@example.test"
        smtp.sendmail(MAIL_FROM, [to], builder.build(to, f"notice-0-{i}@maumteo.example"))
    elapsed = time.perf_counter() - started
    smtp.quit()
    return elapsed


def c_baseline(n: int, sessions: int, body_len: int) -> float | None:
    """Seconds for smtp-source to send ``n`` messages to smtp-sink; None if not installed."""
    source, sink = shutil.which("smtp-source"), shutil.which("smtp-sink")
    if not source or not sink:
        return None
    port = free_port()
    # As root, smtp-sink insists on dropping privileges once its socket is open.
    drop = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink_proc = subprocess.Popen(
        [sink, *drop, f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_port(port)
        started = time.perf_counter()
        subprocess.run(
            [source, "-d", "-s", str(sessions), "-m", str(n), "-l", str(body_len),
             "-f", MAIL_FROM, "-t", "base@example.test", "-N", f"127.0.0.1:{port}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600,
        )  # fmt: skip
        return time.perf_counter() - started
    finally:
        stop_group(sink_proc, grace=5)


def _message_size() -> tuple[int, int]:
    """(whole message, body after the headers) in bytes, as the project sends them."""
    from datetime import date

    r = policy_notice(VERSION, TITLE, BODY, date(2026, 12, 1))
    msg = MessageBuilder(MAIL_FROM, r.subject, r.body).build(
        "member1@example.test", "notice-0-1@maumteo.example"
    )
    body = msg.partition(b"\r\n\r\n")[2]
    return len(msg), len(body)


# -- the project ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=3, help="worker processes (-c)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    n = args.members

    tmp = Path(tempfile.mkdtemp(prefix="bench_notice_"))
    tag = uuid.uuid4().hex[:8]
    dbs = {"primary": f"lct_bench_notice_{tag}_p", "archive": f"lct_bench_notice_{tag}_a"}
    base = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(tmp),
         "--save", "", "--appendonly", "no", "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sink = Sink()
    worker: subprocess.Popen[bytes] | None = None
    with psycopg.connect(args.pg, autocommit=True) as admin:
        for name in dbs.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        wait_port(redis_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        env.update(
            PYTHONPATH=str(REPO),
            LIFECYCLE_VAR_DIR=str(tmp / "var"),
            LIFECYCLE_PRIMARY_DATABASE_URL=f"{base}/{dbs['primary']}",
            LIFECYCLE_ARCHIVE_DATABASE_URL=f"{base}/{dbs['archive']}",
            LIFECYCLE_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
            LIFECYCLE_RESULT_BACKEND=f"redis://127.0.0.1:{redis_port}/0",
            LIFECYCLE_SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
            LIFECYCLE_MAIL_FROM=MAIL_FROM,
            LIFECYCLE_NOTICE_BATCH_SIZE=str(args.batch_size),
            LIFECYCLE_NOTICE_RATE_PER_SECOND="0",
            # A server archive DB never gets a master key made up on the fly.
            LIFECYCLE_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        )

        def cli(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "lifecycle.cli.main", *a],
                env=env, cwd=tmp, capture_output=True, text=True, check=False,
            )  # fmt: skip

        r = cli("db", "upgrade")
        assert r.returncode == 0, r.stderr
        from sqlalchemy import create_engine, text

        from models.demo_site import metadata

        eng = create_engine(env["LIFECYCLE_PRIMARY_DATABASE_URL"])
        metadata.create_all(eng)
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO members (id, login_id, password_hash, name, email, status, "
                    "joined_at, marketing_consent) SELECT g, 'user' || g, 'x', '회원' || g, "
                    "'member' || g || '@example.test', 'active', now(), false "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": n},
            )
            conn.execute(text("ANALYZE members"))
        eng.dispose()
        body = tmp / "body.txt"
        body.write_text(BODY, encoding="utf-8")

        print(f"members: {n:,}; sink: aiosmtpd (counting handler) in its own process", flush=True)
        base_s = baseline(sink.port, n)
        base_rate = n / base_s
        assert sink.count.value == n, (sink.count.value, n)
        print(f"baseline  (1 process, 1 smtplib connection): {base_s:8.1f} s  "
              f"{base_rate:8,.0f} msg/s", flush=True)  # fmt: skip

        sink.reset()
        log = (tmp / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "notify",
             "-c", str(args.workers), "--loglevel", "INFO", "--without-mingle",
             "--without-gossip", "-n", f"bench-{tag}@%h"],
            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while b" ready." not in (tmp / "worker.log").read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, "worker did not start"
            time.sleep(0.2)
        started = time.perf_counter()
        r = cli("notice", "policy", "--version", VERSION, "--title", TITLE,
                "--body-file", str(body), "--effective-date", "2026-12-01", "--wait")  # fmt: skip
        proj_s = time.perf_counter() - started
        assert r.returncode == 0, r.stderr
        proj_rate = n / proj_s
        received, dupes = sink.count.value, sink.dupes.value
        print(f"project   ({args.workers} worker processes, batches of {args.batch_size}, "
              f"rows marked in PostgreSQL): {proj_s:8.1f} s  {proj_rate:8,.0f} msg/s",
              flush=True)  # fmt: skip
        window = sink.last.value - sink.first.value
        print(f"  {r.stdout.strip().splitlines()[-1]}; sink received {received:,}, "
              f"repeats {dupes}")  # fmt: skip
        print(f"  first to last message at the sink: {window:.1f} s = {received / window:,.0f} "
              f"msg/s (the rest is CLI start, fan-out of {n:,} rows, --wait polling)")  # fmt: skip
        if os.environ.get("BENCH_DEBUG"):
            print((tmp / "worker.log").read_text(errors="replace")[-6000:])
        print(f"ratio project/baseline: {proj_rate / base_rate:.2f}x "
              f"(machine: {os.cpu_count()} CPUs, shared with other work)")  # fmt: skip
        size, body_len = _message_size()
        c_s = c_baseline(n, args.workers, body_len)
        if c_s is None:
            print("smtp-source/smtp-sink not installed (Debian: apt-get install postfix): "
                  "no protocol-limit baseline")  # fmt: skip
        else:
            c_rate = n / c_s
            print(f"baseline 2 (smtp-source -> smtp-sink, C, {args.workers} reused sessions, "
                  f"{body_len} B body, {size} B message): {c_s:8.1f} s  {c_rate:8,.0f} msg/s"
                  )  # fmt: skip
            print(f"ratio project/protocol limit: {proj_rate / c_rate:.2f}x")
    finally:
        if worker is not None:
            stop_group(worker)
        sink.stop()
        redis.terminate()
        redis.wait(10)
        with psycopg.connect(args.pg, autocommit=True) as admin:
            for name in dbs.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
