"""Profile: where one withdrawal's time goes, step by step, on a MariaDB (or PostgreSQL) primary.

Seeds the demo site (--members, default 2,000) with a PostgreSQL archive and a private Redis
broker, inserts --requests (default 20) withdrawal requests with the website's SQL, then carries
each out in this process (no Celery worker: the steps themselves), one step at a time, and
prints per step: wall time, statements sent to the primary and to the archive, and
transactions (COMMITs) on each. ``--cprofile FILE`` also writes a cProfile of all the steps
(``python -m pstats FILE``). The first request warms the caches (reflection, residue plan) and
is left out of the averages.

    .venv/bin/python bench/profile_withdrawal.py --requests 20
    .venv/bin/python bench/profile_withdrawal.py --primary pg --requests 20

Everything it created is dropped at the end.
"""

from __future__ import annotations

import argparse
import base64
import collections
import cProfile
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pymysql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_withdrawals import MARK, REQUEST  # noqa: E402
from tests.helpers import free_port, stop_group, wait_port  # noqa: E402

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))
PG_MARK = "UPDATE members SET status = 'withdrawn', withdrawn_at = now() WHERE id = :m"
PG_REQUEST = (
    "INSERT INTO lifecycle_requests (kind, member_id, state, attempts, idempotency_key, "
    "created_at, updated_at) VALUES ('withdrawal', :m, 'received', 0, :k, now(), now())"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--primary", choices=("mariadb", "pg"), default="mariadb")
    ap.add_argument("--cprofile", type=Path)
    ap.add_argument(
        "--group", type=int, default=0,
        help="carry the requests in groups of this size (the withdraw task's way) instead",
    )  # fmt: skip
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:8]
    site, archive = f"lcp_{tag}_site", f"lcp_{tag}_archive"
    tmp = Path(tempfile.mkdtemp(prefix="profile_withdrawal_"))
    admin_pg = psycopg.connect(args.pg, autocommit=True)
    admin_my = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    procs: list[subprocess.Popen[bytes]] = []
    pg_base = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        admin_pg.execute(f'CREATE DATABASE "{archive}"')
        if args.primary == "pg":
            admin_pg.execute(f'CREATE DATABASE "{site}"')
            primary_url = f"{pg_base}/{site}"
        else:
            with admin_my.cursor() as c:
                c.execute(f"CREATE DATABASE `{site}` CHARACTER SET utf8mb4")
            primary_url = f"mysql://root@127.0.0.1:3306/{site}"
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")} | {
            "PYTHONPATH": str(REPO),
            "LIFECYCLE_VAR_DIR": str(tmp / "var"),
            "LIFECYCLE_PRIMARY_DATABASE_URL": primary_url,
            "LIFECYCLE_ARCHIVE_DATABASE_URL": f"{pg_base}/{archive}",
            "LIFECYCLE_MASTER_KEY_FILE": str(master),
            "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
            "LIFECYCLE_BROKER_URL": rurl,
            "LIFECYCLE_RESULT_BACKEND": rurl,
            "LIFECYCLE_HOST_NAME": "profile",
        }
        for cmd in (["db", "upgrade"], ["demo", "seed", "--members", str(args.members)]):
            subprocess.run([LIFECYCLE, *cmd], env=env, cwd=tmp, check=True, capture_output=True)
        os.environ.update(env)
        os.chdir(tmp)
        _profile(args, tag, primary_url)
    finally:
        for p in reversed(procs):
            stop_group(p)
        if args.primary == "pg":
            admin_pg.execute(f'DROP DATABASE IF EXISTS "{site}" WITH (FORCE)')
        else:
            with admin_my.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS `{site}`")
        admin_pg.execute(f'DROP DATABASE IF EXISTS "{archive}" WITH (FORCE)')
        # Its master key and the worker's log: nothing of the run stays behind.
        shutil.rmtree(tmp, ignore_errors=True)


def _profile(args: argparse.Namespace, tag: str, primary_url: str) -> None:
    # Imported here: the lifecycle's settings are read once, from the environment main() set.
    from sqlalchemy import event, text

    from lifecycle.core import db
    from lifecycle.engine.context import get_context
    from lifecycle.requests import relay
    from lifecycle.rights.pipeline import run
    from lifecycle.rights.withdrawal import WITHDRAWAL

    ctx = get_context()
    counts: collections.Counter[str] = collections.Counter()

    def counter(which: str) -> Any:
        def before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            counts[which] += 1
            head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            if head in ("COMMIT", "SAVEPOINT", "RELEASE"):
                counts[f"{which}:{head}"] += 1

        return before

    for which, eng in (("primary", db.engine("primary")), ("archive", db.engine("archive"))):
        event.listen(eng, "before_cursor_execute", counter(which))
        event.listen(eng, "commit", lambda conn, w=which: counts.update([f"{w}:COMMIT"]))

    with db.engine("primary").begin() as conn:
        members = [
            int(r[0])
            for r in conn.execute(
                text("SELECT id FROM members WHERE status = 'active' ORDER BY id LIMIT :n"),
                {"n": args.requests},
            )
        ]
    with db.engine("primary").begin() as conn:
        for mid in members:
            if args.primary == "pg":
                conn.execute(text(PG_MARK), {"m": mid})
                conn.execute(text(PG_REQUEST), {"m": mid, "k": f"w-{mid}-{tag}"})
            else:
                conn.exec_driver_sql(MARK, (mid,))
                conn.exec_driver_sql(REQUEST, (mid, f"w-{mid}-{tag}"))
    relay.dispatch_pending()
    with db.engine("primary").begin() as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                text("SELECT id FROM lifecycle_requests WHERE kind = 'withdrawal' ORDER BY id")
            )
        ]
    prof = cProfile.Profile() if args.cprofile else None
    if args.group:
        _groups(args, ctx, ids, counts, prof)
        return
    per: dict[str, list[tuple[float, collections.Counter[str]]]] = collections.defaultdict(list)
    totals: list[float] = []
    for i, rid in enumerate(ids):
        t_req = time.perf_counter()
        while True:
            with db.engine("primary").connect() as c:
                state = c.execute(
                    text("SELECT state FROM lifecycle_requests WHERE id = :i"), {"i": rid}
                ).scalar()
            if state in ("completed", "failed", "needs_attention"):
                break
            counts.clear()
            t = time.perf_counter()
            if prof is not None and i > 0:
                prof.enable()
            run(WITHDRAWAL, rid, f"profile-{rid}", ctx=ctx, steps=1)
            if prof is not None:
                prof.disable()
            if i > 0:
                per[str(state)].append((time.perf_counter() - t, collections.Counter(counts)))
        if i > 0:
            totals.append(time.perf_counter() - t_req)
        if state != "completed":
            print(f"request {rid} ended {state}")
    n = len(totals)
    print(f"{n} withdrawals after the first, {args.primary} primary: "
          f"mean {sum(totals) / max(n, 1) * 1000:.0f} ms each")  # fmt: skip
    keys = ["primary", "primary:COMMIT", "primary:SAVEPOINT", "archive", "archive:COMMIT"]
    print(f"{'step from':18} {'ms':>7} " + " ".join(f"{k:>17}" for k in keys))
    for state, rows in per.items():
        ms = sum(r[0] for r in rows) / len(rows) * 1000
        avg = {k: sum(r[1][k] for r in rows) / len(rows) for k in keys}
        print(f"{state:18} {ms:7.1f} " + " ".join(f"{avg[k]:17.1f}" for k in keys))
    if prof is not None:
        prof.dump_stats(str(args.cprofile))
        print(f"cProfile written to {args.cprofile}")


def _groups(args: argparse.Namespace, ctx: Any, ids: list[int], counts: Any, prof: Any) -> None:
    """The withdraw task's way: the first request of each group claims the next ones
    (lifecycle/rights/withdrawal.py, groups). The first group warms the caches."""
    from lifecycle.rights import withdrawal

    stages: collections.Counter[str] = collections.Counter()
    # Each step the group runs together, timed by the state it starts from.
    step_of = {at: name for name, at, _step in withdrawal.STAGES}
    for name in ("claim_group", "run_together"):
        real = getattr(withdrawal, name)

        def timed(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                which = step_of.get(k["states"], "?") if "states" in k else _name
                stages[which] += time.perf_counter() - t

        setattr(withdrawal, name, timed)
    done = 0
    first = True
    for rid in ids:
        counts.clear()
        stages.clear()
        t = time.perf_counter()
        if prof is not None and not first:
            prof.enable()
        out = withdrawal.carry_out_group(ctx, rid, task_id=f"profile-{rid}", size=args.group)
        if prof is not None:
            prof.disable()
        group = out.get("group")
        if not group:
            continue
        n = len(group["requests"])
        took = time.perf_counter() - t
        done += n
        steps = ", ".join(f"{name} {stages[name]:.2f} s" for name, _at, _s in withdrawal.STAGES)
        print(f"group of {n} ({'warm-up' if first else 'measured'}): {took:.2f} s, "
              f"{took / n * 1000:.0f} ms a request; together {group.get('together')}; "
              f"steps together to: {steps}; claim {stages['claim_group']:.2f} s; "
              f"primary statements {counts['primary']}, commits {counts['primary:COMMIT']}; "
              f"archive statements {counts['archive']}, commits {counts['archive:COMMIT']}; "
              f"states {group['states']}")  # fmt: skip
        first = False
    if prof is not None:
        prof.dump_stats(str(args.cprofile))
        print(f"cProfile written to {args.cprofile}")


if __name__ == "__main__":
    main()
