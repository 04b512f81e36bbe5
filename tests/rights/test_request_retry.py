"""A withdrawal that failed after its rows were destroyed (the shredder refused its files) says
what it did, and resumes from the failed step (`lifecycle requests retry`) instead of being
refused as an unknown member."""

from __future__ import annotations

import json

from lifecycle.engine.context import clear_context_cache
from tests.helpers import LifecycleEnv, seed_site, sql_one, sql_rows


def test_a_withdrawal_failed_after_destruction_says_so_and_retries_from_the_failed_step(
    primary_env: LifecycleEnv, start_worker, tmp_path
) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    # The uploads live outside LIFECYCLE_FILE_ROOTS: the shredder refuses every one.
    outside = tmp_path / "not-a-storage-root"
    outside.mkdir()
    seed_site(primary, 6, files=True, file_root=outside)
    clear_context_cache()
    mid = int(sql_one(primary, "SELECT min(member_id) FROM uploaded_files"))
    worker = start_worker(env, concurrency=1)

    r = env.run("withdraw", str(mid), "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    rid = int(sql_one(primary, "SELECT max(id) FROM lifecycle_requests"))
    last = r.stderr.strip().splitlines()[-1]
    assert f"request {rid} failed after restricted, archived, rows_destroyed (done): " in last
    assert "refused by the shredder" in last
    ((state, done),) = sql_rows(
        primary, "SELECT state, steps_done FROM lifecycle_requests WHERE id = :i", i=rid
    )
    assert (state, done) == ("failed", "restricted,archived,rows_destroyed")
    assert sql_one(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == 0
    st = env.run("status", "--json")
    assert st.returncode == 1, st.stderr
    (failed,) = json.loads(st.stdout)["requests"]["failed"]
    assert failed["steps_done"] == ["restricted", "archived", "rows_destroyed"]

    # Submitting the withdrawal again points at the failed request, not "unknown member".
    again = env.run("withdraw", str(mid))
    assert again.returncode == 2
    assert "unknown member" not in again.stderr
    assert f"resume it with `lifecycle requests retry {rid}`" in again.stderr

    # Retried while its files are still not shredded: it resumes at the destroy step, does
    # not look for the member again, and fails with the count.
    deliveries = sql_one(primary, "SELECT count(*) FROM lifecycle_deliveries")
    r = env.run("requests", "retry", str(rid), "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"request {rid} (withdrawal) re-opened at archived" in r.stdout
    assert "file(s) of this request not shredded yet" in r.stderr
    assert "unknown member" not in r.stderr
    assert sql_rows(primary, "SELECT state, steps_done FROM lifecycle_requests WHERE id = :i",
                    i=rid) == [("failed", "restricted,archived,rows_destroyed")]  # fmt: skip
    assert sql_one(primary, "SELECT count(*) FROM lifecycle_deliveries") == deliveries

    # The operator fixes the storage roots (and restarts the worker with them), tries the
    # refused files again, and the retry finishes the request.
    (job,) = (r[0] for r in sql_rows(
        primary, "SELECT id FROM lifecycle_shred_jobs WHERE request_id = :i", i=rid))  # fmt: skip
    assert f"lifecycle shred --retry {job} --wait" in r.stderr
    theirs = sql_one(primary, "SELECT count(*) FROM lifecycle_shred_items WHERE job_id = :j",
                     j=job)  # fmt: skip
    left = [p for p in outside.rglob("*") if p.is_file()]
    assert theirs and len(left) >= theirs, "the refused files are still there"
    worker.stop()
    roots = f"{env.vars['LIFECYCLE_FILE_ROOTS']}:{outside}"
    start_worker(env, concurrency=1, LIFECYCLE_FILE_ROOTS=roots)
    r = env.run("shred", "--retry", str(job), "--wait", "--timeout", "120",
                LIFECYCLE_FILE_ROOTS=roots, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert len([p for p in outside.rglob("*") if p.is_file()]) == len(left) - theirs
    again = env.run("shred", "--retry", str(job))
    assert again.returncode == 2 and "no refused or failed file" in again.stderr
    r = env.run("requests", "retry", str(rid), "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"request {rid}: completed" in r.stdout

    # Only a failed request can be retried; bad input changes nothing.
    r = env.run("requests", "retry", str(rid))
    assert r.returncode == 2 and "not failed" in r.stderr
    r = env.run("requests", "retry", "999999")
    assert r.returncode == 2 and "does not exist" in r.stderr
