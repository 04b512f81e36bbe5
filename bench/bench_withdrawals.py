"""Benchmark: withdrawals as the website sends them, on MariaDB, beside a plain SQL script.

Seeds the demo site (--members, default 5,000) on a MariaDB primary (PostgreSQL archive), starts
real `celery worker` processes (--concurrency, default 2) and `celery beat` (whose relay thread
dispatches the outbox every 5 s, as in production), then inserts --requests (default 1,000)
withdrawal requests one by one, each in its own autocommitted transaction, with the SQL that
docs/mysql.md gives the website (what a PHP site does when members withdraw). It waits until all
are completed and prints:

- the time from the first insert to the last completion, and requests per second;
- the latency of each request from its insert (``created_at``) to its completion
  (``updated_at`` of the completed row): p50, p95, max;
- retries seen in the worker log (``Retry in``) and failed requests;
- the load average before and after (the figures depend on it on a shared machine);

and beside it the **baseline**: the same members' rows deleted by a plain SQL script (one
``DELETE`` per table per member, children first, autocommit per member, as an admin script
would), timed on a fresh copy of the same seed, with its requests per second.

Goal (issue 26): p95 under 15 s and at least a quarter of the plain script's throughput.

    .venv/bin/python bench/bench_withdrawals.py --members 5000 --requests 1000

Everything it created is dropped at the end.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pymysql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import free_port, stop_group, wait_port  # noqa: E402

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))

# docs/mysql.md, "withdrawal-request-sql": what the website runs, with its own marker first.
MARK = "UPDATE members SET status = 'withdrawn', withdrawn_at = UTC_TIMESTAMP(6) WHERE id = %s"
REQUEST = (
    "INSERT INTO lifecycle_requests (kind, member_id, state, attempts, idempotency_key, "
    "created_at, updated_at) VALUES ('withdrawal', %s, 'received', 0, %s, UTC_TIMESTAMP(6), "
    "UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE id = id"
)


def _mysql(db: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", user="root", database=db, autocommit=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--members", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--keep-log", type=Path, help="copy the workers' log here (no member data)")
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:8]
    site, copy, archive = f"lcw_{tag}_site", f"lcw_{tag}_plain", f"lcw_{tag}_archive"
    tmp = Path(tempfile.mkdtemp(prefix="bench_withdrawals_"))
    admin_pg = psycopg.connect(args.pg, autocommit=True)
    admin_my = _mysql()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        admin_pg.execute(f'CREATE DATABASE "{archive}"')
        with admin_my.cursor() as c:
            for db in (site, copy):
                c.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        master = tmp / "master.key"
        master.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        master.chmod(0o600)
        rport = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(rport), "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        wait_port(rport)
        rurl = f"redis://127.0.0.1:{rport}/0"
        pg_base = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)

        def env_for(db: str) -> dict[str, str]:
            return {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")} | {
                "PYTHONPATH": str(REPO),
                "LIFECYCLE_VAR_DIR": str(tmp / "var"),
                "LIFECYCLE_PRIMARY_DATABASE_URL": f"mysql://root@127.0.0.1:3306/{db}",
                "LIFECYCLE_ARCHIVE_DATABASE_URL": f"{pg_base}/{archive}",
                "LIFECYCLE_MASTER_KEY_FILE": str(master),
                "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
                "LIFECYCLE_BROKER_URL": rurl,
                "LIFECYCLE_RESULT_BACKEND": rurl,
                "LIFECYCLE_HOST_NAME": "bench",
            }

        env = env_for(site)
        t0 = time.perf_counter()
        for db in (site, copy):
            for cmd in (["db", "upgrade"], ["demo", "seed", "--members", str(args.members)]):
                subprocess.run(
                    [LIFECYCLE, *cmd], env=env_for(db), cwd=tmp, check=True, capture_output=True
                )
        print(f"seeded {args.members} members twice in {time.perf_counter() - t0:.0f}s")
        with _mysql(site).cursor() as c:
            c.execute(
                "SELECT id FROM members WHERE status = 'active' ORDER BY id LIMIT %s",
                (args.requests,),
            )
            members = [int(r[0]) for r in c.fetchall()]
        if len(members) < args.requests:
            raise SystemExit(f"only {len(members)} active members; seed more (--members)")

        log = (tmp / "worker.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-c",
             str(args.concurrency), "--loglevel", "INFO", "-n", f"bench-{tag}@%h"],
            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "WARNING"],
            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip

        # -- the website's withdrawals, one transaction each ---------------------------------
        web = _mysql(site)
        web.autocommit(False)
        load_before = os.getloadavg()
        start = time.perf_counter()
        with web.cursor() as c:
            for mid in members:
                c.execute(MARK, (mid,))
                c.execute(REQUEST, (mid, f"withdraw-{mid}-{tag}"))
                web.commit()
        inserted = time.perf_counter() - start
        print(f"inserted {len(members)} requests in {inserted:.1f}s")
        deadline = time.monotonic() + 3600
        with _mysql(site) as watch:
            while True:
                with watch.cursor() as c:
                    c.execute(
                        "SELECT sum(state = 'completed'), sum(state IN ('failed', "
                        "'needs_attention')) FROM lifecycle_requests WHERE kind = 'withdrawal'"
                    )
                    done, failed = (int(v or 0) for v in c.fetchone())
                if done + failed >= len(members):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"gave up after an hour: {done} completed, {failed} failed")
                time.sleep(0.2)
            total = time.perf_counter() - start
            with watch.cursor() as c:
                c.execute(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, updated_at) / 1e6 "
                    "FROM lifecycle_requests WHERE kind = 'withdrawal' AND state = 'completed'"
                )
                latency = [float(r[0]) for r in c.fetchall()]
        worker_log = (tmp / "worker.log").read_bytes()
        retries = worker_log.count(b"Retry in")
        # How the burst was carried: the size of each group its tasks formed.
        found = re.findall(rb"withdrawal group of \d+: (\d+) requests", worker_log)
        groups = [int(n) for n in found]
        if args.keep_log:
            shutil.copyfile(tmp / "worker.log", args.keep_log)

        # -- baseline: the same members deleted by a plain SQL script ------------------------
        with _mysql(copy).cursor() as c:
            c.execute(
                "SELECT table_name FROM information_schema.key_column_usage WHERE "
                "table_schema = %s AND referenced_table_name = 'members' AND column_name = "
                "'member_id'",
                (copy,),
            )
            children = sorted({r[0] for r in c.fetchall()})
            c.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
                "AND column_name = 'member_id' AND table_name NOT LIKE 'lifecycle%%'",
                (copy,),
            )
            children = sorted({*children, *(r[0] for r in c.fetchall())})
        plain = _mysql(copy)
        plain.autocommit(False)
        b0 = time.perf_counter()
        with plain.cursor() as c:
            c.execute("SET FOREIGN_KEY_CHECKS = 0")
            for mid in members:
                for t in children:
                    c.execute(f"DELETE FROM `{t}` WHERE member_id = %s", (mid,))
                c.execute("DELETE FROM members WHERE id = %s", (mid,))
                plain.commit()
        baseline = time.perf_counter() - b0
        load_after = os.getloadavg()

        n = len(latency)
        rate, base_rate = n / total, len(members) / baseline
        print(f"\ncompleted {n} of {len(members)} withdrawals ({failed} failed), "
              f"{retries} retries in the worker log")  # fmt: skip
        print(f"{'':28} {'time':>9} {'req/s':>8} {'p50':>7} {'p95':>7} {'max':>7}")
        print(f"{'lifecycle (workers + relay)':28} {total:8.1f}s {rate:8.1f} "
              f"{statistics.median(latency):6.1f}s {_pct(latency, 0.95):6.1f}s "
              f"{max(latency):6.1f}s")  # fmt: skip
        print(f"{'plain SQL script (baseline)':28} {baseline:8.1f}s {base_rate:8.1f}")
        print(f"groups: {len(groups)} carrying {sum(groups)} requests (sizes "
              f"{min(groups, default=0)}-{max(groups, default=0)}); "
              f"{len(members) - sum(groups)} carried alone")  # fmt: skip
        print(
            f"throughput ratio (lifecycle / plain script): {rate / base_rate:.3f} "
            "(goal >= 0.25); p95 goal < 15 s"
        )
        # The machine may be shared: figures mean little without its load beside them.
        print(
            "load average (1/5/15 min) before: {:.1f} {:.1f} {:.1f}, after: {:.1f} {:.1f} {:.1f} "
            "on {} CPUs".format(*load_before, *load_after, os.cpu_count())
        )
    finally:
        for p in reversed(procs):
            stop_group(p)
        with admin_my.cursor() as c:
            for db in (site, copy):
                c.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin_pg.execute(f'DROP DATABASE IF EXISTS "{archive}" WITH (FORCE)')
        # Its master key and the worker's log: nothing of the run stays behind.
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
