"""Legal holds: the sweep, the purge and a withdrawal leave held data in place; after the
release the next run destroys it. Real PostgreSQL, the real CLI."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.purge import purge_preview, run_purge
from lifecycle.engine.sweep import run_sweep
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.helpers import LifecycleEnv, seed_site, table_counts, withdraw_all
from tests.helpers import sql_one as _one
from tests.helpers import sql_rows as _q


@pytest.fixture
def site(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    # The website's DB on PostgreSQL, then on MariaDB (the holds table lives there).
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 40)
    clear_context_cache()
    yield primary_env
    clear_context_cache()


def _urls(env: LifecycleEnv) -> tuple[str, str]:
    return env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]


def _payer(primary: str, status: str = "active") -> int:
    return _one(
        primary,
        "SELECT m.id FROM members m WHERE status = :s AND EXISTS "
        "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1",
        s=status,
    )


def _member_rows(primary: str, mid: int) -> tuple[int, int]:
    return (
        _one(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid),
        _one(primary, "SELECT count(*) FROM payments WHERE member_id = :m", m=mid),
    )


def _ledger(archive: str, action: str) -> list[tuple]:  # type: ignore[type-arg]
    return _q(
        archive,
        "SELECT actor, subject_ref, details, rows FROM ledger_entries WHERE action = :a "
        "ORDER BY seq",
        a=action,
    )


def _leaves(value: object) -> list[object]:
    """Every key and scalar inside a JSON value (dates and ids compare whole, not by digit)."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (k, *_leaves(v))]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _hold(env: LifecycleEnv, *args: str) -> int:
    r = env.run("--operator", "officer-lee", "hold", "add", *args)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[1])


def test_hold_keeps_a_member_from_the_sweep_until_released(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    withdraw_all(primary, "id % 3 = 0")
    mid = _payer(primary, "withdrawn")
    until = (date.today() + timedelta(days=90)).isoformat()
    hid = _hold(site, "--member", str(mid), "--reason", "수사협조 요청 2026-77", "--until", until)
    [(actor, ref, details, _)] = _ledger(archive, "hold")
    assert actor == "operator:officer-lee" and ref and details["hold_id"] == hid
    # The hold names the member by reference only: no value in its details is the member's id.
    assert str(mid) not in {str(v) for v in _leaves(details)}

    dry = site.run("sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"legal holds {hid} active" in dry.stdout
    assert "1 withdrawn member(s) left in place" in dry.stdout

    ctx = get_context()
    out = run_sweep(ctx)
    assert out["holds"] == [hid] and out["held_withdrawn_members"] == 1
    # Every other withdrawn member is gone; the held one is untouched.
    assert _one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 1
    assert _member_rows(primary, mid)[0] == 1 and _member_rows(primary, mid)[1] > 0

    r = site.run("hold", "list")
    assert r.returncode == 0 and f"member {mid}" in r.stdout and "active" in r.stdout
    r = site.run("--operator", "officer-lee", "hold", "release", str(hid))
    assert r.returncode == 0, r.stderr
    [(actor, ref2, details, _)] = _ledger(archive, "hold_release")
    assert actor == "operator:officer-lee" and ref2 == ref and details["hold_id"] == hid

    out = run_sweep(ctx)
    assert "holds" not in out
    assert _member_rows(primary, mid) == (0, 0)


def test_hold_keeps_archived_records_from_the_purge_by_re_encryption(site: LifecycleEnv) -> None:
    from lifecycle.vault import keystore
    from models.archive import ArchivedRecord

    primary, archive = _urls(site)
    ctx = get_context()
    mid = _payer(primary)
    other = _one(
        primary,
        "SELECT m.id FROM members m WHERE status = 'active' AND id <> :m AND EXISTS "
        "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1",
        m=mid,
    )
    for m in (mid, other):
        assert carry_out(ctx, submit_withdrawal(ctx, m))["state"] == "completed"
    a = create_engine(archive)
    with Session(a) as s, s.begin():
        ref, ref_other = keystore.subject_ref(s, mid), keystore.subject_ref(s, other)
    mine = _one(archive, "SELECT count(*) FROM archive_records WHERE subject_ref = :r", r=ref)
    assert mine > 0

    later = date.today() + timedelta(days=366 * 11)  # every bucket has expired by then
    until = (later + timedelta(days=30)).isoformat()
    hid = _hold(
        site, "--member", str(mid), "--reason", "민사소송 증거보전 2026가합1", "--until", until
    )

    preview = purge_preview(ctx, later)
    assert sum(b.held_rows for b in preview) == mine
    assert {hid} == {i for b in preview for i in b.held_by}
    out = run_purge(ctx, task_id="t-purge", today=later)
    assert out["held_rows"] == mine and out["holds"] == [hid]
    # The held member's records are all still there and readable, under the hold's own key;
    # everybody else's are gone, with every expired bucket key.
    assert (
        _one(archive, "SELECT count(*) FROM archive_records WHERE subject_ref = :r", r=ref) == mine
    )
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE subject_ref <> :r", r=ref) == 0
    assert _q(archive, "SELECT DISTINCT retain_until FROM archive_records") == [
        (date.fromisoformat(until),)
    ]
    assert (
        _one(
            archive,
            "SELECT count(*) FROM archive_data_keys WHERE wrapped_key IS NOT NULL "
            "AND category NOT LIKE 'hold:%'",
        )
        == 0
    )
    with Session(a) as s:
        for rec in s.query(ArchivedRecord).all():
            assert keystore.decrypt_archived(s, rec)
    # One entry per expiring bucket that held something, naming the hold, never the member id.
    kept = _ledger(archive, "hold_keep")
    assert sum(rows for *_, rows in kept) == mine
    assert all(details["hold_ids"] == [hid] for _, _, details, _ in kept)
    assert not _q(archive, "SELECT 1 FROM archive_records WHERE subject_ref = :r", r=ref_other)
    # A second run changes nothing and records nothing twice.
    run_purge(ctx, today=later)
    assert _one(archive, "SELECT count(*) FROM archive_records") == mine
    assert len(_ledger(archive, "hold_keep")) == len(kept)

    r = site.run("hold", "release", str(hid))
    assert r.returncode == 0, r.stderr
    out = run_purge(ctx, today=later)
    assert out["rows"] == mine and out["held_rows"] == 0
    assert _one(archive, "SELECT count(*) FROM archive_records") == 0
    assert (
        _one(archive, "SELECT count(*) FROM archive_data_keys WHERE wrapped_key IS NOT NULL") == 0
    )
    with Session(a) as s:
        from lifecycle.vault import ledger

        assert ledger.verify(s).ok
    a.dispose()


def test_withdrawal_of_a_held_member_stops_at_the_restriction(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    ctx = get_context()
    mid = _payer(primary)
    until = (date.today() + timedelta(days=10)).isoformat()
    rid = submit_withdrawal(ctx, mid)
    hid = _hold(site, "--request", str(rid), "--reason", "분쟁조정 신청 2026-5", "--until", until)
    out = carry_out(ctx, rid)
    assert out["state"] == "restricted" and out["held_by"] == [hid]
    assert _member_rows(primary, mid)[0] == 1 and _member_rows(primary, mid)[1] > 0
    assert (
        _one(primary, "SELECT count(*) FROM lifecycle_restrictions WHERE member_id = :m", m=mid)
        == 1
    )
    err = _q(primary, "SELECT error FROM lifecycle_requests WHERE id = :r", r=rid)[0][0]
    assert err == f"on legal hold {hid} until {until}"
    assert _one(archive, "SELECT count(*) FROM archive_records") == 0
    # The sweep keeps off too (the member is held, and its request is open).
    run_sweep(ctx)
    assert _member_rows(primary, mid)[0] == 1
    # Not overdue while held: status lists it as held instead.
    from lifecycle.core import db
    from lifecycle.ops.status import overdue_by_kind

    with db.session("primary") as s:
        from datetime import UTC, datetime

        later = datetime.now(UTC) + timedelta(days=6)
        assert [o.id for o in overdue_by_kind(s, now=later)] == []

    r = site.run("status")
    assert "Legal holds active: 1" in r.stdout, r.stdout + r.stderr
    assert f"requests stopped by a legal hold: {rid}" in r.stdout
    r = site.run("hold", "release", str(hid))
    assert r.returncode == 0, r.stderr
    assert f"withdrawal request {rid} dispatched again" in r.stdout
    assert carry_out(ctx, rid)["state"] == "completed"
    assert _member_rows(primary, mid) == (0, 0)


def test_category_hold_keeps_tables_and_buckets(site: LifecycleEnv) -> None:
    primary, _ = _urls(site)
    withdraw_all(primary, "id % 2 = 0")
    before_pay = _one(
        primary,
        "SELECT count(*) FROM payments p JOIN members m ON m.id = p.member_id "
        "WHERE m.status = 'withdrawn'",
    )
    assert before_pay > 0
    until = (date.today() + timedelta(days=30)).isoformat()
    hid = _hold(site, "--category", "payment", "--reason", "세무조사 대응 2026-3", "--until", until)
    ctx = get_context()
    out = run_sweep(ctx)
    assert out["held_categories"] == ["payment"] and "payments" in out["held_tables"]
    # Payments (and the member rows they reference) stay; the other tables were processed.
    assert (
        _one(
            primary,
            "SELECT count(*) FROM payments p JOIN members m ON m.id = p.member_id "
            "WHERE m.status = 'withdrawn'",
        )
        == before_pay
    )
    assert (
        _one(
            primary,
            "SELECT count(*) FROM contracts c JOIN members m ON m.id = c.member_id "
            "WHERE m.status = 'withdrawn'",
        )
        == 0
    )
    r = site.run("hold", "release", str(hid))
    assert r.returncode == 0, r.stderr
    run_sweep(ctx)
    assert _one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0


R = ["--reason", "수사협조 요청 2026-1"]
U = ["--until", "2099-01-01"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--member", "1", *R], "--until DATE is required"),
        (["--member", "1", *R, "--until", "2031-13-01"], "--until must be a date"),
        (["--member", "1", *R, "--until", "2001-01-01"], "is in the past"),
        (["--member", "x", *R, *U], "--member must be"),
        (["--member", "999999", *R, *U], "unknown member"),
        (["--request", "999999", *R, *U], "unknown request"),
        (["--category", "nope", *R, *U], "unknown category"),
        (["--member", "1", "--category", "payment", *R, *U], "exactly one"),
        ([*R, *U], "exactly one"),
        (["--member", "1", *U], "--reason is required"),
        (["--member", "1", "--reason", "담당 010-1234-5678", *U], "personal data"),
    ],
)
def test_bad_hold_input_is_refused_and_changes_nothing(
    site: LifecycleEnv, args: list[str], message: str
) -> None:
    primary, archive = _urls(site)
    before = (table_counts(primary), table_counts(archive))
    r = site.run("hold", "add", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert (table_counts(primary), table_counts(archive)) == before
    assert _one(primary, "SELECT count(*) FROM lifecycle_holds") == 0


def test_bad_release_is_refused(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    for arg, message in (("abc", "HOLD_ID must be"), ("4242", "unknown hold 4242")):
        r = site.run("hold", "release", arg)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    until = (date.today() + timedelta(days=3)).isoformat()
    hid = _hold(site, "--category", "payment", "--reason", "세무조사 대응", "--until", until)
    assert site.run("hold", "release", str(hid)).returncode == 0
    before = (table_counts(primary), table_counts(archive))
    r = site.run("hold", "release", str(hid))
    assert r.returncode == 2 and "already released" in r.stderr
    assert (table_counts(primary), table_counts(archive)) == before
