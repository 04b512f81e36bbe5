"""The residue check after a withdrawal or an erasure, on real PostgreSQL and MariaDB: the
member's email left in an unmapped table (another case, inside free text) or a mobile number
inside a JSON blob parks the request in ``needs_attention`` naming table.column and counts,
`--wait` exits non-zero, `status --json` lists it; a clean request completes; a budget that
runs out says "incomplete"; the identities never reach the requests table, results or logs."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from lifecycle.engine.context import clear_context_cache, get_context
from tests.helpers import (
    LifecycleEnv,
    add_members,
    create_demo_schema,
    redis_dump_repr,
    set_env,
    table_dump,
    wait_error_line,
)

EMAIL = "hong.gil_soon@example.test"
MOBILE = "010-4821-7395"
# What must never leave the member's rows: the address in any case, the number in any form.
SECRETS = (EMAIL, EMAIL.upper(), "hong.gil\\_soon", "01048217395", "4821-7395", "4821 7395")


def _site(eng, *, residue: bool) -> None:  # type: ignore[no-untyped-def]
    """Member 1 (the leaver), 2-6 others; ``legacy_notes``, a table the map does not know,
    holds the others' addresses and numbers (so its sample shows both kinds) and, with
    ``residue``, member 1's address in another case inside free text and their number inside
    a JSON blob."""
    add_members(eng, 1, mobile=MOBILE, email=EMAIL, name="홍길순")
    add_members(eng, 5, start=2)
    with eng.begin() as c:
        c.execute(
            text(
                "CREATE TABLE legacy_notes (id INTEGER PRIMARY KEY, body TEXT, extra TEXT, "
                "tag VARCHAR(40))"
            )
        )
        rows = [
            (
                i,
                f"문의 회신 member{i}@example.test 로 보냄",
                json.dumps({"tel": f"010-0000-{i:04d}"}),
            )
            for i in range(2, 7)
        ]
        if residue:
            rows.append(
                (
                    100,
                    f"상담 예약 변경 요청 ({EMAIL.upper()}), 저녁 연락 희망",
                    json.dumps({"tel": "+82 10-4821-7395", "memo": "재문의"}),
                )
            )
        for i, body, extra in rows:
            c.execute(
                text("INSERT INTO legacy_notes (id, body, extra, tag) VALUES (:i, :b, :e, 'x')"),
                {"i": i, "b": body, "e": extra},
            )
    clear_context_cache()


def _request(eng, rid: int) -> tuple[str, str | None, dict]:  # type: ignore[no-untyped-def,type-arg]
    with eng.connect() as c:
        state, error, payload = c.execute(
            text("SELECT state, error, payload FROM lifecycle_requests WHERE id = :i"), {"i": rid}
        ).one()
    if isinstance(payload, str):
        payload = json.loads(payload)
    return state, error, payload or {}


def _assert_no_identity(*texts: str) -> None:
    for blob in texts:
        low = blob.lower()
        for secret in SECRETS:
            assert secret.lower() not in low


def test_withdrawal_leaving_the_email_behind_needs_attention(
    primary_env: LifecycleEnv, start_worker
) -> None:
    env = primary_env
    eng = create_demo_schema()
    _site(eng, residue=True)
    worker = start_worker(env, queues=["requests", "notify"])
    r = env.run("withdraw", "1", "--wait", "--timeout", "120")
    assert r.returncode != 0, r.stdout
    line = wait_error_line(r)
    assert "needs attention" in line
    assert "legacy_notes.body (1)" in line and "legacy_notes.extra (1)" in line, line
    rid = int(line.split("request ")[1].split()[0])
    state, error, payload = _request(eng, rid)
    assert state == "needs_attention"
    assert payload["residue"]["found"] == {"legacy_notes.body": 1, "legacy_notes.extra": 1}
    assert payload["residue"]["incomplete"] is None
    # Destroyed all the same; the member's row is gone, no completion notice yet.
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM members WHERE id = 1")).scalar_one() == 0
    st = env.run("status", "--json")
    assert st.returncode == 1, st.stderr
    report = json.loads(st.stdout)
    (parked,) = report["requests"]["needs_attention"]
    assert parked["id"] == rid and parked["kind"] == "withdrawal"
    assert "legacy_notes.body (1)" in parked["reason"]
    assert any("legacy_notes.extra (1)" in a for a in report["attention"])
    # The task's result (what Flower shows) names the columns and counts.
    results = redis_dump_repr(env.vars["LIFECYCLE_RESULT_BACKEND"])
    assert "needs_attention" in results and "legacy_notes.extra" in results
    # Names and counts only: the requests table, the results in Redis, the worker's log and
    # every command's output.
    _assert_no_identity(
        table_dump(eng, "lifecycle_requests"),
        results,
        worker.output(),
        r.stdout + r.stderr,
        st.stdout + st.stderr,
    )
    # The identities are kept for the re-check only sealed (encrypted), never in clear.
    assert set(payload["residue"]["sealed"]) == {"nonce", "data"}
    # A retry searches again: one leftover is removed, the other is still there.
    with eng.begin() as c:
        c.execute(text("UPDATE legacy_notes SET extra = '{}' WHERE id = 100"))
    still = env.run("requests", "retry", str(rid))
    assert still.returncode != 0
    assert "still needs attention" in still.stderr and "legacy_notes.body (1)" in still.stderr
    assert "legacy_notes.extra" not in still.stderr, still.stderr
    state, error, payload = _request(eng, rid)
    assert state == "needs_attention" and payload["residue"]["found"] == {"legacy_notes.body": 1}
    # Bad input changes nothing: an acknowledgement needs a reason, a reason its flag.
    for bad in (("--acknowledge",), ("--acknowledge", "--reason", "ok"), ("--reason", "정리함")):
        r = env.run("requests", "retry", str(rid), *bad)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert _request(eng, rid)[0] == "needs_attention"
    # The operator removes the rest: the retry searches again, finds nothing, completes.
    with eng.begin() as c:
        c.execute(text("DELETE FROM legacy_notes WHERE id = 100"))
    again = env.run("requests", "retry", str(rid), "--wait", "--timeout", "120")
    assert again.returncode == 0, again.stderr
    state, error, payload = _request(eng, rid)
    assert (state, error) == ("completed", None)
    assert payload["residue"]["found"] == {} and payload["residue"]["acknowledged"] is False
    assert "sealed" not in payload["residue"]
    assert env.run("status", "--json").returncode in (0, 1)
    assert json.loads(env.run("status", "--json").stdout)["requests"]["needs_attention"] == []


def test_clean_withdrawal_completes(primary_env: LifecycleEnv) -> None:
    from lifecycle.rights.withdrawal import carry_out, submit_withdrawal

    eng = create_demo_schema()
    _site(eng, residue=False)
    ctx = get_context()
    rid = submit_withdrawal(ctx, 1)
    out = carry_out(ctx, rid, task_id="t-clean")
    assert out["state"] == "completed"
    assert out["residue"]["found"] == 0 and out["residue"]["incomplete"] is False
    state, error, payload = _request(eng, rid)
    assert (state, error) == ("completed", None)
    v = payload["residue"]
    assert v["found"] == {} and v["incomplete"] is None
    # legacy_notes.body and .extra (their samples hold emails and numbers) were searched.
    assert v["searched"] >= 2
    _assert_no_identity(json.dumps(out), table_dump(eng, "lifecycle_requests"))


def test_a_budget_used_up_is_incomplete_never_ok(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.core.settings import get_settings
    from lifecycle.rights.withdrawal import carry_out, submit_withdrawal

    set_env(primary_env, monkeypatch, LIFECYCLE_RESIDUE_BUDGET_SECONDS="0.000001")
    get_settings.cache_clear()
    eng = create_demo_schema()
    _site(eng, residue=False)
    ctx = get_context()
    rid = submit_withdrawal(ctx, 1)
    out = carry_out(ctx, rid, task_id="t-budget")
    assert out["state"] == "needs_attention"
    assert out["residue"]["incomplete"] is True
    state, error, _ = _request(eng, rid)
    assert state == "needs_attention"
    assert error is not None and "residue check incomplete: time budget" in error


def test_erasure_leaving_the_email_behind_needs_attention(primary_env: LifecycleEnv) -> None:
    from lifecycle.rights import erase
    from lifecycle.rights.common import Requester

    eng = create_demo_schema()
    _site(eng, residue=True)
    rid = erase.submit_erasure(1, "email,mobile", Requester())
    out = erase.run_erasure(rid)
    assert out["state"] == "needs_attention", out
    state, error, payload = _request(eng, rid)
    assert state == "needs_attention"
    assert error is not None and "legacy_notes.body (1)" in error
    assert "legacy_notes.extra (1)" in error
    assert payload["residue"]["found"] == {"legacy_notes.body": 1, "legacy_notes.extra": 1}
    with eng.connect() as c:
        # Erased all the same; the member stays.
        row = c.execute(text("SELECT status, email, mobile FROM members WHERE id = 1")).one()
    assert tuple(row) == ("active", None, None)
    _assert_no_identity(json.dumps(out), table_dump(eng, "lifecycle_requests"))
    # Another run changes nothing; a retry searches again (the member stays, so their own
    # rows are not residue) and completes only once the leftovers are gone.
    assert erase.run_erasure(rid)["state"] == "needs_attention"
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import load_for_update
    from lifecycle.rights.residue_check import retry_parked

    dm = get_context().datamap
    with session("primary") as s:
        req = load_for_update(s, rid)
        assert req is not None
        state, still = retry_parked(s, req, dm, operator="t")
        assert state is None and still is not None and "legacy_notes.body (1)" in still
    with eng.begin() as c:
        c.execute(text("DELETE FROM legacy_notes WHERE id = 100"))
    with session("primary") as s:
        req = load_for_update(s, rid)
        assert req is not None and retry_parked(s, req, dm, operator="t") == ("notifying", None)
    assert erase.run_erasure(rid)["state"] == "completed"
    assert _request(eng, rid)[:2] == ("completed", None)


def test_clean_erasure_completes(primary_env: LifecycleEnv) -> None:
    from lifecycle.rights import erase
    from lifecycle.rights.common import Requester

    eng = create_demo_schema()
    _site(eng, residue=False)
    rid = erase.submit_erasure(1, "mobile", Requester())
    out = erase.run_erasure(rid)
    assert out["state"] == "completed", out
    state, error, payload = _request(eng, rid)
    assert (state, error) == ("completed", None)
    assert payload["residue"]["found"] == {} and payload["residue"]["searched"] >= 1


def test_what_the_map_keeps_is_not_residue(primary_env: LifecycleEnv) -> None:
    """The scan on its own: a kept member row's reserved login id, another member's memo naming
    the leaver in a declared link column, and the leaver's rows of a table the map keeps after
    a withdrawal are left alone; the same address in a memo's text or another member's row
    counts."""
    import copy
    from dataclasses import replace

    from lifecycle.datamap.model import MemberLink
    from lifecycle.engine import residue

    eng = create_demo_schema()
    _site(eng, residue=False)
    with eng.begin() as c:
        c.execute(
            text(
                "CREATE TABLE memos (id INTEGER PRIMARY KEY, sender VARCHAR(64), "
                "recipient VARCHAR(64), body TEXT)"
            )
        )
        c.execute(
            text(
                "INSERT INTO memos VALUES (1, 'user000002', 'user000001', '안녕하세요'), "
                f"(2, 'user000003', 'user000002', '{EMAIL} 로 연락 주세요'), "
                "(3, 'user000004', 'user000005', 'member4@example.test')"
            )
        )
        c.execute(
            text(
                "INSERT INTO guardians (member_id, name, mobile, email) VALUES "
                f"(1, '보호자', '010-9999-0001', '{EMAIL}'), "
                f"(2, '보호자', '010-9999-0002', '{EMAIL.upper()}')"
            )
        )
    clear_context_cache()
    ctx = get_context()
    dm = copy.copy(ctx.datamap)
    dm.subject = replace(dm.subject, keep_row=True, login_column="login_id")
    guardians = dm.tables["guardians"]
    # A table the map keeps after a withdrawal; memos: a link by login id on both sides.
    kept = replace(
        guardians,
        purpose_end=tuple(p for p in guardians.purpose_end if p.kind != "withdrawal"),
    )
    memos = replace(
        guardians,
        name="memos",
        table="memos",
        key="id",
        keys=("id",),
        subject_column=None,
        links=(MemberLink("sender", "login_id"), MemberLink("recipient", "login_id")),
        columns={"guardian": ("body",)},
        identities=(),
    )
    dm.tables = {**dm.tables, "guardians": kept, "memos": memos}
    with ctx.primary.connect() as conn, conn.begin():
        ids = residue.capture_member(conn, dm, ctx.subject_table, 1)
        assert repr(ids) == "Identities(login=1, emails=1, mobiles=1)"
        # The kept row: blanked but for its login id.
        conn.execute(text("UPDATE members SET email = NULL, mobile = NULL WHERE id = 1"))
        res = residue.scan(conn, dm, ids, kept=residue.kept_in_withdrawal, budget=residue.Budget())
    assert res.found == {"memos.body": 1, "guardians.email": 1}, res.as_dict()
    assert res.incomplete is None


def test_the_kept_plan_follows_the_schema_and_its_samples(primary_env: LifecycleEnv) -> None:
    """A worker keeps the reflected schema and each table's sample between checks: a column
    whose kept sample held no address is not searched for one until the sample is older than
    SAMPLE_PLAN_SECONDS; a table or a column added since the last check is searched at once."""
    from lifecycle.engine import residue

    eng = create_demo_schema()
    _site(eng, residue=False)
    ctx = get_context()
    now = [1000.0]

    def check() -> dict[str, int]:
        with ctx.primary.connect() as conn, conn.begin():
            ids = residue.capture_member(conn, ctx.datamap, ctx.subject_table, 1)
            # Every table sampled (none searched whole): the kept samples are what is tested.
            res = residue.scan(
                conn, ctx.datamap, ids, kept=residue.kept_in_withdrawal,
                budget=residue.Budget(exhaustive_rows=-1), clock=lambda: now[0],
            )  # fmt: skip
        assert res.incomplete is None
        return res.found

    assert "legacy_notes.tag" not in check()
    with eng.begin() as c:
        c.execute(text("INSERT INTO legacy_notes (id, tag) VALUES (50, :e)"), {"e": EMAIL})
    with ctx.primary.connect() as conn:
        assert residue.schema_plan(conn) is residue.schema_plan(conn)
    # The kept sample of legacy_notes said its tag holds no address: not searched yet.
    assert "legacy_notes.tag" not in check()
    now[0] += residue.SAMPLE_PLAN_SECONDS + 1
    assert check().get("legacy_notes.tag") == 1
    # The schema changed: reflected again, the new table and column searched straight away.
    with eng.begin() as c:
        c.execute(text("CREATE TABLE later_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        c.execute(text("INSERT INTO later_notes VALUES (1, :e)"), {"e": f"연락처 {EMAIL}"})
        c.execute(text("ALTER TABLE legacy_notes ADD COLUMN memo TEXT"))
        c.execute(text("UPDATE legacy_notes SET memo = :e WHERE id = 2"), {"e": EMAIL})
    found = check()
    assert found.get("later_notes.body") == 1 and found.get("legacy_notes.memo") == 1, found
