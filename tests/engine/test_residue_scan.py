"""The residue search itself, on real PostgreSQL and MariaDB: a distinctive login id is found
inside text as a word only, a short or plain one as a whole value only; a table within the
exhaustive bound is searched in every text column, a larger one by a sample, and the verdict
names it. The check's statements each run under the budget's remaining time, in one round trip
on MariaDB, and one the server stops leaves the destroying transaction as it was."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from lifecycle.engine import residue
from lifecycle.engine.context import get_context
from lifecycle.requests.residue import SAMPLED_NOTE, sampled_line
from tests.helpers import LifecycleEnv, create_demo_schema

EMAIL = "hong.gil_soon@example.test"


def test_login_rule() -> None:
    assert residue.login_in_text("lee_mh7") and residue.login_in_text("jiwoo.park")
    assert residue.login_in_text("seoyeon92")
    # Too short, or an ordinary word: whole values only.
    assert not residue.login_in_text("kim_1") and not residue.login_in_text("password")


@pytest.mark.integration
def test_login_inside_text_and_sampled_tables(primary_env: LifecycleEnv) -> None:
    eng = create_demo_schema()
    mysql = eng.dialect.name != "postgresql"
    with eng.begin() as c:
        c.execute(text("CREATE TABLE free_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        for i, body in enumerate([
            "작성자 lee_mh7 님의 글",  # a word of the text: found
            "LEE_MH7",  # the whole value, another case: found
            "xlee_mh7 and lee_mh7x",  # inside longer ids: not
            "lee_mh7@mail.example 로 회신",  # an address's local part: not
            "kim",  # a short id as a whole value: found
            "kimchi 레시피",  # a short id inside a word: never
        ]):  # fmt: skip
            c.execute(text("INSERT INTO free_notes VALUES (:i, :b)"), {"i": i, "b": body})
        c.execute(text("CREATE TABLE big_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        c.execute(text("INSERT INTO big_notes VALUES (1, :b)"), {"b": f"예전 문의 {EMAIL}"})
        for i in range(2, 51):
            c.execute(text("INSERT INTO big_notes VALUES (:i, '안내문')"), {"i": i})
        # The row estimates the bound is checked against.
        c.execute(text("ANALYZE TABLE big_notes, free_notes" if mysql else "ANALYZE"))
    dm = get_context().datamap

    def search(login: str, budget: residue.Budget) -> residue.Result:
        ids = residue.Identities(login=login, emails=frozenset({EMAIL}))
        with eng.begin() as conn:
            return residue.scan(conn, dm, ids, kept=residue.kept_in_withdrawal, budget=budget)

    whole = search("lee_mh7", residue.Budget(exhaustive_rows=1000))
    assert whole.found.get("free_notes.body") == 2, whole.found
    assert whole.found.get("big_notes.body") == 1 and whole.sampled == []
    assert search("kim", residue.Budget(exhaustive_rows=1000)).found.get("free_notes.body") == 1
    # big_notes (50 rows) over the bound: its newest 5 rows hold no address, so its body is
    # not searched, and the verdict says the table was only sampled.
    sampled = search("lee_mh7", residue.Budget(sample_rows=5, exhaustive_rows=10))
    assert "big_notes.body" not in sampled.found and sampled.sampled == ["big_notes"]
    line = sampled_line(sampled.as_dict())
    assert line is not None and line.startswith(SAMPLED_NOTE) and "big_notes" in line
    assert sampled_line(whole.as_dict()) is None


def _timeout_setting(conn: Any, pg: bool) -> Any:
    return conn.execute(
        text("SHOW statement_timeout" if pg else "SELECT @@session.max_statement_time")
    ).scalar()


def test_a_statement_the_server_stops_leaves_the_transaction_as_it_was(
    primary_env: LifecycleEnv,
) -> None:
    eng = create_demo_schema()
    pg = eng.dialect.name == "postgresql"
    with eng.begin() as c:
        c.execute(text("CREATE TABLE step_work (id INTEGER PRIMARY KEY)"))
    with eng.begin() as conn:
        before = _timeout_setting(conn, pg)
        # The destroying step's own work, before its check.
        conn.execute(text("INSERT INTO step_work VALUES (1)"))
        stmts = residue._Statements(conn, residue._Clock(0.5, time.monotonic))
        assert stmts.run(select(func.count()).select_from(text("step_work"))) == [(1,)]
        # Far longer than the budget: only the server's timeout ends it in time to raise.
        with pytest.raises(residue._OutOfTime):
            stmts.run(select(func.pg_sleep(30) if pg else func.sleep(30)))
        stmts.close()
        assert _timeout_setting(conn, pg) == before
        conn.execute(text("INSERT INTO step_work VALUES (2)"))
    with eng.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT id FROM step_work ORDER BY id"))] == [1, 2]


def test_the_check_costs_one_statement_per_search(primary_env: LifecycleEnv) -> None:
    """No savepoint, no session variable read and put back around each search on MariaDB,
    and one row-estimate query for all tables: a check is about a dozen round trips on the
    demo site, not six per table."""
    eng = create_demo_schema()
    pg = eng.dialect.name == "postgresql"
    dm = get_context().datamap
    ids = residue.Identities(login="lee_mh7", emails=frozenset({EMAIL}))
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()))

    with eng.begin() as conn:
        residue.scan(conn, dm, ids, kept=residue.kept_in_withdrawal, budget=residue.Budget())
        event.listen(eng, "before_cursor_execute", seen)
        try:
            res = residue.scan(
                conn, dm, ids, kept=residue.kept_in_withdrawal, budget=residue.Budget()
            )
        finally:
            event.remove(eng, "before_cursor_execute", seen)
    assert res.incomplete is None and res.searched > 0
    searches = [s for s in sent if "sum(CASE" in s or "count(*) AS" in s]
    estimates = [s for s in sent if "TABLE_ROWS" in s or "reltuples" in s]
    assert len(estimates) == 1, estimates
    if pg:
        # Per search: savepoint, timeout, search, release; the caller's timeout read once and
        # put back once.
        assert sum("current_setting('statement_timeout')" in s for s in sent) == 1
        assert len(sent) <= 4 * len(searches) + 4, sent
    else:
        assert all(s.startswith("SET STATEMENT max_statement_time") for s in searches), searches
        assert not [s for s in sent if "SAVEPOINT" in s or "@@session" in s], sent
        assert len(sent) <= len(searches) + 2, sent


@pytest.mark.integration
def test_a_group_search_finds_for_each_member_what_its_own_search_finds(
    primary_env: LifecycleEnv,
) -> None:
    """scan_many (withdrawals destroyed together) first asks each column for any of the
    group's values, then counts exactly: each member's result is its single search's, and
    what matches one member is never in another's."""
    eng = create_demo_schema()
    mysql = eng.dialect.name != "postgresql"
    with eng.begin() as c:
        c.execute(text("CREATE TABLE free_notes (id INTEGER PRIMARY KEY, body TEXT, extra TEXT)"))
        for i, (body, blob) in enumerate([
            (f"예전 문의 {EMAIL.upper()} 로 회신", "{}"),  # member a's address, another case
            ("작성자 lee_mh7 님의 글", '{"tel": "+82 10-4821-7395"}'),  # b's login, a's number
            ("xlee_mh7 and lee_mh7x", '{"tel": "010.2222.3333"}'),  # not b; c's number
            ("010-2222 3333", "park.jw@example.test"),  # not c's number (see below); d's address
            ("01048217395", "[]"),  # a's number, digits only
            ("4821-7395 안내", "[]"),  # only the last two groups of a's: not a's
        ]):  # fmt: skip
            c.execute(
                text("INSERT INTO free_notes VALUES (:i, :b, :j)"), {"i": i, "b": body, "j": blob}
            )
        c.execute(text("ANALYZE TABLE free_notes" if mysql else "ANALYZE"))
    dm = get_context().datamap
    group = [
        residue.Identities(
            login="hgs_77", emails=frozenset({EMAIL}), mobiles=frozenset({"01048217395"})
        ),
        residue.Identities(login="lee_mh7", emails=frozenset({"lee@example.test"})),
        residue.Identities(login="kim", mobiles=frozenset({"01022223333"})),
        residue.Identities(emails=frozenset({"park.jw@example.test"})),
        residue.Identities(login="nobody.here", emails=frozenset({"no.one@example.test"})),
        residue.Identities(),
    ]
    budget = residue.Budget(exhaustive_rows=1000)
    with eng.begin() as conn:
        alone = [residue.scan(conn, dm, i, kept=residue.kept_in_withdrawal, budget=budget)
                 for i in group]  # fmt: skip
        together = residue.scan_many(
            conn, dm, group, kept=residue.kept_in_withdrawal, budget=budget
        )
    for one, many in zip(alone, together, strict=True):
        assert {k: v for k, v in many.as_dict().items() if k != "seconds"} == {
            k: v for k, v in one.as_dict().items() if k != "seconds"
        }
        assert many.skipped == one.skipped
    assert together[0].found.get("free_notes.body") == 2  # the address, the digits
    assert together[0].found.get("free_notes.extra") == 1  # +82 10-4821-7395
    assert together[1].found.get("free_notes.body") == 1
    # Mixed separators are no spelling of c's number: the first question finds the row, the
    # exact count does not.
    assert (
        together[2].found.get("free_notes.extra") == 1
        and "free_notes.body" not in together[2].found
    )
    assert together[3].found.get("free_notes.extra") == 1
    assert not {k for k in together[4].found if k.startswith("free_notes")}
    assert together[5].skipped
