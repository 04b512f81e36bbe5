"""A member named inside fixed text of another member's row (``also_names:`` with
``format:``), on PostgreSQL and MariaDB.

A small site of its own: point rows owned by a member, whose ``action`` reads ``"<login>
추천"`` when the points were for recommending that member (as Gnuboard5's recommender point
row). When the recommended member leaves (withdrawal, the sweep's member batches, replay), the
row stays its owner's with the text naming them rewritten; rows naming anyone else, even a
login that merely starts the same, stay exactly as they were.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import Connection, MetaData, Table, select, text

from lifecycle.datamap.indexes import missing_indexes
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
  table: t_members
  key: id
  login_column: login
  status_column: status
  withdrawn_value: withdrawn
  withdrawn_at_column: withdrawn_at
  contact: {email: email}
categories: [points]
retention:
  profile: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
  points: {period: 0d, legal_basis: "개인정보 보호법 제21조"}
tables:
  t_members:
    key: id
    subject_column: id
    columns:
      profile: [email]
  t_points:
    key: id
    subject_column: owner_login
    member_key: login
    also_names:
      - {column: action, member_key: login, format: "{} 추천", blank: [note],
         set: {action: "탈퇴 회원 추천"}}
    columns:
      points: [action, note, amount]
"""

# (owner, action, note)
POINTS = [
    ("user1", "user2 추천", "user2의 추천인"),
    ("user3", "user2 추천", "user2의 추천인"),
    ("user1", "user22 추천", "user22의 추천인"),  # another member: no exact match of user2
    ("user1", "쓰기", "free 3 글쓰기"),
    ("user2", "user4 추천", "user4의 추천인"),  # user2's own row: goes with them
]
DDL = (
    "CREATE TABLE t_members ({pk}, login VARCHAR(40) NOT NULL UNIQUE, "
    "email VARCHAR(80), status VARCHAR(20) NOT NULL, withdrawn_at {ts} NULL){engine}",
    "CREATE TABLE t_points ({pk}, owner_login VARCHAR(40) NOT NULL, "
    "action VARCHAR(100) NOT NULL, note VARCHAR(200) NOT NULL, amount INT NOT NULL){engine}",
    "CREATE INDEX ix_t_points_owner ON t_points (owner_login)",
)


def _fill(c: Connection) -> None:
    add_small_site_members(c, "t_members", (1, 2, 3, 4, 22), nick=False)
    for owner, action, note in POINTS:
        c.execute(
            text(
                "INSERT INTO t_points (owner_login, action, note, amount) VALUES (:o, :a, :n, 1000)"
            ),
            {"o": owner, "a": action, "n": note},
        )


def test_a_template_is_explained_and_a_bad_one_refused_in_one_line() -> None:
    dm = parse_datamap(MAP, "points.yaml")
    lk = dm.tables["t_points"].also_names[0]
    assert (lk.column, lk.template, lk.spelled("kim01")) == ("action", "{} 추천", "kim01 추천")
    # The column is the row's data (listed under a category), not what finds the row.
    assert "action" not in dm.tables["t_points"].key_columns
    lines = "\n".join(describe(dm))
    assert "also names a member in action (their t_members.login, written '{} 추천')" in lines
    for bad in ('"추천"', '"{} 추천 {}"', '"{}{} 추천"'):
        with pytest.raises(DataMapError) as info:
            parse_datamap(MAP.replace('"{} 추천"', bad), "points.yaml")
        assert info.value.line is not None and "\n" not in info.value.message
        assert "must hold exactly one {}" in info.value.message


@pytest.mark.integration
def test_a_leaver_named_in_text_leaves_it_and_the_row_stays(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = primary_env
    site = small_site(env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary, archive = site.primary, site.archive
    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # The rows are found by plain equality on the column: an index on it is advised.
    eng = site_engine(primary)
    advised = {(m.table, m.columns) for m in missing_indexes(get_context().datamap, eng)}
    eng.dispose()
    assert ("t_points", ("action",)) in advised, advised
    # The column must be text.
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        MAP.replace("column: action,", "column: amount,").replace("{action: ", "{amount: "),
        encoding="utf-8",
    )
    r = env.run("datamap", "check", "--file", str(wrong))
    assert r.returncode == 2 and "t_points.amount holds a member inside text" in r.stderr, r.stderr

    # The member each row's text names, in SQL (a hold on them keeps the row): a text not
    # spelled by the template, or shorter than it, names nobody.
    dm = get_context().datamap
    eng = site_engine(primary)
    md = MetaData()
    t = Table("t_points", md, autoload_with=eng)
    Table("t_members", md, autoload_with=eng)
    lk = dm.tables["t_points"].also_names[0]
    with eng.connect() as c:
        c.execute(text("INSERT INTO t_points (owner_login, action, note, amount) "
                       "VALUES ('user1', '추천', '', 0)"))  # fmt: skip
        q = select(t.c.action, dm.link_expr(lk, t.c.action, md)).order_by(t.c.id)
        assert c.execute(q).all() == [
            ("user2 추천", 2),
            ("user2 추천", 2),
            ("user22 추천", 22),
            ("쓰기", None),
            ("user4 추천", 4),
            ("추천", None),
        ]
        # The same spelling in SQL, as a dry run selects the rows naming a leaver.
        m = md.tables["t_members"]
        assert c.execute(select(lk.spelled_sql(m.c.login)).where(m.c.id == 2)).scalar() == (
            "user2 추천"
        )
        c.rollback()
    eng.dispose()

    # Member 2's access package: the rows naming them, not the user22 row.
    files = access_package(2, tmp_path)
    named = list(csv.DictReader(io.StringIO(files["t_points.action.csv"])))
    assert [(r["action"], r["note"]) for r in named] == [("user2 추천", "user2의 추천인")] * 2

    ctx = get_context()
    done = carry_out(ctx, submit_withdrawal(ctx, 2), task_id="t-named-text")
    assert done["state"] == "completed", done
    assert done["residue"]["found"] == 0, done
    assert sql_rows(primary, "SELECT owner_login, action, note FROM t_points ORDER BY id") == [
        ("user1", "탈퇴 회원 추천", ""),
        ("user3", "탈퇴 회원 추천", ""),
        ("user1", "user22 추천", "user22의 추천인"),
        ("user1", "쓰기", "free 3 글쓰기"),
    ]
    acc = accounting(primary, archive)
    assert acc.ledger_ok, acc.ledger_message
    # Member 2's own row, and the two rows naming them (filed under member 2).
    assert acc.ledger_destroy[("t_points", "points")] == 1 + 2

    # Member 22 is withdrawn on the site; the sweep's member batch does the same.
    eng = site_engine(primary)
    with eng.begin() as c:
        c.execute(text("UPDATE t_members SET status = 'withdrawn' WHERE id = 22"))
    eng.dispose()
    counts = run_sweep(get_context())
    assert counts["withdrawal_subjects"] == 1, counts
    assert (
        sql_rows(primary, "SELECT action FROM t_points WHERE note = ''")
        == [("탈퇴 회원 추천",)] * 3
    )
    clear_context_cache()


@pytest.mark.integration
def test_replay_after_a_restore_rewrites_the_text_again(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = small_site(primary_env, tmp_path, monkeypatch, datamap=MAP, ddl=DDL, fill=_fill)
    primary = site.primary
    withdrawn_then_restored(primary, tmp_path, 2)
    assert sql_rows(primary, "SELECT count(*) FROM t_points WHERE action = 'user2 추천'") == [(2,)]
    replay_reapplies_one(primary_env)
    assert sql_rows(primary, "SELECT count(*) FROM t_points WHERE action LIKE 'user2 %'") == [(0,)]
    assert sql_rows(primary, "SELECT count(*) FROM t_points WHERE action = '탈퇴 회원 추천'") == [
        (2,)
    ]
    clear_context_cache()
