"""Ledger checks that never cry wolf and never miss: one snapshot, checkpoints outside the
archive DB (truncation, wipe, rewrite), and appends refused on a truncated chain."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psycopg
import pytest

from lifecycle.core.db import session
from lifecycle.vault import checkpoints, ledger
from lifecycle.vault.chain import entry_hash
from models.archive import LedgerEntry
from tests.helpers import migrate_embedded

_WRITER = textwrap.dedent(
    """
    import sys, time
    from lifecycle.vault import ledger
    from lifecycle.core.db import session
    deadline = time.monotonic() + float(sys.argv[1])
    i = 0
    while time.monotonic() < deadline:
        i += 1
        with session("archive") as s:
            ledger.append(
                s, action="file_shred", categories=["upload"], tables=[], subjects=1, rows=1,
                reason="r", legal_basis="b", method="overwrite", actor="writer",
                details={"i": i},
            )
        print(i, flush=True)
    """
)


def _append(s, i: int) -> None:  # type: ignore[no-untyped-def]
    ledger.append(
        s,
        action="destroy",
        categories=["profile"],
        tables=["members"],
        subjects=1,
        rows=i,
        reason="회원탈퇴",
        legal_basis="개인정보 보호법 제21조",
        method="DELETE",
        actor="test",
        details={"i": i},
    )


def _fill(n: int) -> None:
    with session("archive") as s:
        start = ledger.count(s)
        for i in range(start + 1, start + n + 1):
            _append(s, i)


def _verify_during_writes(env) -> None:  # type: ignore[no-untyped-def]
    _fill(3)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, "120"],
        env=env.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        writer.stdout.readline()  # the writer is appending
        results = []
        # In this process, the function `ledger verify` runs: a CLI start per round would make
        # this the slowest test without a server, for no more coverage (the CLI runs at the end).
        # Verified back to back until the writer appended 50 entries meanwhile: most rounds
        # overlap an append.
        start = _count()
        while len(results) < 10 or _count() < start + 50:
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            result = checkpoints.verify()
            results.append((result.ok, result.message()))
        assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
    finally:
        writer.terminate()
        writer.wait(30)
    assert all(ok for ok, _ in results), [r for r in results if not r[0]]
    assert all(out.startswith("ledger OK: ") for _, out in results), results[:3]
    r = env.run("ledger", "verify")
    assert r.returncode == 0, r.stderr


def _count() -> int:
    with session("archive") as s:
        return ledger.count(s)


def test_verify_passes_10_of_10_while_entries_are_written(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    _verify_during_writes(lifecycle_env)


def test_verify_passes_10_of_10_while_entries_are_written_sqlite(embedded_env) -> None:  # type: ignore[no-untyped-def]
    migrate_embedded(embedded_env)
    _verify_during_writes(embedded_env)


def test_inserted_entry_is_still_caught_inside_the_snapshot(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    """The snapshot must not make verify lenient: a forged entry past the head still fails."""
    _fill(4)
    with session("archive") as s:
        last = dict(list(ledger.iter_entries(s))[-1])
    forged = dict(last, seq=5, prev_hash=last["hash"], rows=0)
    forged["hash"] = entry_hash(forged["prev_hash"], forged)
    with session("archive") as s:
        s.execute(LedgerEntry.__table__.insert().values(**forged))
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 1 and "beyond the ledger head" in r.stderr


# -- checkpoints -----------------------------------------------------------------------------


def _archive(pg_databases) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    return psycopg.connect(pg_databases.archive_url.replace("+psycopg", ""), autocommit=True)


def _primary(pg_databases) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    return psycopg.connect(pg_databases.primary_url.replace("+psycopg", ""), autocommit=True)


def _checkpoint(env, seq: int) -> None:  # type: ignore[no-untyped-def]
    r = env.run("ledger", "checkpoint")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"ledger checkpoint: entry {seq}, hash ")


def _fails(env, words: str, entry: int | None = None) -> str:  # type: ignore[no-untyped-def]
    r = env.run("ledger", "verify")
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0], lines[0]
    if entry is not None:
        assert f"ledger broken at entry {entry}: " in lines[0], lines[0]
    return lines[0]


def _truncate_to(pg_databases, keep: int) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with the archive DB does: delete the tail and point the head back."""
    with _archive(pg_databases) as conn, conn.transaction():
        conn.execute("DELETE FROM ledger_entries WHERE seq > %s", (keep,))
        if keep:
            conn.execute(
                "UPDATE ledger_head SET seq = %s, hash = (SELECT hash FROM ledger_entries "
                "WHERE seq = %s)",
                (keep, keep),
            )
        else:
            conn.execute("DELETE FROM ledger_head")


def test_truncation_without_checkpoint_is_invisible_and_with_one_is_caught(
    lifecycle_env, pg_databases
) -> None:  # type: ignore[no-untyped-def]
    _fill(10)
    _checkpoint(lifecycle_env, 10)
    _fill(2)
    # Entries after the last checkpoint can still vanish unnoticed (documented limit).
    _truncate_to(pg_databases, 11)
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 0 and r.stdout.startswith("ledger OK: 11 entries"), r.stderr
    _truncate_to(pg_databases, 7)
    _fails(lifecycle_env, "entries missing after entry 7 (ledger truncated", entry=8)


def test_wipe_is_caught(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(5)
    _checkpoint(lifecycle_env, 5)
    _truncate_to(pg_databases, 0)
    _fails(lifecycle_env, "the ledger is empty but a checkpoint recorded entry 5 (ledger wiped)", 1)


def test_rewritten_chain_with_recomputed_hashes_is_caught(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(6)
    _checkpoint(lifecycle_env, 6)
    # Change entry 6 and recompute its hash and the head: consistent without the checkpoint.
    with session("archive") as s:
        e6 = dict(list(ledger.iter_entries(s))[-1])
    e6["rows"] = 0
    e6["hash"] = entry_hash(e6["prev_hash"], e6)
    with _archive(pg_databases) as conn, conn.transaction():
        conn.execute("UPDATE ledger_entries SET rows = 0, hash = %s WHERE seq = 6", (e6["hash"],))
        conn.execute("UPDATE ledger_head SET hash = %s", (e6["hash"],))
    _fails(lifecycle_env, "hash differs from the checkpoint", entry=6)


def test_file_copy_catches_truncation_when_the_db_checkpoints_are_deleted_too(
    lifecycle_env, pg_databases
) -> None:  # type: ignore[no-untyped-def]
    _fill(4)
    _checkpoint(lifecycle_env, 4)
    path = lifecycle_env.var_dir / "ledger-checkpoints.jsonl"
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 4
    assert path.stat().st_mode & 0o777 == 0o600
    with _primary(pg_databases) as conn:
        conn.execute("DELETE FROM lifecycle_ledger_checkpoints")
    _truncate_to(pg_databases, 2)
    _fails(lifecycle_env, "ledger truncated", entry=3)
    # ... and the other way round: the file lost, the primary DB still anchors.
    _fill(2)  # back at 4 entries, but different ones
    path.unlink()
    _checkpoint(lifecycle_env, 4)
    _truncate_to(pg_databases, 1)
    path.unlink()
    _fails(lifecycle_env, "ledger truncated", entry=2)


def test_db_and_file_checkpoints_that_disagree_are_tampering(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(3)
    _checkpoint(lifecycle_env, 3)
    with _primary(pg_databases) as conn:
        conn.execute("UPDATE lifecycle_ledger_checkpoints SET hash = %s", ("0" * 64,))
    line = _fails(lifecycle_env, "record different hashes", entry=3)
    assert "ledger-checkpoints.jsonl" in line


def test_checkpoint_is_idempotent_and_refuses_a_broken_ledger(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(3)
    _checkpoint(lifecycle_env, 3)
    _checkpoint(lifecycle_env, 3)
    path = lifecycle_env.var_dir / "ledger-checkpoints.jsonl"
    assert len(path.read_text().splitlines()) == 1
    with _primary(pg_databases) as conn:
        n = conn.execute("SELECT count(*) FROM lifecycle_ledger_checkpoints").fetchone()
    assert n == (1,)
    with _archive(pg_databases) as conn:
        conn.execute("UPDATE ledger_entries SET rows = 99 WHERE seq = 2")
    r = lifecycle_env.run("ledger", "checkpoint")
    assert r.returncode == 1 and "hash mismatch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert len(path.read_text().splitlines()) == 1


def test_append_refuses_a_head_older_than_the_checkpoint(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(5)
    assert checkpoints.take()[0] == 5
    _truncate_to(pg_databases, 3)
    ledger.forget_checkpoint_floor()
    with pytest.raises(ledger.LedgerBroken, match="checkpoint recorded entry 5"):
        _fill(1)
    with (
        pytest.raises(ledger.LedgerBroken, match="checkpoint recorded entry 5"),
        session("archive") as s,
    ):
        ledger.append_many(s, [{"action": "destroy", "reason": "r"}])
    assert _count() == 3
    # Wiped including the head row: the head is recreated at the tip, and still refused.
    _truncate_to(pg_databases, 0)
    with pytest.raises(ledger.LedgerBroken, match="head is at entry 0"):
        _fill(1)
    assert _count() == 0


def test_beat_task_takes_the_checkpoint(lifecycle_env, start_worker) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.core import dispatch

    _fill(2)
    start_worker(lifecycle_env)
    res = dispatch.send(dispatch.LEDGER_CHECKPOINT)
    # The access log is anchored by the same nightly job (empty here: nothing to anchor).
    assert res.get(timeout=60) == {"seq": 2, "accesslog_seq": 0}
    assert checkpoints.read_db() == {2: _head_hash()}
    assert checkpoints.read_file(lifecycle_env.var_dir / "ledger-checkpoints.jsonl") == {
        2: _head_hash()
    }


def _head_hash() -> str:
    with session("archive") as s:
        h = ledger.head(s)
    assert h is not None
    return h[1]


def test_checkpoints_on_the_embedded_sqlite_default(embedded_env) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    migrate_embedded(embedded_env)
    _fill(6)
    _checkpoint(embedded_env, 6)
    with sqlite3.connect(embedded_env.var_dir / "archive.sqlite3") as conn:
        conn.execute("DELETE FROM ledger_entries WHERE seq > 4")
        conn.execute(
            "UPDATE ledger_head SET seq = 4, hash = (SELECT hash FROM ledger_entries WHERE seq = 4)"
        )
    _fails(embedded_env, "entries missing after entry 4 (ledger truncated", entry=5)
    with sqlite3.connect(embedded_env.var_dir / "archive.sqlite3") as conn:
        conn.execute("DELETE FROM ledger_entries")
        conn.execute("DELETE FROM ledger_head")
    _fails(embedded_env, "(ledger wiped)", entry=1)
