"""Rhymix 2.1 through the shipped data map, on a real MariaDB primary.

Rhymix runs on MySQL/MariaDB only, so MariaDB is its one primary here (there is no PostgreSQL
Rhymix to reproduce). The tables are built as Rhymix installs them (InnoDB, utf8mb4, 14-digit
text dates), seeded with members who post, comment on each other's posts, attach files, vote,
scrap, message each other and get notified, plus guests and visitor logs. Withdrawal, the
nightly sweep, access, correction and file shredding then run through the map; nothing of any
other member may change, and afterwards the leavers' address, mobile number and login id may
remain only where docs/rhymix-schema.md says the map cannot reach yet.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.core.errors import UserError
from lifecycle.datamap.loader import load_datamap
from lifecycle.engine.context import get_context
from lifecycle.engine.orphans import ORPHAN_GRACE
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.access import run_access, submit_access
from lifecycle.rights.common import Requester
from lifecycle.rights.correction import run_correction, submit_correction
from lifecycle.rights.withdrawal import carry_out, resolve_member, submit_withdrawal
from tests.fixtures import rhymix as rx
from tests.helpers import (
    REPO,
    PlatformSite,
    accounting,
    mysql_rows_by_content,
    mysql_site_connect,
    run_every_shred_job,
    wait_until,
)

MAP = REPO / "lifecycle" / "datamap" / "maps" / "rhymix.yaml"
# Columns naming a row's member (the map's subject_column of each table).
MEMBER_COLUMNS = ("member_srl", "update_member_srl", "remover_srl")
# Rows naming a second member (the map's also_names): link -> what clearing it writes.
NAMED = {
    "rx_ncenterlite_notify": {"target_member_srl": ("target_member_srl", "target_nick_name",
                                                    "target_user_id", "target_email_address")},
    "rx_member_scrap": {"target_member_srl": ("target_member_srl", "user_id", "user_name",
                                              "nick_name")},
    "rx_member_message": {"sender_srl": ("sender_srl",), "receiver_srl": ("receiver_srl",)},
}  # fmt: skip
# A message copy's owner: the sender's copy (S), the receiver's (R, or T once stored).
MESSAGE_OWNER = {"S": "sender_srl", "R": "receiver_srl", "T": "receiver_srl"}
# Where the map cannot reach yet (docs/rhymix-schema.md), what discover reports as not covered.
UNCOVERED = [
    ("rx_counter_log", "ipaddress"),
    ("rx_member_login_count", "ipaddress"),
    ("rx_spamfilter_denied_ip", "ipaddress"),
    ("rx_spamfilter_log", "ipaddress"),
]


@dataclass
class Site(PlatformSite):
    seeded: rx.Seeded


@pytest.fixture
def site(mariadb_platform_site: Callable[..., AbstractContextManager[Site]]) -> Iterator[Site]:
    def install(url: str, root: Path) -> rx.Seeded:
        rx.build(url)
        return rx.seed(url, root)

    with mariadb_platform_site(
        Site, map_source=MAP, organisation="라이믹스 예시 커뮤니티", install=install
    ) as s:
        yield s


def owned_by(table: str, row: dict[str, Any], ids: set[int]) -> bool:
    """The row is one of these members' (it goes with them)."""
    if table == "rx_member_message":
        return row[MESSAGE_OWNER[row["message_type"]]] in ids
    return any(row.get(c) in ids for c in MEMBER_COLUMNS)


def cleared(table: str, row: dict[str, Any], ids: set[int]) -> dict[str, Any] | None:
    """What another member's row naming one of ``ids`` holds once they left (None: names
    none): the link 0 (Rhymix's NOT NULL bigint without a default), the copied id and
    names blank ('' where NOT NULL, else NULL)."""
    out = dict(row)
    for link, cols in NAMED.get(table, {}).items():
        if row[link] in ids:
            for c in cols:
                out[c] = 0 if c == link else (None if c == "user_id" else "")
    return None if out == row else out


def snapshot(site: Site) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of every rx_ table, by its whole content."""
    return mysql_rows_by_content(site.primary, "rx\\_%")


def shred_everything(site: Site) -> None:
    run_every_shred_job(site.primary)


def residue(site: Site, members: list[rx.Member]) -> set[tuple[str, str, str]]:
    """(table, column, what) wherever a member's address, mobile number (as stored, or with
    hyphens) or login id is still found in a text column of the site."""
    found: set[tuple[str, str, str]] = set()
    conn = mysql_site_connect(site.primary)
    try:
        with conn.cursor() as cur:
            for table, column in rx.text_columns(site.primary):
                for m in members:
                    forms = (("email", m.email), ("mobile", m.phone),
                             ("mobile", m.phone_dashed), ("login", m.user_id))  # fmt: skip
                    for what, value in forms:
                        cur.execute(
                            f"SELECT count(*) FROM `{table}` WHERE "
                            f"INSTR(CONVERT(`{column}` USING utf8mb4), %s) > 0",
                            (value,),
                        )
                        if cur.fetchone()[0]:
                            found.add((table, column, what))
    finally:
        conn.close()
    return found


def test_tables_are_built_as_rhymix_installs_them(site: Site) -> None:
    rows = site.sql(
        "SELECT table_name, engine, table_collation FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name LIKE 'rx\\_%'"
    )
    assert len(rows) == len(rx.TABLES)
    assert {(e, c) for _t, e, c in rows} == {("InnoDB", "utf8mb4_unicode_ci")}
    cols = {
        (t, c): (ct, n, cs)
        for t, c, ct, n, cs in site.sql(
            "SELECT table_name, column_name, column_type, is_nullable, character_set_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE()"
        )
    }
    assert cols[("rx_member", "member_srl")][:2] == ("bigint(20)", "NO")
    assert cols[("rx_member", "regdate")] == ("char(14)", "YES", "latin1")
    assert cols[("rx_member", "ipaddress")][2] == "latin1"
    assert cols[("rx_member", "last_login_ipaddress")][2] == "utf8mb4"
    assert cols[("rx_member", "denied")] == ("char(1)", "NO", "latin1")
    assert cols[("rx_documents", "content")][0] == "longtext"
    assert cols[("rx_member_message", "sender_srl")][:2] == ("bigint(20)", "NO")
    keys = {(t, i, c) for t, i, c in site.sql(
        "SELECT table_name, index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index) FROM "
        "information_schema.statistics WHERE table_schema = DATABASE() AND non_unique = 0 "
        "GROUP BY table_name, index_name")}  # fmt: skip
    assert ("rx_member", "unique_user_id", "user_id") in keys
    assert ("rx_member", "unique_email_address", "email_address") in keys
    assert ("rx_member_scrap", "unique_scrap", "member_srl,document_srl") in keys
    # No unique key at all on the logs of votes, reads and group membership.
    assert not any(t == "rx_document_voted_log" for t, _i, _c in keys)
    assert site.sql("SELECT regdate FROM rx_member WHERE user_id = 'admin'")[0][0].isdigit()


def test_datamap_check_and_discover_against_rhymix(site: Site) -> None:
    # Unmodified Rhymix has no column saying when a member withdrew: one line naming it.
    r = site.env.run("datamap", "check")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert f"column rx_member.{rx.WITHDRAWN_AT} does not exist in the database" in r.stderr
    rx.add_withdrawal_column(site.primary)
    ok = site.env.run("datamap", "check")
    assert ok.returncode == 0, ok.stderr
    assert "OK (41 tables" in ok.stdout
    # The send logs' recipient lists: searched by containment, which no index serves; said.
    assert "table rx_advanced_mailer_log lists email values in mail_to" in ok.stdout, ok.stdout
    found = site.env.run("datamap", "discover", "--json")
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    assert doc["complete"], doc
    # What the map cannot describe yet is reported, never silently passed over.
    assert sorted((f["table"], f["column"]) for f in doc["findings"] if not f["covered"]) == (
        UNCOVERED
    )
    cov = {(f["table"], f["column"]): f["category"] for f in doc["findings"]}
    assert cov[("rx_member", "email_address")] == "contact"
    assert cov[("rx_member", "phone_number")] == "contact"
    assert cov[("rx_member", "extra_vars")] == "profile"
    assert cov[("rx_documents", "content")] == "posts"
    assert cov[("rx_document_extra_vars", "value")] == "posts"
    assert cov[("rx_member_autologin", "ipaddress")] == "sessions"
    assert cov[("rx_ncenterlite_notify", "target_email_address")] == "notifications"
    strict = site.env.run("datamap", "discover", "--strict")
    assert strict.returncode == 1
    assert "rx_counter_log.ipaddress" in strict.stdout and "NOT COVERED" not in strict.stdout


def test_withdrawal_and_sweep_leave_nothing_of_the_leavers_and_touch_no_one_else(
    site: Site,
) -> None:
    rx.add_withdrawal_column(site.primary)
    seoyeon, minjae = rx.member_by_id("seoyeon92"), rx.member_by_id("minjae_k")
    leavers = {seoyeon.srl, minjae.srl}
    # minjae_k is withdrawn on the site: an administrator set Rhymix's own status DELETED.
    site.sql(
        "UPDATE rx_member SET status = 'DELETED', denied = 'Y' WHERE member_srl = %s", minjae.srl
    )
    # jiwoo.park, who stays, has seoyeon92 in their friend list: that entry goes with her.
    jiwoo = rx.member_by_id("jiwoo.park")
    site.sql(
        "INSERT INTO rx_member_friend (friend_srl, friend_group_srl, member_srl, target_srl, "
        "list_order, regdate) VALUES (990001, 0, %s, %s, 3, '20261101000000')",
        jiwoo.srl,
        seoyeon.srl,
    )
    before = snapshot(site)
    files_before = {p: p.read_bytes() for p in site.root.rglob("*") if p.is_file()}
    assert residue(site, [seoyeon, minjae])  # the seed wrote them everywhere

    ctx = get_context()
    mid = resolve_member(ctx, "seoyeon92")
    assert mid == seoyeon.srl
    rid = submit_withdrawal(ctx, mid)
    out = carry_out(ctx, rid, task_id="t-rx")
    # Nothing of the leaver is left where the residue check looks: the sender's columns of
    # others' notifications are cleared (also_names), the mail log row listing them is gone.
    assert out["state"] == "completed", out
    assert out["residue"]["found"] == 0 and not out["residue"]["incomplete"], out
    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1  # minjae_k, by the site's own status
    shred_everything(site)
    after = snapshot(site)

    # The members' rows are gone, as Rhymix's own deletion does, and so is every row the map
    # links to them.
    assert {r["member_srl"] for r in after["rx_member"].values()} & leavers == set()
    for table, rows in after.items():
        for r in rows.values():
            assert not any(r.get(c) in leavers for c in MEMBER_COLUMNS), table
    docs_by = {r["document_srl"]: r["member_srl"] for r in before["rx_documents"].values()}
    assert not any(
        docs_by.get(r["document_srl"]) in leavers for r in after["rx_document_extra_vars"].values()
    )

    # Every row of everyone else is exactly as it was, including their comments on the
    # leavers' documents, but for what named a leaver: the sender of their notifications, the
    # author of a document they scrapped, the other member of their message copies (cleared,
    # the row stays theirs); and the send-log rows listing a leaver's address or number.
    untouched = named = dropped = 0
    for table, rows in before.items():
        for key, r in rows.items():
            if owned_by(table, r, leavers):
                continue
            if table == "rx_document_extra_vars" and docs_by[r["document_srl"]] in leavers:
                continue
            if table.startswith("rx_advanced_mailer"):
                continue
            if table == "rx_member_friend" and r["target_srl"] in leavers:
                assert key not in after[table]  # another's friend entry naming a leaver
                dropped += 1
                continue
            now = cleared(table, r, leavers)
            if now is not None:
                assert tuple(sorted(now.items())) in after[table], table
                named += 1
                continue
            assert key in after[table], (table, {k: v for k, v in r.items() if "srl" in k})
            untouched += 1
    assert untouched > 60
    assert dropped == 1, dropped
    # doyun_lee's notification of seoyeon92's comment, jiwoo.park's scrap of minjae_k's
    # document, jiwoo.park's copy of the message to seoyeon92; the leavers' own copies went.
    assert named == 3, named
    assert [(r["sender_srl"], r["receiver_srl"]) for r in after["rx_member_message"].values()] == [
        (rx.member_by_id("jiwoo.park").srl, 0)]  # fmt: skip
    assert after["rx_advanced_mailer_log"] == after["rx_advanced_mailer_sms_log"] == {}
    on_leavers_docs = [
        r for r in after["rx_comments"].values() if docs_by[r["document_srl"]] in leavers
    ]
    assert on_leavers_docs and all(r["member_srl"] not in leavers for r in on_leavers_docs)
    assert len(before["rx_member_message"]) == 6
    assert {r["user_id"] for r in after["rx_documents"].values()} == {
        None, "jiwoo.park", "doyun_lee"}  # fmt: skip

    # Their attachments are shredded; everyone else's files are untouched.
    for p, content in files_before.items():
        if site.seeded.file_owner[p] in leavers:
            assert not p.exists(), p
        else:
            assert p.read_bytes() == content, p

    # No residue: the leavers' address, mobile number and login id are found nowhere in the
    # site's text columns.
    assert residue(site, [seoyeon, minjae]) == set()

    # The ledger counts what was destroyed; nothing of a Rhymix site is archived.
    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.outbox == 0
    assert acc.archived == acc.ledger_archive == {}
    assert acc.ledger_destroy[("rx_documents", "posts")] == 2
    assert acc.ledger_destroy[("rx_files", "uploads")] == 2
    assert acc.ledger_destroy[("rx_document_extra_vars", "posts")] == 2
    assert acc.ledger_destroy[("rx_member", "contact")] == 2
    assert acc.ledger_destroy[("rx_member_autologin", "sessions")] == 2


def test_access_through_the_rhymix_map(site: Site, tmp_path: Path) -> None:
    rx.add_withdrawal_column(site.primary)
    jiwoo = rx.member_by_id("jiwoo.park")
    ctx = get_context()
    assert resolve_member(ctx, "jiwoo.park") == jiwoo.srl
    out = tmp_path / "jiwoo.zip"
    rid = submit_access(jiwoo.srl, str(out), None, Requester(), plain=True)
    assert run_access(rid)["state"] == "completed"
    with zipfile.ZipFile(out) as zf:
        files = {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}

    def rows(name: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(files[f"{name}.csv"])))

    (me,) = rows("rx_member")
    assert (me["user_id"], me["email_address"], me["phone_number"]) == (
        "jiwoo.park", jiwoo.email, jiwoo.phone)  # fmt: skip
    assert "서울특별시" in me["extra_vars"]
    docs = rows("rx_documents")
    assert [d["member_srl"] for d in docs] == [str(jiwoo.srl)]
    (extra,) = rows("rx_document_extra_vars")
    assert extra["document_srl"] == docs[0]["document_srl"] and extra["value"] == (
        jiwoo.phone_dashed
    )
    assert {c["member_srl"] for c in rows("rx_comments")} == {str(jiwoo.srl)}
    (upload,) = rows("rx_files")
    assert upload["uploaded_filename"].startswith("./files/attach/images/")
    assert {r["member_srl"] for r in rows("rx_member_autologin")} == {str(jiwoo.srl)}
    assert {r["member_srl"] for r in rows("rx_ncenterlite_notify")} == {str(jiwoo.srl)}
    # No one else's row in any file.
    for name, text in files.items():
        if name.endswith(".csv") and "member_srl" in text.splitlines()[0]:
            for r in csv.DictReader(io.StringIO(text)):
                assert r.get("member_srl") in (None, str(jiwoo.srl)), name


def test_a_correction_through_the_rhymix_map(site: Site) -> None:
    rx.add_withdrawal_column(site.primary)
    ctx = get_context()
    jiwoo = resolve_member(ctx, "jiwoo.park")
    # Rhymix keeps the address split in two more columns (email_id, email_host): a correction
    # names all three, since the map has no way to say they are derived.
    rid = submit_correction(
        jiwoo,
        {"phone_number": "01011112222", "email_address": "jiwoo.new@mail.example",
         "email_id": "jiwoo.new", "email_host": "mail.example"},
    )  # fmt: skip
    out = run_correction(rid)
    assert out["state"] in ("notifying", "completed"), out
    assert site.sql(
        "SELECT phone_number, email_address, email_id, email_host FROM rx_member "
        "WHERE user_id = 'jiwoo.park'"
    )[0] == ("01011112222", "jiwoo.new@mail.example", "jiwoo.new", "mail.example")
    with pytest.raises(UserError, match="email_address: not an email address"):
        submit_correction(jiwoo, {"email_address": "not-an-address"})
    with pytest.raises(UserError, match="system column"):
        submit_correction(jiwoo, {"user_id": "someone_else"})
    # A member the site marked DELETED is no longer served.
    site.sql("UPDATE rx_member SET status = 'DELETED' WHERE user_id = 'doyun_lee'")
    with pytest.raises(UserError, match="has withdrawn"):
        submit_correction(resolve_member(ctx, "doyun_lee"), {"phone_number": "0101"})
    # The command line takes Rhymix's own login id.
    r = site.env.run("correct", "minjae_k", "--set", "phone_number=01033334444")
    assert r.returncode == 0, r.stderr
    assert f"submitted for member {rx.member_by_id('minjae_k').srl}" in r.stdout


def test_withdraw_takes_the_sites_login_id_and_marks_rhymixs_own_status(site: Site) -> None:
    rx.add_withdrawal_column(site.primary)
    r = site.env.run("withdraw", "doyun_lee")
    assert r.returncode == 0, r.stderr
    srl = rx.member_by_id("doyun_lee").srl
    assert f"for member {srl} submitted" in r.stdout
    status, at = site.sql(
        f"SELECT status, {rx.WITHDRAWN_AT} FROM rx_member WHERE member_srl = %s", srl
    )[0]
    assert status == "DELETED" and at is not None


def test_the_shipped_map_loads_and_names_what_the_engine_needs() -> None:
    dm = load_datamap(MAP)
    s = dm.subject
    assert (s.key, s.login_column, s.status_column, s.withdrawn_value, s.keep_row) == (
        "member_srl", "user_id", "status", "DELETED", False)  # fmt: skip
    assert (s.email_column, s.mobile_column) == ("email_address", "phone_number")
    assert dm.tables["rx_files"].files == ("uploaded_filename", "thumbnail_filename") or list(
        dm.tables["rx_files"].files
    ) == ["uploaded_filename", "thumbnail_filename"]
    assert all(dm.rule(c).period.is_zero for c in dm.categories_in_use())
    # Each message copy is its owner's, naming the other member (also_names).
    sent, received = dm.tables["rx_member_message_sent"], dm.tables["rx_member_message_received"]
    assert (sent.subject_column, [lk.column for lk in sent.also_names]) == (
        "sender_srl", ["receiver_srl"])  # fmt: skip
    assert (received.subject_column, dict(received.where)) == (
        "receiver_srl", {"message_type": ("R", "T")})  # fmt: skip
    assert dm.tables["rx_advanced_mailer_log"].identity_lists == ("mail_to",)


def test_rows_left_by_rhymixs_own_deletion_are_found_and_swept(site: Site, start_worker) -> None:  # type: ignore[no-untyped-def]
    """Rhymix's own 탈퇴 (procMemberLeave → deleteMember) deletes the member row and a few of
    its tables at once and leaves the rest under a member_srl no member has: orphans.
    ``datamap check`` counts them; the sweep records the member id, and a sweep past the grace
    takes the leaver's documents, comments and files (shredded by a real worker) with ledger
    entries, and nothing of anyone else."""
    rx.add_withdrawal_column(site.primary)
    jiwoo = rx.member_by_id("jiwoo.park")
    clean = site.env.run("datamap", "check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "orphans:" not in clean.stderr  # guests (0) and anonymous posts (negative) are not
    files = [p for p, owner in site.seeded.file_owner.items() if owner == jiwoo.srl]
    assert files and all(p.exists() for p in files)
    # What deleteMember(), its ncenterlite trigger and procMemberLeave delete, in that order.
    for table in ("member_auth_mail", "member_agreed", "member_nickname_log",
                  "member_group_member", "member", "ncenterlite_notify",
                  "ncenterlite_user_set", "member_autologin"):  # fmt: skip
        site.sql(f"DELETE FROM rx_{table} WHERE member_srl = %s", jiwoo.srl)
    before = snapshot(site)
    left = [
        t for t, rows in before.items() for r in rows.values()
        if any(r.get(c) == jiwoo.srl for c in MEMBER_COLUMNS)
    ]  # fmt: skip
    assert "rx_documents" in left and "rx_comments" in left and "rx_files" in left
    r = site.env.run("datamap", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "orphans: rx_documents.member_srl: 1 row(s)" in r.stderr, r.stderr
    assert "orphans: rx_files.member_srl: 1 row(s)" in r.stderr
    assert "jiwoo" not in r.stderr

    start_worker(site.env, concurrency=2)
    first = run_sweep(get_context())
    assert first.get("orphan_members", 0) == 0  # seen once: recorded, not yet taken
    assert site.sql("SELECT member_id FROM lifecycle_orphan_members") == [(jiwoo.srl,)]
    # The next night's sweep, past the grace.
    site.sql(
        "UPDATE lifecycle_orphan_members SET first_seen_at = %s",
        datetime.now(UTC) - ORPHAN_GRACE - timedelta(hours=1),
    )
    counts = run_sweep(get_context())
    assert counts["orphan_members"] == 1 and counts.get("withdrawal_subjects", 0) == 0, counts
    wait_until(lambda: not any(p.exists() for p in files), 60, "the leaver's files shredded")
    after = snapshot(site)
    for table, rows in after.items():
        for row in rows.values():
            assert not any(row.get(c) == jiwoo.srl for c in MEMBER_COLUMNS), table
            assert not any(row[c] == jiwoo.srl for c in NAMED.get(table, {})), table
    # Every row of everyone else is exactly as it was (a leaver's document's extra fields
    # went with it).
    docs_by = {r["document_srl"]: r["member_srl"] for r in before["rx_documents"].values()}
    gone_extra = [
        r for r in before["rx_document_extra_vars"].values()
        if docs_by.get(r["document_srl"]) == jiwoo.srl
    ]  # fmt: skip
    for table, rows in before.items():
        for row in rows.values():
            if owned_by(table, row, {jiwoo.srl}) or row in gone_extra:
                continue
            if table == "rx_advanced_mailer_log" or table == "rx_advanced_mailer_sms_log":
                continue
            # Others' rows naming the leaver stay theirs, the leaver's columns cleared.
            now = cleared(table, row, {jiwoo.srl})
            assert tuple(sorted((now or row).items())) in after[table], table
    assert not any(
        docs_by.get(r["document_srl"]) == jiwoo.srl
        for r in after["rx_document_extra_vars"].values()
    )
    for p, owner in site.seeded.file_owner.items():
        if owner != jiwoo.srl:
            assert p.exists(), p
    assert ("rx_documents", "user_id", "login") not in residue(site, [jiwoo])
    assert site.sql("SELECT count(*) FROM lifecycle_orphan_members") == [(0,)]
    acc = accounting(site.primary, site.archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.ledger_destroy[("rx_documents", "posts")] == 1
    assert acc.ledger_destroy[("rx_files", "uploads")] == 1
    assert acc.ledger_destroy[("rx_comments", "posts")] >= 1
    with pytest.raises(UserError, match="unknown member"):
        resolve_member(get_context(), "jiwoo.park")
