"""Columns listing members (``also_names:`` with ``list:``) and rows deleted when the member
they name leaves (``on_leave: delete``), on PostgreSQL and MariaDB.

A small site of its own: polls no member owns listing their voters' login ids, each followed
by a comma (as Gnuboard5's ``g5_poll.mb_ids``), and teams owned by a member listing their
members' ids (``"1, 2 ,3"``). When a member leaves (withdrawal, the sweep's member batches,
replay), their entries leave every list and the other entries stay exactly as they were; the
residue check then finds nothing, and their access package holds the rows listing them with
their own entry only. Friend-list rows owned by one member naming another go when the friend
leaves, and a member row naming its recommender (the members' table) has that column blanked.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from lifecycle.datamap.loader import describe, parse_datamap
from lifecycle.datamap.member_lists import entries, named, without
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
  table: l_members
  key: id
  login_column: login
  status_column: status
  withdrawn_value: withdrawn
  withdrawn_at_column: withdrawn_at
  contact: {email: email}
categories: [teams]
retention:
  profile: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
  teams: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
tables:
  l_members:
    key: id
    subject_column: id
    also_names:
      - {column: referrer, member_key: login}   # who recommended them, by login id
    columns:
      profile: [email, nick]
  l_polls:
    key: id
    also_names:
      - {column: voters, member_key: login, list: ","}
    non_personal: [subject]
  l_teams:
    key: id
    subject_column: owner_id
    also_names:
      - {column: member_ids, list: ","}
    columns:
      teams: [name]
  l_friends:
    key: id
    subject_column: owner_id
    also_names:
      - {column: friend_id, on_leave: delete}
    columns:
      teams: [since]
"""

POLLS = [
    ("lunch", "user1,user2,user3,"),
    ("dinner", "user2,"),
    # user22 is someone else: a containment hit that is no entry of user2.
    ("snack", "user22,user4,"),
    ("tea", "USER2,user4,"),  # another case: MySQL's _ci collations make it the same id
    ("none", None),
]
TEAMS = [(1, "red", "1, 2 ,3"), (3, "blue", "3,4"), (4, "green", "2")]
DDL = (
    "CREATE TABLE l_members ({pk}, login VARCHAR(40) NOT NULL UNIQUE, email VARCHAR(80), "
    "nick VARCHAR(40), status VARCHAR(20) NOT NULL, withdrawn_at {ts} NULL, "
    "referrer VARCHAR(40) NULL){engine}",
    "CREATE TABLE l_polls ({pk}, subject VARCHAR(80) NOT NULL, voters TEXT NULL){engine}",
    "CREATE TABLE l_teams ({pk}, owner_id INT NOT NULL, name VARCHAR(40), "
    "member_ids VARCHAR(200) NOT NULL){engine}",
    "CREATE INDEX ix_l_teams_owner ON l_teams (owner_id)",
    "CREATE TABLE l_friends ({pk}, owner_id INT NOT NULL, friend_id INT NOT NULL, "
    "since VARCHAR(14)){engine}",
    "CREATE INDEX ix_l_friends_owner ON l_friends (owner_id)",
    "CREATE INDEX ix_l_friends_friend ON l_friends (friend_id)",
)


def _fill(c: Connection) -> None:
    add_small_site_members(c, "l_members", (1, 2, 3, 4, 22), nick=True)
    c.execute(text("UPDATE l_members SET referrer = 'user2' WHERE id IN (3, 4)"))
    for subject, voters in POLLS:
        c.execute(
            text("INSERT INTO l_polls (subject, voters) VALUES (:s, :v)"),
            {"s": subject, "v": voters},
        )
    for owner, friend in ((1, 2), (2, 1), (3, 2), (1, 3), (4, 1)):
        c.execute(
            text("INSERT INTO l_friends (owner_id, friend_id, since) VALUES (:o, :f, '2026')"),
            {"o": owner, "f": friend},
        )
    for owner, name, ids in TEAMS:
        c.execute(
            text("INSERT INTO l_teams (owner_id, name, member_ids) VALUES (:o, :n, :m)"),
            {"o": owner, "n": name, "m": ids},
        )


def test_a_list_keeps_every_other_entry_as_it_was() -> None:
    assert entries("a, b ,,c,", ",") == ["a", "b", "c"]
    assert without("kim01,lee_mh7,park,", ",", ["lee_mh7"]) == "kim01,park,"
    assert without("1, 2 ,3", ",", [2]) == "1,3"
    assert without("lee_mh7,", ",", ["LEE_MH7"]) == ""
    assert without("kim012,kim01,", ",", ["kim01"]) == "kim012,"
    assert named("kim012,Kim01,", ",", {"kim01": 7, "park": 8}) == [7]
    assert named(None, ",", {"kim01": 7}) == []


def test_a_list_is_explained_and_its_mistakes_are_one_line() -> None:
    dm = parse_datamap(MAP, "lists.yaml")
    lk = dm.tables["l_polls"].also_names[0]
    assert (lk.column, lk.member_key, lk.separator) == ("voters", "login", ",")
    assert dm.tables["l_polls"].purpose_end == ()
    assert "member_ids" not in dm.tables["l_teams"].blank_columns
    lines = "\n".join(describe(dm))
    assert "l_polls: rows no member owns; they stay" in lines, lines
    assert (
        "l_polls: lists members in voters (their l_members.login, separated by ','); when one "
        "leaves their entries are removed and the others kept" in lines
    ), lines
    assert (
        "l_friends: also names a member in friend_id (their l_members.id); when that member "
        "leaves the row is deleted" in lines
    ), lines
    bad = {
        "{column: friend_id, on_leave: delete}": "{column: friend_id, on_leave: delete, "
            "blank: [since]}",
        '{column: voters, member_key: login, list: ","}':
            '{column: voters, member_key: login, list: ",", blank: [subject]}',
        '{column: member_ids, list: ","}': '{column: member_ids, list: " "}',
        "    non_personal: [subject]\n": "    purpose_end: [withdrawal]\n",
        "    non_personal: [subject]\n  l_teams": "    columns:\n      teams: [subject]\n  l_teams",
    }  # fmt: skip
    said = {
        "also_names 'friend_id' deletes the row when that member leaves: it takes no blank:",
        "also_names 'voters' is a list: only the leaver's entries are removed, so it takes no "
        "blank: or set:",
        "also_names list: give the separator",
        "rows no member owns (only also_names:) stay; give no purpose_end",
        "rows no member owns (only also_names:) hold no category",
    }
    got = set()
    for old, new in bad.items():
        assert old in MAP
        with pytest.raises(DataMapError) as info:
            parse_datamap(MAP.replace(old, new), "lists.yaml")
        assert info.value.line is not None and "\n" not in info.value.message
        got.update(s for s in said if s in info.value.message)
    assert got == said
    # A site's own category says what kind of record it is: the statute covers access logs.
    kept = MAP.replace("categories: [teams]", "categories: [{teams: access_log}]").replace(
        '  teams: {period: 0d, legal_basis: "개인정보 보호법 제21조"}',
        '  teams: {period: 3mo, from: purpose_end, legal_basis: "통신비밀보호법 제15조의2, '
        '시행령 제41조"}',
    )
    with pytest.raises(DataMapError) as info:
        parse_datamap(kept, "lists.yaml")
    assert "category 'teams' has a retention period (only 0d categories can go)" in str(
        info.value.message
    )


@pytest.mark.integration
def test_a_leaver_leaves_every_list_and_the_rest_stays(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = primary_env
    site = small_site(env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary, archive = site.primary, site.archive
    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # A list must be text: an integer column is refused at check.
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(MAP.replace("column: voters,", "column: id,"), encoding="utf-8")
    r = env.run("datamap", "check", "--file", str(wrong))
    assert r.returncode == 2 and "l_polls.id lists members" in r.stderr, r.stderr

    # Member 2's access package: the rows listing them, with their own entry only.
    files = access_package(2, tmp_path)
    polls = list(csv.DictReader(io.StringIO(files["l_polls.voters.csv"])))
    assert [r["voters"] for r in polls] == ["user2"] * 3, polls  # lunch, dinner, tea
    assert "user1" not in files["l_polls.voters.csv"]
    friends = list(csv.DictReader(io.StringIO(files["l_friends.friend_id.csv"])))
    assert sorted(r["friend_id"] for r in friends) == ["2", "2"], friends
    teams = list(csv.DictReader(io.StringIO(files["l_teams.member_ids.csv"])))
    assert [(r["id"], r["member_ids"]) for r in teams] == [("1", "2"), ("3", "2")], teams

    ctx = get_context()
    done = carry_out(ctx, submit_withdrawal(ctx, 2), task_id="t-lists")
    assert done["state"] == "completed", done
    assert done["residue"]["found"] == 0, done
    assert sql_rows(primary, "SELECT subject, voters FROM l_polls ORDER BY id") == [
        ("lunch", "user1,user3,"),
        ("dinner", ""),
        ("snack", "user22,user4,"),
        ("tea", "user4,"),
        ("none", None),
    ]
    assert sql_rows(primary, "SELECT owner_id, member_ids FROM l_teams ORDER BY id") == [
        (1, "1,3"),
        (3, "3,4"),
        (4, ""),
    ]
    # Friend rows: member 2's own went with them; others' naming them are deleted (1->2, 3->2).
    assert sql_rows(primary, "SELECT owner_id, friend_id FROM l_friends ORDER BY id") == [
        (1, 3),
        (4, 1),
    ]
    # Members 3 and 4 no longer name their recommender; nothing else of their rows changed.
    assert sql_rows(primary, "SELECT id, referrer, nick FROM l_members ORDER BY id") == [
        (1, None, "닉1"),
        (3, None, "닉3"),
        (4, None, "닉4"),
        (22, None, "닉22"),
    ]
    acc = accounting(primary, archive)
    assert acc.ledger_ok, acc.ledger_message
    # Member 2's own row, and the two rows naming them (profile: only the link was cleared).
    assert acc.ledger_destroy[("l_members", "profile")] == 1 + 2
    # Member 2's own row and the two naming them, all under member 2.
    assert acc.ledger_destroy[("l_friends", "teams")] == 3
    # Filed under the leaver: three polls (profile, the table has no category), two teams.
    assert acc.ledger_destroy[("l_polls", "profile")] == 3
    assert acc.ledger_destroy[("l_teams", "teams")] == 2

    # Member 3 is withdrawn on the site; the sweep's member batch does the same, and member 3's
    # own team (red is member 1's) goes whole.
    sql = "UPDATE l_members SET status = 'withdrawn' WHERE id = 3"
    eng = site_engine(primary)
    with eng.begin() as c:
        c.execute(text(sql))
    eng.dispose()
    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1, counts
    assert sql_rows(primary, "SELECT voters FROM l_polls WHERE subject = 'lunch'") == [("user1,",)]
    assert sql_rows(primary, "SELECT owner_id, member_ids FROM l_teams ORDER BY id") == [
        (1, "1"),
        (4, ""),
    ]
    assert sql_rows(primary, "SELECT owner_id, friend_id FROM l_friends") == [(4, 1)]
    clear_context_cache()


@pytest.mark.integration
def test_replay_after_a_restore_removes_the_leaver_again(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = small_site(primary_env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary = site.primary
    withdrawn_then_restored(primary, tmp_path, 2)
    assert sql_rows(primary, "SELECT voters FROM l_polls WHERE subject = 'lunch'") == [
        ("user1,user2,user3,",)
    ]
    replay_reapplies_one(primary_env)
    assert sql_rows(primary, "SELECT voters FROM l_polls WHERE subject = 'lunch'") == [
        ("user1,user3,",)
    ]
    assert sql_rows(primary, "SELECT member_ids FROM l_teams WHERE owner_id = 1") == [("1,3",)]
    assert sql_rows(primary, "SELECT count(*) FROM l_friends WHERE friend_id = 2") == [(0,)]
    clear_context_cache()
