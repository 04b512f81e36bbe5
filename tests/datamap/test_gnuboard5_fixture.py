"""The Gnuboard5 fixture builds the engine's tables as it installs them, in a real MariaDB, and
the lifecycle's MySQL checks see them as they are (MyISAM, zero dates, string member ids)."""

from __future__ import annotations

from pathlib import Path

import pymysql
from sqlalchemy import text

from lifecycle.core.storage_engines import non_transactional, refusal
from tests.fixtures import gnuboard5 as g5
from tests.helpers import Gnuboard5Site, site_engine


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_tables_are_built_as_gnuboard5_installs_them(mysql_database: str) -> None:
    names = g5.build(mysql_database, boards=["free", "qna", "gallery"])
    assert {"g5_member", "g5_write_free", "g5_write_qna", "g5_write_gallery", "g5_board_file",
            "g5_memo", "g5_visit", "g5_shop_order", "g5_shop_cart"} <= set(names)  # fmt: skip
    engines = dict(_rows(mysql_database, "SELECT table_name, engine FROM information_schema."
                         "tables WHERE table_schema = DATABASE()"))  # fmt: skip
    assert set(engines) == set(names) and set(engines.values()) == {"MyISAM"}
    cols = {
        (t, c): (ct, nullable, default)
        for t, c, ct, nullable, default in _rows(
            mysql_database,
            "SELECT table_name, column_name, column_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = DATABASE()",
        )
    }
    assert cols[("g5_member", "mb_id")][0] == "varchar(20)"
    assert cols[("g5_member", "mb_leave_date")][:2] == ("varchar(8)", "NO")
    assert cols[("g5_member", "mb_nick_date")][0] == "date"
    assert cols[("g5_write_free", "mb_id")][0] == "varchar(255)"
    assert cols[("g5_shop_order", "od_id")][0] == "bigint(20) unsigned"
    assert cols[("g5_memo", "me_type")][0] == "enum('send','recv')"
    # Every column is NOT NULL but the dates of the tables added since 5.6.26.
    nullable = {(t, c) for (t, c), (_ct, n, _d) in cols.items() if n == "YES"}
    assert nullable and {t for t, _c in nullable} == {
        "g5_member_auto_login", "g5_shop_inicis_pay", "g5_shop_inicis_pay_event"
    }  # fmt: skip
    assert all(cols[k][0] == "datetime" for k in nullable)
    assert cols[("g5_member", "mb_agree_log")][:2] == ("text", "NO")
    assert cols[("g5_member", "mb_marketing_agree")][0] == "tinyint(1)"
    keys = _rows(mysql_database, "SELECT table_name, index_name, GROUP_CONCAT(column_name ORDER "
                 "BY seq_in_index) FROM information_schema.statistics WHERE table_schema = "
                 "DATABASE() GROUP BY table_name, index_name")  # fmt: skip
    keyset = {(t, i, c) for t, i, c in keys}
    assert ("g5_board_file", "PRIMARY", "bo_table,wr_id,bf_no") in keyset
    assert ("g5_member", "PRIMARY", "mb_no") in keyset and ("g5_member", "mb_id", "mb_id") in keyset
    assert ("g5_visit", "index1", "vi_ip,vi_date") in keyset
    assert ("g5_login", "PRIMARY", "lo_id") in keyset and (
        "g5_login",
        "lo_ip_unique",
        "lo_ip",
    ) in keyset
    assert ("g5_member_auto_login", "al_token", "al_token") in keyset
    assert not any(t == "g5_shop_order_data" and i == "PRIMARY" for t, i, _c in keyset)


def test_seed_has_members_posts_uploads_icons_memos_visits_and_orders(
    mysql_database: str, tmp_path: Path
) -> None:
    g5.build(mysql_database)
    site = tmp_path / "www"
    seeded = g5.seed(mysql_database, site)
    one = lambda sql, *p: _rows(mysql_database, sql, *p)[0][0]  # noqa: E731
    assert one("SELECT count(*) FROM g5_member") == len(g5.MEMBERS)
    assert one("SELECT mb_leave_date FROM g5_member WHERE mb_id = 'jung_hs'") == "20260901"
    assert one("SELECT count(*) FROM g5_member WHERE mb_leave_date = ''") == len(g5.MEMBERS) - 1
    # lee_mh7 wrote on both boards and others commented on the posts.
    for b in seeded.boards:
        assert one(f"SELECT count(*) FROM g5_write_{b} WHERE mb_id = 'lee_mh7' "
                   "AND wr_is_comment = 0") == 1  # fmt: skip
        assert one(f"SELECT count(*) FROM g5_write_{b} c JOIN g5_write_{b} p ON "
                   "p.wr_id = c.wr_parent AND c.wr_is_comment = 1 WHERE p.mb_id = 'lee_mh7' "
                   "AND c.mb_id <> 'lee_mh7'") == 1  # fmt: skip
    # The same (wr_id, bf_no) on two boards belongs to two different members.
    clash = _rows(mysql_database, "SELECT f.wr_id, f.bf_no, count(DISTINCT f.bo_table) FROM "
                  "g5_board_file f GROUP BY f.wr_id, f.bf_no HAVING count(*) > 1")  # fmt: skip
    assert clash
    wr_id, bf_no = clash[0][0], clash[0][1]
    owners = {
        _rows(
            mysql_database,
            f"SELECT w.mb_id FROM g5_board_file f JOIN g5_write_{b} w ON w.wr_id = f.wr_id "
            "WHERE f.bo_table = %s AND f.wr_id = %s AND f.bf_no = %s",
            b,
            wr_id,
            bf_no,
        )[0][0]
        for b in seeded.boards
    }
    assert len(owners) == len(seeded.boards), "one (wr_id, bf_no), a different member per board"
    # bf_file is a bare name; the file lives under data/file/<bo_table>/.
    files = _rows(mysql_database, "SELECT bo_table, bf_file FROM g5_board_file")
    assert files and all("/" not in f for _b, f in files)
    assert all((site / "data" / "file" / b / f).is_file() for b, f in files)
    # Icons have no column: data/member/<first 2 chars>/<mb_id>.gif.
    assert (site / "data/member/le/lee_mh7.gif").is_file()
    # Memos both ways, two rows each (recipient's and sender's copy).
    assert one("SELECT count(*) FROM g5_memo WHERE me_send_mb_id = 'lee_mh7'") >= 2
    assert one("SELECT count(*) FROM g5_memo WHERE me_recv_mb_id = 'lee_mh7'") >= 2
    assert one("SELECT count(DISTINCT me_type) FROM g5_memo") == 2
    # Visit logs, some past 3 months; orders and carts of members.
    assert one("SELECT count(*) FROM g5_visit WHERE vi_date < %s", "2026-08-20") >= 9
    assert one("SELECT count(*) FROM g5_shop_order o JOIN g5_shop_cart c ON c.od_id = o.od_id "
               "WHERE o.mb_id = 'lee_mh7'") == 1  # fmt: skip
    assert len(seeded.files) == len(files) + len(g5.MEMBERS) - 1


def test_lifecycle_reads_gnuboard5_as_it_ships(gnuboard5_site: Gnuboard5Site) -> None:
    """MyISAM is named with the ALTER TABLE to run (and gone once run); zero dates read None."""
    mysql_database, names = gnuboard5_site.url, gnuboard5_site.tables
    assert (gnuboard5_site.root / "data/member/le/lee_mh7.gif").is_file()
    eng = site_engine(mysql_database)
    bad = non_transactional(eng, ["g5_member", "g5_board_file", "g5_write_free"])
    assert bad == {"g5_member": "MyISAM", "g5_board_file": "MyISAM", "g5_write_free": "MyISAM"}
    line = refusal(bad)
    assert "\n" not in line and "ALTER TABLE `g5_member` ENGINE=InnoDB;" in line
    with eng.connect() as c:
        nick_date, email_certify = c.execute(
            text("SELECT mb_nick_date, mb_email_certify FROM g5_member WHERE mb_id = 'lee_mh7'")
        ).one()
        wr = c.execute(text("SELECT count(*) FROM g5_write_free WHERE wr_datetime IS NULL"))
        assert wr.scalar() == 0
    assert nick_date is None  # '0000-00-00', Gnuboard's "never"
    assert email_certify is None  # '0000-00-00 00:00:00': never certified
    g5.convert_to_innodb(mysql_database, names)
    assert non_transactional(eng, names) == {}
    eng.dispose()
