"""`lifecycle shred PATH... --wait` the short way (lifecycle/cli/shred_plan.py), on a PostgreSQL
and a MariaDB primary with a real worker: after one full run leaves its plan, the console
script writes the job on the plain drivers without SQLAlchemy, pydantic, Typer, Celery or rich,
and the job, its items, its task message and its access-log entry are those of the full
command; every other case goes to the full command before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.helpers import LifecycleEnv, site_engine, sql_rows
from tests.shred.test_shred_jobs import SHRED_Q, fill

# The console script's entry point in a fresh interpreter. Both ways leave through os._exit;
# here that raises SystemExit instead, so the probe can print which libraries were loaded.
PROBE = """
import json, os, sys
from lifecycle.cli.entry import main

def _exit(code):
    raise SystemExit(code)

os._exit = _exit
sys.argv[0] = "lifecycle"
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
loaded = sorted(
    {m.split(".")[0] for m in sys.modules}
    & {"sqlalchemy", "celery", "pydantic", "pydantic_settings", "typer", "click", "rich"}
)
print(json.dumps(loaded))
sys.exit(code)
"""
HEAVY = ["celery", "click", "pydantic", "pydantic_settings", "rich", "sqlalchemy", "typer"]
# Columns that differ between two jobs (or items) by nature.
JOB_OWN = ("id", "task_id", "created_at", "sent_at", "next_send_at", "started_at", "finished_at")
ITEM_OWN = ("id", "job_id", "path_ref", "tmp_name", "started_at", "finished_at")


def _run(env: LifecycleEnv, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env.environ(),
        cwd=env.var_dir.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = r.stdout.strip().splitlines()
    loaded = json.loads(lines[-1]) if lines else None
    assert isinstance(loaded, list), (r.stdout, r.stderr)
    r.stdout = "\n".join(lines[:-1])
    return r, loaded


def _rows(env: LifecycleEnv, sql: str, **params: Any) -> list[dict[str, Any]]:
    eng = site_engine(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    try:
        with eng.connect() as c:
            return [dict(r._mapping) for r in c.execute(text(sql), params)]
    finally:
        eng.dispose()


def _job(env: LifecycleEnv, job_id: int) -> dict[str, Any]:
    (row,) = _rows(env, "SELECT * FROM lifecycle_shred_jobs WHERE id = :i", i=job_id)
    return row


def _items(env: LifecycleEnv, job_id: int) -> list[dict[str, Any]]:
    return _rows(env, "SELECT * FROM lifecycle_shred_items WHERE job_id = :i ORDER BY id", i=job_id)


def _job_id(stdout: str) -> int:
    first = stdout.splitlines()[0]
    assert first.startswith("shred job ") and first.endswith(f"queued on {SHRED_Q}"), first
    return int(first.split()[2].rstrip(":"))


def _without(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in keys}
    # JSON columns come back as text on MariaDB.
    return {k: json.loads(v) if k in ("categories", "counts") and isinstance(v, str) else v
            for k, v in out.items()}  # fmt: skip


def test_short_way_writes_what_the_full_command_writes(
    primary_env: LifecycleEnv, start_worker
) -> None:
    root = primary_env.file_root
    files = [root / "members" / str(i) / "upload.bin" for i in range(4)]
    for f in files:
        fill(f, 70_000)
    start_worker(primary_env, queues=[SHRED_Q])

    # No plan yet: the full command runs and leaves it.
    full, loaded = _run(primary_env, "shred", str(files[0]), str(files[1]), "--wait")
    assert full.returncode == 0, full.stderr
    assert "sqlalchemy" in loaded
    plan = primary_env.var_dir / "cache" / "shred-plan.json"
    assert plan.stat().st_mode & 0o077 == 0
    assert "password" not in plan.read_text()
    short, loaded = _run(
        primary_env, "--operator", "김담당", "shred", str(files[2]), str(files[3]), "--wait"
    )
    assert short.returncode == 0, short.stderr
    assert loaded == [], loaded
    assert short.stderr == full.stderr == ""
    full_id, short_id = _job_id(full.stdout), _job_id(short.stdout)
    assert short_id != full_id
    assert short.stdout.replace(f"job {short_id}", "job N") == full.stdout.replace(
        f"job {full_id}", "job N"
    )
    assert short.stdout.splitlines()[-1] == f"shred job {short_id} done: 2 shredded"
    assert not any(f.exists() for f in files)

    fj, sj = _job(primary_env, full_id), _job(primary_env, short_id)
    assert _without(sj, JOB_OWN) == _without(fj, JOB_OWN)
    assert sj["state"] == "done" and sj["origin"] == "cli" and sj["sends"] == 1
    assert sj["task_id"] == f"shred-{short_id}-1"
    for j in (fj, sj):
        assert j["next_send_at"] - j["sent_at"] == timedelta(seconds=60)
        assert j["created_at"] <= j["sent_at"] <= j["started_at"] <= j["finished_at"]
    fi, si = _items(primary_env, full_id), _items(primary_env, short_id)
    assert [_without(i, ITEM_OWN) for i in si] == [_without(i, ITEM_OWN) for i in fi]
    assert all(i["path"] is None and i["ledgered"] for i in si)

    # One access-log entry each, alike but for the job and the operator, on a chain that holds.
    entries = sql_rows(
        primary_env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"],
        "SELECT operator, kind, action, subject_ref, request_id, details FROM access_log "
        "WHERE action = 'shred' ORDER BY seq",
    )
    assert len(entries) == 2
    (_f_op, *f_rest, f_details), (s_op, *s_rest, s_details) = [
        (op, kind, action, ref, req, d if isinstance(d, dict) else json.loads(d))
        for op, kind, action, ref, req, d in entries
    ]
    assert s_op == "김담당" and f_rest == s_rest == ["destroy", "shred", None, None]
    assert f_details.pop("shred_job") == full_id and s_details.pop("shred_job") == short_id
    assert f_details == s_details and f_details["paths"] == 2
    r = primary_env.run("accesslog", "verify")
    assert r.returncode == 0, r.stdout + r.stderr

    # A directory, with --timeout, the short way too.
    folder = root / "counselling" / "member-9"
    for i in range(3):
        fill(folder / f"session-{i}.txt", 5_000)
    r, loaded = _run(primary_env, "shred", "-r", str(folder), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert loaded == []
    job_id = _job_id(r.stdout)
    assert r.stdout.splitlines()[-1] == f"shred job {job_id} done: 1 shredded"
    assert not folder.exists()
    assert _job(primary_env, job_id)["recursive"] in (True, 1)
    assert _items(primary_env, job_id)[0]["files"] == 3


def test_short_way_hands_every_other_case_to_the_full_command(
    primary_env: LifecycleEnv, start_worker
) -> None:
    root = primary_env.file_root
    first, link = root / "a" / "first.bin", root / "a" / "link.bin"
    fill(first, 4_000)
    start_worker(primary_env, queues=[SHRED_Q])
    r, _ = _run(primary_env, "shred", str(first), "--wait")
    assert r.returncode == 0, r.stderr
    before = _rows(primary_env, "SELECT count(*) AS n FROM lifecycle_shred_jobs")
    kept = root / "a" / "kept.bin"
    fill(kept, 1_000)
    os.symlink(kept, link)
    cases = [
        (["shred", str(root / "a" / "missing.bin"), "--wait"], 2, "no such file or directory"),
        (["shred", str(link)], 2, "symbolic link"),
        (["shred", "/etc/hostname"], 2, "not under a configured storage root"),
        (["shred", str(kept), "--passes", "0"], 2, "--passes"),
        (["shred", str(root / "a" / ".." / "kept.bin")], 2, "'..'"),
    ]
    for args, code, fragment in cases:
        r, loaded = _run(primary_env, *args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert "typer" in loaded, (args, loaded)  # the full command answered
        assert fragment in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("lifecycle: error: "), (args, r.stderr)
    assert _rows(primary_env, "SELECT count(*) AS n FROM lifecycle_shred_jobs") == before
    assert kept.exists() and link.is_symlink()

    # Changed settings: the plan no longer holds and the full command runs (and renews it).
    primary_env.vars["LIFECYCLE_LEASE_SECONDS"] = "31"
    r, loaded = _run(primary_env, "shred", str(kept), "--wait")
    assert r.returncode == 0, r.stderr
    assert "sqlalchemy" in loaded
    fill(kept, 1_000)
    r, loaded = _run(primary_env, "shred", str(kept), "--wait")
    assert r.returncode == 0, r.stderr
    assert loaded == []


def test_the_task_message_is_celerys(primary_env: LifecycleEnv) -> None:
    """The message the short way puts on Redis is the one Celery puts there for the same job,
    but for who sent it; run against the Celery installed, so an upgrade that changes the
    format fails here."""
    import redis

    from lifecycle.cli import shred_plan

    plan = shred_plan._make_plan()
    assert plan is not None
    assert plan["route"]["queue"] == SHRED_Q
    assert Path(plan["roots"][0]) == primary_env.file_root
    # Celery's side from a fresh process, as the full command sends it: in this process another
    # test may have imported the task modules, and Celery then adds the task's time limits
    # (which a worker applies all the same when the message carries none).
    send = (
        "from lifecycle.core import dispatch; "
        f"dispatch.send(dispatch.SHRED_FILES, 4711, queue={SHRED_Q!r}, task_id='shred-4711-1')"
    )
    subprocess.run(
        [sys.executable, "-c", send], env=primary_env.environ(), check=True, timeout=120,
        cwd=primary_env.var_dir.parent,
    )  # fmt: skip
    client = redis.Redis.from_url(primary_env.vars["LIFECYCLE_BROKER_URL"])
    (celerys,) = [json.loads(m) for m in client.lrange(SHRED_Q, 0, -1)]
    client.delete(SHRED_Q)
    shred_plan._publish(plan, 4711, "shred-4711-1")
    (ours,) = [json.loads(m) for m in client.lrange(SHRED_Q, 0, -1)]
    client.delete(SHRED_Q)
    for msg in (ours, celerys):
        assert msg["headers"].pop("origin").startswith("gen")
        del msg["properties"]["delivery_tag"], msg["properties"]["reply_to"]
    assert ours == celerys
    assert ours["headers"]["argsrepr"] == "job=4711"
