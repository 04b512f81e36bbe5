"""Benchmark: one withdrawal's residue check on a 1,000,000-member site, vs a naive full scan,
and beside the withdrawal's own time.

Builds the demo site (models/demo_site.py, the shipped demo map) on a fresh PostgreSQL and a
fresh MariaDB database, seeded server-side (``generate_series`` / MariaDB's ``seq_1_to_N``):
N members (login id, email, mobile, address), one counselling record and one payment each
(mapped tables), and two tables the map does not know: ``legacy_notes`` (one free-text note
per member quoting their email, and a JSON blob with their mobile number) and ``legacy_log``
(one access line per member, no identity). About 5 x N rows.

Then, on each server, inside one transaction that is rolled back at the end (so the runs see
the same data): member N/2's identities are captured (:func:`capture_member`), their member,
counselling and payment rows deleted (as the destroy step does), and:

- **residue** (the project): :func:`lifecycle.engine.residue.scan` with the default budget
  (index probes; one ``SUM(CASE …)`` pass per table over the columns whose 500-row sample
  holds an email or a mobile number). Best of 2 runs.
- **baseline** (naive, same run, same transaction): for every text column of every table and
  every identity as the member's row held it (email, mobile, login id), one
  ``SELECT count(*) … WHERE lower(col) LIKE '%value%'``.

Both must find member N/2's note and blob in ``legacy_notes``; the figure is seconds for one
withdrawal, the ratio is residue / baseline.

Then (issue 26 item 5: the residue check's cost beside the withdrawal's own) --withdrawals
members (default 3, spread over the ids) are withdrawn for real on that same site and server,
committed: each request is submitted as the Python client does and carried out in this process
by :func:`lifecycle.rights.withdrawal.carry_out`, the function the ``withdraw`` task runs (a
PostgreSQL archive database of its own, a private Redis for what the steps enqueue, a master
key). For each withdrawal it prints the whole run's time, the residue check's own (the verdict's
``seconds``, which the scan measures itself) and the rest, the withdrawal's own time. Their notes
remain in ``legacy_notes``, so each request ends ``needs_attention``, as it should.

    .venv/bin/python bench/bench_residue.py --members 1000000
    .venv/bin/python bench/bench_residue.py --members 100000 --only postgresql --withdrawals 5

Everything it created is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, delete, func, inspect, select, text  # noqa: E402
from sqlalchemy import types as sqltypes  # noqa: E402
from sqlalchemy.engine import URL, make_url  # noqa: E402

from lifecycle.core import db, migrate  # noqa: E402
from lifecycle.core.settings import get_settings, reset_settings_cache  # noqa: E402
from lifecycle.engine import residue  # noqa: E402
from lifecycle.engine.context import clear_context_cache, get_context  # noqa: E402
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal  # noqa: E402
from models import demo_site  # noqa: E402
from tests.helpers import start_redis  # noqa: E402

LEGACY = [
    "CREATE TABLE legacy_notes (id BIGINT PRIMARY KEY, body TEXT, extra TEXT)",
    "CREATE TABLE legacy_log (id BIGINT PRIMARY KEY, line TEXT, agent VARCHAR(200))",
]


def _seed_pg(conn: Any, n: int) -> None:
    g = f"generate_series(1, {n}) g"
    mobile = "'010-' || lpad((g / 10000)::text, 4, '0') || '-' || lpad((g % 10000)::text, 4, '0')"
    conn.execute(text(
        "INSERT INTO members (id, login_id, password_hash, name, mobile, email, home_address, "
        "hobbies, status, joined_at) SELECT g, 'user' || lpad(g::text, 7, '0'), 'argon2$x', "
        f"'회원' || g, {mobile}, 'member' || g || '@example.test', "
        f"'서울특별시 중구 세종대로 ' || g, '등산', 'active', now() FROM {g}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO counselling_records (member_id, session_at, counsellor, notes) "
        f"SELECT g, now(), '김상담', '상담 내용 기록 ' || g || '회차, 특이사항 없음' FROM {g}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO payments (member_id, amount, method, card_last4, payer_name, paid_at) "
        f"SELECT g, 50000, 'card', '1234', '회원' || g, now() FROM {g}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO legacy_notes (id, body, extra) SELECT g, '문의 회신 member' || g || "
        f"'@example.test 로 보냄', '{{\"tel\": \"' || {mobile} || '\"}}' FROM {g}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO legacy_log (id, line, agent) SELECT g, 'GET /board/list?page=' || g || "
        f"' 200', 'Mozilla/5.0' FROM {g}"
    ))  # fmt: skip


def _seed_my(conn: Any, n: int) -> None:
    seq = f"seq_1_to_{n}"
    mobile = "CONCAT('010-', LPAD(seq DIV 10000, 4, '0'), '-', LPAD(seq MOD 10000, 4, '0'))"
    conn.execute(text(
        "INSERT INTO members (id, login_id, password_hash, name, mobile, email, home_address, "
        "hobbies, status, joined_at) SELECT seq, CONCAT('user', LPAD(seq, 7, '0')), 'argon2$x', "
        f"CONCAT('회원', seq), {mobile}, CONCAT('member', seq, '@example.test'), "
        f"CONCAT('서울특별시 중구 세종대로 ', seq), '등산', 'active', NOW() FROM {seq}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO counselling_records (member_id, session_at, counsellor, notes) "
        "SELECT seq, NOW(), '김상담', CONCAT('상담 내용 기록 ', seq, '회차, 특이사항 없음') "
        f"FROM {seq}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO payments (member_id, amount, method, card_last4, payer_name, paid_at) "
        f"SELECT seq, 50000, 'card', '1234', CONCAT('회원', seq), NOW() FROM {seq}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO legacy_notes (id, body, extra) SELECT seq, CONCAT('문의 회신 member', seq, "
        f"'@example.test 로 보냄'), CONCAT('{{\"tel\": \"', {mobile}, '\"}}') FROM {seq}"
    ))  # fmt: skip
    conn.execute(text(
        "INSERT INTO legacy_log (id, line, agent) SELECT seq, CONCAT('GET /board/list?page=', "
        f"seq, ' 200'), 'Mozilla/5.0' FROM {seq}"
    ))  # fmt: skip


def _naive(conn: Any, values: list[str]) -> tuple[dict[str, int], int]:
    """Every text column of every table, every value: one LIKE '%value%' scan each."""
    insp = inspect(conn)
    found: dict[str, int] = {}
    queries = 0
    for name in sorted(insp.get_table_names()):
        if name.startswith(("lifecycle_", "alembic_version")):
            continue
        for col in insp.get_columns(name):
            if not isinstance(col["type"], sqltypes.String | sqltypes.JSON):
                continue
            c = col["name"]
            for v in values:
                qc = conn.dialect.identifier_preparer.quote(c)
                qt = conn.dialect.identifier_preparer.quote(name)
                expr = f"CAST({qc} AS TEXT)" if conn.dialect.name == "postgresql" else qc
                n = conn.execute(
                    text(f"SELECT count(*) FROM {qt} WHERE lower({expr}) LIKE :p"),
                    {"p": f"%{v.lower()}%"},
                ).scalar_one()
                queries += 1
                if n:
                    found[f"{name}.{c}"] = found.get(f"{name}.{c}", 0) + int(n)
    return found, queries


def _withdraw(ctx: Any, members: list[int]) -> list[dict[str, Any]]:
    """Each member withdrawn for real, one after the other, as the ``withdraw`` task does it."""
    runs = []
    for mid in members:
        rid = submit_withdrawal(ctx, mid)
        t = time.perf_counter()
        out = carry_out(ctx, rid, task_id=f"bench-{rid}")
        whole = time.perf_counter() - t
        check = out.get("residue") or {}
        if "seconds" not in check:
            raise SystemExit(f"withdrawal of member {mid} ran no residue check: {out}")
        res_s = float(check["seconds"])
        runs.append({"member": mid, "state": out["state"], "whole_s": whole,
                     "residue_s": res_s, "own_s": whole - res_s,
                     "found": int(check.get("found", 0))})  # fmt: skip
    return runs


def run_one(
    kind: str, url: URL, members: int, withdrawals: int, lifecycle_env: dict[str, str], work: Path
) -> dict[str, Any]:
    tmp = work / kind
    tmp.mkdir()
    for k in [k for k in os.environ if k.startswith("LIFECYCLE_")]:
        del os.environ[k]
    os.environ.update({
        "LIFECYCLE_VAR_DIR": str(tmp / "var"),
        "LIFECYCLE_PRIMARY_DATABASE_URL": url.render_as_string(hide_password=False),
        "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
        **lifecycle_env,
    })  # fmt: skip
    reset_settings_cache()
    # Imported once the settings are the benchmark's: importing it builds the Celery app from
    # the settings of that moment (the shell's embedded default would make ./var/broker).
    from workers.app import reconfigure

    reconfigure()
    clear_context_cache()
    eng = create_engine(url)
    demo_site.metadata.create_all(eng)
    t = time.perf_counter()
    with eng.begin() as conn:
        for stmt in LEGACY:
            conn.execute(text(stmt))
        (_seed_pg if kind == "postgresql" else _seed_my)(conn, members)
    with eng.begin() as conn:
        if kind == "postgresql":
            conn.execute(text("ANALYZE"))
        else:
            for name in ("members", "counselling_records", "payments", "legacy_notes",
                         "legacy_log"):  # fmt: skip
                conn.execute(text(f"ANALYZE TABLE {name}"))
    seeded = time.perf_counter() - t
    print(f"[{kind}] seeded {5 * members:,} rows in {seeded:.1f}s", flush=True)
    # The map's consent purposes live in the lifecycle's own tables (lifecycle_consents).
    migrate.upgrade("primary")
    migrate.upgrade("archive")
    ctx = get_context()
    budget = residue.Budget.from_settings(get_settings())
    leaver = members // 2
    out: dict[str, Any] = {"kind": kind, "members": members, "seed_s": seeded}
    with ctx.primary.connect() as conn:
        tx = conn.begin()
        st = ctx.subject_table
        ids = residue.capture_member(conn, ctx.datamap, st, leaver)
        who = select(st.c.email, st.c.mobile, st.c.login_id).where(st.c.id == leaver)
        row = conn.execute(who).one()
        for name in ("counselling_records", "payments"):
            t_ = ctx.table(name)
            conn.execute(delete(t_).where(t_.c.member_id == leaver))
        conn.execute(delete(st).where(st.c.id == leaver))
        # Warm the caches alike for both: one count per table.
        for name in ("members", "counselling_records", "payments", "legacy_notes", "legacy_log"):
            conn.execute(select(func.count()).select_from(text(name))).scalar_one()
        runs = []
        for _ in range(2):
            t = time.perf_counter()
            res = residue.scan(conn, ctx.datamap, ids, kept=residue.kept_in_withdrawal,
                               budget=budget)  # fmt: skip
            runs.append(time.perf_counter() - t)
        out["residue_s"] = min(runs)
        out["residue"] = res.as_dict()
        t = time.perf_counter()
        naive, queries = _naive(conn, [str(v) for v in row])
        out["base_s"] = time.perf_counter() - t
        out["base_queries"] = queries
        out["base_found"] = naive
        tx.rollback()
    out["load_before"] = os.getloadavg()
    picks = sorted({max(1, (i + 1) * members // (withdrawals + 1)) for i in range(withdrawals)})
    out["withdrawals"] = _withdraw(ctx, picks) if withdrawals else []
    out["load_after"] = os.getloadavg()
    eng.dispose()
    clear_context_cache()
    r = out["residue"]
    print(
        f"[{kind}] residue: {out['residue_s']:.2f}s (found {r['found']}, {r['searched']} columns "
        f"searched, {r['probed']} probed, {r['sampled_out']} sampled out, incomplete: "
        f"{r['incomplete']})",
        flush=True,
    )
    print(
        f"[{kind}] naive baseline: {out['base_s']:.2f}s ({queries} LIKE scans, found {naive})",
        flush=True,
    )
    for w in out["withdrawals"]:
        print(
            f"[{kind}] withdrawal of member {w['member']}: {w['whole_s']:.2f}s in all, of which "
            f"the residue check {w['residue_s']:.2f}s (found {w['found']}) and the rest "
            f"{w['own_s']:.2f}s; ended {w['state']}",
            flush=True,
        )
    print(f"[{kind}] load average during the withdrawals: {_load(out['load_before'])} -> "
          f"{_load(out['load_after'])}", flush=True)  # fmt: skip
    return out


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in avg)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--withdrawals", type=int, default=3,
                    help="members withdrawn for real after the residue runs (0: none)")  # fmt: skip
    ap.add_argument("--only", choices=("postgresql", "mariadb"), default=None)
    env = os.environ.get
    ap.add_argument("--mysql", default=env("LIFECYCLE_TEST_MYSQL_URL", "mysql://root@127.0.0.1/"))
    ap.add_argument(
        "--pg", default=env("LIFECYCLE_TEST_PG_URL", "postgresql://postgres@127.0.0.1/postgres")
    )
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    # Each withdrawal parks for the notes it leaves behind, with a warning of two lines; the
    # figures below say it once.
    logging.getLogger("lifecycle").setLevel(logging.ERROR)
    if args.members < 2:
        ap.error("--members must be at least 2")
    if not 0 <= args.withdrawals < args.members:
        ap.error("--withdrawals must be at least 0 and fewer than --members")
    tag = uuid.uuid4().hex[:8]
    name = f"lcb_residue_{tag}"
    pg_admin = make_url(args.pg.replace("postgresql://", "postgresql+psycopg://", 1))
    my_admin = make_url(args.mysql.replace("mysql://", "mysql+pymysql://", 1))
    targets = {
        "postgresql": (pg_admin, pg_admin.set(database=name)),
        "mariadb": (my_admin.set(query={"charset": "utf8mb4"}),
                    my_admin.set(database=name, query={"charset": "utf8mb4"})),
    }  # fmt: skip
    print(f"load average at the start: {_load(os.getloadavg())}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-residue-"))
    master = tmp / "master.key"
    master.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
    master.chmod(0o600)
    # What the withdrawal steps enqueue (shred jobs, notices) goes to a Redis of its own.
    redis = start_redis(tmp / "redis")
    pg_sys = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    rows = []
    try:
        for kind, (admin, url) in targets.items():
            if args.only and kind != args.only:
                continue
            # The lifecycle's archive stays PostgreSQL for both primaries, a fresh one each.
            archive = f"{name}_{kind[:2]}_a"
            with pg_sys.connect() as c:
                c.execute(text(f'CREATE DATABASE "{archive}"'))
            lifecycle_env = {
                "LIFECYCLE_ARCHIVE_DATABASE_URL": pg_admin.set(database=archive).render_as_string(
                    hide_password=False
                ),
                "LIFECYCLE_MASTER_KEY_FILE": str(master),
                "LIFECYCLE_BROKER_URL": redis.url,
                "LIFECYCLE_RESULT_BACKEND": redis.url,
                "LIFECYCLE_HOST_NAME": "bench",
            }
            adm = create_engine(admin, isolation_level="AUTOCOMMIT")
            q = '"' if kind == "postgresql" else "`"
            extra = "" if kind == "postgresql" else " CHARACTER SET utf8mb4"
            with adm.connect() as c:
                c.execute(text(f"CREATE DATABASE {q}{name}{q}{extra}"))
            try:
                rows.append(run_one(kind, url, args.members, args.withdrawals, lifecycle_env, tmp))
            finally:
                if not args.keep:
                    db.dispose_all()
                    with adm.connect() as c:
                        force = " WITH (FORCE)" if kind == "postgresql" else ""
                        c.execute(text(f"DROP DATABASE IF EXISTS {q}{name}{q}{force}"))
                    with pg_sys.connect() as c:
                        c.execute(text(f'DROP DATABASE IF EXISTS "{archive}" WITH (FORCE)'))
                adm.dispose()
    finally:
        pg_sys.dispose()
        assert redis.proc is not None
        redis.proc.terminate()
        redis.proc.wait(10)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'primary':>10}  {'members':>10}  {'residue s':>9}  {'naive s':>8}  {'ratio':>6}")
    for r in rows:
        print(f"{r['kind']:>10}  {r['members']:>10,}  {r['residue_s']:>9.2f}  "
              f"{r['base_s']:>8.2f}  {r['residue_s'] / r['base_s']:>6.3f}")  # fmt: skip
    print()
    print("withdrawals carried out (median of each; share: the residue check's part of the whole)")
    print(f"{'primary':>10}  {'members':>10}  {'n':>3}  {'own s':>7}  {'residue s':>9}  "
          f"{'whole s':>7}  {'share':>6}")  # fmt: skip
    for r in rows:
        ws = r["withdrawals"]
        if not ws:
            continue
        own = statistics.median(w["own_s"] for w in ws)
        res = statistics.median(w["residue_s"] for w in ws)
        whole = statistics.median(w["whole_s"] for w in ws)
        share = statistics.median(w["residue_s"] / w["whole_s"] for w in ws)
        print(f"{r['kind']:>10}  {r['members']:>10,}  {len(ws):>3}  {own:>7.2f}  {res:>9.2f}  "
              f"{whole:>7.2f}  {share:>6.1%}")  # fmt: skip
    print(f"load average at the end: {_load(os.getloadavg())}")


if __name__ == "__main__":
    main()
