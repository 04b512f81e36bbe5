"""Withdrawal engine on real PostgreSQL, MariaDB (primary) and SQLite: moves, resumes, refuses
bad input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.engine import mover
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from models.archive import ArchivedRecord
from tests.helpers import (
    LifecycleEnv,
    accounting,
    ago,
    check_exact_accounting,
    insert_id,
    q,
    remaining_rows,
    seed_site,
    site_engine,
    snapshot_site,
    table_counts,
)


@pytest.fixture
def site(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    seed_site(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 40)
    clear_context_cache()
    yield primary_env
    clear_context_cache()


def _urls(env: LifecycleEnv) -> tuple[str, str]:
    return env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]


def _active_member(primary: str) -> int:
    eng = site_engine(primary)
    with eng.connect() as c:
        mid = c.execute(
            text(
                "SELECT m.id FROM members m WHERE status = 'active' AND EXISTS "
                "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1"
            )
        ).scalar_one()
    eng.dispose()
    return int(mid)


def _request(primary: str, rid: int) -> tuple[str, str | None]:
    eng = site_engine(primary)
    with eng.connect() as c:
        row = c.execute(
            text("SELECT state, error FROM lifecycle_requests WHERE id = :i"), {"i": rid}
        ).one()
    eng.dispose()
    return row[0], row[1]


def _member_rows(primary: str, mid: int) -> int:
    eng = site_engine(primary)
    ctx = get_context()
    n = 0
    with eng.connect() as c:
        for tm in ctx.datamap.tables.values():
            n += c.execute(
                text(
                    f"SELECT count(*) FROM {q(eng, tm.name)} WHERE {q(eng, tm.subject_column)} = :m"
                ),
                {"m": mid},
            ).scalar_one()
    eng.dispose()
    return n


def test_withdrawal_archives_retained_destroys_the_rest(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    mid = _active_member(primary)
    snap = snapshot_site(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    out = carry_out(ctx, rid, task_id="t-test")
    assert out["state"] == "completed"
    assert _request(primary, rid) == ("completed", None)
    assert _member_rows(primary, mid) == 0
    # Restricted for good, and the member row is gone entirely (every member column is 0d).
    eng = site_engine(primary)
    with eng.connect() as c:
        assert c.execute(
            text("SELECT count(*) FROM lifecycle_restrictions WHERE member_id = :m"), {"m": mid}
        ).scalar_one()
    eng.dispose()
    acc = accounting(primary, archive)
    check_exact_accounting(snap, remaining_rows(primary, snap), acc)
    assert acc.archived[("payments", "payment")] + acc.ledger_destroy[("payments", "payment")] > 0
    assert acc.ledger_destroy[("members", "rrn")] == 1

    # The archived payment decrypts to the row's own values (and only its category's columns).
    from lifecycle.vault import keystore

    a = site_engine(archive)
    with Session(a) as s:
        rec = s.query(ArchivedRecord).filter_by(source_table="contracts").first()
        assert rec is not None and rec.request_id == rid
        assert rec.subject_ref == keystore.subject_ref(s, mid)
        plain = json.loads(keystore.decrypt_archived(s, rec))
    a.dispose()
    assert set(plain) == {"id", "member_id", "kind", "signed_at", "terms_version", "ended_at"}
    assert plain["member_id"] == mid and str(plain["id"]) == rec.source_pk
    # Contracts are kept 5 years from the withdrawal (their purpose end), to the day.
    from datetime import date

    assert rec.retain_until.year - date.today().year == 5


def test_second_delivery_and_rerun_are_no_ops(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    mid = _active_member(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    carry_out(ctx, rid)
    before = accounting(primary, archive)
    counts = table_counts(archive)
    assert carry_out(ctx, rid)["state"] == "completed"
    after = accounting(primary, archive)
    assert table_counts(archive) == counts
    assert (before.archived, before.ledger_destroy) == (after.archived, after.ledger_destroy)


def test_crash_between_archive_commit_and_delete_resumes_exactly(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, archive = _urls(site)
    mid = _active_member(primary)
    snap = snapshot_site(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)

    real = mover.park_destroy_entries

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("killed between the archive commit and the primary commit")

    monkeypatch.setattr(mover, "park_destroy_entries", boom)
    with pytest.raises(RuntimeError):
        carry_out(ctx, rid)
    # The archive step completed and was persisted; the destroy step rolled back whole.
    assert _request(primary, rid)[0] == "archived"
    assert _member_rows(primary, mid) > 0
    assert accounting(primary, archive).archived  # archived copies exist: both places now
    monkeypatch.setattr(mover, "park_destroy_entries", real)
    assert carry_out(ctx, rid)["state"] == "completed"
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


def test_crash_before_outbox_flush_loses_no_ledger_entry(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.engine import ledger_outbox as outbox
    from lifecycle.rights import withdrawal as withdraw

    primary, archive = _urls(site)
    mid = _active_member(primary)
    snap = snapshot_site(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("archive DB unreachable right after the delete committed")

    monkeypatch.setattr(withdraw, "flush_ledger_outbox", boom)
    with pytest.raises(RuntimeError):
        carry_out(ctx, rid)
    assert _request(primary, rid)[0] == "destroyed"
    assert _member_rows(primary, mid) == 0
    assert accounting(primary, archive).outbox > 0  # owed entries are parked, not lost
    monkeypatch.undo()
    assert outbox.flush_ledger_outbox(ctx) > 0
    assert outbox.flush_ledger_outbox(ctx) == 0
    assert carry_out(ctx, rid)["state"] == "completed"
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


def _request_row(primary: str, kind: str, member_id: int) -> int:
    eng = site_engine(primary)
    with eng.begin() as c:
        rid = insert_id(
            c,
            "INSERT INTO lifecycle_requests (kind, member_id, state, attempts, created_at, "
            "updated_at) VALUES (:k, :m, 'dispatched', 1, :now, :now)",
            {"k": kind, "m": member_id, "now": ago()},
        )
    eng.dispose()
    return int(rid)


@pytest.mark.parametrize(
    ("kind", "member", "reason"),
    [
        ("withdrawal", 987654, "unknown member 987654"),
        ("correction", "ACTIVE", "malformed request: kind 'correction' is not a withdrawal"),
        ("withdrawal", -3, "malformed request: member id must be a positive integer"),
    ],
)
def test_bad_requests_fail_with_a_reason_and_change_nothing(
    site: LifecycleEnv, kind: str, member: object, reason: str
) -> None:
    primary, archive = _urls(site)
    mid = _active_member(primary) if member == "ACTIVE" else int(member)  # type: ignore[call-overload]
    rid = _request_row(primary, kind, mid)
    p_before, a_before = table_counts(primary), table_counts(archive)
    out = carry_out(get_context(), rid)
    assert out["state"] == "failed"
    state, error = _request(primary, rid)
    assert (state, error) == ("failed", reason)
    p_after = table_counts(primary)
    assert p_after == p_before and table_counts(archive) == a_before


def test_already_processed_member_is_refused(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    mid = _active_member(primary)
    ctx = get_context()
    first = submit_withdrawal(ctx, mid)
    carry_out(ctx, first)
    with pytest.raises(UserError, match=f"member {mid} was already withdrawn and processed"):
        submit_withdrawal(ctx, mid)
    # A second request row (the site retried without an idempotency key) fails cleanly.
    rid = _request_row(primary, "withdrawal", mid)
    a_before = table_counts(archive)
    carry_out(ctx, rid)
    assert _request(primary, rid) == (
        "failed",
        f"member {mid} was already withdrawn and processed (request {first})",
    )
    assert table_counts(archive) == a_before


def test_open_request_is_not_duplicated(site: LifecycleEnv) -> None:
    primary, _ = _urls(site)
    mid = _active_member(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    before = table_counts(primary)
    with pytest.raises(UserError, match=f"already has withdrawal request {rid} in progress"):
        submit_withdrawal(ctx, mid)
    assert table_counts(primary) == before


def test_withdrawal_on_the_embedded_sqlite_default(embedded_env: LifecycleEnv) -> None:
    from lifecycle.core.migrate import upgrade_all
    from lifecycle.core.settings import get_settings

    upgrade_all()
    primary = get_settings().sqlalchemy_url("primary")
    archive = get_settings().sqlalchemy_url("archive")
    seed_site(primary, 15)
    clear_context_cache()
    mid = _active_member(primary)
    snap = snapshot_site(primary)
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    assert carry_out(ctx, rid)["state"] == "completed"
    assert _member_rows(primary, mid) == 0
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))
    clear_context_cache()


def test_a_broken_data_map_fails_the_request_with_its_line_and_changes_nothing(
    site: LifecycleEnv, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
    from tasks.withdraw import withdraw
    from workers.app import reconfigure

    primary, archive = _urls(site)
    mid = _active_member(primary)
    rid = submit_withdrawal(get_context(), mid)
    broken = tmp_path / "site.yaml"
    text_ = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    broken.write_text(text_.replace("    period: 10y\n", "    period: forever\n"), encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(broken))
    reconfigure()
    clear_context_cache()
    p_before, a_before = table_counts(primary), table_counts(archive)
    out = withdraw.apply(args=[rid]).get()
    assert out == {"request_id": rid, "state": "failed"}
    state, error = _request(primary, rid)
    assert state == "failed"
    assert error is not None and error.startswith(f"data map {broken}:")
    assert "unbounded" in error and "\n" not in error
    # Only the job's own lease row (bookkeeping: which job ran, and how it ended) is new.
    p_after = table_counts(primary)
    assert p_after.pop("lifecycle_job_leases") == p_before.pop("lifecycle_job_leases") + 1
    assert (p_after, table_counts(archive)) == (p_before, a_before)
