"""Shred jobs end to end: PostgreSQL, Redis, real worker processes, real files, the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.shred import jobs as shred_jobs
from models.archive import LedgerEntry
from models.requests import JobRun
from models.shred import ShredItem, ShredJob
from tests.helpers import LifecycleEnv, free_port, migrate_embedded, wait_until

NAME = "김영희_심리검사결과.pdf"  # a personal file name: must never reach the ledger or a result
PATTERN = "김영희 상담 기록 010-9876-5432 | ".encode()


def fill(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (PATTERN * (size // len(PATTERN) + 1))[:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job(job_id: int) -> ShredJob:
    with db.session("primary") as s:
        j = s.get(ShredJob, job_id)
        assert j is not None
        return j


def items(job_id: int) -> list[ShredItem]:
    with db.session("primary") as s:
        return list(
            s.scalars(select(ShredItem).where(ShredItem.job_id == job_id).order_by(ShredItem.id))
        )


def job_count() -> int:
    with db.session("primary") as s:
        return int(s.scalar(select(func.count()).select_from(ShredJob)) or 0)


def shred_entries() -> list[LedgerEntry]:
    with db.session("archive") as s:
        return list(
            s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.action == "file_shred")
                .order_by(LedgerEntry.seq)
            )
        )


def assert_no_names_in_ledger(*names: str) -> None:
    with db.session("archive") as s:
        for e in s.scalars(select(LedgerEntry)):
            blob = json.dumps(
                {c.key: str(getattr(e, c.key)) for c in LedgerEntry.__table__.columns},
                ensure_ascii=False,
            )
            for n in names:
                assert n not in blob


def done(job_id: int) -> bool:
    return job(job_id).state == "done"


SHRED_Q = "shred.testhost"


# -- the CLI, as an operator uses it -------------------------------------------------------


def test_cli_shred_wait_destroys_files_and_ledgers_each(
    primary_env: LifecycleEnv, start_worker
) -> None:
    root = primary_env.file_root
    member = root / "members" / "42"
    a, b = member / NAME, member / "주민등록증.jpg"
    fill(a, 300_000)
    fill(b, 5000)
    fill(member / "keep.txt", 100)
    start_worker(primary_env, queues=[SHRED_Q])

    res = primary_env.run("shred", str(a), str(b), "--wait", "--verify")

    assert res.returncode == 0, res.stderr
    assert "shred job" in res.stdout and "2 shredded" in res.stdout
    assert sorted(os.listdir(member)) == ["keep.txt"]
    entries = shred_entries()
    assert len(entries) == 2
    for e in entries:
        assert e.method == "AES-CTR overwrite ×1 + read-back verify + rename + unlink"
        assert e.details["outcome"] == "shredded"
        assert e.details["fs_type"] and "overwrite_trusted" in e.details
        assert e.details["verified"] is True
        assert e.rows == 1 and e.subject_ref and len(e.subject_ref) == 64
        assert e.dedup_key == f"shred:{e.details['item_id']}"
    assert {e.details["size"] for e in entries} == {300_000, 5000}
    assert entries[0].subject_ref != entries[1].subject_ref
    assert_no_names_in_ledger(NAME, "주민등록증", "members/42")
    (job_id,) = {e.details["job_id"] for e in entries}
    # Done items keep a keyed hash, not the path.
    assert all(i.path is None and i.path_ref and i.ledgered for i in items(job_id))
    assert job(job_id).counts["shredded"] == 2  # type: ignore[index]


def test_cli_recursive_directory(primary_env: LifecycleEnv, start_worker) -> None:
    root = primary_env.file_root
    folder = root / "counselling" / "member-7"
    for i in range(3):
        fill(folder / f"session-{i}.txt", 10_000)
    fill(folder / "scans" / NAME, 20_000)
    start_worker(primary_env, queues=[SHRED_Q])
    res = primary_env.run("shred", "--recursive", str(folder), "--wait", "--zero")
    assert res.returncode == 0, res.stderr
    assert os.listdir(root / "counselling") == []
    (entry,) = shred_entries()
    assert entry.rows == 4 and entry.details["files"] == 4
    assert "zero pass" in entry.method


def test_cli_refuses_bad_paths_and_enqueues_nothing(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    root = primary_env.file_root
    good = root / "good.bin"
    h_good = fill(good, 1000)
    outside = tmp_path / "elsewhere" / NAME
    h_out = fill(outside, 1000)
    (root / "link").symlink_to(outside)
    (root / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    hard = root / "hard.bin"
    h_hard = fill(hard, 1000)
    os.link(hard, tmp_path / "hard-2")
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")

    cases = {
        "outside": [str(outside)],
        "dotdot": [f"{root}/dir/../../elsewhere/{NAME}"],
        "symlink": [str(root / "link")],
        "symlinked parent": [str(root / "linkdir" / NAME)],
        "hard link": [str(hard)],
        "directory": [str(root / "dir")],
        "fifo": [str(root / "fifo")],
        "missing": [str(root / "nope.bin")],
        # One bad path among good ones: the good one is not queued either.
        "mixed": [str(good), str(outside)],
    }
    for label, args in cases.items():
        res = primary_env.run("shred", *args)
        assert res.returncode == 2, (label, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lifecycle: error: path"), (label, lines)
        assert NAME not in res.stderr, label
    res = primary_env.run("shred", str(good), "--passes", "0")
    assert res.returncode == 2 and "passes" in res.stderr
    none = tmp_path / "none"
    res = primary_env.run("shred", str(none / "x"), LIFECYCLE_FILE_ROOTS=str(none))
    assert res.returncode == 2 and "storage root does not exist" in res.stderr
    res = primary_env.run("shred")
    assert res.returncode == 2

    assert job_count() == 0
    assert digest(good) == h_good and digest(outside) == h_out and digest(hard) == h_hard
    assert (root / "link").is_symlink()


def test_worker_refuses_a_file_that_gained_a_hard_link(
    primary_env: LifecycleEnv, start_worker
) -> None:
    root = primary_env.file_root
    ok, shared = root / "a.bin", root / NAME
    fill(ok, 1000)
    h = fill(shared, 1000)
    job_id = shred_jobs.enqueue_shred([str(ok), str(shared)], reason="test", legal_basis="test")
    # A hard link appears after the job was queued: the worker must refuse that file.
    os.link(shared, root / "second-name")
    start_worker(primary_env, queues=[SHRED_Q])
    wait_until(lambda: done(job_id), what="job done")
    it = items(job_id)
    assert [i.status for i in it] == ["shredded", "refused"]
    assert it[1].reason == "hard_links" and it[1].path == str(shared) and not it[1].path_ref
    assert digest(shared) == h
    assert len(shred_entries()) == 1  # a refusal destroys nothing: no ledger entry


# -- jobs, in process ----------------------------------------------------------------------


def test_enqueue_refuses_bad_input_and_creates_nothing(primary_env: LifecycleEnv) -> None:
    root = primary_env.file_root
    bad: list[tuple[Any, dict[str, Any]]] = [
        ([], {}),
        (str(root / "a"), {}),  # a string, not a list
        (["relative/a"], {}),
        ([f"{root}/x/../a"], {}),
        (["/etc/passwd"], {}),
        ([str(root)], {}),
        ([str(root / "a")], {"reason": " "}),
        ([str(root / "a")], {"passes": 0}),
        ([str(root / "a")], {"host": "a/b"}),
        (["relative/a"], {"host": "otherhost"}),
        (["/srv/x/../a"], {"host": "otherhost"}),
    ]
    for paths, extra in bad:
        kwargs = {"reason": "r", "legal_basis": "b", **extra}
        with pytest.raises(UserError) as err:
            shred_jobs.enqueue_shred(paths, **kwargs)
        assert "\n" not in str(err.value)
    assert job_count() == 0
    # Another host has its own roots: only the textual rules apply here.
    assert shred_jobs.enqueue_shred(["/srv/other/a"], host="otherhost", reason="r", legal_basis="b")


def test_missing_file_completes_as_noop_with_ledger_note(primary_env: LifecycleEnv) -> None:
    path = primary_env.file_root / "uploads" / NAME
    job_id = shred_jobs.enqueue_shred(
        [str(path)], request_id=77, reason="withdrawal", legal_basis="PIPA 21"
    )
    result = shred_jobs.run_job(job_id)
    assert result["missing"] == 1 and result["done"] == 1
    assert NAME not in json.dumps(result, ensure_ascii=False)
    (entry,) = shred_entries()
    assert entry.details["outcome"] == "already_absent" and entry.rows == 0
    assert entry.request_id == 77 and entry.subjects == 1
    assert entry.method.startswith("none")
    # Re-running the job (or a duplicate delivery) changes nothing.
    assert shred_jobs.run_job(job_id)["missing"] == 1
    assert len(shred_entries()) == 1
    assert_no_names_in_ledger(NAME)


def test_rerun_skips_done_items_and_ledger_step_is_resumable(
    primary_env: LifecycleEnv,
) -> None:
    root = primary_env.file_root
    paths = [root / f"f{i}.bin" for i in range(3)]
    for p in paths:
        fill(p, 2000)
    job_id = shred_jobs.enqueue_shred([str(p) for p in paths], reason="r", legal_basis="b")
    assert shred_jobs.run_job(job_id)["shredded"] == 3
    # As if the worker died between the ledger append and marking the item: the next run
    # appends nothing new (dedup key) and completes the item.
    with db.session("primary") as s:
        first = s.scalars(select(ShredItem).where(ShredItem.job_id == job_id)).first()
        assert first is not None
        first.ledgered = False
        s.get(ShredJob, job_id).state = "running"  # type: ignore[union-attr]
    assert shred_jobs.run_job(job_id)["shredded"] == 3
    assert len(shred_entries()) == 3
    assert all(i.ledgered and i.attempts == 1 for i in items(job_id))
    assert os.listdir(root) == []


def test_same_request_and_paths_give_the_same_job(primary_env: LifecycleEnv) -> None:
    root = primary_env.file_root
    fill(root / "a", 10)
    paths = [str(root / "a"), str(root / "b")]
    j1 = shred_jobs.enqueue_shred(paths, request_id=9, reason="r", legal_basis="b")
    j2 = shred_jobs.enqueue_shred(paths, request_id=9, reason="r", legal_basis="b")
    assert j1 == j2 and job_count() == 1
    shred_jobs.run_job(j1)
    # Still the same job after it ran (its paths are blanked by then).
    assert shred_jobs.enqueue_shred(paths, request_id=9, reason="r", legal_basis="b") == j1
    assert shred_jobs.enqueue_shred(paths[:1], request_id=9, reason="r", legal_basis="b") != j1


def test_job_for_another_host_is_not_run_here(primary_env: LifecycleEnv) -> None:
    path = primary_env.file_root / NAME
    h = fill(path, 1000)
    job_id = shred_jobs.enqueue_shred([str(path)], host="otherhost", reason="r", legal_basis="b")
    assert shred_jobs.run_job(job_id) == {"job": job_id, "skipped": "other host"}
    assert digest(path) == h and job(job_id).state == "pending"


def test_sweep_resends_unfinished_jobs_and_queues_files_whose_purpose_ended(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = primary_env.file_root
    fill(root / "old", 10)
    fill(root / "expired", 10)
    old = shred_jobs.enqueue_shred([str(root / "old")], reason="r", legal_basis="b")
    sends = job(old).sends
    # The data map engine's hook; the already-pending path must not be queued twice.
    monkeypatch.setattr(
        shred_jobs, "files_whose_purpose_ended", lambda: [str(root / "expired"), str(root / "old")]
    )
    counts = shred_jobs.sweep_orphans()
    assert counts == {"resent": 1, "queued": 1}
    assert job(old).sends == sends + 1
    with db.session("primary") as s:
        jobs = list(s.scalars(select(ShredJob).order_by(ShredJob.id)))
        run = s.scalars(select(JobRun).where(JobRun.job == "shred.sweep_orphans")).one()
    assert [j.origin for j in jobs] == ["api", "sweep"]
    assert run.counts == counts


def test_beat_schedule_has_the_shred_entries(lifecycle_env: LifecycleEnv) -> None:
    from lifecycle.core.settings import get_settings
    from schedules.beat import NIGHTLY, beat_schedule
    from schedules.housekeeping import resend_pending_shred_jobs
    from schedules.ticker import ticks

    sched = beat_schedule(get_settings())
    # Resending pending jobs is a ticker job in beat (no Flower entries), every minute.
    assert "shred-resend-pending" not in sched
    (tick,) = [t for t in ticks() if t.fn is resend_pending_shred_jobs]
    assert tick.every == 60
    assert sched["shred-sweep-orphans"] == {
        "task": "lifecycle.shred.sweep_orphans",
        "schedule": NIGHTLY,
    }


# -- routing, outages and crashes with real workers ----------------------------------------


def test_a_worker_serves_only_its_own_hosts_queue(primary_env: LifecycleEnv, start_worker) -> None:
    root = primary_env.file_root
    fa, fb = root / "a" / NAME, root / "b" / NAME
    fill(fa, 1000)
    hb = fill(fb, 1000)
    start_worker(primary_env, queues=["shred.host-a"], LIFECYCLE_HOST_NAME="host-a")
    # Misconfigured: consumes host-b's queue while calling itself host-a. It must not act.
    bad = start_worker(primary_env, queues=["shred.host-b"], LIFECYCLE_HOST_NAME="host-a")
    ja = shred_jobs.enqueue_shred([str(fa)], host="host-a", reason="r", legal_basis="b")
    jb = shred_jobs.enqueue_shred([str(fb)], host="host-b", reason="r", legal_basis="b")
    wait_until(lambda: done(ja), what="host-a job")
    assert not fa.exists()
    # The misconfigured worker received host-b's job and refused it: the file is untouched.
    wait_until(lambda: "belongs to another host" in bad.output(), what="host-b job refused")
    assert job(jb).state == "pending" and digest(fb) == hb
    bad.stop()

    start_worker(primary_env, queues=["shred.host-b"], LIFECYCLE_HOST_NAME="host-b")
    shred_jobs.resend_pending(force=True)  # what the beat does a minute later
    wait_until(lambda: done(jb), what="host-b job")
    assert not fb.exists()
    assert [e.details["host"] for e in shred_entries()] == ["host-a", "host-b"]


def test_job_stored_while_broker_down_is_sent_later(
    primary_env: LifecycleEnv, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.base import utcnow
    from workers.app import reconfigure

    path = primary_env.file_root / NAME
    fill(path, 1000)
    monkeypatch.setenv("LIFECYCLE_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    reconfigure()
    job_id = shred_jobs.enqueue_shred([str(path)], reason="r", legal_basis="b")
    j = job(job_id)
    assert (j.state, j.sends, j.sent_at) == ("pending", 0, None)  # committed, not sent

    monkeypatch.setenv("LIFECYCLE_BROKER_URL", primary_env.vars["LIFECYCLE_BROKER_URL"])
    reconfigure()
    start_worker(primary_env, queues=[SHRED_Q])
    assert shred_jobs.resend_pending() == 0  # not due before a minute has passed
    assert shred_jobs.resend_pending(now=utcnow() + timedelta(seconds=61)) == 1
    wait_until(lambda: done(job_id), what="job done")
    assert not path.exists() and job(job_id).sends == 1


def test_sigkill_mid_overwrite_then_restart_finishes(
    primary_env: LifecycleEnv, start_worker
) -> None:
    path = primary_env.file_root / "big" / NAME
    size = 64 << 20  # 64 chunks of 1 MiB; the test-only delay makes the pass take seconds
    fill(path, size)
    ino = path.stat().st_ino
    w = start_worker(primary_env, queues=[SHRED_Q], LIFECYCLE_TEST_SHRED_CHUNK_DELAY="0.05")
    job_id = shred_jobs.enqueue_shred([str(path)], reason="r", legal_basis="b")
    wait_until(lambda: items(job_id)[0].state == "working", what="overwrite started")
    # Wait until the overwrite visibly reached the file, then kill the whole worker.
    fd = os.open(path, os.O_RDONLY)
    try:
        wait_until(lambda: PATTERN[:12] not in os.pread(fd, 1 << 20, 0), what="first chunk")
        # A few chunks in, so the kill lands mid-file rather than between the first two chunks.
        wait_until(lambda: PATTERN[:12] not in os.pread(fd, 1 << 20, 4 << 20), what="fifth chunk")
        w.kill()
        assert path.exists() and path.stat().st_ino == ino  # half-overwritten, still there
        assert PATTERN[:12] in os.pread(fd, 1 << 20, size - (1 << 20))  # end not reached
    finally:
        os.close(fd)
    (it,) = items(job_id)
    assert it.state == "working" and job(job_id).state == "running"

    start_worker(primary_env, queues=[SHRED_Q])
    shred_jobs.resend_pending(force=True)
    wait_until(lambda: done(job_id), timeout=120, what="job done after restart")
    assert not path.exists() and os.listdir(path.parent) == []
    (it,) = items(job_id)
    assert it.status == "shredded" and it.attempts == 2 and it.size == size
    (entry,) = shred_entries()
    assert entry.details["size"] == size


def test_embedded_default_runs_a_shred_job(embedded_env: LifecycleEnv, start_worker) -> None:
    migrate_embedded(embedded_env)
    path = embedded_env.file_root / NAME
    fill(path, 4000)
    start_worker(embedded_env, queues=[f"shred.{os.uname().nodename}"])
    res = embedded_env.run("shred", str(path), "--wait", timeout=120)
    assert res.returncode == 0, res.stderr
    assert not path.exists() and len(shred_entries()) == 1


# -- batches: a crash between the rounds ---------------------------------------------------

# Runs the job in a child process that SIGKILLs itself at the named point of the batch.
CRASH_AT = {
    # after every file's overwrite is on disk, before the first rename
    "durable": "hooks = Hooks(on_durable=lambda n: os.kill(os.getpid(), signal.SIGKILL))",
    # after the renames, unlinks and directory fsyncs, before any result is recorded
    "unlinked": (
        "hooks = None\nshred_jobs._store_result = lambda *a: os.kill(os.getpid(), signal.SIGKILL)"
    ),
}


def run_job_and_crash(env: LifecycleEnv, job_id: int, point: str) -> int:
    code = (
        "import os, signal\n"
        "from lifecycle.shred import jobs as shred_jobs\n"
        "from lifecycle.shred.shredder import Hooks\n"
        f"{CRASH_AT[point]}\n"
        f"shred_jobs.run_job({job_id}, hooks=hooks)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env.environ(), capture_output=True, timeout=120
    )
    return proc.returncode


def test_crash_between_overwrite_and_unlink_rounds_then_rerun_records_each_once(
    primary_env: LifecycleEnv,
) -> None:
    root = primary_env.file_root
    paths = [root / "members" / str(m) / f"{i}-{NAME}" for m in range(3) for i in range(4)]
    for p in paths:
        fill(p, 9000)
    job_id = shred_jobs.enqueue_shred([str(p) for p in paths], reason="r", legal_basis="b")

    assert run_job_and_crash(primary_env, job_id, "durable") == -signal.SIGKILL

    # Killed after the flush round: every file is still there under its own name, already
    # overwritten; nothing is recorded as destroyed.
    for p in paths:
        assert p.exists() and PATTERN[:12] not in p.read_bytes()
    assert all(not n.startswith(".shred-") for p in paths for n in os.listdir(p.parent))
    assert {i.state for i in items(job_id)} == {"working"}
    assert shred_entries() == []

    result = shred_jobs.run_job(job_id)

    assert result["shredded"] == 12 and result["done"] == 12
    assert all(os.listdir(root / "members" / str(m)) == [] for m in range(3))
    entries = shred_entries()
    assert sorted(e.dedup_key for e in entries) == sorted(f"shred:{i.id}" for i in items(job_id))
    assert all(e.details["outcome"] == "shredded" for e in entries)
    assert all(i.attempts == 2 and i.status == "shredded" and i.ledgered for i in items(job_id))
    assert_no_names_in_ledger(NAME)


def test_crash_after_the_unlink_round_then_rerun_notes_each_file_once(
    primary_env: LifecycleEnv,
) -> None:
    root = primary_env.file_root
    paths = [root / f"{i}-{NAME}" for i in range(5)]
    for p in paths:
        fill(p, 4000)
    job_id = shred_jobs.enqueue_shred([str(p) for p in paths], reason="r", legal_basis="b")

    assert run_job_and_crash(primary_env, job_id, "unlinked") == -signal.SIGKILL
    assert os.listdir(root) == []
    assert {i.state for i in items(job_id)} == {"working"} and shred_entries() == []

    result = shred_jobs.run_job(job_id)

    # Gone before anything was recorded: noted once each, honestly, not claimed as shredded.
    assert result["missing"] == 5 and result["done"] == 5
    entries = shred_entries()
    assert len(entries) == 5 and len({e.dedup_key for e in entries}) == 5
    for e in entries:
        assert e.details["outcome"] == "already_absent"
        assert e.details["note"] == "already gone after an interrupted attempt"


# -- non-UTF-8 file names through the CLI --------------------------------------------------


def test_cli_shreds_a_non_utf8_file_name(primary_env: LifecycleEnv, start_worker) -> None:
    root = os.fsencode(primary_env.file_root)
    raw = root + b"/uploads/\xff\xfe-" + NAME.encode("euc-kr", errors="replace")
    os.makedirs(os.path.dirname(raw))
    with open(raw, "wb") as fh:
        fh.write(PATTERN * 50)
    link = root + b"/\xfa-link"
    os.symlink(raw, link)
    start_worker(primary_env, queues=[SHRED_Q])

    # argv is bytes; Python hands the name over with surrogate escapes and back unchanged.
    res = primary_env.run("shred", os.fsdecode(raw), "--wait")

    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "1 shredded" in res.stdout
    assert os.listdir(os.path.dirname(raw)) == []
    (entry,) = shred_entries()
    assert entry.details["outcome"] == "shredded" and entry.subject_ref
    (job_id,) = {entry.details["job_id"]}
    assert all(i.path is None for i in items(job_id))

    # A refusal of such a name is one line too, and queues nothing.
    before = job_count()
    res = primary_env.run("shred", os.fsdecode(link), "--wait")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "lifecycle: error: path 1: the file is a symbolic link"
    ]
    assert job_count() == before


def test_a_non_utf8_path_round_trips_through_the_database(primary_env: LifecycleEnv) -> None:
    root = os.fsencode(primary_env.file_root)
    raw = root + b"/\xc0\xaf-old-upload.bin"
    with open(raw, "wb") as fh:
        fh.write(PATTERN * 10)
    job_id = shred_jobs.enqueue_shred([raw], reason="r", legal_basis="b")
    (it,) = items(job_id)
    assert it.path is not None and shred_jobs.fs_path(it.path) == os.fsdecode(raw)
    assert shred_jobs.run_job(job_id)["shredded"] == 1
    assert not os.path.exists(raw)
    for p in ("/srv/a.bin", "/srv/상담.pdf", os.fsdecode(b"/srv/\xff")):
        assert shred_jobs.fs_path(shred_jobs.db_path(p)) == p


def test_cli_wait_ends_with_one_line_when_the_task_fails_and_a_resend_heals_it(
    primary_env: LifecycleEnv, start_worker
) -> None:
    path = primary_env.file_root / NAME
    fill(path, 3000)
    # The worker shreds, then cannot reach the archive DB for the ledger entry: its task fails.
    bad = start_worker(
        primary_env,
        queues=[SHRED_Q],
        LIFECYCLE_ARCHIVE_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none",
    )
    res = primary_env.run("shred", str(path), "--wait", "--timeout", "120")
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "the worker's task failed (" in lines[0], lines
    assert "OperationalError" in lines[0] and "Traceback" not in res.stderr
    assert NAME not in res.stderr
    bad.stop()
    (job_id,) = {i.job_id for i in items_all()}
    assert job(job_id).state == "running" and shred_entries() == []

    start_worker(primary_env, queues=[SHRED_Q])
    shred_jobs.resend_pending(force=True)
    wait_until(lambda: done(job_id), what="job done after the resend")
    (entry,) = shred_entries()
    assert entry.details["outcome"] == "shredded" and not path.exists()


def items_all() -> list[ShredItem]:
    with db.session("primary") as s:
        return list(s.scalars(select(ShredItem).order_by(ShredItem.id)))
