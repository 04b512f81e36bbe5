"""Sweep, dry run, purge, deadlines and status on real PostgreSQL and MariaDB primaries (in-process
and via the CLI)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from lifecycle.core.locks import JobLock
from lifecycle.datamap.anchors import TaxProfile, tax_cutoff
from lifecycle.datamap.periods import Period
from lifecycle.engine import mover, sweep
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.purge import run_purge
from lifecycle.engine.sweep import LOCK_NAME, BatchKey, SweepIncomplete, run_batch, run_sweep
from models.engine import SweepBatch
from tests.helpers import (
    LifecycleEnv,
    accounting,
    ago,
    check_exact_accounting,
    insert_id,
    migrate_embedded,
    remaining_rows,
    seed_site,
    site_engine,
    snapshot_site,
    sql_rows,
    table_counts,
    wait_until,
    withdraw_all,
)


@pytest.fixture
def site(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 120)
    # Beyond the seed's own ~4% withdrawn members: a few dozen more, for bigger batches.
    withdraw_all(primary, "id % 4 = 0")
    clear_context_cache()
    yield primary_env
    clear_context_cache()


def _urls(env: LifecycleEnv) -> tuple[str, str]:
    return env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]


def _scalar(url: str, sql: str, **params: object) -> int:
    eng = site_engine(url)
    with eng.connect() as c:
        v = c.execute(text(sql), params).scalar_one()
    eng.dispose()
    return int(v)


def test_dry_run_prints_the_plan_and_touches_nothing(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    before = (table_counts(primary), table_counts(archive))
    r = site.run("sweep", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "withdrawal  members" in out and "rrn" in out and "destroy" in out
    assert "withdrawal  payments" in out and "archive" in out
    assert "age         access_logs" in out
    assert "nothing changed" in out
    assert (table_counts(primary), table_counts(archive)) == before
    # Bad settings: one line, exit 2, still nothing touched.
    bad = site.run("sweep", "--dry-run", LIFECYCLE_DATA_MAP="/nonexistent/map.yaml")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "file not found" in bad.stderr
    assert (table_counts(primary), table_counts(archive)) == before


def test_sweep_moves_every_withdrawn_member_and_old_logs_once(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    snap = snapshot_site(primary)
    withdrawn = _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'")
    old_logs_of_active = _scalar(
        primary,
        "SELECT count(*) FROM access_logs a LEFT JOIN members m ON m.id = a.member_id "
        "WHERE a.accessed_at < :cutoff AND (m.status IS NULL OR m.status <> 'withdrawn')",
        cutoff=ago(days=93),
    )
    assert withdrawn > 20 and old_logs_of_active > 0
    ctx = get_context()
    from lifecycle.engine.preview import sweep_preview

    preview = sweep_preview(ctx)
    rrn = [
        ln
        for ln in preview
        if (ln.phase, ln.table, ln.category) == ("withdrawal", "members", "rrn")
    ]
    assert [(ln.action, ln.rows, ln.subjects) for ln in rrn] == [("destroy", withdrawn, withdrawn)]
    progress: list[tuple[int, int]] = []
    out = run_sweep(ctx, task_id="t-sweep", report=lambda d, t: progress.append((d, t)),
                    member_batch=7)  # fmt: skip
    assert out["withdrawal_subjects"] == withdrawn
    assert out["batches_done"] == out["batches"] > withdrawn // 7
    assert progress[-1][0] == progress[-1][1]
    assert _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0
    assert (
        _scalar(primary, "SELECT count(*) FROM access_logs WHERE accessed_at < :c",
                c=ago(days=92)) == 0
    )  # fmt: skip
    acc = accounting(primary, archive)
    check_exact_accounting(snap, remaining_rows(primary, snap), acc)
    # The dry run predicted exactly what happened.
    assert sum(ln.rows for ln in preview if ln.action == "archive") == len(acc.records)
    assert sum(ln.rows for ln in preview if ln.action == "destroy") == sum(
        acc.ledger_destroy.values()
    )
    runs = _scalar(primary, "SELECT count(*) FROM lifecycle_job_runs WHERE outcome = 'ok'")
    assert runs == 1
    # Again: what the first run freed (an old payment whose tax invoice it archived) goes
    # now, exactly as this run's dry run says; then nothing is left and nothing changes.
    freed = sweep_preview(ctx)
    assert {(ln.phase, ln.table) for ln in freed} <= {("age", "payments")}
    before = accounting(primary, archive)
    run_sweep(ctx, task_id="t-sweep-2")
    after = accounting(primary, archive)
    assert sum(ln.rows for ln in freed if ln.action == "archive") == len(
        after.records - before.records
    )
    assert sum(ln.rows for ln in freed if ln.action == "destroy") == sum(
        (after.ledger_destroy - before.ledger_destroy).values()
    )
    third = run_sweep(ctx, task_id="t-sweep-3")
    assert third["batches"] == 0
    assert accounting(primary, archive).archived == after.archived


def test_interrupted_batch_is_redone_exactly(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, archive = _urls(site)
    snap = snapshot_site(primary)
    ctx = get_context()
    real = mover.park_destroy_entries
    calls = {"n": 0}

    def flaky(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed after its archive commit")
        return real(*a, **k)

    monkeypatch.setattr(mover, "park_destroy_entries", flaky)
    with pytest.raises(RuntimeError):
        run_sweep(ctx, task_id="t-1", member_batch=10)
    monkeypatch.setattr(mover, "park_destroy_entries", real)
    # The dead run is superseded by the next one, which redoes what is left.
    out = run_sweep(ctx, task_id="t-2", member_batch=10)
    assert out["batches_done"] == out["batches"] > 0
    assert (
        _scalar(primary, "SELECT count(*) FROM lifecycle_job_runs WHERE outcome = 'abandoned'") == 1
    )
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


def test_a_batch_beside_a_running_one_takes_its_first_member(site: LifecycleEnv) -> None:
    """Two batches at once: the second takes every member of its range, its first too.

    On MariaDB the first batch's locking read of its id range also locked the record just past
    it, the next batch's first member, which that batch then passed over (SKIP LOCKED).
    """
    primary, _archive = _urls(site)
    ctx = get_context()
    now = datetime.now(UTC)
    with ctx.primary.connect() as c:
        (a_first, a_last, *_), (b_first, b_last, *_), *_rest = sweep.plan_member_ranges(
            ctx, c, "withdrawal", now, 5
        )
    b_ids = [
        r[0]
        for r in sql_rows(
            primary,
            "SELECT id FROM members WHERE status = 'withdrawn' AND id BETWEEN :a AND :b "
            "ORDER BY id",
            a=b_first,
            b=b_last,
        )
    ]
    assert len(b_ids) == 5 and b_ids[0] == b_first
    run_id = 990_001
    with ctx.primary.begin() as c:
        c.execute(
            SweepBatch.__table__.insert(),
            [{"run_id": run_id, "kind": "withdrawal", "table_name": "", "first_id": f,
              "last_id": la, "state": "pending", "updated_at": now}
             for f, la in ((a_first, a_last), (b_first, b_last))],
        )  # fmt: skip
    out: dict[str, object] = {}

    def second() -> None:
        out["counts"] = run_batch(ctx, BatchKey(run_id, "withdrawal", "", b_first, b_last))

    with ctx.primary.connect() as a_conn, a_conn.begin() as a_tx:
        # The first batch has locked its members and is still working on them.
        assert len(sweep._lock_members(ctx, a_conn, "withdrawal", a_first, a_last, now)) == 5
        t = threading.Thread(target=second)
        t.start()
        wait_until(lambda: not t.is_alive(), timeout=60, what="the second batch finished")
        a_tx.rollback()
    counts = out["counts"]
    assert isinstance(counts, dict) and counts["subjects"] == 5, counts
    assert (
        _scalar(primary, f"SELECT count(*) FROM members WHERE id IN ({','.join(map(str, b_ids))})")
        == 0
    )


def test_a_run_that_took_fewer_members_than_planned_fails(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planned member a batch could not take (locked by someone else for longer than the
    batch waits for it) fails the run, with the count in its state, instead of ending ok and
    leaving it for the next night in silence."""
    monkeypatch.setattr(sweep, "BUSY_GRACE_SECONDS", 1.0)
    primary, _archive = _urls(site)
    ctx = get_context()
    withdrawn = _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'")
    [(mid,)] = sql_rows(
        primary, "SELECT min(id) FROM members WHERE status = 'withdrawn' AND id > 40"
    )
    result: dict[str, object] = {}

    def sweep_now() -> None:
        try:
            result["counts"] = run_sweep(ctx, member_batch=5)
        except SweepIncomplete as exc:
            result["error"] = str(exc)

    eng = site_engine(primary)
    with eng.connect() as other, other.begin():
        # The site's own code holds this member's row for a while (e.g. an admin edit).
        other.execute(text("SELECT id FROM members WHERE id = :m FOR UPDATE"), {"m": mid})
        t = threading.Thread(target=sweep_now)
        t.start()
        wait_until(lambda: not t.is_alive(), timeout=120, what="the sweep finished")
    eng.dispose()
    assert "error" in result, result
    assert "took fewer members than planned (withdrawal" in str(result["error"])
    assert f"{withdrawn - 1:,} of {withdrawn:,}" in str(result["error"])
    assert "\n" not in str(result["error"])
    [(outcome, counts)] = sql_rows(
        primary, "SELECT outcome, counts FROM lifecycle_job_runs ORDER BY id DESC LIMIT 1"
    )
    counts = json.loads(counts) if isinstance(counts, str) else counts
    assert outcome == "failed" and counts["members_short"] == 1
    assert counts["withdrawal_planned"] == withdrawn
    # The next run takes it and ends ok.
    assert run_sweep(ctx, member_batch=5)["withdrawal_members"] == 1
    assert _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0


def test_a_second_trigger_while_running_does_nothing(site: LifecycleEnv) -> None:
    primary, archive = _urls(site)
    ctx = get_context()
    lock = JobLock(ctx.primary, LOCK_NAME)
    assert lock.acquire()
    try:
        before = table_counts(primary), table_counts(archive)
        assert run_sweep(ctx) == {"skipped": "another sweep is running"}
        assert (table_counts(primary), table_counts(archive)) == before
    finally:
        lock.release()
    # Two at once: exactly one does the work.
    results: list[dict] = []  # type: ignore[type-arg]
    threads = [
        threading.Thread(target=lambda: results.append(run_sweep(ctx, member_batch=5)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted("skipped" in r for r in results) in ([False, True], [False, False])
    assert _scalar(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0


def test_purge_destroys_expired_buckets_and_their_keys(site: LifecycleEnv) -> None:
    from lifecycle.vault import keystore
    from models.archive import ArchivedRecord

    primary, archive = _urls(site)
    ctx = get_context()
    run_sweep(ctx)
    records = _scalar(archive, "SELECT count(*) FROM archive_records")
    assert records > 0
    a = create_engine(archive)
    with Session(a) as s:
        sample = s.query(ArchivedRecord).first()
        assert sample is not None
        keystore.decrypt_archived(s, sample)  # readable before the purge

    # Today nothing has expired: the purge and its dry run change nothing.
    before = table_counts(archive)
    r = site.run("purge", "--dry-run")
    assert r.returncode == 0 and "nothing to purge" in r.stdout
    assert run_purge(ctx)["buckets"] == 0
    assert table_counts(archive) == before

    # Years later, every bucket's period has ended.
    later = date.today() + timedelta(days=366 * 11)
    from lifecycle.engine.purge import purge_preview

    preview = purge_preview(ctx, later)
    assert sum(b.rows for b in preview) == records
    assert table_counts(archive) == before
    out = run_purge(ctx, task_id="t-purge", today=later)
    assert out["rows"] == records and out["keys"] == len(preview)
    assert _scalar(archive, "SELECT count(*) FROM archive_records") == 0
    assert (
        _scalar(archive, "SELECT count(*) FROM archive_data_keys WHERE wrapped_key IS NOT NULL")
        == 0
    )
    with Session(a) as s:
        with pytest.raises(keystore.KeyDestroyed):
            keystore.decrypt_archived(s, sample)  # the copy "in a backup" is unreadable now
        from lifecycle.vault import ledger

        assert ledger.verify(s).ok
        destroyed = s.execute(
            text("SELECT coalesce(sum(rows), 0) FROM ledger_entries WHERE action = 'destroy' "
                 "AND method LIKE '분리보관 DB 행 삭제%'")
        ).scalar_one()  # fmt: skip
        keys = s.execute(
            text("SELECT count(*) FROM ledger_entries WHERE action = 'key_destroy'")
        ).scalar_one()
    a.dispose()
    assert destroyed == records and keys == len(preview)
    # Again: nothing left, nothing recorded twice.
    assert run_purge(ctx, today=later)["buckets"] == 0
    assert (
        _scalar(archive, "SELECT count(*) FROM ledger_entries WHERE action = 'key_destroy'") == keys
    )
    # Every run is a job run on the primary (status, and the metrics' last-success time).
    runs = sql_rows(
        primary,
        "SELECT outcome, finished_at IS NOT NULL FROM lifecycle_job_runs "
        "WHERE job = 'purge' ORDER BY id",
    )
    assert [(o, bool(f)) for o, f in runs] == [("ok", True)] * 3


def test_overdue_requests_alert_and_show_in_status(site: LifecycleEnv) -> None:
    from lifecycle.core import db
    from lifecycle.ops.status import overdue_by_kind
    from tasks.deadlines import OverdueRequests, check_deadlines

    primary, _ = _urls(site)
    eng = site_engine(primary)
    old = datetime.now(UTC) - timedelta(days=6)
    with eng.begin() as c:
        ids = [
            insert_id(
                c,
                "INSERT INTO lifecycle_requests (kind, member_id, state, attempts, created_at, "
                "updated_at) VALUES ('withdrawal', :m, :s, 0, :t, :t)",
                {"m": m, "s": st, "t": t},
            )
            for m, st, t in ((4, "restricted", old), (8, "completed", old), (12, "received", old))
        ]
        c.execute(
            text("UPDATE lifecycle_requests SET created_at = :n WHERE id = :i"),
            {"i": ids[2], "n": ago()},
        )
    eng.dispose()
    with db.session("primary") as s:
        overdue = overdue_by_kind(s)
    assert [r.id for r in overdue] == [ids[0]]
    assert overdue[0].age_days >= 6
    # Each kind has its own deadline now; a withdrawal's is the 5-day destruction deadline.
    msg = rf"1 requests past their legal deadline: withdrawal \(deadline 5 days\): {ids[0]}$"
    with pytest.raises(OverdueRequests, match=msg):
        check_deadlines.apply(throw=True).get()
    r = site.run("status", "--json")
    import json

    report = json.loads(r.stdout)
    assert report["requests"]["open_total"] == 2
    assert [(o["id"], o["kind"], o["state"]) for o in report["requests"]["overdue"]] == [
        (ids[0], "withdrawal", "restricted")
    ]
    r = site.run("status")
    assert "OVERDUE" in r.stdout


def test_dormancy_when_the_operator_enables_it(
    primary_env: LifecycleEnv, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
    from workers.app import reconfigure

    primary, archive = _urls(primary_env)
    seed_site(primary, 60)
    text_ = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    assert text_.count("    enabled: false") == 1
    custom = tmp_path / "site.yaml"
    custom.write_text(text_.replace("    enabled: false", "    enabled: true"), encoding="utf-8")
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(custom))
    reconfigure()
    clear_context_cache()
    eng = site_engine(primary)
    with eng.begin() as c:
        # The site marks members dormant (after its 30-day notice); two qualify by inactivity.
        c.execute(text("UPDATE members SET status = 'active' WHERE status = 'withdrawn'"))
        c.execute(
            text("UPDATE members SET status = 'dormant', last_login_at = :t WHERE id IN (3, 5)"),
            {"t": ago(days=731)},
        )
        c.execute(
            text("UPDATE members SET status = 'dormant', last_login_at = :t WHERE id = 7"),
            {"t": ago()},
        )
        before = {
            t: c.execute(text(f"SELECT count(*) FROM {t} WHERE member_id IN (3, 5, 7)")).scalar()
            for t in ("payments", "contracts", "service_usage", "counselling_records")
        }
    out = run_sweep(get_context())
    assert out["dormancy_subjects"] == 2
    with eng.connect() as c:
        after = {
            t: c.execute(text(f"SELECT count(*) FROM {t} WHERE member_id IN (3, 5, 7)")).scalar()
            for t in before
        }
        still_dormant = c.execute(
            text("SELECT count(*) FROM members WHERE id IN (3, 5, 7)")
        ).scalar()
        left_7 = c.execute(text("SELECT count(*) FROM service_usage WHERE member_id = 7")).scalar()
        gone = sum(
            c.execute(text(f"SELECT count(*) FROM {t} WHERE member_id IN (3, 5)")).scalar()
            for t in ("service_usage", "counselling_records", "counselling_bookings", "guardians")
        )
    eng.dispose()
    # Tables that end on dormancy left the primary DB; the rest (kept until withdrawal) and
    # the member rows themselves stayed; member 7 is not inactive long enough.
    assert after["payments"] == before["payments"] and after["contracts"] == before["contracts"]
    assert after["service_usage"] == left_7 and still_dormant == 3
    assert gone == 0
    assert accounting(primary, archive).ledger_ok


def test_a_table_reached_via_its_parent_is_moved_with_its_member(
    primary_env: LifecycleEnv, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A table with no member column of its own (``via``) is taken through its parent: each
    row deleted, its retained part archived under the right member, none left behind."""
    from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
    from workers.app import reconfigure

    primary, archive = _urls(primary_env)
    seed_site(primary, 80)
    withdraw_all(primary, "id % 3 = 0")
    shipped = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    block = "  tax_invoices:\n    subject_column: member_id\n"
    assert shipped.count(block) == 1 and shipped.count("non_personal: [payment_id]") == 1
    custom = tmp_path / "site.yaml"
    custom.write_text(
        shipped.replace(
            block, "  tax_invoices:\n    via: {table: payments, column: payment_id}\n"
        ).replace("non_personal: [payment_id]", "non_personal: [payment_id, member_id]"),
        encoding="utf-8",
    )
    monkeypatch.setenv("LIFECYCLE_DATA_MAP", str(custom))
    reconfigure()
    clear_context_cache()
    eng = site_engine(primary)
    withdrawn_invoices = (
        "FROM tax_invoices t JOIN payments p ON p.id = t.payment_id "
        "JOIN members m ON m.id = p.member_id WHERE m.status = 'withdrawn'"
    )
    with eng.connect() as c:
        kept = c.execute(
            text(
                f"SELECT count(*), count(DISTINCT p.member_id) {withdrawn_invoices} "
                "AND t.issued_at >= :t"
            ),
            # Still inside 5 years from the filing deadline of their tax period (the demo
            # business: individual, VAT-registered).
            {"t": tax_cutoff(datetime.now(UTC), Period.parse("5y"), TaxProfile())},
        ).one()
        total = c.execute(text(f"SELECT count(*) {withdrawn_invoices}")).scalar_one()
    assert kept[0] > 5 and kept[1] > 2, "the seed gave too few invoices to test"
    out = run_sweep(get_context(), member_batch=7)
    assert out["batches_done"] == out["batches"] > 1
    with eng.connect() as c:
        left = c.execute(text(f"SELECT count(*) {withdrawn_invoices}")).scalar_one()
    eng.dispose()
    assert left == 0
    a = create_engine(archive)
    with a.connect() as c:
        got = c.execute(
            text(
                "SELECT count(*), count(DISTINCT subject_ref) FROM archive_records "
                "WHERE source_table = 'tax_invoices'"
            )
        ).one()
        ledgered = c.execute(
            text(
                "SELECT coalesce(sum(rows), 0) FROM ledger_entries "
                "WHERE tables::text LIKE '%tax_invoices%' AND action IN ('archive', 'destroy')"
            )
        ).scalar_one()
    a.dispose()
    assert tuple(got) == tuple(kept), "each kept invoice archived once, under its own member"
    assert ledgered == total
    assert accounting(primary, archive).ledger_ok


def test_embedded_default_sweep_hands_files_to_the_shredder(embedded_env: LifecycleEnv) -> None:
    """SQLite allows one writer: the shred job for the deleted rows' files is written in the
    sweep's own transaction (a second connection would wait on the lock it holds), then sent;
    running it removes exactly those files."""
    from pathlib import Path

    from lifecycle.core import db
    from lifecycle.ops.demo_seed import seed
    from lifecycle.shred.jobs import run_job

    migrate_embedded(embedded_env)
    url = db.engine("primary").url.render_as_string(hide_password=False)
    seed(db.engine("primary"), 30, files=True, file_root=embedded_env.file_root)
    withdraw_all(url, "id % 3 = 0")
    eng = create_engine(url)
    with eng.connect() as c:
        gone = {
            p
            for (p,) in c.execute(
                text(
                    "SELECT path FROM uploaded_files WHERE member_id IN "
                    "(SELECT id FROM members WHERE status = 'withdrawn')"
                )
            )
        }
        kept = {p for (p,) in c.execute(text("SELECT path FROM uploaded_files"))} - gone
    assert gone and kept and all(Path(p).is_file() for p in gone | kept)
    clear_context_cache()
    out = run_sweep(get_context())
    assert out["batches_done"] == out["batches"] > 0 and out["files"] == len(gone)
    with eng.connect() as c:
        jobs = [j for (j,) in c.execute(text("SELECT id FROM lifecycle_shred_jobs"))]
    eng.dispose()
    assert jobs
    for job in jobs:
        run_job(job)
    assert not any(Path(p).exists() for p in gone)
    assert all(Path(p).is_file() for p in kept)
    clear_context_cache()


def test_purge_records_tampered_archive_rows_in_the_ledger(site: LifecycleEnv) -> None:
    from lifecycle.engine.purge import ArchiveTampered
    from lifecycle.vault import ledger

    _, archive = _urls(site)
    ctx = get_context()
    run_sweep(ctx)
    records = _scalar(archive, "SELECT count(*) FROM archive_records")
    assert records > 10
    a = create_engine(archive)
    with a.begin() as c:
        # Three ciphertexts altered in place, one row moved to another identity (its AAD).
        c.execute(
            text(
                "UPDATE archive_records SET ciphertext = "
                "set_byte(ciphertext, 0, (get_byte(ciphertext, 0) + 1) % 256) "
                "WHERE (source_table, source_pk, category) IN (SELECT source_table, source_pk, "
                "category FROM archive_records ORDER BY source_table, source_pk, category "
                "LIMIT 3)"
            )
        )
        c.execute(
            text(
                "UPDATE archive_records SET source_pk = source_pk || '0' "
                "WHERE (source_table, source_pk, category) IN (SELECT source_table, source_pk, "
                "category FROM archive_records ORDER BY source_table DESC, source_pk DESC, "
                "category LIMIT 1)"
            )
        )
        tampered_keys = c.execute(
            text(
                "SELECT count(DISTINCT key_id) FROM archive_records WHERE (source_table, "
                "source_pk, category) IN ((SELECT source_table, source_pk, category FROM "
                "archive_records ORDER BY source_table, source_pk, category LIMIT 3) UNION ALL "
                "(SELECT source_table, source_pk, category FROM archive_records ORDER BY "
                "source_table DESC, source_pk DESC, category LIMIT 1))"
            )
        ).scalar_one()
    later = date.today() + timedelta(days=366 * 11)
    with pytest.raises(ArchiveTampered) as info:
        run_purge(ctx, task_id="t-purge", today=later)
    msg = str(info.value)
    assert "\n" not in msg and "4 archived records failed authentication" in msg
    # Destroyed either way: the period ended.
    assert _scalar(archive, "SELECT count(*) FROM archive_records") == 0
    assert (
        _scalar(archive, "SELECT count(*) FROM archive_data_keys WHERE wrapped_key IS NOT NULL")
        == 0
    )
    with Session(a) as s:
        rows = s.execute(
            text(
                "SELECT rows, details FROM ledger_entries WHERE action = 'tamper_detected' "
                "ORDER BY seq"
            )
        ).all()
        assert len(rows) == tampered_keys
        assert sum(r for r, _ in rows) == 4
        assert all(d["failed"] == r and d["authentic"] >= 0 for r, d in rows)
        destroyed = s.execute(
            text("SELECT coalesce(sum(rows), 0) FROM ledger_entries WHERE action = 'destroy' "
                 "AND method LIKE '분리보관 DB 행 삭제%'")
        ).scalar_one()  # fmt: skip
        assert destroyed == records
        assert ledger.verify(s).ok
    # A re-run finds nothing left and records nothing twice.
    assert run_purge(ctx, today=later)["buckets"] == 0
    assert _scalar(
        archive, "SELECT count(*) FROM ledger_entries WHERE action = 'tamper_detected'"
    ) == len(rows)
    a.dispose()
