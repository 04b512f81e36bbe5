"""Rows that name a second member (``also_names:``), on PostgreSQL and MariaDB.

A small site of its own: notifications owned by their recipient naming their sender by member
id (with the sender's nickname and address copied in), and memo copies owned by one member
naming the other by login id (with the other's IP). When the owner leaves, their rows go as
any; when the named member leaves, the rows stay for their owners with only the named
member's columns cleared, in the withdrawal and in the sweep's member batches; the residue
check then finds nothing, and the named member's access package holds those columns only.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from lifecycle.datamap.loader import describe, parse_datamap
from lifecycle.datamap.model import DataMapError
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.engine.test_replay import replay_reapplies_one, withdrawn_then_restored
from tests.helpers import (
    LifecycleEnv,
    access_package,
    accounting,
    add_small_site_members,
    site_engine,
    small_site,
    sql_rows,
)

MAP = """\
version: 1
subject:
  table: n_members
  key: id
  login_column: login
  status_column: status
  withdrawn_value: withdrawn
  withdrawn_at_column: withdrawn_at
  contact: {email: email}
categories: [notifications, messages]
retention:
  profile: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
  notifications: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
  messages: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
tables:
  n_members:
    key: id
    subject_column: id
    columns:
      profile: [email, nick]
  n_notify:
    key: id
    subject_column: member_id
    also_names:
      - column: sender_id
        blank: [sender_nick, sender_email]
        set: {sender_id: 0}
    columns:
      notifications: [sender_nick, sender_email, summary]
  n_memos:
    key: id
    subject_column: owner_login
    member_key: login
    also_names:
      - {column: other_login, member_key: login, blank: [other_ip]}
    columns:
      messages: [body, other_ip]
"""

DDL = (
    "CREATE TABLE n_members ({pk}, login VARCHAR(40) NOT NULL UNIQUE, email VARCHAR(80), "
    "nick VARCHAR(40), status VARCHAR(20) NOT NULL, withdrawn_at {ts} NULL){engine}",
    # sender_id: NOT NULL and no default, as Rhymix's target_member_srl.
    "CREATE TABLE n_notify ({pk}, member_id INT NOT NULL, sender_id INT NOT NULL, "
    "sender_nick VARCHAR(40) NOT NULL, sender_email VARCHAR(80) NOT NULL, "
    "summary VARCHAR(200)){engine}",
    "CREATE TABLE n_memos ({pk}, owner_login VARCHAR(40) NOT NULL, other_login "
    "VARCHAR(40) NULL, body TEXT, other_ip VARCHAR(45) NULL){engine}",
    "CREATE INDEX ix_n_notify_member ON n_notify (member_id)",
    "CREATE INDEX ix_n_notify_sender ON n_notify (sender_id)",
    "CREATE INDEX ix_n_memos_owner ON n_memos (owner_login)",
    "CREATE INDEX ix_n_memos_other ON n_memos (other_login)",
)


def _fill(c: Connection) -> None:
    add_small_site_members(c, "n_members", range(1, 5), nick=True)
    # Everyone notifies everyone once, and sends everyone a memo (two copies each).
    for a in range(1, 5):
        for b in range(1, 5):
            if a == b:
                continue
            c.execute(
                text(
                    "INSERT INTO n_notify (member_id, sender_id, sender_nick, sender_email, "
                    "summary) VALUES (:b, :a, :n, :e, :s)"
                ),
                {"a": a, "b": b, "n": f"닉{a}", "e": f"user{a}@example.org",
                 "s": f"comment {a}->{b}"},
            )  # fmt: skip
            for owner, other in ((f"user{b}", f"user{a}"), (f"user{a}", f"user{b}")):
                c.execute(
                    text(
                        "INSERT INTO n_memos (owner_login, other_login, body, other_ip) "
                        "VALUES (:o, :x, :body, :ip)"
                    ),
                    {"o": owner, "x": other, "body": f"memo {a}->{b}", "ip": f"10.0.{a}.{b}"},
                )


def _exec(url: str, sql: str, **params: object) -> None:
    eng = site_engine(url)
    with eng.begin() as c:
        c.execute(text(sql), params)
    eng.dispose()


def test_also_names_is_explained_and_its_mistakes_are_one_line() -> None:
    dm = parse_datamap(MAP, "names.yaml")
    lk = dm.tables["n_notify"].also_names[0]
    assert (lk.column, lk.member_key, lk.blank, lk.values) == (
        "sender_id", "id", ("sender_nick", "sender_email"), (("sender_id", 0),))  # fmt: skip
    assert "sender_id" in dm.tables["n_notify"].key_columns
    lines = "\n".join(describe(dm))
    assert (
        "n_notify: also names a member in sender_id (their n_members.id); when that member "
        "leaves the row stays for its owner with sender_id set to 0, sender_nick blanked, "
        "sender_email blanked" in lines
    ), lines
    assert "n_memos: also names a member in other_login (their n_members.login)" in lines
    bad = {
        "      - {column: other_login, member_key: login, blank: [other_ip]}":
            "      - {column: other_login, member_key: nick, blank: [other_ip]}",
        "        set: {sender_id: 0}": "        set: {summary: ''}",
        "        blank: [sender_nick, sender_email]": "        blank: [sender_nick, id]",
        "      - column: sender_id\n": "      - column: member_id\n",
    }  # fmt: skip
    said = {
        "member_key 'nick' must be the subject's key or login_column",
        "also_names set: 'summary' is neither the column nor listed under blank:",
        "also_names blank: 'id' is a key or link column",
        "also_names column 'member_id' is already a link of the table",
    }
    got = set()
    for old, new in bad.items():
        with pytest.raises(DataMapError) as info:
            parse_datamap(MAP.replace(old, new), "names.yaml")
        assert info.value.line is not None and "\n" not in info.value.message
        got.update(s for s in said if s in info.value.message)
    assert got == said
    # A column in a category with a retention period cannot be cleared.
    kept = MAP.replace(
        "  notifications: {period: 0d,", "  notifications: {period: 3mo, from: purpose_end,"
    ).replace('legal_basis: "개인정보 보호법 제21조"}\n  messages', 'legal_basis: "통신비밀보호법 '
              '제15조의2, 시행령 제41조"}\n  messages')  # fmt: skip
    # A site's own category says what kind of record it is: the statute covers access logs.
    kept = kept.replace("categories: [notifications, messages]",
                        "categories: [{notifications: access_log}, messages]")  # fmt: skip
    with pytest.raises(DataMapError) as info:
        parse_datamap(kept, "names.yaml")
    assert "blank: column sender_nick is in category 'notifications'" in info.value.message


@pytest.mark.integration
def test_a_named_member_leaving_clears_their_side_and_the_owner_keeps_the_row(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = primary_env
    site = small_site(env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary, archive = site.primary, site.archive
    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # Without set:, a NOT NULL integer link with no default cannot be cleared: said at check.
    unset = tmp_path / "unset.yaml"
    unset.write_text(MAP.replace("        set: {sender_id: 0}\n", ""), encoding="utf-8")
    r = env.run("datamap", "check", "--file", str(unset))
    assert r.returncode == 2
    assert "column n_notify.sender_id cannot be cleared" in r.stderr, r.stderr

    # Member 2's access package: their own rows whole, and where others' rows name them, the
    # columns naming them only.
    files = access_package(2, tmp_path)
    named = list(csv.DictReader(io.StringIO(files["n_notify.sender_id.csv"])))
    assert len(named) == 3
    assert set(named[0]) == {"id", "sender_id", "sender_nick", "sender_email"}
    assert {r["sender_email"] for r in named} == {"user2@example.org"}
    memos = list(csv.DictReader(io.StringIO(files["n_memos.other_login.csv"])))
    assert len(memos) == 6 and set(memos[0]) == {"id", "other_login", "other_ip"}
    assert "body" not in files["n_memos.other_login.csv"]
    own = list(csv.DictReader(io.StringIO(files["n_notify.csv"])))
    assert {r["member_id"] for r in own} == {"2"}

    before_notify = sql_rows(
        primary, "SELECT id, member_id, sender_id, summary FROM n_notify ORDER BY id"
    )
    before_memos = sql_rows(primary, "SELECT id, owner_login, body FROM n_memos ORDER BY id")

    # Member 2 withdraws through the lifecycle.
    ctx = get_context()
    done = carry_out(ctx, submit_withdrawal(ctx, 2), task_id="t-names")
    assert done["state"] == "completed", done
    assert done["residue"]["found"] == 0, done
    # Their own rows are gone.
    assert sql_rows(primary, "SELECT count(*) FROM n_notify WHERE member_id = 2") == [(0,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_memos WHERE owner_login = 'user2'") == [(0,)]
    # Others' rows naming them stay, with the naming columns cleared and nothing else changed.
    named_rows = sql_rows(
        primary,
        "SELECT member_id, sender_id, sender_nick, sender_email, summary FROM n_notify "
        "WHERE summary LIKE 'comment 2->%' ORDER BY id",
    )
    assert [r[1:4] for r in named_rows] == [(0, "", "")] * 3
    assert {r[0] for r in named_rows} == {1, 3, 4}
    assert sql_rows(
        primary,
        "SELECT count(*) FROM n_memos WHERE other_login IS NULL AND other_ip IS NULL "
        "AND body LIKE '%2%'",
    ) == [(6,)]
    after_notify = sql_rows(
        primary, "SELECT id, member_id, sender_id, summary FROM n_notify ORDER BY id"
    )
    kept = [r for r in before_notify if r[1] != 2]
    assert [(r[0], r[1], r[3]) for r in after_notify] == [(r[0], r[1], r[3]) for r in kept]
    assert all(r[2] == s[2] for r, s in zip(after_notify, kept, strict=True) if s[2] != 2)
    after_memos = sql_rows(primary, "SELECT id, owner_login, body FROM n_memos ORDER BY id")
    assert after_memos == [r for r in before_memos if r[1] != "user2"]
    # The ledger counts the clearing as the named member's destruction of those columns.
    acc = accounting(primary, archive)
    assert acc.ledger_ok, acc.ledger_message
    assert acc.ledger_destroy[("n_notify", "notifications")] == 3 + 3
    assert acc.ledger_destroy[("n_memos", "messages")] == 6 + 6

    # Member 3 is withdrawn on the site; the sweep's member batch does the same.
    _exec(primary, "UPDATE n_members SET status = 'withdrawn' WHERE id = 3")
    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1, counts
    assert sql_rows(
        primary, "SELECT count(*) FROM n_notify WHERE sender_id = 3 OR sender_email LIKE 'user3%'"
    ) == [(0,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_memos WHERE other_login = 'user3'") == [(0,)]
    # What stays: members 1 and 4's rows naming each other, and naming the leavers cleared.
    assert sql_rows(primary, "SELECT count(*) FROM n_notify") == [(6,)]
    assert sql_rows(
        primary, "SELECT count(*) FROM n_notify WHERE sender_id IN (1, 4) AND sender_email <> ''"
    ) == [(2,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_memos") == [(12,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_memos WHERE other_login IS NULL") == [(8,)]
    clear_context_cache()


@pytest.mark.integration
def test_replay_after_a_restore_clears_the_named_member_again(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = small_site(primary_env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary = site.primary
    withdrawn_then_restored(primary, tmp_path, 2)
    named = (
        "SELECT count(*) FROM n_notify WHERE sender_id = 2 OR (sender_email <> '' AND "
        "summary LIKE 'comment 2->%')"
    )
    assert sql_rows(primary, named) == [(3,)]
    replay_reapplies_one(primary_env)
    assert sql_rows(primary, named) == [(0,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_memos WHERE other_login = 'user2'") == [(0,)]
    assert sql_rows(primary, "SELECT count(*) FROM n_members WHERE id = 2") == [(0,)]
    clear_context_cache()
