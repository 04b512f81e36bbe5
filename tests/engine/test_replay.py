"""`lifecycle ledger replay --since DATE` after restoring the primary DB (and the files) from a
backup, on a PostgreSQL and on a MariaDB primary: each act the ledger records since is
re-applied as what it was (a withdrawal withdraws, an item erasure clears its columns), once,
and only to what the restore brought back; without a restore nothing changes."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lifecycle.core import db
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights import erase
from lifecycle.rights.common import Requester
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from lifecycle.shred.jobs import run_job
from tests.helpers import (
    MYSQL_ADMIN,
    LifecycleEnv,
    mysql_exec,
    pg_exec,
    seed_site,
    sql_one,
    sql_rows,
    table_counts,
)


def _files_of(primary: str, mid: int) -> list[str]:
    return [p for (p,) in sql_rows(primary, "SELECT path FROM uploaded_files WHERE member_id = :m",
                                   m=mid)]  # fmt: skip


def _release_connections() -> None:
    clear_context_cache()
    db.dispose_all()


def _mysql_cli(tool: str, name: str) -> list[str]:
    u = make_url(MYSQL_ADMIN)
    args = [
        tool,
        "-h",
        u.host or "127.0.0.1",
        "-P",
        str(u.port or 3306),
        "-u",
        u.username or "root",
    ]
    if u.password:
        args.append(f"-p{u.password}")
    return [*args, name]


def backup(primary: str, tmp: Path) -> Callable[[], None]:
    """Back the primary DB up now, as its site would; returns the function that restores it
    (PostgreSQL: a template copy; MariaDB: mariadb-dump, then the dump fed to the client)."""
    url = make_url(primary)
    name = url.database
    assert name
    _release_connections()
    if url.get_backend_name() == "postgresql":
        copy = f"lct_{uuid.uuid4().hex[:8]}_bak"
        pg_exec(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')

        def restore() -> None:
            _release_connections()
            pg_exec(f'DROP DATABASE "{name}" WITH (FORCE)')
            pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{copy}"')
            pg_exec(f'DROP DATABASE "{copy}"')

        return restore
    dump = tmp / f"{name}.sql"
    with dump.open("wb") as fh:
        subprocess.run([*_mysql_cli("mariadb-dump", name)[:-1], "--single-transaction", name],
                       stdout=fh, check=True)  # fmt: skip

    def restore_mysql() -> None:
        _release_connections()
        mysql_exec(f"DROP DATABASE `{name}`")
        mysql_exec(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        with dump.open("rb") as fh:
            subprocess.run(_mysql_cli("mysql", name), stdin=fh, check=True)

    return restore_mysql


def withdrawn_then_restored(primary: str, tmp: Path, member: int) -> None:
    """``member`` withdrawn through the lifecycle to the end, then the primary restored from a
    backup taken just before: what `ledger replay` is for."""
    restore = backup(primary, tmp)
    ctx = get_context()
    assert carry_out(ctx, submit_withdrawal(ctx, member))["state"] == "completed"
    restore()


def replay_reapplies_one(env: LifecycleEnv) -> None:
    """`lifecycle ledger replay --since` today, which must re-apply one member."""
    r = env.run("ledger", "replay", "--since", date.today().isoformat())
    assert r.returncode == 0, r.stderr
    assert "re-applied: 1 member(s)" in r.stdout, r.stdout


def _ledger(archive: str, where: str = "TRUE") -> list[tuple[Any, ...]]:
    return sql_rows(
        archive,
        f"SELECT action, subject_ref, request_id, details FROM ledger_entries WHERE {where} "
        "ORDER BY seq",
    )


def _member(primary: str, mid: int) -> tuple[Any, ...] | None:
    rows = sql_rows(primary, "SELECT status, hobbies, name FROM members WHERE id = :m", m=mid)
    return rows[0] if rows else None


@pytest.fixture
def site(primary_env: LifecycleEnv) -> Iterator[tuple[LifecycleEnv, str, str]]:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 30, files=True, file_root=env.file_root)
    clear_context_cache()
    yield env, primary, env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    _release_connections()


def _with_files_and_payments(primary: str, n: int = 1) -> list[int]:
    return [
        r[0]
        for r in sql_rows(
            primary,
            "SELECT m.id FROM members m WHERE status = 'active' AND hobbies IS NOT NULL AND "
            "EXISTS (SELECT 1 FROM uploaded_files f WHERE f.member_id = m.id) AND EXISTS "
            "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id",
        )[:n]
    ]


def _erase_hobbies(mid: int) -> int:
    rid = erase.submit_erasure(mid, "hobbies", Requester())
    assert erase.run_erasure(rid)["state"] in ("notifying", "completed")
    return rid


def test_replay_reapplies_the_withdrawal_and_the_shreds_once(
    site: tuple[LifecycleEnv, str, str], tmp_path: Path
) -> None:
    env, primary, archive = site
    [mid] = _with_files_and_payments(primary)
    files = _files_of(primary, mid)
    assert files and all(Path(f).exists() for f in files)
    restore = backup(primary, tmp_path)
    shutil.copytree(env.file_root, tmp_path / "files.bak")
    # After the backup: member `mid` withdraws; rows deleted, files shredded.
    ctx = get_context()
    rid = submit_withdrawal(ctx, mid)
    assert carry_out(ctx, rid)["state"] == "completed"
    for (job,) in sql_rows(primary, "SELECT id FROM lifecycle_shred_jobs"):
        run_job(job)
    assert not any(Path(f).exists() for f in files)
    restore()
    shutil.rmtree(env.file_root)
    shutil.copytree(tmp_path / "files.bak", env.file_root)
    assert sql_one(primary, "SELECT count(*) FROM members WHERE id = :m", m=mid) == 1
    assert all(Path(f).exists() for f in files)

    since = date.today().isoformat()
    archived = sql_one(archive, "SELECT count(*) FROM archive_records")
    others = sql_one(primary, "SELECT count(*) FROM members WHERE id <> :m", m=mid)
    before = (table_counts(primary), table_counts(archive))
    r = env.run("ledger", "replay", "--since", since, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would re-apply: 1 member(s) the restore brought back (1 withdrawal(s)" in r.stdout
    assert f"{len(files)} file(s) found again" in r.stdout and "nothing changed" in r.stdout
    assert (table_counts(primary), table_counts(archive)) == before

    r = env.run("--operator", "dba-choi", "ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 1 member(s) the restore brought back (1 withdrawal(s)" in r.stdout
    for table in ("members", "payments", "uploaded_files", "counselling_records"):
        col = "id" if table == "members" else "member_id"
        assert sql_one(primary, f"SELECT count(*) FROM {table} WHERE {col} = :m", m=mid) == 0
    assert sql_one(primary, "SELECT count(*) FROM members") == others
    # Retained parts were in the archive already: none added twice.
    assert sql_one(archive, "SELECT count(*) FROM archive_records") == archived
    [(actor, subjects, details)] = sql_rows(
        archive,
        "SELECT actor, subjects, details FROM ledger_entries WHERE action = 'ledger_replay'",
    )
    assert actor == "operator:dba-choi" and subjects == 1 and details["files"] == len(files)
    assert details["withdrawals"] == 1 and details["erasures"] == 0
    # The restored files are shredded again by the jobs the replay queued.
    _release_connections()
    for (job,) in sql_rows(primary, "SELECT id FROM lifecycle_shred_jobs ORDER BY id"):
        run_job(job)
    assert not any(Path(f).exists() for f in files)

    # Again: nothing left to match, nothing changed.
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 0 member(s)" in r.stdout and "0 file(s) found again" in r.stdout
    assert sql_one(primary, "SELECT count(*) FROM members") == others


def test_replay_reapplies_an_item_erasure_as_an_erasure(
    site: tuple[LifecycleEnv, str, str], tmp_path: Path
) -> None:
    """A member who had only an item erasure stays a member: the replay clears those columns
    of the restored row again and nothing else (the bug deleted the whole member)."""
    env, primary, archive = site
    erased, withdrawn = _with_files_and_payments(primary, 2)
    restore = backup(primary, tmp_path)
    ctx = get_context()
    _erase_hobbies(erased)
    rid = submit_withdrawal(ctx, withdrawn)
    assert carry_out(ctx, rid)["state"] == "completed"
    restore()
    status, hobbies, name = _member(primary, erased)  # type: ignore[misc]
    assert status == "active" and hobbies is not None and name
    rows_before = {
        t: sql_one(primary, f"SELECT count(*) FROM {t} WHERE member_id = :m", m=erased)
        for t in ("payments", "uploaded_files", "counselling_records")
    }
    since = date.today().isoformat()

    r = env.run("ledger", "replay", "--since", since, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "named: 1 withdrawn member(s), 1 item erasure(s)" in r.stdout, r.stdout
    assert "would re-apply: 2 member(s) the restore brought back (1 withdrawal(s), " \
        "1 item erasure(s)" in r.stdout, r.stdout  # fmt: skip
    assert _member(primary, erased) == (status, hobbies, name)

    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 2 member(s)" in r.stdout, r.stdout
    # The erased member is still there, active, with every row; only hobbies is cleared again.
    assert _member(primary, erased) == ("active", None, name)
    for t, n in rows_before.items():
        assert sql_one(primary, f"SELECT count(*) FROM {t} WHERE member_id = :m", m=erased) == n
    assert _member(primary, withdrawn) is None
    replayed = _ledger(archive, "details->>'scope' LIKE 'replay:%'")
    erasure_refs = {ref for action, ref, _r, d in replayed if d.get("reapplies") == "erasure"}
    assert len(erasure_refs) == 1
    [(action, _ref, _rid, details)] = [e for e in replayed if e[1] in erasure_refs]
    assert action == "destroy" and details["fields"] == ["hobbies"]
    # Again: nothing left to re-apply.
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 0 member(s)" in r.stdout, r.stdout


def test_replay_without_a_restore_changes_nothing(site: tuple[LifecycleEnv, str, str]) -> None:
    """No restore: the erasure's request is finished in this DB, so its member (who entered a
    new value since) is left alone, unless the operator says the restore left the lifecycle
    tables out (--assume-restored)."""
    env, primary, archive = site
    [mid] = _with_files_and_payments(primary)
    _erase_hobbies(mid)
    since = date.today().isoformat()
    r = env.run("ledger", "replay", "--since", since, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would re-apply: 0 member(s)" in r.stdout, r.stdout
    assert "not restored: 1 act(s)" in r.stdout, r.stdout
    # The member enters hobbies again; a replay must not touch them nor anything else.
    eng = create_engine(primary)
    with eng.begin() as c:
        c.execute(text("UPDATE members SET hobbies = 'hiking' WHERE id = :m"), {"m": mid})
    eng.dispose()
    member = _member(primary, mid)
    counts = table_counts(primary)
    entries = sql_one(archive, "SELECT count(*) FROM ledger_entries")
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stderr
    assert "re-applied: 0 member(s)" in r.stdout, r.stdout
    assert _member(primary, mid) == member and member[1] == "hiking"  # type: ignore[index]
    after = table_counts(primary)
    assert {t: n for t, n in after.items() if t != "lifecycle_job_runs"} == {
        t: n for t, n in counts.items() if t != "lifecycle_job_runs"
    }
    # Only the replay's own summary entry was added.
    assert [a for a, *_ in _ledger(archive)][entries:] == ["ledger_replay"]

    r = env.run("ledger", "replay", "--since", since, "--assume-restored")
    assert r.returncode == 0, r.stderr
    assert "re-applied: 1 member(s) the restore brought back (0 withdrawal(s), 1 item" \
        in r.stdout, r.stdout  # fmt: skip
    assert _member(primary, mid) == ("active", None, member[2])  # type: ignore[index]


def test_bad_replay_input_changes_nothing(primary_env: LifecycleEnv) -> None:
    env = primary_env
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
