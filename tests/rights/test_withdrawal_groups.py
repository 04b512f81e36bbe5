"""Withdrawals carried out as a group (lifecycle/rights/withdrawal.py, groups), on real
PostgreSQL and MariaDB: many requests sent together complete with each its own ledger entries
and residue verdict; one member with residue, one on a legal hold, one whose move fails is
stopped alone with its reason while the others complete; a crash in the middle of the shared
destroying step leaves every request re-runnable."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import redis
from sqlalchemy import text

from lifecycle.core import queues
from lifecycle.core.dispatch import NOTICE_SEND_BATCH, NOTICE_SEND_EACH
from lifecycle.core.errors import UserError
from lifecycle.engine import residue
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.requests.relay import dispatch_pending
from lifecycle.rights import withdrawal
from lifecycle.rights.withdrawal import carry_out_group, submit_withdrawal
from tests.helpers import (
    LifecycleEnv,
    accounting,
    add_members,
    check_exact_accounting,
    create_demo_schema,
    remaining_rows,
    snapshot_site,
    sql_rows,
    wait_until,
)

EMAIL = "hong.gil_soon@example.test"
MOBILE = "010-4821-7395"
LEAVERS = list(range(1, 13))
RESIDUE, HELD = 1, 3


def _site(eng) -> None:  # type: ignore[no-untyped-def]
    """Members 1-12 leave, 20-24 stay. ``legacy_notes`` (a table the map does not know) holds
    the stayers' addresses and numbers, and member 1's address and number: their residue."""
    add_members(eng, 1, mobile=MOBILE, email=EMAIL, name="홍길순")
    add_members(eng, 11, start=2)
    add_members(eng, 5, start=20)
    with eng.begin() as c:
        c.execute(text("CREATE TABLE legacy_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        rows = [(i, f"문의 회신 member{i}@example.test 010-0000-{i:04d}") for i in range(20, 25)]
        rows.append((100, f"상담 예약 변경 요청 ({EMAIL.upper()}), 저녁 연락 희망"))
        for i, body in rows:
            c.execute(
                text("INSERT INTO legacy_notes (id, body) VALUES (:i, :b)"), {"i": i, "b": body}
            )
    clear_context_cache()


def _requests(url: str) -> dict[int, tuple[str, str | None, str | None, dict]]:  # type: ignore[type-arg]
    """member id -> (state, error, task_id, payload) of its withdrawal."""
    out = {}
    for mid, state, error, task_id, payload in sql_rows(
        url, "SELECT member_id, state, error, task_id, payload FROM lifecycle_requests "
        "WHERE kind = 'withdrawal'"
    ):  # fmt: skip
        if isinstance(payload, str):
            payload = json.loads(payload)
        out[int(mid)] = (state, error, task_id, payload or {})
    return out


def _submit_all(env: LifecycleEnv) -> dict[int, int]:
    ctx = get_context()
    return {mid: submit_withdrawal(ctx, mid) for mid in LEAVERS}


def test_withdrawals_sent_together_complete_as_groups_each_with_its_own_outcome(
    primary_env: LifecycleEnv, start_worker
) -> None:
    env = primary_env
    primary, archive = (env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"],
                        env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])  # fmt: skip
    eng = create_demo_schema()
    _site(eng)
    until = (date.today() + timedelta(days=30)).isoformat()
    r = env.run("hold", "add", "--member", str(HELD), "--until", until, "--reason",
                "서울중앙지검 수사협조 요청 2026-123")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rids = _submit_all(env)
    # What beat's relay does: every waiting request is sent at once, before a worker runs.
    assert dispatch_pending() == len(LEAVERS)
    worker = start_worker(env, queues=["requests"], concurrency=2)

    def settled() -> bool:
        reqs = _requests(primary)
        held = reqs[HELD][1] or ""
        return held.startswith("on legal hold") and all(
            reqs[m][0] in ("completed", "needs_attention", "failed") for m in LEAVERS if m != HELD
        )

    wait_until(settled, timeout=120, what="every withdrawal carried as far as it can go")
    reqs = _requests(primary)
    assert reqs[HELD][0] == "restricted", reqs[HELD]
    assert reqs[RESIDUE][0] == "needs_attention"
    assert "legacy_notes.body (1)" in (reqs[RESIDUE][1] or "")
    done = [m for m in LEAVERS if m not in (HELD, RESIDUE)]
    assert all(reqs[m][0] == "completed" for m in done), {m: reqs[m][:2] for m in done}
    # Carried by groups: a group's tag on the requests it took (the first task claimed them).
    tags = [reqs[m][2] or "" for m in LEAVERS]
    # (A task that locked its own row before the first group's claim skipped it carries that
    # request alone: not every request need be in a group, but the burst is carried by groups.)
    assert max(tags.count(t) for t in set(tags)) >= 5, tags
    assert "destroyed together" in worker.output()
    # Each request its own residue verdict (the residue of member 1 is not the others'), its
    # own ledger entries.
    for m in done:
        assert reqs[m][3]["residue"]["found"] == {}, reqs[m][3]["residue"]
    assert reqs[RESIDUE][3]["residue"]["found"] == {"legacy_notes.body": 1}
    entries = sql_rows(archive, "SELECT request_id, action FROM ledger_entries")
    for m in [*done, RESIDUE]:
        actions = {a for rid, a in entries if rid == rids[m]}
        assert "destroy" in actions, (m, actions)
    assert not {a for rid, a in entries if rid == rids[HELD]} & {"destroy", "archive"}
    # The members stay: their rows untouched.
    left = {r[0] for r in sql_rows(primary, "SELECT id FROM members")}
    assert {20, 21, 22, 23, 24, HELD} <= left and not left & set(done)
    assert EMAIL not in worker.output() and MOBILE not in worker.output()
    # The completion notices: each its own row, released, sent by one task per group (the
    # notify queue has no worker here, so the messages wait in the broker).
    queued = [json.loads(m) for m in redis.Redis.from_url(env.vars["LIFECYCLE_BROKER_URL"])
              .lrange(queues.NOTIFY, 0, -1)]  # fmt: skip
    names = [m["headers"]["task"] for m in queued]
    each = [m["headers"]["argsrepr"] for m in queued if m["headers"]["task"] == NOTICE_SEND_EACH]
    groups = {t for t in tags if tags.count(t) > 1}
    assert 1 <= len(each) <= len(groups), names
    notes = sql_rows(primary, "SELECT n.dedup_key, r.state FROM lifecycle_notices n JOIN "
                     "lifecycle_notice_recipients r ON r.notice_id = n.id")  # fmt: skip
    assert sorted(notes) == sorted(
        (f"withdrawal_completed:request{rids[m]}", "pending" if m in done else "held")
        for m in [*done, RESIDUE, HELD]
    ), notes
    alone = [m for m in done if tags.count(reqs[m][2] or "") == 1]
    assert names.count(NOTICE_SEND_BATCH) == len(alone), names


def _dispatched(url: str) -> None:
    # As the relay leaves them: sent, not started.
    from tests.helpers import site_engine

    e = site_engine(url)
    with e.begin() as c:
        c.execute(
            text("UPDATE lifecycle_requests SET state = 'dispatched' WHERE kind = 'withdrawal'")
        )
    e.dispose()


class Killed(BaseException):
    """The worker dies (not an error the group could catch)."""


def test_a_crash_in_the_shared_destroying_step_leaves_every_request_rerunnable(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = primary_env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = create_demo_schema()
    _site(eng)
    with eng.begin() as c:
        c.execute(text("DELETE FROM legacy_notes WHERE id = 100"))
    snap = snapshot_site(primary)
    rids = _submit_all(primary_env)
    _dispatched(primary)
    ctx = get_context()
    leader = rids[LEAVERS[0]]

    def killed(*a, **k):  # type: ignore[no-untyped-def]
        raise Killed("worker killed after every move of the group, before its commit")

    monkeypatch.setattr(residue, "scan_many", killed)
    with pytest.raises(Killed):
        carry_out_group(ctx, leader, task_id="t-group")
    reqs = _requests(primary)
    # Each request's own steps before the shared one committed; the shared one left nothing.
    assert {reqs[m][0] for m in LEAVERS} == {"archived"}
    left = {r[0] for r in sql_rows(primary, "SELECT id FROM members")}
    assert set(LEAVERS) <= left
    monkeypatch.undo()
    # The task's next delivery: the same group, to the end, as if nothing had happened.
    out = carry_out_group(ctx, leader, task_id="t-group")
    assert out["group"]["requests"] == [rids[m] for m in LEAVERS]
    assert out["group"]["destroyed_together"] == len(LEAVERS)
    # (Restricted and archived together before the crash: nothing of those left to do.)
    assert out["group"]["together"] == {"destroyed": len(LEAVERS), "completed": len(LEAVERS)}
    assert {s[0] for s in _requests(primary).values()} == {"completed"}
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))
    # Moved by the same statements, each member's rows still filed under its own request: the
    # archived parts carry it, and its ledger entries name it with its own scope and member.
    by_request = {rid: m for m, rid in rids.items()}
    refs = {}
    for rid, ref, details in sql_rows(
        archive, "SELECT request_id, subject_ref, details FROM ledger_entries "
        "WHERE action IN ('archive', 'destroy')"
    ):  # fmt: skip
        d = json.loads(details) if isinstance(details, str) else details
        assert rid in by_request and d["scope"] == f"req:{rid}", (rid, d)
        assert refs.setdefault(rid, ref) == ref
    assert set(refs) == set(by_request)
    assert len(set(refs.values())) == len(LEAVERS)
    for rid, ref in sql_rows(archive, "SELECT request_id, subject_ref FROM archive_records"):
        assert refs[rid] == ref, rid
    # A third run is a no-op.
    again = carry_out_group(ctx, leader, task_id="t-group")
    assert again["state"] == "completed"
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


def test_a_member_whose_move_fails_fails_alone(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    eng = create_demo_schema()
    _site(eng)
    with eng.begin() as c:
        c.execute(text("DELETE FROM legacy_notes WHERE id = 100"))
    rids = _submit_all(primary_env)
    _dispatched(primary)
    ctx = get_context()
    bad = rids[5]
    real = withdrawal.move

    def failing(ctx, conn, sels, scope, **kw):  # type: ignore[no-untyped-def]
        # Whether the group's members move together (``scopes``) or each alone.
        mine = {s.request_id for s in (kw.get("scopes") or {}).values()} | {scope.request_id}
        if kw.get("delete_rows", True) and bad in mine:
            raise UserError("members: a column that cannot be cleared (test)")
        return real(ctx, conn, sels, scope, **kw)

    monkeypatch.setattr(withdrawal, "move", failing)
    out = carry_out_group(ctx, rids[1], task_id="t-group")
    reqs = _requests(primary)
    assert reqs[5][0] == "failed" and "cannot be cleared (test)" in (reqs[5][1] or "")
    assert all(reqs[m][0] == "completed" for m in LEAVERS if m != 5), reqs
    # The shared transaction rolled back whole, so each took its own destroying step.
    assert out["group"]["destroyed_together"] == 0
    assert out["group"]["states"] == {"completed": len(LEAVERS) - 1, "failed": 1}
