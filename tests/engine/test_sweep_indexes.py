"""Every statement a sweep batch runs on a MariaDB primary finds its rows through an index.

A statement that scans a whole member table costs that table's size once per batch, so the
sweep's time grows with the square of the site. The Gnuboard5 site (tests/fixtures/gnuboard5.py)
is given a few thousand rows of members who stay, so that the optimiser prefers an index where
one applies; each statement of the sweep's batches is then explained, on the batch's own
connection just before it runs, and a full scan (``type ALL``) of a table with more than a
handful of rows fails the test. Gnuboard5 ships without an index on several link columns:
`lifecycle datamap check` names them (that part is asserted too), and the site gets them as an
operator following the check would.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import create_engine, event

from lifecycle.datamap.indexes import missing_indexes
from lifecycle.datamap.loader import load_datamap
from lifecycle.engine import sweep
from lifecycle.engine.context import get_context
from lifecycle.engine.mover import Scope
from tests.fixtures import gnuboard5 as g5
from tests.helpers import (
    REPO,
    Databases,
    mysql_site_connect,
    platform_dirs,
    platform_env,
    platform_env_applied,
)

pytestmark = pytest.mark.integration

MAP = REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5.yaml"
STAYING = 3000  # members who stay, with their rows: enough that an index beats a scan
PADDING = 40_000  # members (and points) who only make the site large
HANDFUL = 50  # a table this small may be scanned: reading it is cheaper than any index


def _fill(cur: Any, n: int) -> None:
    """``n`` members who stay, each with a post, a comment, an upload, points, memos both
    ways, an order and its cart line (server-side, from MariaDB's sequence tables)."""
    seq = f"seq_0_to_{n - 1}"
    me = "CONCAT('stay', LPAD(seq, 5, '0'))"
    other = f"CONCAT('stay', LPAD((seq + 1) MOD {n}, 5, '0'))"
    cur.execute(
        "INSERT INTO g5_member (mb_id, mb_password, mb_name, mb_nick, mb_email, mb_hp, "
        "mb_datetime, mb_today_login, mb_ip, mb_leave_date, mb_signature, mb_memo, "
        f"mb_lost_certify, mb_profile) SELECT {me}, 'x', '김유지', '유지', "
        f"CONCAT({me}, '@mail.example'), '010-0000-0000', NOW(), NOW(), '10.9.0.1', '', '', '', "
        f"'', '' FROM {seq}"
    )
    for board in ("free", "qna"):
        for wr_id, who in (("100000 + seq * 2", me), ("100001 + seq * 2", other)):
            cur.execute(
                f"INSERT INTO g5_write_{board} (wr_id, wr_parent, mb_id, wr_content, wr_link1, "
                "wr_link2, wr_name, wr_email, wr_password, wr_datetime, wr_last, wr_ip) "
                f"SELECT {wr_id}, 100000 + seq * 2, {who}, '글', '', '', '김유지', '', '', NOW(), "
                f"'', '10.9.2.1' FROM {seq}"
            )
        cur.execute(
            "INSERT INTO g5_board_file (bo_table, wr_id, bf_no, bf_source, bf_file, bf_content, "
            f"bf_datetime) SELECT '{board}', 100000 + seq * 2, 0, 'a.jpg', "
            f"CONCAT('stay', seq, '.jpg'), '', NOW() FROM {seq}"
        )
    cur.execute(
        "INSERT INTO g5_point (mb_id, po_datetime, po_content, po_point, po_rel_table, "
        f"po_rel_id, po_rel_action) SELECT {me}, NOW(), '글쓰기', 10, 'free', seq, '쓰기' "
        f"FROM {seq}"
    )
    for a, b in ((me, other), (other, me)):
        cur.execute(
            "INSERT INTO g5_memo (me_recv_mb_id, me_send_mb_id, me_send_datetime, me_memo, "
            f"me_send_ip) SELECT {a}, {b}, NOW(), '안녕', '10.9.3.1' FROM {seq}"
        )
    cur.execute(
        "INSERT INTO g5_shop_order (od_id, mb_id, od_name, od_memo, od_shop_memo, "
        "od_mod_history, od_cash_info, od_time) SELECT 3000000000000 + seq, "
        f"{me}, '김유지', '', '', '', '', NOW() FROM {seq}"
    )
    cur.execute(
        "INSERT INTO g5_shop_cart (od_id, mb_id, it_id, it_name, ct_status, ct_history, "
        f"ct_time) SELECT 3000000000000 + seq, {me}, '1', '상품', '완료', '', NOW() FROM {seq}"
    )
    for table, cols, vals in (
        ("g5_board_new", "bo_table, wr_id, wr_parent, bn_datetime, mb_id",
         f"'free', 100000 + seq * 2, 100000 + seq * 2, NOW(), {me}"),
        ("g5_scrap", "mb_id, bo_table, wr_id, ms_datetime", f"{me}, 'free', seq, NOW()"),
        ("g5_board_good", "bo_table, wr_id, mb_id, bg_flag, bg_datetime",
         f"'free', seq, {me}, 'good', NOW()"),
        ("g5_login", "lo_ip, mb_id, lo_datetime, lo_location, lo_url",
         f"CONCAT('10.8.', seq DIV 250, '.', seq MOD 250), {me}, NOW(), '', ''"),
    ):  # fmt: skip
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {vals} FROM {seq}")


@pytest.fixture
def site(
    tmp_path: Path,
    pg_databases: Databases,
    redis_url: str,
    mysql_primary: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, Path]]:
    var, files, root = platform_dirs(tmp_path)
    map_path = tmp_path / "gnuboard5.yaml"
    map_path.write_text(
        MAP.read_text(encoding="utf-8").replace("root: /var/www/gnuboard", f"root: {root}"),
        encoding="utf-8",
    )
    tables = g5.build(mysql_primary)
    g5.seed(mysql_primary, root)
    g5.convert_to_innodb(mysql_primary, tables)
    conn = mysql_site_connect(mysql_primary)
    with conn.cursor() as cur:
        _fill(cur, STAYING)
        cur.execute("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in tables))
        cur.fetchall()
    conn.close()
    env = platform_env(var, files, mysql_primary, pg_databases.archive_url, redis_url, map_path)
    with platform_env_applied(monkeypatch, env):
        yield mysql_primary, map_path


def _real_table(table: str | None, sizes: dict[str, int]) -> str | None:
    """The site's table an ``EXPLAIN`` row reads, or None for a derived table."""
    if not table or table.startswith("<"):
        return None  # a derived table or materialised subquery
    if table in sizes:
        return table
    base = re.sub(r"_\d+$", "", table)  # SQLAlchemy's alias of a table
    return base if base in sizes else None


def _explain(dbapi_conn: Any, statement: str, params: Any) -> list[dict[str, Any]]:
    # A statement run with its own settings (SET STATEMENT ... FOR) is explained with them.
    settings, _for, bare = statement.partition(" FOR ")
    if not (settings.startswith("SET STATEMENT ") and _for):
        settings, bare = "", statement
    with dbapi_conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"{settings + ' FOR ' if settings else ''}EXPLAIN {bare}", params)
        return list(cur.fetchall())


def _sweep_watched(
    monkeypatch: pytest.MonkeyPatch,
    ctx: Any,
    capture: Callable[..., None],
    batch: Callable[..., Any],
) -> dict[str, Any]:
    """Run the sweep with ``capture`` listening to the primary's statements and ``batch`` in
    place of ``sweep.run_batch``; the sweep's counts."""
    event.listen(ctx.primary, "before_cursor_execute", capture)
    monkeypatch.setattr(sweep, "run_batch", batch)
    try:
        return sweep.run_sweep(ctx)
    finally:
        event.remove(ctx.primary, "before_cursor_execute", capture)


def _sweep_explained(
    monkeypatch: pytest.MonkeyPatch, keep: Callable[[str], bool]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Run the sweep; each statement shape a batch runs that ``keep`` accepts (whitespace
    collapsed) is explained once, on the batch's own connection just before it runs, so the
    plan is the one that session's settings give. Returns the sweep's counts and the plans."""
    ctx = get_context()
    seen: dict[str, list[dict[str, Any]]] = {}
    capturing = False

    def capture(conn: Any, cursor: Any, statement: str, params: Any, _c: Any, _m: bool) -> None:
        shape = re.sub(r"\s+", " ", statement)
        if capturing and shape not in seen and keep(shape):
            seen[shape] = _explain(conn.connection.dbapi_connection, statement, params)

    real_run_batch = sweep.run_batch

    def batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal capturing
        capturing = True
        try:
            return real_run_batch(*args, **kwargs)
        finally:
            capturing = False

    counts = _sweep_watched(monkeypatch, ctx, capture, batch)
    return counts, seen


def test_every_statement_of_a_sweep_batch_uses_an_index(
    site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, map_path = site
    eng = create_engine(url)
    with eng.connect() as c:
        live = [r[0] for r in c.exec_driver_sql("SHOW TABLES")]
        sizes = {
            t: int(c.exec_driver_sql(f"SELECT COUNT(*) FROM `{t}`").scalar() or 0) for t in live
        }
    # As Gnuboard5 installs itself, the posts, the memo's sender and the cart have no index on
    # their member column: the check says so, with the statement to run.
    gaps = missing_indexes(load_datamap(map_path).expand(live), eng)
    named = {(g.table, g.columns) for g in gaps}
    unindexed = {
        ("g5_write_free", ("mb_id",)),
        ("g5_write_qna", ("mb_id",)),
        ("g5_memo", ("me_send_mb_id",)),
        ("g5_shop_cart", ("mb_id",)),
        # A recommender's point row, found by its text naming the leaver (also_names format:).
        ("g5_point", ("po_rel_action",)),
    }
    assert unindexed <= named, named
    assert ("g5_point", ("mb_id",)) not in named  # index1 leads with mb_id
    assert ("g5_board_file", ("bo_table", "wr_id")) not in named  # its primary key
    # Such a scan is what the test below catches.
    with eng.connect() as c:
        plan = _explain(
            c.connection.dbapi_connection,
            "DELETE FROM g5_write_free WHERE mb_id IN (%s) LIMIT 10000",
            ("jung_hs",),
        )
    assert plan[0]["type"] == "ALL"
    # A destroyed upload is looked up by (bo_table, bf_file) to see whether another post still
    # names it; the primary key leads with bo_table only, which reads the whole board.
    assert ("g5_board_file", ("bo_table", "bf_file")) in named
    with eng.begin() as c:
        for g in gaps:
            c.exec_driver_sql(g.statement())
        # Three neighbours leave too: with a post, a comment, an upload, points, an order, a
        # cart line and memos to each other, so every table's statement runs on rows.
        c.exec_driver_sql(
            "UPDATE g5_member SET mb_leave_date = '20260901' "
            "WHERE mb_id IN ('stay00001', 'stay00002', 'stay00003')"
        )
        c.exec_driver_sql("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in live))
    eng.dispose()

    # Statements run under their own settings (SET STATEMENT ... FOR) are explained too.
    reads = re.compile(r"\s*(SET STATEMENT .*? FOR\s+)?(SELECT|DELETE|UPDATE)\b", re.I | re.S)
    counts, seen = _sweep_explained(monkeypatch, lambda shape: bool(reads.match(shape)))
    assert any(s.startswith("SET STATEMENT ") for s in seen), "no statement with its own settings"
    # jung_hs, by the site's own marker, and the three neighbours
    assert counts["withdrawal_members"] == 4, counts
    deletes = [s for s in seen if s.startswith("DELETE FROM g5_")]
    assert {m.group(1) for s in deletes if (m := re.match(r"DELETE FROM (\w+)", s))} >= {
        "g5_write_free", "g5_write_qna", "g5_board_file", "g5_point", "g5_memo",
        "g5_shop_order", "g5_shop_cart",
    }  # fmt: skip

    def real(table: str | None) -> str | None:
        return _real_table(table, sizes)

    scans = [
        f"{row['table']} ({sizes[t]} rows) in: {shape[:300]}"
        for shape, plan in seen.items()
        for row in plan
        if row["type"] == "ALL" and (t := real(row["table"])) and sizes[t] > HANDFUL
    ]
    assert not scans, "\n".join(scans)
    # An index whose leading column hardly narrows (the board of an upload) reads most of the
    # table all the same: the optimiser's estimate says so.
    wide = [
        f"{row['table']} ({row['rows']} of {sizes[t]} rows by {row['key']}) in: {shape[:300]}"
        for shape, plan in seen.items()
        for row in plan
        if (t := real(row["table"]))
        and sizes[t] > HANDFUL
        and int(row["rows"] or 0) > max(HANDFUL, sizes[t] // 4)
    ]
    assert not wide, "\n".join(wide)


def test_a_batch_does_not_wait_on_the_rows_of_members_it_shares_memos_with(
    site: tuple[str, Path],
) -> None:
    """Clearing a leaver's side of the partners' memos takes no lock on the partners' member
    rows: a neighbouring batch holding one (FOR UPDATE until it commits) used to make this batch
    wait, or deadlock with it when each held a member of the other's memos."""
    url, _map = site
    held = mysql_site_connect(url)
    with held.cursor() as cur:
        cur.execute("SELECT mb_no FROM g5_member WHERE mb_id = 'jung_hs'")
        (leaver,) = cur.fetchone()
        cur.execute(
            "SELECT me_id FROM g5_memo WHERE me_send_mb_id = 'jung_hs' OR me_recv_mb_id = 'jung_hs'"
        )
        memos = [r[0] for r in cur.fetchall()]
        # The partners' own rows (the recipient's row, the sender's copy) naming jung_hs.
        cur.execute(
            "SELECT count(*) FROM g5_memo WHERE (me_type = 'recv' AND me_send_mb_id = 'jung_hs') "
            "OR (me_type = 'send' AND me_recv_mb_id = 'jung_hs')"
        )
        (theirs,) = cur.fetchone()
        cur.execute(
            "SELECT DISTINCT IF(me_send_mb_id = 'jung_hs', me_recv_mb_id, me_send_mb_id) "
            "FROM g5_memo WHERE me_send_mb_id = 'jung_hs' OR me_recv_mb_id = 'jung_hs'"
        )
        partners = [r[0] for r in cur.fetchall()]
    assert memos and partners and "jung_hs" not in partners
    ctx = get_context()
    # A lock wait is an error after a second here, not a wait.
    event.listen(
        ctx.primary,
        "connect",
        lambda dbapi, _rec: dbapi.cursor().execute("SET SESSION innodb_lock_wait_timeout = 1"),
    )
    held.autocommit(False)
    with held.cursor() as cur:
        marks = ", ".join(["%s"] * len(partners))
        cur.execute(f"SELECT mb_no FROM g5_member WHERE mb_id IN ({marks}) FOR UPDATE", partners)
    try:
        scope = Scope(key="test:memo-locks", purpose="withdrawal", reason="test")
        with ctx.primary.begin() as conn:
            _res, members = sweep.process_members(
                ctx, conn, "withdrawal", leaver, leaver, scope, datetime.now(UTC)
            )
        assert members == 1
    finally:
        held.rollback()
        held.close()
    # The partners are still members: their rows stay, with the leaver's side cleared; the
    # leaver's own rows went.
    conn2 = mysql_site_connect(url)
    with conn2.cursor() as cur:
        marks = ", ".join(["%s"] * len(memos))
        cur.execute(
            f"SELECT me_send_mb_id, me_recv_mb_id FROM g5_memo WHERE me_id IN ({marks})", memos
        )
        left = cur.fetchall()
    conn2.close()
    assert theirs and len(left) == theirs
    assert all("jung_hs" not in row for row in left), left


def test_a_batch_of_more_than_500_members_names_each_list_once(
    site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's round trips do not grow with its size: each of its statements runs once for
    the whole batch. Its lists used to be cut at 500 values (SQLite's parameter limit) on every
    server, so a batch of more members made the member reads, the login ids, the guest reads
    and the file lookups twice or more (docs/engine.md)."""
    url, _map = site
    leavers = 600  # more than the old cut of 500
    conn = mysql_site_connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE g5_member SET mb_leave_date = '20260901' "
            f"WHERE mb_id LIKE 'stay%%' AND mb_id < 'stay{leavers:05d}'"
        )
        assert cur.rowcount == leavers
    conn.commit()
    conn.close()
    ctx = get_context()
    assert sweep.member_batch_size(ctx) == sweep.MYSQL_MEMBER_BATCH
    shapes: list[str] = []
    capturing = False

    def capture(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, _m: bool) -> None:
        if capturing:
            # One shape per statement whatever its list's length or its bound values.
            shape = re.sub(r"%\(\w+\)s(, %\(\w+\)s)*", "?", re.sub(r"\s+", " ", statement))
            shapes.append(shape)

    real_run_batch = sweep.run_batch
    batches: list[tuple[int, list[str]]] = []  # (members, statement shapes) per batch

    def batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal capturing
        shapes.clear()
        capturing = True
        try:
            counts = real_run_batch(*args, **kwargs)
        finally:
            capturing = False
        if counts:
            batches.append((int(counts.get(sweep.MEMBERS, 0)), list(shapes)))
        return counts

    counts = _sweep_watched(monkeypatch, ctx, capture, batch)
    # jung_hs and the 600, in one batch of the MySQL/MariaDB default size
    assert counts["withdrawal_members"] == leavers + 1, counts
    [ran] = [run for members, run in batches if members == leavers + 1]
    assert len(ran) > 20  # the whole batch was seen
    repeated = {s[:200]: n for s, n in Counter(ran).items() if n > 1}
    assert not repeated, repeated


def test_a_batch_of_more_than_1000_members_looks_other_members_rows_up_by_index(
    site: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookups of other members' rows that name a leaver (a recommender's
    ``mb_recommend``, a memo-call ``mb_memo_call``, a recommender's point row by
    ``po_rel_action``) go through their index whatever the batch's size. With MariaDB's
    defaults an ``IN`` list of 1,000 values or more became a join with the list, and a list of
    more than 200 was costed from the column's statistics, so where nearly every row holds one
    value (the staying members' empty ``mb_recommend``, their points' one ``po_rel_action``)
    the plan read the whole table or index in every batch and batches slowed as the site grew;
    the lifecycle's MariaDB sessions turn both off (lifecycle/core/mysql_conv.py)."""
    url, map_path = site
    leavers = 1200  # more than in_predicate_conversion_threshold's default of 1,000
    # A site large beside the batch: 1,200 lookups only beat reading a table of thousands.
    pad = f"seq_1_to_{PADDING}"
    site_conn = mysql_site_connect(url)  # the site's own session, as _fill's rows are written
    with site_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO g5_member (mb_id, mb_password, mb_name, mb_nick, mb_email, mb_hp, "
            "mb_datetime, mb_today_login, mb_ip, mb_leave_date, mb_signature, mb_memo, "
            "mb_lost_certify, mb_profile) SELECT CONCAT('pad', seq), 'x', '', '', '', '', NOW(), "
            f"NOW(), '', '', '', '', '', '' FROM {pad}"
        )
        cur.execute(
            "INSERT INTO g5_point (mb_id, po_datetime, po_content, po_point, po_rel_table, "
            "po_rel_id, po_rel_action) SELECT CONCAT('pad', seq), NOW(), '출석', 1, '', '', "
            f"'출석' FROM {pad}"
        )
    site_conn.commit()
    site_conn.close()
    eng = create_engine(url)
    with eng.begin() as c:
        live = [r[0] for r in c.exec_driver_sql("SHOW TABLES")]
        # The indexes `datamap check` advises, as an operator following it would add them.
        for g in missing_indexes(load_datamap(map_path).expand(live), eng):
            c.exec_driver_sql(g.statement())
        c.exec_driver_sql(
            "UPDATE g5_member SET mb_leave_date = '20260901' "
            f"WHERE mb_id LIKE 'stay%%' AND mb_id < 'stay{leavers:05d}'"
        )
        values = c.exec_driver_sql(
            "SELECT COUNT(DISTINCT mb_recommend), COUNT(DISTINCT mb_memo_call) FROM g5_member"
        ).one()
        assert max(values) <= 2  # one value in nearly every row
        c.exec_driver_sql("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in live))
        sizes = {
            t: int(c.exec_driver_sql(f"SELECT COUNT(*) FROM `{t}`").scalar() or 0) for t in live
        }
    eng.dispose()
    naming = re.compile(r"WHERE \w+\.(mb_recommend|mb_memo_call|po_rel_action) IN ")
    counts, seen = _sweep_explained(monkeypatch, lambda shape: bool(naming.search(shape)))
    assert counts["withdrawal_members"] == leavers + 1, counts
    assert {m.group(1) for s in seen if (m := naming.search(s))} == {
        "mb_recommend", "mb_memo_call", "po_rel_action",
    }  # fmt: skip
    whole = [
        f"{row['table']} ({row['type']}, {sizes[t]} rows) in: {shape[:200]}"
        for shape, plan in seen.items()
        for row in plan
        if (t := _real_table(row["table"], sizes)) and row["type"] in ("ALL", "index")
    ]
    joined = [shape[:200] for shape, plan in seen.items() if any(
        (row["table"] or "").startswith("<") for row in plan
    )]  # fmt: skip
    assert not whole and not joined, "\n".join(whole + joined)
