"""`lifecycle keys rotate`: re-wrapping data keys under a new master key."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from lifecycle.core.db import session
from lifecycle.core.migrate import missing_table
from lifecycle.core.settings import get_settings, reset_settings_cache
from lifecycle.vault import crypto, keystore
from models.archive import ArchivedRecord, DataKey
from models.vault import ArchiveSecret
from tests.helpers import LifecycleEnv, pg_exec, pg_url, wait_error_line


def _key_file(path: Path, key: bytes | None = None) -> tuple[Path, bytes]:
    key = key if key is not None else os.urandom(32)
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return path, key


def _seed(n_buckets: int = 4) -> dict[int, bytes]:
    """Archive one row per bucket; returns source key -> plaintext."""
    out: dict[tuple[str, str, str], bytes] = {}
    with session("archive") as s:
        keystore.ref_key(s)
        for i in range(n_buckets):
            category = ("payment", "contract")[i % 2]
            retain = date(2030, 1, 1 + i)
            key_id, dk = keystore.get_or_create_bucket_key(s, category, retain)
            pt = f'{{"row": {i}}}'.encode()
            nonce, ct = crypto.RecordCipher(dk).encrypt(
                pt, crypto.record_aad("payments", str(i), category)
            )
            rec = ArchivedRecord(
                source_table="payments",
                source_pk=str(i),
                subject_ref="0" * 64,
                category=category,
                retain_until=retain,
                key_id=key_id,
                nonce=nonce,
                ciphertext=ct,
            )
            s.add(rec)
            s.flush()
            out[(rec.source_table, rec.source_pk, rec.category)] = pt
    return out


def _snapshot() -> list[tuple]:
    with session("archive") as s:
        keys = s.execute(
            select(DataKey.id, DataKey.wrapped_key, DataKey.master_key_id).order_by(DataKey.id)
        ).all()
        secrets = s.execute(
            select(ArchiveSecret.name, ArchiveSecret.wrapped_key, ArchiveSecret.master_key_id)
        ).all()
    return [tuple(r) for r in (*keys, *secrets)]


def _readable(records: dict[int, bytes], master: bytes) -> bool:
    keystore.clear_cache()
    with session("archive") as s:
        for rid, pt in records.items():
            if keystore.decrypt_archived(s, s.get(ArchivedRecord, rid), master=master) != pt:
                return False
    return True


def test_rotate_rewraps_everything_and_is_idempotent(lifecycle_env, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    records = _seed()
    old = get_settings().master_key_bytes()
    with session("archive") as s:
        ref_before = keystore.subject_ref(s, 12)
        destroyed_id, _ = keystore.get_or_create_bucket_key(s, "access_log", date(2026, 1, 1))
        keystore.destroy_keys(s, [destroyed_id])
    new_file, new = _key_file(tmp_path / "new.key")

    r = lifecycle_env.run("keys", "rotate", "--new-key-file", str(new_file))
    assert r.returncode == 0, r.stderr
    assert "re-wrapped 5 keys" in r.stdout  # 4 bucket keys + the pseudonym key
    assert "1 destroyed keys skipped" in r.stdout
    assert "LIFECYCLE_MASTER_KEY_FILE" in r.stdout

    new_id = crypto.master_key_id(new)
    snap = _snapshot()
    live = [row for row in snap if row[1] is not None]
    assert all(mid == new_id for _, _, mid in live)
    for _, wrapped, _ in live:
        with pytest.raises(crypto.CryptoError):
            crypto.unwrap_key(old, wrapped)
        crypto.unwrap_key(new, wrapped)
    assert _readable(records, new)
    keystore.clear_cache()
    with (
        session("archive") as s,
        pytest.raises(keystore.KeyUnavailable, match="after a finished `keys rotate`, the new key"),
    ):
        keystore.decrypt_archived(s, s.get(ArchivedRecord, next(iter(records))), master=old)
    with session("archive") as s:  # the destroyed key stays destroyed
        assert s.get(DataKey, destroyed_id).wrapped_key is None

    # Re-run before the operator switched the setting: nothing changes.
    r = lifecycle_env.run("keys", "rotate", "--new-key-file", str(new_file))
    assert r.returncode == 0, r.stderr
    assert "re-wrapped 0 keys" in r.stdout and "5 already were" in r.stdout
    assert _snapshot() == snap

    # The operator points the setting at the new file: everything works, pseudonyms unchanged.
    monkeypatch.setenv("LIFECYCLE_MASTER_KEY_FILE", str(new_file))
    reset_settings_cache()
    keystore.clear_cache()
    assert _readable(records, get_settings().master_key_bytes())
    with session("archive") as s:
        assert keystore.subject_ref(s, 12) == ref_before
    r = lifecycle_env.run("keys", "status", LIFECYCLE_MASTER_KEY_FILE=str(new_file))
    assert r.returncode == 0
    assert f"5 live keys under {new_id} (configured)" in r.stdout
    r = lifecycle_env.run(
        "keys", "rotate", "--new-key-file", str(new_file), LIFECYCLE_MASTER_KEY_FILE=str(new_file)
    )
    assert r.returncode == 0 and "re-wrapped 0 keys" in r.stdout
    assert _snapshot() == snap


def test_interrupted_rotation_resumes(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = _seed(7)
    old = get_settings().master_key_bytes()
    _, new = _key_file(tmp_path / "new.key")

    class Crash(Exception):
        pass

    def crash(done: int) -> None:
        raise Crash(done)

    with pytest.raises(Crash):
        keystore.rotate_master(old, new, batch_size=3, progress=crash)
    ids = {mid for _, w, mid in _snapshot() if w is not None}
    assert ids == {crypto.master_key_id(old), crypto.master_key_id(new)}  # half-way

    result = keystore.rotate_master(old, new, batch_size=3)
    assert (result.rewrapped, result.already_new) == (5, 3)
    assert {mid for _, _, mid in _snapshot()} == {crypto.master_key_id(new)}
    assert _readable(records, new)


def test_rotation_from_a_third_key_is_refused(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(2)
    wrong_old, _ = _key_file(tmp_path / "wrong.key")
    new_file, _ = _key_file(tmp_path / "new.key")
    before = _snapshot()
    r = lifecycle_env.run(
        "keys", "rotate", "--old-key-file", str(wrong_old), "--new-key-file", str(new_file)
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "refusing to rotate" in r.stderr
    assert _snapshot() == before


def test_bad_new_key_files_are_refused_and_change_nothing(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(2)
    before = _snapshot()
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(os.urandom(16)).decode())
    garbage = tmp_path / "garbage.key"
    garbage.write_text("this is not a key!\n")
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    cases = {
        str(tmp_path / "missing.key"): "does not exist",
        str(short): "must hold 32 bytes",
        str(garbage): "not base64",
        str(empty): "must hold 32 bytes",
        str(tmp_path): "is a directory",
    }
    if os.geteuid() != 0:  # root reads mode-000 files anyway
        unreadable, _ = _key_file(tmp_path / "unreadable.key")
        unreadable.chmod(0)
        cases[str(unreadable)] = "not readable"
    for path, words in cases.items():
        r = lifecycle_env.run("keys", "rotate", "--new-key-file", path)
        assert r.returncode == 2, (path, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (path, r.stderr)
        assert "--new-key-file" in lines[0]
    r = lifecycle_env.run("keys", "rotate")
    assert r.returncode == 2 and "--new-key-file" in r.stderr
    assert _snapshot() == before


# -- a missing or foreign master key (outside the embedded default) ------------------------------


def _one_line(r, code: int) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode == code, (r.stdout, r.stderr)
    return wait_error_line(r)


def test_second_working_directory_never_makes_a_new_key(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(2)
    other = tmp_path / "elsewhere" / "var"
    new_file, _ = _key_file(tmp_path / "new.key")
    for cmd in (("keys", "status"), ("keys", "rotate", "--new-key-file", str(new_file))):
        line = _one_line(lifecycle_env.run(*cmd, LIFECYCLE_VAR_DIR=str(other)), 2)
        assert f"no master key: {other / 'master.key'} does not exist" in line
        assert "LIFECYCLE_MASTER_KEY_FILE" in line
    assert not (other / "master.key").exists()
    # In-process too: nothing wraps a data key under a key made up on the spot.
    from workers.app import reconfigure

    os.environ["LIFECYCLE_VAR_DIR"] = str(other)
    try:
        reconfigure()
        keystore.clear_cache()
        with pytest.raises(Exception, match="no master key"), session("archive") as s:
            keystore.get_or_create_bucket_key(s, "payment", date(2040, 1, 1))
    finally:
        os.environ["LIFECYCLE_VAR_DIR"] = str(lifecycle_env.var_dir)
        reconfigure()
    assert not (other / "master.key").exists()


def test_status_fails_when_keys_are_under_another_master_key(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(3)
    original = get_settings().master_key_bytes()
    ok = lifecycle_env.run("keys", "status")
    assert ok.returncode == 0, ok.stderr
    assert f"configured master key: {crypto.master_key_id(original)}" in ok.stdout
    stranger, key = _key_file(tmp_path / "stranger.key")
    r = lifecycle_env.run("keys", "status", LIFECYCLE_MASTER_KEY_FILE=str(stranger))
    line = _one_line(r, 1)
    assert "(NOT the configured key)" in r.stdout
    assert "this install's keys are wrapped under another master key" in line
    assert crypto.master_key_id(original) in line
    assert "point LIFECYCLE_MASTER_KEY_FILE (or LIFECYCLE_MASTER_KEY) at the original" in line
    assert "rotation is unfinished" not in line
    # The error a job meets says the same thing.
    keystore.clear_cache()
    with session("archive") as s, pytest.raises(keystore.KeyUnavailable) as info:
        keystore.get_or_create_bucket_key(s, "payment", date(2030, 1, 1), master=key)
    assert "this install's keys are wrapped under another master key" in str(info.value)


def test_status_during_an_unfinished_rotation_says_finish_it(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(2)
    old = get_settings().master_key_bytes()
    new_file, new = _key_file(tmp_path / "new.key")
    keystore.rotate_master(old, new)
    # A worker still on the old key created a bucket key in between.
    with session("archive") as s:
        keystore.get_or_create_bucket_key(s, "contract", date(2041, 5, 5), master=old)
    r = lifecycle_env.run("keys", "status", LIFECYCLE_MASTER_KEY_FILE=str(new_file))
    line = _one_line(r, 1)
    assert "rotation is unfinished: 1 live keys are still under" in line
    assert "lifecycle keys rotate --old-key-file" in line


def test_keys_init_makes_a_key_only_for_a_new_install(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fresh = tmp_path / "fresh" / "master.key"
    fresh.parent.mkdir()
    r = lifecycle_env.run("keys", "init", LIFECYCLE_MASTER_KEY_FILE=str(fresh))
    assert r.returncode == 0, r.stderr
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(fresh.read_text().strip())) == 32
    line = _one_line(lifecycle_env.run("keys", "init", LIFECYCLE_MASTER_KEY_FILE=str(fresh)), 2)
    assert "already exists" in line
    _seed(1)
    other = tmp_path / "other.key"
    line = _one_line(lifecycle_env.run("keys", "init", "--key-file", str(other)), 2)
    assert "already holds" in line and "original key file" in line
    assert not other.exists()


def test_withdrawal_under_a_foreign_key_fails_through_wait(
    lifecycle_env, tmp_path, start_worker
) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import seed_site

    seed_site(lifecycle_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 10)
    _seed(1)  # the install's keys exist, under the original key
    stranger, _ = _key_file(tmp_path / "stranger.key")
    start_worker(lifecycle_env, LIFECYCLE_MASTER_KEY_FILE=str(stranger))
    r = lifecycle_env.run(
        "withdraw", "3", "--wait", "--timeout", "120", LIFECYCLE_MASTER_KEY_FILE=str(stranger)
    )
    line = _one_line(r, 1)
    assert "failed" in line
    assert "this install's keys are wrapped under another master key" in line


@pytest.mark.integration  # fresh, unmigrated databases on both servers
def test_commands_before_db_upgrade_say_so_in_one_line(
    lifecycle_env: LifecycleEnv, mysql_database: str, tmp_path: Path
) -> None:
    # Nothing migrated: a new archive on PostgreSQL and a new primary on MariaDB.
    archive = f"lct_{uuid.uuid4().hex[:10]}_a"
    pg_exec(f'CREATE DATABASE "{archive}"')
    try:
        env = {
            "LIFECYCLE_ARCHIVE_DATABASE_URL": pg_url(archive),
            "LIFECYCLE_PRIMARY_DATABASE_URL": mysql_database,
        }
        key = tmp_path / "new" / "var" / "master.key"  # its folders do not exist yet
        line = _one_line(lifecycle_env.run("keys", "init", "--key-file", str(key), **env), 2)
        assert "archive_data_keys does not exist" in line and "lifecycle db upgrade" in line
        assert not key.exists()
        # Both servers' wording of a missing table is recognised.
        for url in env.values():
            eng = create_engine(url)
            with pytest.raises(DBAPIError) as err, eng.connect() as c:
                c.execute(text("SELECT * FROM lifecycle_requests"))
            eng.dispose()
            assert missing_table(err.value) == "lifecycle_requests"
        r = lifecycle_env.run("db", "upgrade", **env)
        assert r.returncode == 0, r.stderr
        r = lifecycle_env.run("keys", "init", "--key-file", str(key), **env)
        assert r.returncode == 0, r.stderr
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.parent.stat().st_mode & 0o777 == 0o700
    finally:
        pg_exec(f'DROP DATABASE IF EXISTS "{archive}" WITH (FORCE)')
