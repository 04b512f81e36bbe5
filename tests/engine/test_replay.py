"""`lifecycle ledger replay --since DATE` after restoring the primary DB (and the files) from a
backup taken before a withdrawal: the withdrawal and its file shreds are re-applied, once."""

from __future__ import annotations

import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lifecycle.core import db
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from lifecycle.shred.jobs import run_job
from tests.helpers import LifecycleEnv, pg_exec, seed_site, table_counts


def _rows(url: str, sql: str, **params: object) -> list[tuple]:  # type: ignore[type-arg]
    eng = create_engine(url)
    with eng.connect() as c:
        out = [tuple(r) for r in c.execute(text(sql), params)]
    eng.dispose()
    return out


def _files_of(primary: str, mid: int) -> list[str]:
    return [p for (p,) in _rows(primary, "SELECT path FROM uploaded_files WHERE member_id = :m",
                                m=mid)]  # fmt: skip


def _release_connections() -> None:
    clear_context_cache()
    db.dispose_all()


@pytest.fixture
def restored(lifecycle_env: LifecycleEnv, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A withdrawal (rows deleted, files shredded) after a backup, then the backup restored."""
    env = lifecycle_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 30, files=True, file_root=env.file_root)
    [(mid,)] = _rows(
        primary,
        "SELECT m.id FROM members m WHERE status = 'active' AND EXISTS (SELECT 1 FROM "
        "uploaded_files f WHERE f.member_id = m.id) AND EXISTS (SELECT 1 FROM payments p "
        "WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1",
    )
    files = _files_of(primary, mid)
    assert files and all(Path(f).exists() for f in files)
    # The backup: a copy of the primary DB and of the storage root.
    name = primary.rsplit("/", 1)[1]
    backup = f"lct_{uuid.uuid4().hex[:8]}_bak"
    _release_connections()
    pg_exec(f'CREATE DATABASE "{backup}" TEMPLATE "{name}"')
    shutil.copytree(env.file_root, tmp_path / "files.bak")
    # After the backup: member `mid` withdraws; rows deleted, files shredded.
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    assert carry_out(ctx, rid)["state"] == "completed"
    for (job,) in _rows(primary, "SELECT id FROM lifecycle_shred_jobs"):
        run_job(job)
    assert not any(Path(f).exists() for f in files)
    # The restore.
    _release_connections()
    pg_exec(f'DROP DATABASE "{name}" WITH (FORCE)')
    pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{backup}"')
    pg_exec(f'DROP DATABASE "{backup}"')
    shutil.rmtree(env.file_root)
    shutil.copytree(tmp_path / "files.bak", env.file_root)
    assert _rows(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == [(1,)]
    assert all(Path(f).exists() for f in files)
    yield env, mid, files
    _release_connections()


def test_replay_reapplies_the_withdrawal_and_the_shreds_once(
    restored: tuple[LifecycleEnv, int, list[str]],
) -> None:
    env, mid, files = restored
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    since = date.today().isoformat()
    archived = _rows(archive, "SELECT count(*) FROM archive_records")[0][0]
    others = _rows(primary, "SELECT count(*) FROM members WHERE id <> :m", m=mid)[0][0]

    before = (table_counts(primary), table_counts(archive))
    r = env.run("ledger", "replay", "--since", since, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would re-apply: 1 member(s)" in r.stdout
    assert f"{len(files)} file(s) found again" in r.stdout and "nothing changed" in r.stdout
    assert (table_counts(primary), table_counts(archive)) == before

    r = env.run("--operator", "dba-choi", "ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 1 member(s)" in r.stdout
    for table in ("members", "payments", "uploaded_files", "counselling_records"):
        col = "id" if table == "members" else "member_id"
        assert _rows(primary, f"SELECT count(*) FROM {table} WHERE {col} = :m", m=mid) == [(0,)]
    assert _rows(primary, "SELECT count(*) FROM members")[0][0] == others
    # Retained parts were in the archive already: none added twice.
    assert _rows(archive, "SELECT count(*) FROM archive_records")[0][0] == archived
    [(actor, subjects, details)] = _rows(
        archive,
        "SELECT actor, subjects, details FROM ledger_entries WHERE action = 'ledger_replay'",
    )
    assert actor == "operator:dba-choi" and subjects == 1 and details["files"] == len(files)
    # The restored files are shredded again by the jobs the replay queued.
    _release_connections()
    for (job,) in _rows(primary, "SELECT id FROM lifecycle_shred_jobs ORDER BY id"):
        run_job(job)
    assert not any(Path(f).exists() for f in files)

    # Again: nothing left to match, nothing changed.
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 0 member(s)" in r.stdout and "0 file(s) found again" in r.stdout
    assert _rows(primary, "SELECT count(*) FROM members")[0][0] == others


def test_bad_replay_input_changes_nothing(lifecycle_env: LifecycleEnv) -> None:
    env = lifecycle_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, 5)
    before = (table_counts(primary), table_counts(archive))
    future = (date.today() + timedelta(days=3)).isoformat()
    for args, message in (
        ([], "--since DATE is required"),
        (["--since", "yesterday"], "--since must be a date"),
        (["--since", future], "is in the future"),
    ):
        r = env.run("ledger", "replay", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert (table_counts(primary), table_counts(archive)) == before
