"""Withdrawal and sweep end to end: CLI, real workers, PostgreSQL or MariaDB (primary), Redis; then
a leak scan."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from lifecycle.engine.context import clear_context_cache
from tests.helpers import (
    LifecycleEnv,
    accounting,
    check_exact_accounting,
    database_dump,
    leaks,
    redis_dump_decoded,
    remaining_rows,
    seed_site,
    snapshot_site,
    table_counts,
    wait_until,
)


def _one(url: str, sql: str, **params: object) -> object:
    eng = create_engine(url)
    with eng.connect() as c:
        v = c.execute(text(sql), params).scalar()
    eng.dispose()
    return v


def _member_with_files(primary: str) -> int:
    return int(
        _one(  # type: ignore[arg-type]
            primary,
            "SELECT m.id FROM members m WHERE m.status = 'active' AND EXISTS (SELECT 1 FROM "
            "uploaded_files f WHERE f.member_id = m.id) AND EXISTS (SELECT 1 FROM payments p "
            "WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1",
        )
    )


def test_withdraw_and_sweep_end_to_end_leave_no_personal_data_behind(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 40, files=True, file_root=env.file_root)
    clear_context_cache()
    snap = snapshot_site(primary)
    mid = _member_with_files(primary)
    eng = create_engine(primary)
    with eng.connect() as c:
        paths = [p for (p,) in c.execute(
            text("SELECT path FROM uploaded_files WHERE member_id = :m"), {"m": mid}
        )]  # fmt: skip
    eng.dispose()
    assert paths and all(Path(p).exists() for p in paths)

    worker = start_worker(env, concurrency=2)
    r = env.run("withdraw", str(mid), "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout
    assert _one(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == 0
    for tm in ("payments", "counselling_records", "uploaded_files", "access_logs"):
        assert _one(primary, f"SELECT count(*) FROM {tm} WHERE member_id = :m", m=mid) == 0
    assert _one(archive, "SELECT count(*) FROM archive_records WHERE request_id IS NOT NULL")
    # The member's files are securely deleted by the shred job on this host.
    wait_until(lambda: not any(Path(p).exists() for p in paths), 60, "the member's files shredded")

    # Doing it again is refused in one line, exit 2, and changes nothing.
    before = table_counts(primary), table_counts(archive)
    again = env.run("withdraw", str(mid))
    assert again.returncode == 2
    assert again.stderr.strip().endswith(f"member {mid} was already withdrawn and processed "
                                         f"(request 1)")  # fmt: skip
    assert (table_counts(primary), table_counts(archive)) == before

    # The nightly sweep, by hand: the seed's own withdrawn members and old access logs.
    s = env.run("sweep", "--wait", timeout=240)
    assert s.returncode == 0, s.stderr
    assert "sweep done" in s.stdout
    assert _one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))
    wait_until(
        lambda: (
            not _one(primary, "SELECT count(*) FROM lifecycle_shred_jobs WHERE state <> 'done'")
        ),
        60,
        "every shred job done",
    )

    # Nothing personal anywhere but the primary DB rows that are still meant to be there.
    port = int(env.vars["LIFECYCLE_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
    values = snap.personal
    assert len(values) > 100
    worker.stop()
    # The scanners can see what they look for: the primary DB still holds active members, and
    # a message body (base64, as kombu stores it) carrying an address is found.
    assert leaks(database_dump(primary), values)
    import base64
    import json

    import redis

    probe = next(v for v in values if "@" in v)
    rc = redis.Redis(port=port)
    rc.lpush("probe", json.dumps({"body": base64.b64encode(probe.encode()).decode()}))
    assert leaks(redis_dump_decoded(port), {probe})
    rc.delete("probe")
    assert leaks(redis_dump_decoded(port), values) == [], (
        "personal data in the broker/result backend"
    )
    assert leaks(worker.output().encode(), values) == [], "personal data in worker logs"
    assert leaks(database_dump(archive), values) == [], "plaintext personal data in the archive"
    assert leaks((r.stdout + r.stderr + s.stdout + s.stderr).encode(), values) == []


def test_the_same_withdrawal_delivered_three_times_has_the_effect_of_once(
    primary_env: LifecycleEnv, start_worker
) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.engine.context import get_context
    from lifecycle.requests.relay import dispatch_one
    from lifecycle.rights.withdrawal import submit_withdrawal
    from workers.app import app

    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 30)
    clear_context_cache()
    snap = snapshot_site(primary)
    mid = int(_one(primary, "SELECT min(id) FROM members WHERE status = 'active'"))  # type: ignore[arg-type]
    rid = submit_withdrawal(get_context(), mid)
    start_worker(env, concurrency=2, name="w1")
    start_worker(env, concurrency=2, name="w2")
    # The client's dispatch, a relay re-send and a broker redelivery, all at once.
    dispatch_one(rid)
    results = [app.send_task("lifecycle.withdraw", args=[rid]) for _ in range(2)]
    for res in results:
        assert res.get(timeout=120)["state"] == "completed"
    wait_until(
        lambda: (
            _one(primary, "SELECT state FROM lifecycle_requests WHERE id = :i", i=rid)
            == "completed"
        ),
        60,
        "the request completed",
    )
    eng = create_engine(archive)
    with eng.connect() as c:
        dup = c.execute(
            text(
                "SELECT action, tables::text, categories::text, count(*) FROM ledger_entries "
                "WHERE request_id = :r GROUP BY 1, 2, 3 HAVING count(*) > 1"
            ),
            {"r": rid},
        ).all()
    eng.dispose()
    assert dup == []
    check_exact_accounting(snap, remaining_rows(primary, snap), accounting(primary, archive))


def test_cli_bad_input_is_one_line_exit_2_and_changes_nothing(
    primary_env: LifecycleEnv,
) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 5)
    before = table_counts(primary)
    for arg, msg in (
        ("abc", "MEMBER_ID must be a positive integer"),
        ("0", "MEMBER_ID must be a positive integer"),
        ("12x", "MEMBER_ID must be a positive integer"),
        ("99999", "unknown member 99999"),
    ):
        r = env.run("withdraw", arg)
        assert r.returncode == 2, (arg, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr
    assert env.run("withdraw").returncode == 2
    assert table_counts(primary) == before
