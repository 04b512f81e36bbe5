"""Gnuboard5 5.6 (with its shop) through the shipped data map, on a real MariaDB primary.

The tables are built as Gnuboard installs them (MyISAM, then converted as `datamap check` says),
seeded with members who post on several boards, comment on each other's posts, upload files,
have icons, send memos both ways, order from the shop and leave visit logs. Withdrawal, the
sweep, a correction and file shredding then run through the map, and nothing of any other
member may change.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lifecycle.core.errors import UserError
from lifecycle.datamap.loader import load_datamap
from lifecycle.datamap.model import DataMapError
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.preview import held_summary
from lifecycle.engine.sweep import SweepIncomplete, run_sweep
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from models.shred import ShredItem
from tests.fixtures import gnuboard5 as g5
from tests.helpers import (
    REPO,
    PlatformSite,
    accounting,
    mysql_rows_by_content,
    platform_map,
    run_every_shred_job,
    site_engine,
)

MAP = REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5.yaml"
LEGACY_MAP = REPO / "lifecycle" / "datamap" / "maps" / "gnuboard5-5.6.14.yaml"
LEAVERS = {"lee_mh7", "jung_hs"}  # lee withdraws now; jung left on 2026-09-01 (mb_leave_date)
MEMBER_COLUMNS = ("mb_id", "me_send_mb_id", "me_recv_mb_id")


@dataclass
class Site(PlatformSite):
    tables: list[str]

    def innodb(self) -> None:
        g5.convert_to_innodb(self.primary, self.tables)

    def add_board(self, bo_table: str) -> str:
        spec = g5.board_table(bo_table)
        self.sql(g5.create_statement(spec, "InnoDB"))
        self.tables.append(spec.name)
        return spec.name


def write_map(path: Path, root: Path | str, *edits: tuple[str, str], source: Path = MAP) -> Path:
    return platform_map(path, source, root, *edits)


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


@pytest.fixture
def site(mariadb_platform_site: Callable[..., AbstractContextManager[Site]]) -> Iterator[Site]:
    def install(url: str, root: Path) -> list[str]:
        tables = g5.build(url)
        g5.seed(url, root)
        return tables

    with mariadb_platform_site(
        Site, map_source=MAP, organisation="그누보드 예시 커뮤니티", install=install
    ) as s:
        yield s


def snapshot(site: Site) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of every g5 table, by its whole content."""
    return mysql_rows_by_content(site.primary, "g5\\_%")


def shred_everything(site: Site) -> list[int]:
    return run_every_shred_job(site.primary)


def test_datamap_check_proves_what_the_engine_relies_on(site: Site, tmp_path: Path) -> None:
    # As installed: MyISAM, refused in one line that gives the statement to run.
    r = site.env.run("datamap", "check")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert "ALTER TABLE `g5_member` ENGINE=InnoDB;" in r.stderr
    site.innodb()
    ok = site.env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "pattern g5_write_* -> g5_write_free, g5_write_qna" in ok.stdout
    # Every personal value the seed wrote is in a mapped column but for the admin's IP on a
    # mail-out (ignored on purpose), the guest voters' IP list of a poll (no member's, no date
    # to end it by; listed non_personal) and the requester's IP of each unique id (no date
    # either). Discover says so: never silently.
    found = site.env.run("datamap", "discover", "--json")
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    assert doc["complete"], doc
    assert sorted((f["table"], f["column"]) for f in doc["findings"] if not f["covered"]) == [
        ("g5_mail", "ma_ip"), ("g5_poll", "po_ips"), ("g5_uniqid", "uq_ip")
    ]  # fmt: skip
    strict = site.env.run("datamap", "discover", "--strict")
    assert strict.returncode == 1 and "g5_poll.po_ips" in strict.stdout, strict.stdout
    cov = {(f["table"], f["column"]): f["category"] for f in doc["findings"]}
    assert cov[("g5_member", "mb_email")] == "contact"
    assert cov[("g5_member_auto_login", "al_ip")] == "sessions"
    assert cov[("g5_shop_inicis_pay", "ip_ip")] == "payment"
    assert cov[("g5_login", "lo_ip")] == "service_usage"
    assert cov[("g5_popular", "pp_ip")] == "access_log"
    assert cov[("g5_shop_personalpay", "pp_email")] == "payment"
    assert cov[("g5_shop_item_stocksms", "ss_hp")] == "restock_alerts"
    # Link columns without an index: advice with the statement to run, not a finding.
    assert (
        "warning: table g5_write_free has no index on (mb_id): every sweep batch reads the "
        "whole table to find its members' rows; add one: CREATE INDEX `lc_mb_id` ON "
        "`g5_write_free` (`mb_id`)" in ok.stdout
    )
    # A board created after the map was written is covered at the next run.
    site.add_board("notice")
    ok = site.env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "pattern g5_write_* -> g5_write_free, g5_write_notice, g5_write_qna" in ok.stdout

    # A table holding members that no entry covers, a key that is not unique, a link whose
    # type cannot hold what it points at: one line each, naming the table or the map line.
    site.sql("CREATE TABLE g5_extra (ex_id int PRIMARY KEY, mb_id varchar(20)) ENGINE=InnoDB")
    bad = write_map(
        tmp_path / "bad.yaml",
        site.root,
        ("key: [bo_table, wr_id, bf_no]", "key: [wr_id, bf_no]"),
        ("  g5_write_*:\n    key: wr_id\n    subject_column: mb_id\n    member_key: mb_id",
         "  g5_write_*:\n    key: wr_id\n    subject_column: mb_id\n    member_key: mb_no"),
    )  # fmt: skip
    r = site.env.run("datamap", "check", "--file", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith(f"data map {bad}:") for line in lines), lines
    assert any(
        f"bad.yaml:{line_of(bad, 'key: [wr_id, bf_no]')}:" in line
        and "key (wr_id, bf_no) of g5_board_file is not a primary key or unique index" in line
        for line in lines
    ), lines
    typed = [line for line in lines if "cannot hold g5_member.mb_no (integer)" in line]
    assert {b for b in ("g5_write_free", "g5_write_qna", "g5_write_notice") if
            any(f"{b}.mb_id (text)" in line for line in typed)} == {
        "g5_write_free", "g5_write_qna", "g5_write_notice"}  # fmt: skip
    assert all(f"bad.yaml:{line_of(bad, 'member_key: mb_no')}:" in line for line in typed)
    assert any("'g5_extra' has member-like column mb_id" in line for line in lines), lines
    assert len(lines) == 5, lines

    # A site without the shop: its tables are reported, not fatal.
    site.sql("DROP TABLE g5_extra")
    # An install directory outside the storage roots: the shredder would refuse every file.
    outside = write_map(tmp_path / "outside.yaml", "/srv/not-a-storage-root")
    r = site.env.run("datamap", "check", "--file", str(outside))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"outside.yaml:{line_of(outside, 'root: /srv')}:" in r.stderr
    assert "is not under a storage root" in r.stderr

    for t in [t for t in site.tables if t.startswith("g5_shop_")]:
        site.sql(f"DROP TABLE `{t}`")
    ok = site.env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "note: " in ok.stdout and "optional table g5_shop_order is not in the database" in (
        ok.stdout
    )


def test_a_site_on_5_6_14_keeps_its_map_and_is_told_what_5_6_15_added(
    site: Site, tmp_path: Path, mysql_database: str
) -> None:
    """The 5.6.14 map fits the 5.6.14 schema; on 5.6.34 it names the first consent column
    (the failure this map's update fixed), and the current map fits 5.6.34."""
    site.innodb()
    legacy = write_map(tmp_path / "legacy.yaml", site.root, source=LEGACY_MAP)
    r = site.env.run("datamap", "check", "--file", str(legacy))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "column g5_member.mb_mailling_date is not in the data map" in r.stderr

    g5.convert_to_innodb(mysql_database, g5.build(mysql_database, release=g5.LEGACY))
    site.env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"] = mysql_database
    ok = site.env.run("datamap", "check", "--file", str(legacy))
    assert ok.returncode == 0, ok.stderr
    for t in ("g5_member_auto_login", "g5_shop_inicis_pay", "g5_shop_inicis_pay_event"):
        assert f"optional table {t} is not in the database" in ok.stdout
    r = site.env.run("datamap", "check")
    assert r.returncode == 2 and "g5_member.mb_mailling_date" in r.stderr, r.stderr
    # The two maps differ in the member table's consent columns only.
    cur, old_dm = load_datamap(MAP), load_datamap(LEGACY_MAP)
    assert set(cur.tables) == set(old_dm.tables)
    for name, t in cur.tables.items():
        if name != "g5_member":
            assert t.columns == old_dm.tables[name].columns, name
    moved = set(cur.tables["g5_member"].personal_columns) - set(
        old_dm.tables["g5_member"].personal_columns
    )
    assert moved == {"mb_mailling", "mb_sms", *g5.MEMBER_CONSENT_COLUMNS}


def test_withdrawal_and_sweep_leave_nothing_of_the_leavers_and_touch_no_one_else(
    site: Site,
) -> None:
    site.innodb()
    # A board added after the map was written: the leaver posts there, another member comments.
    board = site.add_board("notice")
    post = site.sql(
        f"INSERT INTO `{board}` (wr_num, wr_subject, wr_content, wr_link1, wr_link2, mb_id, "
        "wr_name, wr_email, wr_password, wr_datetime, wr_last, wr_ip, wr_is_comment, wr_parent) "
        "VALUES (-1, '공지 질문', '이민호 010-2345-6789', '', '', 'lee_mh7', '이민호', "
        "'lee.mh7@mail.example', '', NOW(), '', '10.0.2.9', 0, 0) RETURNING wr_id"
    )[0][0]
    site.sql(f"UPDATE `{board}` SET wr_parent = wr_id WHERE wr_id = %s", post)
    site.sql(
        f"INSERT INTO `{board}` (wr_num, wr_content, wr_link1, wr_link2, mb_id, wr_name, "
        "wr_email, wr_password, wr_datetime, wr_last, wr_ip, wr_is_comment, wr_parent, "
        "wr_subject) VALUES (-1, '박지선의 댓글', '', '', 'park_js', '박지선', "
        "'js.park@mail.example', '', NOW(), '', '10.0.2.8', 1, %s, '')",
        post,
    )
    # A memo between two leavers (the recipient's row only): it goes with its owner.
    site.sql(
        "INSERT INTO g5_memo (me_recv_mb_id, me_send_mb_id, me_send_datetime, me_memo, "
        "me_type, me_send_ip) "
        "VALUES ('lee_mh7', 'jung_hs', NOW(), '둘 다 탈퇴', 'recv', '10.0.3.9')"
    )
    # An active member's orders: 7 years old (past 5 years from the order and from its tax
    # filing deadline alike: it leaves the shop), and 5 years and 2 months old (past
    # 전자상거래법's 5 years, but as sales evidence kept 5 years from its filing deadline,
    # at least 5 months after the order: it stays).
    old_orders = {1900000000000001: 365 * 7 + 2, 1900000000000002: 365 * 5 + 62}
    for od_id, days in old_orders.items():
        at = datetime.now() - timedelta(days=days)
        site.sql(
            "INSERT INTO g5_shop_order (od_id, mb_id, od_name, od_memo, od_shop_memo, "
            "od_mod_history, od_cash_info, od_receipt_price, od_status, od_time) "
            "VALUES (%s, 'park_js', '박지선', '', '', '', '', 9000, '완료', %s)",
            od_id,
            at,
        )
        site.sql(
            "INSERT INTO g5_shop_cart (od_id, mb_id, it_id, it_name, ct_status, ct_history, "
            "ct_price, ct_qty, ct_time) VALUES (%s, 'park_js', '1700000001', '상담 패키지', "
            "'완료', '', 9000, 1, %s)",
            od_id,
            at,
        )
    expired = 1900000000000001
    # lee_mh7 recommended park_js at sign-up and sent kim_yr's latest memo: their member rows
    # name lee by login id (mb_recommend, mb_memo_call).
    site.sql("UPDATE g5_member SET mb_recommend = 'lee_mh7' WHERE mb_id = 'park_js'")
    site.sql("UPDATE g5_member SET mb_memo_call = 'lee_mh7' WHERE mb_id = 'kim_yr'")
    before = snapshot(site)
    files_before = {p: p.read_bytes() for p in site.root.rglob("*") if p.is_file()}

    ctx = get_context()
    mid = resolve_member(ctx, "lee_mh7")
    assert [r["mb_no"] for r in before["g5_member"].values() if r["mb_id"] == "lee_mh7"] == [mid]
    rid = submit_withdrawal(ctx, mid)
    # The leaver voted in the poll: their id leaves its voter list (g5_poll.mb_ids), the other
    # voters stay, and the residue check finds nothing.
    (voters_before,) = site.sql("SELECT mb_ids FROM g5_poll")[0]
    assert "lee_mh7," in voters_before
    out = carry_out(ctx, rid, task_id="t-g5")
    assert out["state"] == "completed", out
    assert out["residue"]["found"] == 0, out
    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1  # jung_hs, by the site's own marker
    shred_everything(site)
    after = snapshot(site)

    # Nothing of the leavers is left but their blanked member rows, which reserve their ids.
    for table, rows in after.items():
        for r in rows.values():
            if table == "g5_member":
                continue
            assert not any(r.get(c) in LEAVERS for c in MEMBER_COLUMNS), (table, r.get("mb_id"))
    kept = {r["mb_id"]: r for r in after["g5_member"].values()}
    for who in LEAVERS:
        row = kept[who]
        assert row["mb_leave_date"] != ""
        for col in ("mb_password", "mb_name", "mb_nick", "mb_email", "mb_hp", "mb_addr1",
                    "mb_birth", "mb_ip", "mb_login_ip", "mb_dupinfo", "mb_signature"):  # fmt: skip
            assert row[col] == "", (who, col)
        # 5.6.15's consent records go with the rest of the profile.
        assert row["mb_agree_log"] == "" and row["mb_marketing_agree"] == 0, who
    assert kept["jung_hs"]["mb_leave_date"] == "20260901"
    # Their auto-login tokens (two devices of lee_mh7, one of jung_hs) are destroyed; others stay.
    tokens = [r["mb_id"] for r in after["g5_member_auto_login"].values()]
    assert sorted(tokens) == ["choi_dw", "kim_yr", "park_js"]
    assert len(kept["lee_mh7"]["mb_leave_date"]) == 8 and kept["lee_mh7"]["mb_leave_date"].isdigit()

    # Every row of every other member is exactly as it was, including their comments on the
    # leavers' posts and their likes and scraps of them.
    posts_by = {}
    for t, rows in before.items():
        if t.startswith("g5_write_"):
            for r in rows.values():
                posts_by[(t.removeprefix("g5_write_"), r["wr_id"])] = r["mb_id"]
    attempts_by = {r["ip_oid"]: r["mb_id"] for r in before["g5_shop_inicis_pay"].values()}
    cutoff = date.today() - timedelta(days=92)
    year_ago = datetime.now() - timedelta(days=366)
    orders_by = {r["od_id"]: r["mb_id"] for r in before["g5_shop_order"].values()}
    untouched = 0
    recommended = False
    for table, rows in before.items():
        for key, r in rows.items():
            if any(r.get(c) in LEAVERS for c in MEMBER_COLUMNS):
                continue
            if table == "g5_board_file" and posts_by[(r["bo_table"], r["wr_id"])] in LEAVERS:
                continue
            if table == "g5_shop_inicis_pay_event" and attempts_by[r["ip_oid"]] in LEAVERS:
                continue
            if table == "g5_visit" and r["vi_date"] < cutoff:
                continue
            if table == "g5_poll":
                continue  # its voter list lost the leaver's id (checked below)
            if table == "g5_member" and {r["mb_recommend"], r["mb_memo_call"]} & LEAVERS:
                # Only the column naming the leaver is blanked (also_names); the rest is as it was.
                (now,) = [a for a in after[table].values() if a["mb_no"] == r["mb_no"]]
                named = {c for c in ("mb_recommend", "mb_memo_call") if r[c] in LEAVERS}
                assert {c: now[c] for c in named} == dict.fromkeys(named, ""), now["mb_id"]
                assert {k: v for k, v in now.items() if k not in named} == {
                    k: v for k, v in r.items() if k not in named
                }
                untouched += 1
                continue
            if table == "g5_point" and r["po_rel_action"] == "lee_mh7 추천":
                # kim_yr's point for recommending lee_mh7: kept, lee's id gone from its text.
                (now,) = [a for a in after[table].values() if a["po_id"] == r["po_id"]]
                rewritten = ("탈퇴 회원 추천", "탈퇴 회원의 추천인")
                assert (now["po_rel_action"], now["po_content"]) == rewritten
                changed = ("po_rel_action", "po_content")
                assert {k: v for k, v in now.items() if k not in changed} == {
                    k: v for k, v in r.items() if k not in changed
                }
                recommended = True
                continue
            if table == "g5_popular" and r["pp_date"] < cutoff:
                assert key not in after[table]  # a search log: 3 months, as the visit log
                continue
            if table == "g5_shop_item_stocksms" and r["ss_datetime"] < year_ago:
                assert key not in after[table]  # a restock request a year old
                continue
            if table == "g5_shop_inicis_log" and orders_by[r["oid"]] in LEAVERS:
                continue
            if table == "g5_shop_personalpay" and orders_by[r["od_id"]] in LEAVERS:
                continue
            if table in ("g5_shop_order", "g5_shop_cart") and r["od_id"] == expired:
                assert key not in after[table], table  # past its periods: gone by age
                continue
            assert key in after[table], (table, {k: v for k, v in r.items() if k.endswith("id")})
            untouched += 1
    assert untouched > 80
    assert recommended
    # kim_yr's point for recommending choi_dw, who stays, is as it was (checked above too).
    assert [r["po_content"] for r in after["g5_point"].values()
            if r["po_rel_action"] == "choi_dw 추천"] == ["choi_dw의 추천인"]  # fmt: skip
    comments = [r for r in after[board].values() if r["wr_is_comment"] == 1]
    assert [c["mb_id"] for c in comments] == ["park_js"] and comments[0]["wr_parent"] == post

    # Memos: each row is its owner's (the recipient's row, the sender's copy) and goes with
    # them; in the other member's row the leaver's side is cleared.
    owner_of = {"recv": "me_recv_mb_id", "send": "me_send_mb_id"}
    for r in before["g5_memo"].values():
        sides = {r["me_send_mb_id"], r["me_recv_mb_id"]}
        now = [a for a in after["g5_memo"].values() if a["me_id"] == r["me_id"]]
        if r[owner_of[r["me_type"]]] in LEAVERS:
            assert now == []
        elif sides & LEAVERS:
            (a,) = now
            assert a["me_memo"] == r["me_memo"]
            for side, ip_or_read in (("me_send_mb_id", "me_send_ip"),
                                     ("me_recv_mb_id", "me_read_datetime")):  # fmt: skip
                if r[side] in LEAVERS:
                    assert a[side] == ""
                    # Cleared to '' or, for a NOT NULL date, the column's own default.
                    # (pymysql reads a zero date as its text)
                    assert a[ip_or_read] in ("", None, "0000-00-00 00:00:00")
                else:
                    assert a[side] == r[side]

    # Files: the leavers' uploads and icons are shredded, everyone else's are untouched.
    for p, content in files_before.items():
        rel = p.relative_to(site.root).as_posix()
        mine = any(f"_{w}_" in p.name or p.name == f"{w}.gif" for w in LEAVERS)
        if mine:
            assert not p.exists(), rel
        else:
            assert p.read_bytes() == content, rel

    # Visit logs older than 3 months are gone, newer ones stay.
    assert site.sql("SELECT count(*) FROM g5_visit WHERE vi_date < %s", cutoff)[0][0] == 0
    assert site.sql("SELECT count(*) FROM g5_visit")[0][0] == 9

    # The archive holds exactly what the ledger counts (the leaver's order, 5 years), and the
    # ledger verifies.
    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.outbox == 0
    assert acc.archived == acc.ledger_archive
    assert acc.archived[("g5_shop_order", "contract")] == 1
    assert acc.archived[("g5_shop_order", "payment")] == 1
    assert acc.archived[("g5_shop_cart", "contract")] == 1
    # The leaver's INIpay PRO attempt and its event are payment records: archived, 5 years.
    assert acc.archived[("g5_shop_inicis_pay", "payment")] == 1
    assert acc.archived[("g5_shop_inicis_pay_event", "payment")] == 1
    assert acc.ledger_destroy[("g5_member_auto_login", "sessions")] == 3
    # The leaver's phone payment callback and personal payment are payment records of the order.
    assert acc.archived[("g5_shop_inicis_log", "payment")] == 1
    assert acc.archived[("g5_shop_personalpay", "payment")] == 1
    assert acc.ledger_destroy[("g5_popular", "access_log")] == 2
    assert acc.ledger_destroy[("g5_poll_etc", "posts")] == 1
    # The poll's voter list no longer names the leaver; the other voters and the guests' IPs
    # are as they were. Filed under the leaver as profile data (the poll has no category).
    (voters, ips) = site.sql("SELECT mb_ids, po_ips FROM g5_poll")[0]
    assert voters == voters_before.replace("lee_mh7,", "") and voters.count(",") == 2, voters
    assert ips == "10.0.9.1,10.0.9.2,"
    assert acc.ledger_destroy[("g5_poll", "profile")] == 1
    # park_js's recommender and kim_yr's memo caller, filed under lee_mh7, and lee's own
    # kept row blanked with the rest of the profile.
    assert acc.ledger_destroy[("g5_member", "profile")] == 2 + 2, acc.ledger_destroy
    assert acc.ledger_destroy[("g5_shop_item_stocksms", "restock_alerts")] == 1
    assert acc.ledger_destroy[("g5_write_notice", "posts")] == 1
    assert acc.ledger_destroy[("g5_board_file", "uploads")] >= 2
    assert acc.ledger_destroy[("g5_visit", "access_log")] == 12


def test_a_zero_date_in_an_age_table_is_kept_not_a_failed_sweep(site: Site) -> None:
    # '0000-00-00' sorts before every cut-off, but it is Gnuboard's "no date": nothing to count
    # a period from, so the row stays (and the rest of the table still expires).
    site.innodb()
    before = site.sql("SELECT count(*) FROM g5_visit")[0][0]
    site.sql(
        "INSERT INTO g5_visit (vi_id, vi_ip, vi_date, vi_time, vi_referer, vi_agent, vi_browser, "
        "vi_os, vi_device) VALUES (9999, '198.51.100.7', '0000-00-00', '00:00:00', '', '', '', "
        "'', '')"
    )
    counts = run_sweep(get_context())
    assert counts["destroyed_parts"] > 0, counts
    assert site.sql("SELECT count(*) FROM g5_visit WHERE vi_id = 9999")[0][0] == 1
    cutoff = (datetime.now() - timedelta(days=92)).date()
    assert site.sql("SELECT count(*) FROM g5_visit WHERE vi_date >= %s", cutoff)[0][0] > 0
    assert site.sql("SELECT count(*) FROM g5_visit")[0][0] < before + 1


def test_access_through_the_gnuboard5_map_includes_consent_records_and_devices(
    site: Site, tmp_path: Path
) -> None:
    site.innodb()
    ctx = get_context()
    lee = resolve_member(ctx, "lee_mh7")
    out = tmp_path / "lee.zip"
    rid = submit_access(lee, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    with zipfile.ZipFile(out) as zf:
        files = {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}
    members = list(csv.DictReader(io.StringIO(files["g5_member.csv"])))
    assert [m["mb_id"] for m in members] == ["lee_mh7"]
    # The consent log as Gnuboard wrote it, and both of lee's devices, no one else's.
    assert members[0]["mb_agree_log"].startswith("[") and "회원가입" in members[0]["mb_agree_log"]
    devices = list(csv.DictReader(io.StringIO(files["g5_member_auto_login.csv"])))
    assert sorted(d["al_ip"] for d in devices) == ["10.0.7.1", "10.0.7.2"]
    assert {d["mb_id"] for d in devices} == {"lee_mh7"}
    attempts = list(csv.DictReader(io.StringIO(files["g5_shop_inicis_pay.csv"])))
    events = list(csv.DictReader(io.StringIO(files["g5_shop_inicis_pay_event.csv"])))
    assert len(attempts) == 1 and [e["ip_oid"] for e in events] == [attempts[0]["ip_oid"]]


def test_a_correction_through_the_gnuboard5_map(site: Site) -> None:
    site.innodb()
    ctx = get_context()
    park = resolve_member(ctx, "park_js")
    rid = submit_correction(park, {"mb_hp": "010-1111-2222", "mb_email": "new.park@mail.example"})
    out = run_correction(rid)
    assert out["state"] in ("notifying", "completed"), out
    assert site.sql("SELECT mb_hp, mb_email FROM g5_member WHERE mb_id = 'park_js'")[0] == (
        "010-1111-2222",
        "new.park@mail.example",
    )
    with pytest.raises(UserError, match="mb_email: not an email address"):
        submit_correction(park, {"mb_email": "not-an-address"})
    with pytest.raises(UserError, match="system column"):
        submit_correction(park, {"mb_id": "someone_else"})
    with pytest.raises(UserError, match="has withdrawn"):
        submit_correction(resolve_member(ctx, "jung_hs"), {"mb_hp": "010-0"})
    with pytest.raises(UserError, match="unknown member"):
        resolve_member(ctx, "nobody_here")
    # The command line takes the site's own member id too.
    r = site.env.run("correct", "kim_yr", "--set", "mb_hp=010-3333-4444")
    assert r.returncode == 0, r.stderr
    kim = site.sql("SELECT mb_no FROM g5_member WHERE mb_id = 'kim_yr'")[0][0]
    assert f"submitted for member {kim}" in r.stdout


def test_a_member_who_left_by_the_sites_marker_is_refused_by_the_worker(site: Site) -> None:
    """The one live-member rule: Gnuboard marks a leaver by a non-empty mb_leave_date (it has no
    status value for it). A correction or a 처리정지 submitted while the member was live, who
    then left on the site before a worker took it, is refused, and nothing is changed."""
    from lifecycle.core.db import session
    from lifecycle.rights.common import Requester
    from lifecycle.rights.suspension import run_suspension, submit_suspension
    from models.requests import LifecycleRequest, Restriction

    site.innodb()
    ctx = get_context()
    park, kim = resolve_member(ctx, "park_js"), resolve_member(ctx, "kim_yr")
    rid = submit_correction(park, {"mb_hp": "010-1111-2222"})
    sid = submit_suspension(kim, "이용 중지 요청", Requester())
    site.sql("UPDATE g5_member SET mb_leave_date = '20261201' WHERE mb_no IN (%s, %s)", park, kim)
    assert run_correction(rid)["state"] == "failed"
    assert run_suspension(sid)["state"] == "failed"
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req is not None and req.payload is None
        assert req.error == f"member {park} does not exist or has withdrawn"
        sus = s.get(LifecycleRequest, sid)
        assert sus is not None
        assert (
            sus.error
            == f"회원 정보를 찾을 수 없습니다 (member {kim} does not exist or has withdrawn)"
        )
        assert s.scalars(select(Restriction)).all() == []
    assert site.sql("SELECT mb_hp FROM g5_member WHERE mb_no = %s", park)[0][0] == "010-3456-7890"


def test_a_file_the_shredder_refuses_fails_the_job_and_keeps_its_path(
    site: Site, tmp_path: Path
) -> None:
    site.innodb()
    # The install directory is not under the storage roots: every file is refused.
    write_map(site.map_path, "/srv/not-a-storage-root")
    ctx = get_context()
    rid = submit_withdrawal(ctx, resolve_member(ctx, "lee_mh7"))
    out = carry_out(ctx, rid)
    assert out["state"] == "failed"
    state, error = site.sql("SELECT state, error FROM lifecycle_requests WHERE id = %s", rid)[0]
    assert state == "failed" and "\n" not in error
    assert "refused by the shredder" in error and "lee_mh7" not in error
    # `lifecycle status` shows it, with its reason.
    st = site.env.run("status", "--json")
    assert st.returncode in (0, 1), st.stderr
    failed = json.loads(st.stdout)["requests"]["failed"]
    assert [f["id"] for f in failed] == [rid] and "refused by the shredder" in failed[0]["error"]
    # The rows are gone, their files are not orphaned: the paths wait in a shred job.
    assert site.sql("SELECT count(*) FROM g5_write_free WHERE mb_id = 'lee_mh7'")[0][0] == 0
    eng = site_engine(site.primary)
    with eng.connect() as c:
        kept = [r[0] for r in c.execute(select(ShredItem.path))]
    eng.dispose()
    assert any(p.startswith("/srv/not-a-storage-root/data/file/") and "lee_mh7" in p
               for p in kept)  # fmt: skip
    assert "/srv/not-a-storage-root/data/member/le/lee_mh7.gif" in kept
    # The sweep (jung_hs) fails visibly too, after doing what it could.
    with pytest.raises(SweepIncomplete) as exc:
        run_sweep(get_context())
    assert "\n" not in str(exc.value) and "refused by the shredder" in str(exc.value)
    assert (
        site.sql(
            "SELECT outcome FROM lifecycle_job_runs WHERE job = 'sweep' ORDER BY id DESC LIMIT 1"
        )[0][0]
        == "failed"
    )


def test_a_changed_map_is_followed_by_a_running_worker(site: Site) -> None:
    site.innodb()
    first = get_context()
    assert get_context() is first
    assert str(first.datamap.rule("access_log").period) == "3mo"
    text = site.map_path.read_text(encoding="utf-8")
    site.map_path.write_text(text.replace("period: 3mo", "period: 1mo"), encoding="utf-8")
    st = site.map_path.stat()
    os.utime(site.map_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = get_context()
    assert second is not first
    assert str(second.datamap.rule("access_log").period) == "1mo"
    site.map_path.write_text(text.replace("period: 3mo", "period: forever"), encoding="utf-8")
    with pytest.raises(DataMapError) as exc:
        get_context()
    assert "\n" not in str(exc.value) and f"{site.map_path}:" in str(exc.value)


def test_the_shipped_map_loads_and_names_what_the_engine_needs() -> None:
    dm = load_datamap(MAP)
    s = dm.subject
    assert (s.key, s.login_column, s.marker_column, s.keep_row) == (
        "mb_no", "mb_id", "mb_leave_date", True)  # fmt: skip
    assert (s.email_column, s.mobile_column) == ("mb_email", "mb_hp")
    assert dm.patterns == ["g5_write_*"]
    f = dm.tables["g5_board_file"]
    assert f.keys == ("bo_table", "wr_id", "bf_no") and f.via is not None
    assert (f.via.match, f.via.parent_key) == ("bo_table", "wr_id")
    assert f.file_templates[0].render({"bo_table": "free", "bf_file": "a.jpg"}) == (
        "data/file/free/a.jpg"
    )
    icon = dm.tables["g5_member"].file_templates[0]
    assert icon.render({"mb_id": "lee_mh7"}) == "data/member/le/lee_mh7.gif"
    recv, send = dm.tables["g5_memo_recv"], dm.tables["g5_memo_send"]
    assert ([lk.column for lk in recv.links], [lk.column for lk in recv.also_names]) == (
        ["me_recv_mb_id"], ["me_send_mb_id"])  # fmt: skip
    assert ([lk.column for lk in send.links], [lk.column for lk in send.also_names]) == (
        ["me_send_mb_id"], ["me_recv_mb_id"])  # fmt: skip
    assert dm.tables["g5_visit"].age is not None and not dm.tables["g5_visit"].links
    # Orders and cart lines: 전자상거래법 records and sales evidence, ending by their own date
    # for active members too.
    for name in ("g5_shop_order", "g5_shop_cart"):
        t = dm.tables[name]
        assert t.tax_evidence and t.age_column in ("od_time", "ct_time"), name
        assert {t.anchor_of(c) for c in t.columns} == {"record"}, name
    assert dm.rule("tax").anchor == "tax_filing_deadline" and dm.business.kind == "individual"


def test_rows_the_archive_cannot_tell_apart_roll_the_whole_move_back(site: Site) -> None:
    """Two rows sharing the key the map names: the ledger would count both, the archive could
    keep one. The move fails in one line and nothing is archived, ledgered or deleted."""
    site.innodb()
    site.sql(
        "INSERT INTO g5_shop_cart (od_id, mb_id, it_id, it_name, ct_status, ct_history, ct_price, "
        "ct_qty, ct_time, ct_ip, ct_select) VALUES (1, 'lee_mh7', '1700000002', '추가 상담', "
        "'쇼핑', '', 9000, 1, NOW(), '10.0.6.9', 0)"
    )
    ctx = get_context()
    cart = ctx.datamap.tables["g5_shop_cart"]
    cart.key, cart.keys = "mb_id", ("mb_id",)  # what a wrong map would say, past the check
    before = snapshot(site)
    rid = submit_withdrawal(ctx, resolve_member(ctx, "lee_mh7"))
    assert carry_out(ctx, rid)["state"] == "failed"
    state, error = site.sql("SELECT state, error FROM lifecycle_requests WHERE id = %s", rid)[0]
    assert state == "failed" and "two rows share the key" in error and "\n" not in error
    clear_context_cache()
    after = snapshot(site)
    for t in before:
        if t != "g5_member":  # the request marked the member withdrawn, nothing more
            assert before[t] == after[t], t
    acc = accounting(site.primary, site.archive)
    assert not acc.records and not acc.ledger_archive and not acc.ledger_destroy


def test_a_schema_the_map_covers_only_partly_is_refused_before_anything_is_deleted(
    site: Site,
) -> None:
    site.innodb()
    site.sql("CREATE TABLE g5_extra (ex_id int PRIMARY KEY, mb_id varchar(20)) ENGINE=InnoDB")
    site.sql("INSERT INTO g5_extra VALUES (1, 'jung_hs')")
    before = snapshot(site)
    with pytest.raises(DataMapError, match="'g5_extra' has member-like column mb_id"):
        run_sweep(get_context())
    assert snapshot(site) == before


def test_withdraw_takes_the_sites_own_member_id(site: Site) -> None:
    site.innodb()
    r = site.env.run("withdraw", "kim_yr")
    assert r.returncode == 0, r.stderr
    mb_no = site.sql("SELECT mb_no FROM g5_member WHERE mb_id = 'kim_yr'")[0][0]
    assert f"for member {mb_no} submitted" in r.stdout
    assert site.sql("SELECT member_id, kind FROM lifecycle_requests") == [(mb_no, "withdrawal")]
    # The site's own marker, in its own format.
    assert site.sql("SELECT mb_leave_date FROM g5_member WHERE mb_id = 'kim_yr'")[0][0] == (
        date.today().strftime("%Y%m%d")
    )
    bad = site.env.run("withdraw", "no_such_id")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown member" in bad.stderr


def test_every_command_that_takes_a_member_takes_the_sites_own_member_id(
    site: Site, tmp_path: Path
) -> None:
    site.innodb()
    # One member per command: a member has one open request of a kind at a time.
    submitted = [
        ("park_js", ("access", "park_js", "--out", str(tmp_path / "park.zip")), "access"),
        ("choi_dw", ("suspend", "choi_dw", "--reason", "분쟁 중"), "suspension"),
    ]
    for login, argv, kind in submitted:
        mb_no = site.sql(f"SELECT mb_no FROM g5_member WHERE mb_id = '{login}'")[0][0]
        r = site.env.run(*argv)
        assert r.returncode == 0, (argv, r.stderr)
        assert f"for member {mb_no} submitted" in r.stdout, (argv, r.stdout)
        got = site.sql(f"SELECT kind FROM lifecycle_requests WHERE member_id = {mb_no}")
        assert got == [(kind,)], (argv, got)
    # erase found kim_yr: what refuses it is the field's own rule (Gnuboard's columns are NOT
    # NULL, so they go only with a withdrawal), not the member id.
    r = site.env.run("erase", "kim_yr", "--fields", "mb_homepage")
    assert r.returncode == 2 and "field mb_homepage is required while the account exists" in (
        r.stderr
    ), r.stderr
    # archive retrieve takes it too (nothing archived for park_js yet: said, not refused).
    basis = "수사기관 요청 (형사소송법 제215조)"
    r = site.env.run("archive", "retrieve", "park_js", "--basis", basis,
                     "--out", str(tmp_path / "park.json"))  # fmt: skip
    assert "must be a positive integer" not in r.stderr and "unknown member" not in r.stderr
    for argv in (("access", "no_such_id", "--out", str(tmp_path / "x.zip")),
                 ("archive", "retrieve", "no_such_id", "--basis", basis,
                  "--out", str(tmp_path / "x.json"))):  # fmt: skip
        bad = site.env.run(*argv)
        assert bad.returncode == 2 and "unknown member" in bad.stderr, (argv, bad.stderr)
        assert bad.stderr.count("\n") == 1, bad.stderr


def test_a_held_leaver_is_counted_by_the_sites_own_marker(site: Site) -> None:
    # The g5 map marks leavers by mb_leave_date and has no status column: the held-member count
    # (sweep --dry-run, the sweep's result) indexed the absent status column and raised.
    site.innodb()
    mb_no = site.sql("SELECT mb_no FROM g5_member WHERE mb_id = 'jung_hs'")[0][0]
    until = (date.today() + timedelta(days=90)).isoformat()
    r = site.env.run(
        "--operator", "officer-lee", "hold", "add", "--member", str(mb_no),
        "--reason", "수사협조 요청 2026-78", "--until", until,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = held_summary(get_context())
    assert out["held_withdrawn_members"] == 1, out
