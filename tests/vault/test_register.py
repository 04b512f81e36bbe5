"""The destruction register (개인정보 파기 관리대장): paper destructions and the privacy officer's
sign-off chained and verified, filters by kind, member and day, the form's columns, refusals;
and a withdrawal's entries found by member on a PostgreSQL and on a MariaDB primary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from lifecycle.core.db import session
from lifecycle.core.errors import UserError
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from lifecycle.vault import keystore, ledger, register
from lifecycle.vault.chain import GENESIS_HASH, entry_hash
from models.archive import LedgerEntry, LedgerHead
from tests.helpers import LifecycleEnv, migrate_embedded, seed_site, sql_rows

OFFICER = "김보호"
OFFICERS = {"LIFECYCLE_PRIVACY_OFFICERS": f"{OFFICER}, 이대리"}


def _append(s, i: int, action: str = "destroy", **kw):  # type: ignore[no-untyped-def]
    args = dict(
        action=action,
        categories=["profile"],
        tables=["members"],
        subjects=1,
        rows=i,
        reason="회원탈퇴",
        legal_basis="개인정보 보호법 제21조",
        method="DELETE",
        actor="lifecycle.rights.withdraw",
        task_id=f"task-{i}",
        details={"i": i},
    )
    args.update(kw)
    return ledger.append(s, **args)


def _fill(n: int, action: str = "destroy") -> None:
    with session("archive") as s:
        start = ledger.count(s)
        for i in range(start + 1, start + n + 1):
            _append(s, i, action)


def _count() -> int:
    with session("archive") as s:
        return ledger.count(s)


def _one_line_refusal(r, words: str) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert words in r.stderr, r.stderr


def _paper(env: LifecycleEnv, *extra: str):  # type: ignore[no-untyped-def]
    return env.run(
        "--operator", "박직원", "ledger", "paper", "--what", "2019년 상담 신청서 원본",
        "--method", "파쇄", "--handler", "박직원", "--witness", "최입회", "--count", "42",
        "--category", "counselling", *extra,
    )  # fmt: skip


# -- chain: the new kinds are chained and verified -----------------------------------------------


def test_paper_and_signoff_are_chained_and_verified(lifecycle_env, pg_databases) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    _fill(3)
    r = _paper(env, "--at", "2026-12-01T10:30")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ledger entry 4: paper destruction recorded"
    r = env.run("--operator", OFFICER, "ledger", "signoff", "--through", "4", **OFFICERS)
    assert r.returncode == 0, r.stderr
    assert f"signed off entries 1-4 by {OFFICER}: ledger entry 5" in r.stdout
    r = env.run("ledger", "verify")
    assert r.returncode == 0 and r.stdout.startswith("ledger OK: 5 entries"), r.stderr
    with session("archive") as s:
        paper = s.scalars(select(LedgerEntry).where(LedgerEntry.seq == 4)).one()
        signoff = s.scalars(select(LedgerEntry).where(LedgerEntry.seq == 5)).one()
        assert (paper.action, paper.actor, paper.rows) == ("paper_destroy", "handler:박직원", 42)
        assert paper.details["witness"] == "최입회" and paper.details["recorded_by"] == "박직원"
        assert paper.details["destroyed_at"] == "2026-12-01T01:30:00+00:00"
        assert (signoff.action, signoff.actor) == ("signoff", f"officer:{OFFICER}")
        assert signoff.details["through_hash"] == paper.hash
        assert "제10조제4항" in signoff.legal_basis
    # The same paper destruction recorded again is the same entry.
    assert _paper(env, "--at", "2026-12-01T10:30").stdout.strip().startswith("ledger entry 4")
    assert _count() == 5

    # Tampering with either new kind is caught like any entry.
    with session("archive") as s:
        s.execute(
            update(LedgerEntry)
            .where(LedgerEntry.seq == 4)
            .values(details={**paper.details, "witness": "아무개"})
        )
    r = env.run("ledger", "verify")
    assert r.returncode == 1
    assert "ledger broken at entry 4: hash mismatch" in r.stderr


def _rewrite_from(seq: int, **changes: object) -> None:
    """What someone able to recompute every hash does: change entry ``seq`` and re-hash the
    chain from there, head included, so that the chain alone still verifies."""
    with session("archive") as s:
        entries = [dict(e) for e in ledger.iter_entries(s)]
        prev = GENESIS_HASH
        for e in entries:
            if e["seq"] == seq:
                e.update(changes)
            if e["seq"] >= seq:
                e["prev_hash"] = prev
                e["hash"] = entry_hash(prev, e)
                s.execute(
                    update(LedgerEntry)
                    .where(LedgerEntry.seq == e["seq"])
                    .values(prev_hash=e["prev_hash"], hash=e["hash"], **{
                        k: e[k] for k in changes if e["seq"] == seq
                    })
                )  # fmt: skip
            prev = e["hash"]
        s.execute(update(LedgerHead).values(hash=prev))


def test_a_rewritten_chain_no_longer_matches_the_signoff(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    _fill(6)
    r = env.run("ledger", "signoff", "--through", "4", "--officer", OFFICER, **OFFICERS)
    assert r.returncode == 0, r.stderr
    _rewrite_from(2, rows=0)
    r = env.run("ledger", "verify")
    assert r.returncode == 1
    assert "ledger broken at entry 7: sign-off does not match entry 4" in r.stderr
    # A rewrite above the confirmed range is the chain's and the checkpoints' business.
    _rewrite_from(2, rows=2)
    assert env.run("ledger", "verify").returncode == 0


def test_signoff_ranges_follow_each_other(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    _fill(5)

    def signoff(through: str, officer: str = OFFICER):  # type: ignore[no-untyped-def]
        return env.run("ledger", "signoff", "--through", through, "--officer", officer,
                       **OFFICERS)  # fmt: skip

    assert signoff("3").returncode == 0
    r = signoff("3")
    assert r.returncode == 0 and "were already signed off by 김보호 (entry 6)" in r.stdout
    _one_line_refusal(signoff("2"), "entries up to 3 are already signed off (entry 6)")
    _one_line_refusal(signoff("99"), "--through 99: the ledger has entries 1 to 6")
    _one_line_refusal(signoff("yesterday"), "--through must be an entry number or a date")
    _one_line_refusal(signoff("2000-01-01"), "the ledger has no entry on or before 2000-01-01")
    assert _count() == 6
    # A date: everything recorded up to that day (site time), the first sign-off included.
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Seoul")).date().isoformat()
    r = signoff(today, "이대리")
    assert r.returncode == 0, r.stderr
    assert "signed off entries 4-6 by 이대리: ledger entry 7" in r.stdout
    assert env.run("ledger", "verify").returncode == 0
    with session("archive") as s:
        got = [(x.seq, x.from_seq, x.through_seq, x.officer) for x in register.signoffs(s)]
    assert got == [(6, 1, 3, OFFICER), (7, 4, 6, "이대리")]


def test_signoff_is_refused_for_anyone_but_a_registered_officer(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    _fill(3)
    # The operator is the officer unless --officer names one; neither is registered here.
    r = env.run("--operator", "mallory", "ledger", "signoff", "--through", "3", **OFFICERS)
    _one_line_refusal(r, "'mallory' is not a registered privacy officer")
    r = env.run("ledger", "signoff", "--through", "3", "--officer", "김보호2", **OFFICERS)
    _one_line_refusal(r, "'김보호2' is not a registered privacy officer")
    r = env.run("ledger", "signoff", "--through", "3", "--officer", OFFICER)
    _one_line_refusal(r, "no privacy officer is registered: set LIFECYCLE_PRIVACY_OFFICERS")
    _one_line_refusal(env.run("ledger", "signoff", **OFFICERS), "--through ENTRY-or-DATE")
    assert _count() == 3
    # The domain function refuses too, whoever calls it (a console later).
    with session("archive") as s, pytest.raises(UserError, match="not a registered"):
        register.sign_off(s, through=3, officer="mallory", officers=[OFFICER], operator="x")
    assert _count() == 3


def test_a_tampered_ledger_is_not_signed_off(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    _fill(3)
    with session("archive") as s:
        s.execute(update(LedgerEntry).where(LedgerEntry.seq == 2).values(rows=99))
    r = env.run("ledger", "signoff", "--through", "3", "--officer", OFFICER, **OFFICERS)
    assert r.returncode == 1
    assert "ledger broken at entry 2" in r.stderr and "nothing signed off" in r.stderr
    assert _count() == 3


# -- paper: bad input changes nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--witness", ""], "--witness is required"),
        (["--witness", "박직원"], "--witness must be someone other than --handler"),
        (["--what", "010-1234-5678 홍길동 신청서"], "looks like it holds personal data"),
        (["--at", "2999-01-01"], "--at is in the future"),
        (["--at", "last week"], "--at must be YYYY-MM-DD"),
        (["--count", "-1"], "--count must not be negative"),
        (["--method", ""], "--method is required"),
    ],
    ids=["no-witness", "self-witness", "personal", "future", "bad-date", "count", "no-method"],
)
def test_bad_paper_input_is_refused(lifecycle_env, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    _fill(1)
    _one_line_refusal(_paper(lifecycle_env, *args), words)
    assert _count() == 1


# -- the register: kinds, filters, the form ------------------------------------------------------


@pytest.fixture
def dated(lifecycle_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, str]]:  # type: ignore[no-untyped-def]
    """A ledger over three days (site time): member 7's withdrawal on 12-01 (archive move and
    destruction), member 8's on 12-02, a bucket's key destroyed and a paper destruction on
    12-03, and a correction (not a register kind). Returns the members' pseudonyms."""
    clock = {"now": datetime(2026, 11, 30, 16, 0, tzinfo=UTC)}  # 12-01 01:00 KST
    monkeypatch.setattr(ledger, "utcnow", lambda: clock["now"])
    with session("archive") as s:
        refs = {m: keystore.subject_ref(s, m) for m in (7, 8)}
    for day, member in ((0, 7), (1, 8)):
        clock["now"] = datetime(2026, 11, 30, 16, 0, tzinfo=UTC) + timedelta(days=day)
        with session("archive") as s:
            ref = refs[member]
            _append(s, 1, "archive", categories=["payment"], tables=["payments"],
                    subject_ref=ref, reason="전자상거래법 보존", method="encrypt+move")  # fmt: skip
            _append(s, 2, "destroy", subject_ref=ref)
    clock["now"] = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # 12-03 00:30 KST
    with session("archive") as s:
        _append(s, 5, "key_destroy", categories=["payment"], tables=[], subjects=3,
                actor="lifecycle.archive.purge", reason="보존기간 경과")  # fmt: skip
        _append(s, 1, "correction", actor="lifecycle.correct")
        register.record_paper(
            s, what="2019년 상담 신청서 원본", method="파쇄", handler="박직원", witness="최입회",
            destroyed_at=clock["now"], recorded_by="박직원", count=42,
        )  # fmt: skip
    yield refs


def _seqs(flt: register.Filter) -> list[int]:
    with session("archive") as s:
        return [r.seq for r in register.rows(s, flt)]


def test_register_filters_by_kind_member_and_day(dated: dict[int, str]) -> None:
    zone = "Asia/Seoul"
    assert _seqs(register.Filter()) == [1, 2, 3, 4, 5, 7]  # the correction (6) is not a kind
    assert _seqs(register.Filter(kinds=("destruction",))) == [2, 4, 5]
    assert _seqs(register.Filter(kinds=("archive-move",))) == [1, 3]
    assert _seqs(register.Filter(kinds=("paper",))) == [7]
    assert _seqs(register.Filter(subject_ref=dated[7])) == [1, 2]
    assert _seqs(register.Filter(subject_ref=dated[8], kinds=("destruction",))) == [4]
    d = datetime.fromisoformat
    since, until = register.day_window(d("2026-12-02").date(), d("2026-12-02").date(), zone)
    assert _seqs(register.Filter(since=since, until=until)) == [3, 4]
    since, until = register.day_window(d("2026-12-02").date(), None, zone)
    assert _seqs(register.Filter(since=since, until=until)) == [3, 4, 5, 7]
    since, until = register.day_window(None, d("2026-12-01").date(), zone)
    assert _seqs(register.Filter(since=since, until=until)) == [1, 2]
    with pytest.raises(UserError, match="--from 2026-12-03 is after --to 2026-12-01"):
        register.day_window(d("2026-12-03").date(), d("2026-12-01").date(), zone)


def test_register_csv_has_the_forms_columns(dated: dict[int, str], lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    r = env.run("ledger", "signoff", "--through", "4", "--officer", OFFICER, **OFFICERS)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "register.csv"
    r = env.run("ledger", "register", "--format", "csv", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "wrote 6 register entries" in r.stderr
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    # The form's eight columns, in its order, then ours.
    assert table[0][:8] == [
        "번호", "개인정보파일명", "자료의 종류", "생성일", "폐기일", "폐기사유", "처리담당자",
        "처리부서장",
    ]  # fmt: skip
    assert table[0][8:] == list(register.EXTRA_COLUMNS)
    recs = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert [r["대장 일련번호"] for r in recs] == ["1", "2", "3", "4", "5", "7"]
    assert [r["번호"] for r in recs] == ["1", "2", "3", "4", "5", "6"]
    move, destroy, purge, paper = recs[0], recs[1], recs[4], recs[5]
    # An archive move is not a destruction: no 폐기일, its own 구분.
    assert (move["구분"], move["폐기일"], move["개인정보파일명"]) == ("분리보관", "", "payments")
    assert move["처리일시"] == "2026-12-01 01:00:00+09:00"
    assert (destroy["구분"], destroy["폐기일"]) == ("파기", "2026-12-01")
    assert destroy["처리담당자"] == "lifecycle.rights.withdraw (작업 task-2)"
    assert destroy["자료의 종류"] == "전자적 파일(DB 레코드): profile"
    # Entries 1-4 are confirmed by the officer; the later ones are not yet.
    assert destroy["처리부서장"] == OFFICER and destroy["보호책임자 확인일시"]
    assert purge["처리부서장"] == "" and purge["보호책임자 확인일시"] == ""
    assert purge["자료의 종류"].startswith("전자적 파일(분리보관 DB 암호키 파기)")
    assert (paper["구분"], paper["개인정보파일명"], paper["처리담당자"]) == (
        "종이 문서 파기", "2019년 상담 신청서 원본", "박직원",
    )  # fmt: skip
    assert (paper["입회자"], paper["건수"], paper["파기방법"]) == ("최입회", "42", "파쇄")
    assert paper["폐기일"] == "2026-12-03" and paper["자료의 종류"] == "종이 문서"
    assert "시행령 제16조제1항제2호" in paper["법적 근거"]


def test_register_command_filters_and_refusals(dated: dict[int, str], lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    env = lifecycle_env
    r = env.run("ledger", "register", "--format", "json", "--member", "7")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["entries"]
    assert [(e["seq"], e["kind"]) for e in got] == [(1, "archive-move"), (2, "destruction")]
    r = env.run("ledger", "register", "--from", "2026-12-02", "--to", "2026-12-02",
                "--kind", "destruction", "--kind", "paper")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "1 entries" and lines[0].startswith("#4 2026-12-02 01:00 파기 (destroy)")
    assert "보호책임자 미확인" in lines[0]
    r = env.run("ledger", "register", "--kind", "paper")
    assert "입회 최입회" in r.stdout and r.stdout.splitlines()[-1] == "1 entries"
    for args, words in (
        (["--kind", "shredding"], "unknown --kind 'shredding'"),
        (["--from", "2026-12-03", "--to", "2026-12-01"], "is after --to"),
        (["--from", "1 Dec"], "--from must be a date YYYY-MM-DD"),
        (["--format", "xml"], "unsupported --format 'xml'"),
        (["--member", "abc"], "MEMBER_ID must be a positive integer"),
    ):
        _one_line_refusal(env.run("ledger", "register", *args), words)


# -- a withdrawal on each primary, found by member -------------------------------------------------


def test_a_withdrawal_is_in_the_register_under_its_member(primary_env: LifecycleEnv) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 6)
    clear_context_cache()
    mid, other = (r[0] for r in sql_rows(primary, "SELECT id FROM members ORDER BY id")[:2])
    ctx = get_context()
    assert carry_out(ctx, submit_withdrawal(ctx, mid))["state"] == "completed"
    r = env.run("--operator", OFFICER, "ledger", "register", "--member", str(mid),
                "--format", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["entries"]
    kinds = {e["kind"] for e in got}
    assert "destruction" in kinds, got
    assert all(e["handler"] for e in got)
    with session("archive") as s:
        ref = keystore.subject_ref(s, mid)
        named = s.scalars(
            select(LedgerEntry.seq).where(
                LedgerEntry.subject_ref == ref,
                LedgerEntry.action.in_(["destroy", "key_destroy", "file_shred", "archive"]),
            )
        ).all()
    assert [e["seq"] for e in got] == sorted(named)
    r = env.run("ledger", "register", "--member", str(other), "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["entries"] == []
    # Looking up whose destructions is itself recorded in the handler access log.
    logged = sql_rows(
        env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"],
        "SELECT operator, action, subject_ref FROM access_log WHERE action = 'ledger register' "
        "ORDER BY seq",
    )
    assert logged[0][:2] == (OFFICER, "ledger register") and logged[0][2]
    assert str(mid) not in r.stdout + r.stderr


# -- SQLite (embedded default) -------------------------------------------------------------------


def test_register_paper_and_signoff_on_sqlite(embedded_env) -> None:  # type: ignore[no-untyped-def]
    env = embedded_env
    migrate_embedded(env)
    _fill(2)
    assert _paper(env).returncode == 0
    r = env.run("ledger", "signoff", "--through", "3", "--officer", OFFICER, **OFFICERS)
    assert r.returncode == 0, r.stderr
    assert env.run("ledger", "verify").stdout.startswith("ledger OK: 4 entries")
    today = datetime.now(ZoneInfo("Asia/Seoul")).date().isoformat()
    r = env.run("ledger", "register", "--from", today, "--to", today, "--format", "json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["entries"]
    assert [(e["seq"], e["kind"], e["signed_off_by"]) for e in got] == [
        (1, "destruction", OFFICER), (2, "destruction", OFFICER), (3, "paper", OFFICER),
    ]  # fmt: skip
    r = env.run("ledger", "register", "--to", "2000-01-01", "--format", "json")
    assert json.loads(r.stdout)["entries"] == []
    with session("archive") as s:
        s.execute(update(LedgerEntry).where(LedgerEntry.seq == 3).values(method="소각"))
    r = env.run("ledger", "verify")
    assert r.returncode == 1 and "ledger broken at entry 3: hash mismatch" in r.stderr
