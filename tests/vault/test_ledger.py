"""The destruction ledger: hash chain, concurrent appends, tamper detection via the CLI, export."""

from __future__ import annotations

import codecs
import csv
import io
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import func, select

from lifecycle.core.db import session
from lifecycle.core.errors import UserError
from lifecycle.vault import keystore, ledger
from lifecycle.vault.chain import GENESIS_HASH, entry_hash, verify_chain
from models.archive import LedgerEntry, LedgerHead
from tests.helpers import migrate_embedded

# -- pure chain ----------------------------------------------------------------------------------


def _chain(n: int) -> list[dict]:
    out: list[dict] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        e = {
            "seq": i,
            "occurred_at": datetime(2026, 1, 1, 3, 0, i, 123456, tzinfo=UTC),
            "action": "destroy",
            "categories": ["profile"],
            "tables": ["members"],
            "subjects": 1,
            "rows": i,
            "reason": "회원탈퇴",
            "legal_basis": "개인정보 보호법 제21조",
            "method": "DELETE",
            "actor": "worker",
            "task_id": None,
            "request_id": i,
            "subject_ref": None,
            "details": {"batch": i},
            "dedup_key": None,
            "prev_hash": prev,
        }
        e["hash"] = entry_hash(prev, e)
        prev = e["hash"]
        out.append(e)
    return out


def test_intact_chain_verifies() -> None:
    chain = _chain(10)
    res = verify_chain(chain, head=(10, chain[-1]["hash"]))
    assert res.ok and res.checked == 10 and res.head_hash == chain[-1]["hash"]
    assert res.message() == "ledger OK: 10 entries"
    assert verify_chain([], head=(0, GENESIS_HASH)).ok


def test_naive_timestamps_hash_like_utc() -> None:
    e = _chain(1)[0]
    naive = dict(e, occurred_at=e["occurred_at"].replace(tzinfo=None))
    assert entry_hash(GENESIS_HASH, naive) == e["hash"]


@pytest.mark.parametrize(
    ("tamper", "bad", "reason"),
    [
        (lambda c: c[4].update(rows=999), 5, "hash mismatch"),
        (lambda c: c[4]["details"].update(batch=0), 5, "hash mismatch"),
        (lambda c: c.pop(6), 7, "missing"),
        (lambda c: c.pop(), 10, "missing"),
        (
            lambda c: (c[2].update(seq=8), c[7].update(seq=3), c.sort(key=lambda e: e["seq"])),
            3,
            "hash mismatch",
        ),
        (lambda c: c[3].update(prev_hash="0" * 64), 4, "hash mismatch"),
        (lambda c: c[3].update(hash="0" * 64), 4, "hash mismatch"),
    ],
)
def test_tampering_is_detected(tamper, bad: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    chain = _chain(10)
    head = (10, chain[-1]["hash"])
    tamper(chain)
    res = verify_chain(chain, head=head)
    assert not res.ok
    assert res.first_bad_seq == bad
    assert reason in (res.reason or "")


def test_rewritten_entry_with_recomputed_hash_breaks_the_link() -> None:
    chain = _chain(10)
    head = (10, chain[-1]["hash"])
    chain[4]["rows"] = 0
    chain[4]["hash"] = entry_hash(chain[4]["prev_hash"], chain[4])
    res = verify_chain(chain, head=head)
    assert (res.ok, res.first_bad_seq) == (False, 6)
    assert "does not link to entry 5" in (res.reason or "")


def test_appended_forgery_is_beyond_the_head() -> None:
    chain = _chain(10)
    head = (10, chain[-1]["hash"])
    forged = dict(chain[-1], seq=11, prev_hash=chain[-1]["hash"])
    forged["hash"] = entry_hash(forged["prev_hash"], forged)
    res = verify_chain([*chain, forged], head=head)
    assert (res.ok, res.first_bad_seq) == (False, 11)
    assert "beyond the ledger head" in (res.reason or "")


# -- PostgreSQL ----------------------------------------------------------------------------------


def _append(s, i: int, **kw):  # type: ignore[no-untyped-def]
    args = dict(
        action="destroy",
        categories=["profile", "contact"],
        tables=["members", "member_addresses"],
        subjects=1,
        rows=3 + i,
        reason="회원탈퇴 (purpose achieved)",
        legal_basis="개인정보 보호법 제21조",
        method="DELETE (rows)",
        actor="lifecycle.withdraw",
        task_id=f"task-{i}",
        request_id=i,
        details={"batch": i, "note": "배치"},
    )
    args.update(kw)
    return ledger.append(s, **args)


def _fill(n: int) -> None:
    with session("archive") as s:
        for i in range(1, n + 1):
            _append(s, i)


def _archive_conn(pg_databases) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    return psycopg.connect(pg_databases.archive_url.replace("+psycopg", ""), autocommit=True)


def test_append_links_entries_and_updates_head(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        e1 = _append(s, 1, categories=["b", "a", "a"])
        e2 = _append(s, 2)
        assert (e1.seq, e2.seq) == (1, 2)
        assert e1.prev_hash == GENESIS_HASH and e2.prev_hash == e1.hash
        assert e1.categories == ["a", "b"]
    with session("archive") as s:
        head = s.get(LedgerHead, 1)
        assert head is not None and (head.seq, head.hash) == (2, e2.hash)
        res = ledger.verify(s)
    assert res.ok and res.checked == 2


def test_rolled_back_append_leaves_no_trace(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    _fill(2)
    with pytest.raises(RuntimeError), session("archive") as s:
        _append(s, 3)
        raise RuntimeError("archive step failed after the ledger append")
    with session("archive") as s:
        assert ledger.count(s) == 2
        assert _append(s, 3).seq == 3
    with session("archive") as s:
        assert ledger.verify(s).ok


def test_dedup_key_makes_reappend_a_noop(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        first = _append(s, 1, dedup_key="withdraw:req1:destroy")
    with session("archive") as s:
        again = _append(s, 99, dedup_key="withdraw:req1:destroy")
        assert again.seq == first.seq and again.rows == first.rows
        assert ledger.count(s) == 1
        assert ledger.head(s) == (1, first.hash)


def test_bad_details_are_refused_and_nothing_appended(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        with pytest.raises(UserError, match="not plain JSON"):
            _append(s, 1, details={"when": datetime.now(UTC)})
        with pytest.raises(UserError, match="not plain JSON"):
            _append(s, 1, details={"x": float("nan")})
        with pytest.raises(UserError):
            _append(s, 1, rows=-1)
        assert ledger.count(s) == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"reason": "탈퇴 hong@example.com"},
        {"details": {"contact": "010-1234-5678"}},
        {"details": {"nested": ["ok", {"rrn": "900101-1234567"}]}},
        {"method": "call 0212345678"},
        {"dedup_key": "withdraw:hong@example.com"},
    ],
)
def test_values_shaped_like_personal_data_are_refused(lifecycle_env, kw) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        with pytest.raises(UserError, match="personal data"):
            _append(s, 1, **kw)
        assert ledger.count(s) == 0
        # Dates, ids and counts are fine.
        _append(s, 1, details={"bucket": "2031-01-01", "batch": 12345678901234, "req": "r-17"})


def test_missing_head_row_is_recreated(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    with _archive_conn(pg_databases) as conn:
        conn.execute("DELETE FROM ledger_head")
    _fill(3)
    with session("archive") as s:
        assert ledger.verify(s).ok
    with _archive_conn(pg_databases) as conn:
        conn.execute("DELETE FROM ledger_head")
    _verify_fails(lifecycle_env, 3, "ledger head row missing")
    _fill(2)  # a restore without the head row: appends continue from the chain's tip
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 0 and r.stdout.startswith("ledger OK: 5 entries"), r.stderr


_WRITER = textwrap.dedent(
    """
    import sys
    from lifecycle.vault import ledger
    from lifecycle.core.db import session
    me, n = int(sys.argv[1]), int(sys.argv[2])
    for i in range(n):
        # Every 10th append is a step all writers share: it must be recorded exactly once.
        dedup = f"shared-{i}" if i % 10 == 0 else None
        with session("archive") as s:
            ledger.append(
                s, action="archive", categories=["payment"], tables=["payments"], subjects=1,
                rows=1, reason="r", legal_basis="b", method="m", actor=f"writer-{me}",
                details={"writer": me, "i": i}, dedup_key=dedup,
            )
    """
)


def _run_writers(env, procs: int, n: int) -> None:  # type: ignore[no-untyped-def]
    running = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(p), str(n)],
            env=env.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    for p in running:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]


def test_concurrent_appends_from_processes_keep_the_chain(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    procs, n = 4, 50
    _run_writers(lifecycle_env, procs, n)
    shared = len(range(0, n, 10))
    expected = procs * (n - shared) + shared
    with session("archive") as s:
        seqs = s.execute(select(LedgerEntry.seq).order_by(LedgerEntry.seq)).scalars().all()
        assert seqs == list(range(1, expected + 1))
        writers = s.execute(select(func.count(func.distinct(LedgerEntry.actor)))).scalar_one()
        assert writers == procs
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"ledger OK: {expected} entries"


def test_concurrent_appends_from_threads(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    import threading

    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(20):
                with session("archive") as s:
                    _append(s, k * 100 + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with session("archive") as s:
        res = ledger.verify(s)
    assert res.ok and res.checked == 80


# -- tampering, seen through the CLI -------------------------------------------------------------


def _verify_fails(env, entry: int, words: str) -> None:  # type: ignore[no-untyped-def]
    r = env.run("ledger", "verify")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"ledger broken at entry {entry}: " in lines[0]
    assert words in lines[0]


def test_cli_verify_ok(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 0 and r.stdout.startswith("ledger OK: 0 entries")
    _fill(20)
    r = lifecycle_env.run("ledger", "verify")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "ledger OK: 20 entries"


@pytest.mark.parametrize(
    ("sql", "entry", "words"),
    [
        ("UPDATE ledger_entries SET rows = rows + 1 WHERE seq = 17", 17, "hash mismatch"),
        ("UPDATE ledger_entries SET reason = 'x' WHERE seq = 1", 1, "hash mismatch"),
        (
            "UPDATE ledger_entries SET details = '{\"batch\": 0}' WHERE seq = 12",
            12,
            "hash mismatch",
        ),
        (
            "UPDATE ledger_entries SET occurred_at = occurred_at + interval '1 second' "
            "WHERE seq = 3",
            3,
            "hash mismatch",
        ),
        ("DELETE FROM ledger_entries WHERE seq = 9", 9, "missing (deleted)"),
        ("DELETE FROM ledger_entries WHERE seq = 20", 20, "missing (deleted"),
        (
            "UPDATE ledger_entries SET seq = -1 WHERE seq = 5; "
            "UPDATE ledger_entries SET seq = 5 WHERE seq = 9; "
            "UPDATE ledger_entries SET seq = 9 WHERE seq = -1",
            5,
            "hash mismatch",
        ),
    ],
    ids=["field", "reason", "details", "time", "delete", "delete-last", "swap"],
)
def test_cli_verify_detects_tampering(lifecycle_env, pg_databases, sql, entry, words) -> None:  # type: ignore[no-untyped-def]
    _fill(20)
    with _archive_conn(pg_databases) as conn, conn.transaction():
        for stmt in sql.split("; "):
            conn.execute(stmt)
    _verify_fails(lifecycle_env, entry, words)


def test_cli_verify_detects_inserted_entry(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    _fill(5)
    with session("archive") as s:
        last = dict(list(ledger.iter_entries(s, batch=2))[-1])
    forged = dict(last, seq=6, prev_hash=last["hash"], rows=1)
    forged["hash"] = entry_hash(forged["prev_hash"], forged)
    with session("archive") as s:
        s.execute(LedgerEntry.__table__.insert().values(**forged))
    _verify_fails(lifecycle_env, 6, "beyond the ledger head")


# -- export --------------------------------------------------------------------------------------


def test_csv_export_has_korean_headings_and_no_personal_data(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    member_id, name, phone = 424242, "홍길동", "010-1234-5678"
    with session("archive") as s:
        ref = keystore.subject_ref(s, member_id)
        _append(s, 1, subject_ref=ref, request_id=7)
        _append(s, 2, action="key_destroy", categories=["payment"], tables=[], subjects=0)
    out = tmp_path / "ledger.csv"
    r = lifecycle_env.run("ledger", "export", "--format", "csv", "--output", str(out))
    assert r.returncode == 0, r.stderr
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel opens Korean correctly
    text = raw.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [label for _, label in ledger.CSV_COLUMNS]
    for heading in (
        "일련번호",
        "처리일시",
        "처리구분",
        "개인정보 항목",
        "정보주체 수",
        "법적 근거",
        "처리방법",
        "정보주체 가명",
        "해시",
        "이전 해시",
    ):
        assert heading in rows[0]
    assert len(rows) == 3
    rec = dict(zip(rows[0], rows[1], strict=True))
    assert rec["일련번호"] == "1"
    assert rec["처리구분"] == "파기 (destroy)"
    assert rec["개인정보 항목"] == "contact, profile"
    assert rec["정보주체 가명"] == ref and len(ref) == 64
    assert rec["처리일시"].endswith("+09:00")
    assert rec["요청번호"] == "7"
    assert dict(zip(rows[0], rows[2], strict=True))["처리구분"] == "암호키 파기 (key_destroy)"
    for personal in (str(member_id), name, phone):
        assert personal not in text
    # A value Excel would evaluate as a formula is neutralised.
    with session("archive") as s:
        _append(s, 3, reason='=HYPERLINK("http://x")', method="-1+1")
    r = lifecycle_env.run("ledger", "export", "--format", "csv", "--output", str(out))
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    rec = dict(zip(rows[0], rows[3], strict=True))
    assert rec["사유"].startswith("'=") and rec["처리방법"] == "'-1+1"
    # Stdout export (`export > f.csv`) gives the very same bytes, BOM included, for Excel.
    r2 = subprocess.run(
        [sys.executable, "-m", "lifecycle.cli.main", "ledger", "export", "--format", "csv"],
        env=lifecycle_env.environ(),
        cwd=lifecycle_env.var_dir.parent,
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.startswith(codecs.BOM_UTF8 + "일련번호".encode())
    assert r2.stdout == out.read_bytes()


@pytest.mark.parametrize("fmt", ["json", "xlsx", ""])
def test_export_refuses_other_formats(lifecycle_env, tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    _fill(1)
    out = tmp_path / "x.out"
    r = lifecycle_env.run("ledger", "export", "--format", fmt, "--output", str(out))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "only csv" in r.stderr
    assert not out.exists()


def test_export_to_missing_directory_is_refused(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = lifecycle_env.run("ledger", "export", "--output", str(tmp_path / "no" / "x.csv"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- SQLite (embedded default) -------------------------------------------------------------------


def test_ledger_on_sqlite(embedded_env) -> None:  # type: ignore[no-untyped-def]
    migrate_embedded(embedded_env)
    _fill(5)
    r = embedded_env.run("ledger", "verify")
    assert r.returncode == 0 and r.stdout.startswith("ledger OK: 5 entries"), r.stderr
    _run_writers(embedded_env, 2, 15)
    r = embedded_env.run("ledger", "verify")
    assert r.returncode == 0, r.stderr
    with session("archive") as s:
        n = ledger.count(s)
        s.execute(
            LedgerEntry.__table__.update().where(LedgerEntry.seq == 4).values(method="overwrite")
        )
    assert n == 5 + 2 * 15 - 2
    _verify_fails(embedded_env, 4, "hash mismatch")
