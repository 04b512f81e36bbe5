"""`lifecycle identifiers destroy`: a flagged unique identifier (the demo's RRN) is cleared in
live rows, active members included, as a Celery job; one ledger entry per member (keyed
pseudonym, never the value); held members are left; bad input changes nothing; a crash at any
point is finished by a re-run without a second entry. Real PostgreSQL and MariaDB primaries."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lifecycle.engine import identifiers as ident
from lifecycle.engine.context import clear_context_cache, get_context
from tests.helpers import LifecycleEnv, seed_site
from tests.helpers import sql_one as _one
from tests.helpers import sql_rows as _q

HELD_SQL = "SELECT count(*) FROM members WHERE rrn IS NOT NULL AND rrn <> ''"


@pytest.fixture
def site(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    seed_site(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 30)
    clear_context_cache()
    yield primary_env
    clear_context_cache()


def _one_line(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def _rrn_entries(archive: str) -> list[tuple]:  # type: ignore[type-arg]
    return _q(
        archive,
        "SELECT subject_ref, rows, actor, categories, tables, details, legal_basis, reason "
        "FROM ledger_entries WHERE action = 'destroy' ORDER BY seq",
    )


def test_destroy_clears_live_rrns_ledgers_each_member_and_leaves_held_ones(
    site: LifecycleEnv, start_worker
) -> None:
    env = site
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    holding = _one(primary, HELD_SQL)
    active = _one(primary, "SELECT count(*) FROM members WHERE status = 'active'")
    rrns = {r[0] for r in _q(primary, "SELECT rrn FROM members WHERE rrn IS NOT NULL")}
    assert holding >= 20 and active >= 20

    # `datamap check` reports where and how many, never values, and fails on it: rows held
    # unlawfully are never summed up as OK.
    check = env.run("datamap", "check")
    assert check.returncode == 1, check.stderr
    assert f"members.rrn: {holding} live rows hold a value" in check.stdout
    assert "no statutory basis" in check.stdout and "held unlawfully" in check.stdout
    assert ": OK" not in check.stdout and "without a statutory basis: rrn" in check.stdout
    assert not any(v in check.stdout + check.stderr for v in rrns)
    assert env.run("datamap", "check", "--strict").returncode == 1

    # Bad input: one line, exit 2, nothing written (no run row, no value changed).
    for args, message in [
        (("nope", "--reason", "정리 작업"), "unknown category 'nope'"),
        (("hobbies", "--reason", "정리 작업"), "'hobbies' is not flagged"),
        (("rrn",), "--reason is required"),
        (("rrn", "--reason", "ask 010-1234-5678"), "looks like it holds personal data"),
    ]:
        assert message in _one_line(env.run("identifiers", "destroy", *args))
    # (`datamap check` above recorded its linkage run: only the destroy's own runs count.)
    job_runs = "SELECT count(*) FROM lifecycle_job_runs WHERE job NOT LIKE 'datamap.%'"
    assert _one(primary, job_runs) == 0
    assert _one(primary, HELD_SQL) == holding

    # A legal hold on one member keeps their RRN; the dry run says so and changes nothing.
    kept = _q(primary, "SELECT id FROM members WHERE rrn IS NOT NULL AND status = 'active' "
                       "ORDER BY id LIMIT 1")[0][0]  # fmt: skip
    until = (date.today() + timedelta(days=30)).isoformat()
    r = env.run("--operator", "officer-lee", "hold", "add", "--member", str(kept),
                "--reason", "분쟁 대응 보존", "--until", until)  # fmt: skip
    assert r.returncode == 0, r.stderr
    hold_id = r.stdout.split()[1]
    dry = env.run("identifiers", "destroy", "rrn", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"members.rrn: {holding} rows hold a value, 1 held by legal holds" in dry.stdout
    assert f"would clear rrn in {holding - 1} rows; nothing changed" in dry.stdout
    assert _one(primary, HELD_SQL) == holding

    start_worker(env, queues=["requests"])
    r = env.run("--operator", "officer-kim", "identifiers", "destroy", "rrn", "--reason",
                "제24조의2: 법적 근거 없는 주민등록번호 파기", "--batch-size", "7", "--wait",
                "--timeout", "120")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"cleared={holding - 1}" in r.stdout and "held=1" in r.stdout
    assert "held: 1 rows kept by legal holds" in r.stdout
    # Only the held member's RRN is left; every member is still there and still active.
    assert _q(primary, "SELECT id FROM members WHERE rrn IS NOT NULL AND rrn <> ''") == [(kept,)]
    assert _one(primary, "SELECT count(*) FROM members WHERE status = 'active'") == active
    entries = _rrn_entries(archive)
    assert len(entries) == holding - 1
    assert len({e[0] for e in entries}) == holding - 1  # one keyed pseudonym per member
    for ref, rows, actor, cats, tables, details, basis, reason in entries:
        assert len(ref) == 64 and rows == 1 and actor == "operator:officer-kim"
        assert (cats, tables, details["columns"]) == (["rrn"], ["members"], ["rrn"])
        assert "제24조의2" in basis and "제24조의2" in reason
    dump = repr(_q(archive, "SELECT * FROM ledger_entries")) + repr(
        _q(archive, "SELECT * FROM access_log")
    )
    assert not any(v in dump for v in rrns)
    log = _q(archive, "SELECT operator, action, details FROM access_log ORDER BY seq")
    assert ("officer-kim", "identifiers destroy (started)") in [(o, a) for o, a, _ in log]
    done = [d for o, a, d in log if a == "identifiers destroy"]
    assert done and done[-1]["cleared"] == holding - 1
    assert env.run("ledger", "verify").returncode == 0
    assert env.run("accesslog", "verify").returncode == 0

    # After the release the next run clears the last one; one more run finds nothing to do.
    assert env.run("hold", "release", hold_id).returncode == 0
    for expected in (1, 0):
        r = env.run("identifiers", "destroy", "rrn", "--reason", "보존 해제 후 파기", "--wait",
                    "--timeout", "120")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"cleared={expected}" in r.stdout
    assert _one(primary, HELD_SQL) == 0
    assert len(_rrn_entries(archive)) == holding


def test_a_crash_is_finished_by_a_rerun_without_a_second_entry(
    site: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    holding = _one(primary, HELD_SQL)
    ctx = get_context()
    run_id, resumed = ident.start(ctx, "rrn", "중단 후 재개 시험", "ops-choi")
    assert not resumed
    # Re-running while the run is open resumes it instead of opening another.
    assert ident.start(ctx, "rrn", "중단 후 재개 시험", "ops-choi") == (run_id, True)

    # 1. A crash inside a batch (after the UPDATE, before the commit): the batch rolls back.
    real_ref = ident.crypto.subject_ref
    calls = {"n": 0}

    def dies_on_the_third(key: bytes, member: object) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real_ref(key, member)

    monkeypatch.setattr(ident.crypto, "subject_ref", dies_on_the_third)
    with pytest.raises(RuntimeError):
        ident.run(ctx, run_id, batch=5)
    monkeypatch.setattr(ident.crypto, "subject_ref", real_ref)
    assert _one(primary, HELD_SQL) == holding  # nothing cleared without its entries
    assert _rrn_entries(archive) == []
    assert _one(primary, "SELECT count(*) FROM lifecycle_ledger_outbox") == 0

    # 2. A crash after a batch committed, before its entries reached the ledger.
    real_flush = ident.flush_ledger_outbox
    flushes = {"n": 0}

    def flush_then_die(c):  # type: ignore[no-untyped-def]
        flushes["n"] += 1
        if flushes["n"] == 2:  # the first is the start-of-run flush
            raise RuntimeError("worker killed")
        return real_flush(c)

    monkeypatch.setattr(ident, "flush_ledger_outbox", flush_then_die)
    run_id, _ = ident.start(ctx, "rrn", "중단 후 재개 시험", "ops-choi")
    with pytest.raises(RuntimeError):
        ident.run(ctx, run_id, batch=5)
    monkeypatch.setattr(ident, "flush_ledger_outbox", real_flush)
    assert _one(primary, HELD_SQL) == holding - 5
    assert _one(primary, "SELECT count(*) FROM lifecycle_ledger_outbox") == 5  # owed, parked
    assert _rrn_entries(archive) == []

    # The re-run flushes what was owed and finishes: one entry per member, none twice.
    run_id, _ = ident.start(ctx, "rrn", "중단 후 재개 시험", "ops-choi")
    result = ident.run(ctx, run_id, batch=5)
    assert result["cleared"] == holding - 5 and result["held"] == 0
    assert _one(primary, HELD_SQL) == 0
    refs = [e[0] for e in _rrn_entries(archive)]
    assert len(refs) == holding == len(set(refs))
    assert ident.run(ctx, run_id)["skipped"] == f"run {run_id} is done already"
