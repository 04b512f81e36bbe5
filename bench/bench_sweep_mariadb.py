"""Benchmark: the sweep on a MariaDB primary (Gnuboard5 through the shipped map) vs a raw baseline.

Builds two identical Gnuboard5 5.6 sites (InnoDB) on the MariaDB server named by --mysql, each
with N withdrawn members (mb_leave_date set) who have posts and comments on two boards, an
upload per post, points, memos both ways, an order and its cart line; the archive is a
PostgreSQL database on --pg. Then:

- **sweep**: `run_sweep` as the worker runs it on a MySQL-family primary (the coordinator does
  every batch itself): the data map expanded against the live tables, per-row plans, orders and
  carts encrypted into the archive under bucket keys, every other row deleted, memos and member
  rows cleared, shred jobs for the uploads and icons, hash-chained ledger entries.
- **baseline**, on the second site: the same rows leave with the plainest client path:
  ``SELECT *`` of the retained tables' rows (orders, carts) piped into a PostgreSQL ``COPY`` of
  a plain text copy, then one ``DELETE`` per member table and one ``UPDATE`` clearing the member
  rows. No encryption, no ledger, no per-row decisions, no files.

The figure is seconds for the same work; the ratio is sweep / baseline.

    .venv/bin/python bench/bench_sweep_mariadb.py --members 5000

Everything it created is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
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

from tests.fixtures import gnuboard5 as g5  # noqa: E402
from tests.helpers import start_redis  # noqa: E402

MEMBER_TABLES = ("g5_board_file", "g5_write_free", "g5_write_qna", "g5_point", "g5_memo",
                 "g5_shop_cart", "g5_shop_order")  # fmt: skip
RETAINED = ("g5_shop_order", "g5_shop_cart")


def _my(admin: str, db: str | None = None) -> Any:
    from sqlalchemy.engine import make_url

    u = make_url(admin)
    conn = pymysql.connect(
        host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
        password=u.password or "", database=db, charset="utf8mb4", autocommit=True,
    )  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
    return conn


def _my_url(admin: str, db: str) -> str:
    base = admin.split("://", 1)[1].rsplit("/", 1)[0]
    return f"mysql+pymysql://{base}/{db}?charset=utf8mb4"


def _pg_url(admin: str, db: str) -> str:
    return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + db


def seed(admin: str, db: str, members: int, root: Path) -> dict[str, int]:
    conn = _my(admin, db)
    cur = conn.cursor()
    for stmt in g5.create_statements(engine="InnoDB"):
        cur.execute(stmt)
    ids = [f"m{i:07d}" for i in range(members)]
    cur.executemany(
        "INSERT INTO g5_member (mb_id, mb_password, mb_name, mb_nick, mb_email, mb_hp, "
        "mb_addr1, mb_datetime, mb_today_login, mb_ip, mb_leave_date, mb_signature, mb_memo, "
        "mb_lost_certify, mb_profile) VALUES (%s, 'x', '홍길동', '길동', %s, '010-1234-5678', "
        "'서울특별시', NOW(), NOW(), '10.0.0.1', '20260901', '', '', '', '')",
        [(m, f"{m}@mail.example") for m in ids],
    )
    counts = {"g5_member": members}
    for board in ("free", "qna"):
        t = f"g5_write_{board}"
        rows = []
        for i, m in enumerate(ids):
            other = ids[(i + 1) % members]
            rows.append((i * 2 + 1, i * 2 + 1, 0, m, "글 내용 010-1234-5678"))
            rows.append((i * 2 + 2, i * 2 + 1, 1, other, "댓글"))
        cur.executemany(
            f"INSERT INTO {t} (wr_id, wr_parent, wr_is_comment, mb_id, wr_content, wr_link1, "
            "wr_link2, wr_name, wr_email, wr_password, wr_datetime, wr_last, wr_ip) "
            "VALUES (%s, %s, %s, %s, %s, '', '', '홍길동', 'x@mail.example', '', NOW(), '', "
            "'10.0.2.1')",
            rows,
        )
        counts[t] = len(rows)
        cur.executemany(
            "INSERT INTO g5_board_file (bo_table, wr_id, bf_no, bf_source, bf_file, bf_content, "
            "bf_datetime) VALUES (%s, %s, 0, '사진.jpg', %s, '', NOW())",
            [(board, i * 2 + 1, f"{i:07d}_{board}.jpg") for i in range(members)],
        )
        counts["g5_board_file"] = counts.get("g5_board_file", 0) + members
    cur.executemany(
        "INSERT INTO g5_point (mb_id, po_datetime, po_content, po_point, po_rel_table, "
        "po_rel_id, po_rel_action) VALUES (%s, NOW(), '글쓰기', 10, 'free', '1', '쓰기')",
        [(m,) for m in ids],
    )
    cur.executemany(
        "INSERT INTO g5_memo (me_recv_mb_id, me_send_mb_id, me_send_datetime, me_memo, me_type, "
        "me_send_ip) VALUES (%s, %s, NOW(), '안녕하세요', %s, '10.0.3.1')",
        [r for i, m in enumerate(ids) for r in ((ids[(i + 1) % members], m, "recv"),
                                                 (ids[(i + 1) % members], m, "send"))],
    )  # fmt: skip
    cur.executemany(
        "INSERT INTO g5_shop_order (od_id, mb_id, od_name, od_email, od_hp, od_addr1, od_memo, "
        "od_shop_memo, od_mod_history, od_cash_info, od_cart_price, od_receipt_price, od_time, "
        "od_receipt_time, od_settle_case, od_ip, od_cash, od_cash_no) VALUES (%s, %s, '홍길동', "
        "'x@mail.example', '010-1234-5678', '서울특별시', '', '', '', '', 15000, 15000, NOW(), "
        "NOW(), '신용카드', '10.0.6.1', 0, '')",
        [(2026000000000 + i, m) for i, m in enumerate(ids)],
    )
    cur.executemany(
        "INSERT INTO g5_shop_cart (od_id, mb_id, it_id, it_name, ct_status, ct_history, "
        "ct_price, ct_qty, ct_time, ct_ip) VALUES (%s, %s, '1700000001', '상담 패키지', '완료', "
        "'', 15000, 1, NOW(), '10.0.6.1')",
        [(2026000000000 + i, m) for i, m in enumerate(ids)],
    )
    counts.update(g5_point=members, g5_memo=2 * members, g5_shop_order=members,
                  g5_shop_cart=members)  # fmt: skip
    cur.close()
    conn.close()
    return counts


def baseline(admin: str, db: str, pg_admin: str, archive: str) -> float:
    """The plainest path for the same rows: read, COPY into a plain table, delete, clear."""
    conn = _my(admin, db)
    cur = conn.cursor()
    t0 = time.perf_counter()
    leavers = "SELECT mb_id FROM g5_member WHERE mb_leave_date <> ''"
    with psycopg.connect(pg_admin.rsplit("/", 1)[0] + "/" + archive) as pg:
        for t in RETAINED:
            cur.execute(f"SELECT * FROM `{t}` WHERE mb_id IN ({leavers})")
            names = [d[0] for d in cur.description]
            pg.execute(f"CREATE TABLE {t} ({', '.join(f'{n} text' for n in names)})")
            with pg.cursor().copy(f"COPY {t} FROM STDIN") as cp:
                for row in cur:
                    cp.write_row([None if v is None else str(v) for v in row])
        pg.commit()
    conn.autocommit(False)
    for b in ("free", "qna"):
        cur.execute(
            f"DELETE f FROM g5_board_file f JOIN g5_write_{b} w ON f.bo_table = %s AND "
            f"w.wr_id = f.wr_id WHERE w.mb_id IN ({leavers})",
            (b,),
        )
    for t in MEMBER_TABLES[1:]:
        col = "me_send_mb_id" if t == "g5_memo" else "mb_id"
        cur.execute(f"DELETE FROM `{t}` WHERE `{col}` IN ({leavers})")
    cur.execute(
        "UPDATE g5_member SET mb_password = '', mb_name = '', mb_nick = '', mb_email = '', "
        "mb_hp = '', mb_addr1 = '', mb_ip = '' WHERE mb_leave_date <> ''"
    )
    conn.commit()
    took = time.perf_counter() - t0
    cur.close()
    conn.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=5000)
    env = os.environ.get
    ap.add_argument("--mysql", default=env("LIFECYCLE_TEST_MYSQL_URL", "mysql://root@127.0.0.1/"))
    ap.add_argument(
        "--pg", default=env("LIFECYCLE_TEST_PG_URL", "postgresql://postgres@127.0.0.1/postgres")
    )
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:8]
    my_dbs = {"sweep": f"lcb_{tag}_p", "base": f"lcb_{tag}_bp"}
    pg_dbs = {"sweep": f"lcb_{tag}_a", "base": f"lcb_{tag}_ba"}
    admin = _my(args.mysql)
    tmp = Path(tempfile.mkdtemp(prefix="bench-g5-"))
    # A private broker, as in production (shred jobs are sent to it after each commit).
    redis = start_redis(tmp / "redis")
    try:
        with admin.cursor() as cur:
            for d in my_dbs.values():
                cur.execute(f"CREATE DATABASE `{d}` CHARACTER SET utf8mb4")
        with psycopg.connect(args.pg, autocommit=True) as pg:
            for d in pg_dbs.values():
                pg.execute(f'CREATE DATABASE "{d}"')
        root = tmp / "files" / "www"
        root.mkdir(parents=True)
        map_path = tmp / "gnuboard5.yaml"
        shipped = REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5.yaml"
        map_path.write_text(
            shipped.read_text(encoding="utf-8").replace("root: /var/www/gnuboard", f"root: {root}"),
            encoding="utf-8",
        )
        env = {
            "LIFECYCLE_VAR_DIR": str(tmp / "var"),
            "LIFECYCLE_PRIMARY_DATABASE_URL": _my_url(args.mysql, my_dbs["sweep"]),
            "LIFECYCLE_ARCHIVE_DATABASE_URL": _pg_url(args.pg, pg_dbs["sweep"]),
            "LIFECYCLE_FILE_ROOTS": str(tmp / "files"),
            "LIFECYCLE_HOST_NAME": "benchhost",
            "LIFECYCLE_DATA_MAP": str(map_path),
            "LIFECYCLE_BROKER_URL": redis.url,
            "LIFECYCLE_RESULT_BACKEND": redis.url,
        }
        for k in [k for k in os.environ if k.startswith("LIFECYCLE_")]:
            del os.environ[k]
        os.environ.update(env)
        from lifecycle.core.migrate import upgrade

        t = time.perf_counter()
        upgrade("primary")
        upgrade("archive")
        counts = seed(args.mysql, my_dbs["sweep"], args.members, root)
        seed(args.mysql, my_dbs["base"], args.members, root)
        print(f"seeded 2 x {sum(counts.values())} rows in {time.perf_counter() - t:.1f}s")

        from lifecycle.engine.context import get_context
        from lifecycle.engine.sweep import run_sweep

        t0 = time.perf_counter()
        res = run_sweep(get_context())
        sweep_s = time.perf_counter() - t0
        base_s = baseline(args.mysql, my_dbs["base"], args.pg, pg_dbs["base"])
        moved = sum(counts[t] for t in RETAINED)
        print(f"members withdrawn: {args.members}; rows in retained tables moved: {moved}; "
              f"rows removed or cleared in all: {res.get('deleted_rows', 0)} + "
              f"{res.get('blanked_rows', 0)}")  # fmt: skip
        print(f"sweep (MariaDB primary, Gnuboard5 map): {sweep_s:.2f}s "
              f"({moved / sweep_s:,.0f} retained rows/s)")  # fmt: skip
        print(f"baseline (SELECT -> COPY, DELETE, UPDATE): {base_s:.2f}s "
              f"({moved / base_s:,.0f} retained rows/s)")  # fmt: skip
        print(f"ratio sweep/baseline: {sweep_s / base_s:.2f}")
    finally:
        if not args.keep:
            from lifecycle.core.db import dispose_all

            dispose_all()
            with admin.cursor() as cur:
                for d in my_dbs.values():
                    cur.execute(f"DROP DATABASE IF EXISTS `{d}`")
            with psycopg.connect(args.pg, autocommit=True) as pg:
                for d in pg_dbs.values():
                    pg.execute(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)')
        admin.close()
        if redis.proc is not None:
            redis.proc.terminate()
            redis.proc.wait(30)


if __name__ == "__main__":
    main()
