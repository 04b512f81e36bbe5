"""The residue search itself, on real PostgreSQL and MariaDB: a distinctive login id is found
inside text as a word only, a short or plain one as a whole value only; a table within the
exhaustive bound is searched in every text column, a larger one by a sample, and the verdict
names it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

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
