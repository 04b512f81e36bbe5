"""Breach incidents (개인정보 유출등, 제34조) on PostgreSQL and MariaDB with a real SMTP server and
real workers: the affected members come from the data map (in the window or not), each is told
once even when notify runs again, `status` shows the 72-hour clock and turns to attention, the
report is drafted, closing is recorded; every step is in the ledger and the access log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, text

from models import demo_site
from tests.helpers import (
    LifecycleEnv,
    SmtpSink,
    add_members,
    create_demo_schema,
    set_env,
    table_dump,
)

DESCRIPTION = """[how]
결제 대행 연동 설정 오류로 결제 내역 조회 화면이 로그인 없이 열람 가능한 상태였습니다.

[advice]
카드사에 이상 거래 알림을 신청하시고, 의심스러운 연락에 응하지 마십시오.

[measures]
해당 화면을 즉시 차단하고 접근 기록을 점검하였습니다.

[contact]
개인정보 보호책임자 개인정보보호팀 (전화 02-000-0000)
"""
WINDOW = ("--from", "2026-11-01T00:00", "--to", "2026-11-30T23:59")


def _write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return p


def _payments(eng: Any, rows: list[tuple[int, datetime]]) -> None:
    with eng.begin() as conn:
        conn.execute(
            insert(demo_site.payments),
            [
                {
                    "member_id": m,
                    "amount": 50000,
                    "method": "card",
                    "card_last4": "1234",
                    "payer_name": f"회원{m}",
                    "paid_at": at,
                }
                for m, at in rows
            ],
        )


def _count(sql: str, which: str = "primary") -> int:
    from lifecycle.core.db import engine

    with engine(which).connect() as conn:  # type: ignore[arg-type]
        return int(conn.execute(text(sql)).scalar() or 0)


def _status(env: LifecycleEnv) -> tuple[int, dict[str, Any]]:
    r = env.run("status", "--json")
    return r.returncode, json.loads(r.stdout)


def _open(env: LifecycleEnv, desc: Path, *extra: str, detected: datetime) -> Any:
    return env.run(
        "--operator", "privacy-officer", "incident", "open", "--categories", "payment",
        *WINDOW, "--detected-at", detected.isoformat(), "--description-file", str(desc), *extra,
    )  # fmt: skip


def test_breach_incident_from_open_to_close(
    primary_env: LifecycleEnv, monkeypatch: Any, smtp_sink: SmtpSink, start_worker: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 5)
    add_members(eng, 1, start=6, email=None)
    add_members(eng, 1, start=7)
    in_window = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    # 1, 2, 4 (twice) and 6 (no address) paid in the window; 3 before it; 5 and 7 never.
    _payments(eng, [(1, in_window), (2, in_window), (4, in_window), (4, in_window),
                    (6, in_window), (3, datetime(2026, 10, 1, tzinfo=UTC))])  # fmt: skip
    # A former member's payment archived during the window: no live contact, counted.
    from lifecycle.core.db import session
    from models.archive import ArchivedRecord

    with session("archive") as a:
        a.execute(
            insert(ArchivedRecord).values(
                source_table="payments", source_pk="999", category="payment",
                subject_ref="f" * 64, retain_until=datetime(2031, 1, 1).date(), key_id=1,
                nonce=b"n", ciphertext=b"c", archived_at=in_window,
            )
        )  # fmt: skip
    desc = _write(tmp_path, "desc.txt", DESCRIPTION)

    opened = _open(primary_env, desc, detected=datetime.now(UTC) - timedelta(hours=1))
    assert opened.returncode == 0, opened.stderr
    assert "incident 1 opened: 4 member(s) affected (5 row(s) in payments)" in opened.stdout
    assert "1 affected member(s) have no usable e-mail address" in opened.stdout
    assert "1 former member(s) whose rows of these tables were archived" in opened.stdout
    affected = {r[0] for r in _rows("SELECT member_id FROM lifecycle_incident_members")}
    assert affected == {1, 2, 4, 6}

    # The clock: 71 h left, and the unsent notices need attention (exit 1).
    code, report = _status(primary_env)
    assert code == 1
    (inc,) = report["incidents"]
    assert 70 * 3600 < inc["seconds_left"] <= 71 * 3600 and not inc["overdue"]
    assert inc["notices"]["unsent"] == 4
    assert any(a.startswith("incident 1: 4 of 4 affected member(s) not notified") for a in
               report["attention"])  # fmt: skip
    from tasks.deadlines import check_deadlines

    clock = check_deadlines()["incidents"]["1"]
    assert 70 < clock["hours_left"] <= 71 and clock["unsent"] == 4
    text_status = primary_env.run("status")
    assert "Breach incidents open: 1" in text_status.stdout, text_status.stdout
    assert "left" in text_status.stdout

    start_worker(primary_env, queues=["notify"])
    first = primary_env.run("incident", "notify", "1", "--wait", "--timeout", "120")
    # One member has no address: not silently skipped, the command says so and exits 1.
    assert first.returncode == 1, first.stderr
    assert "1 affected member(s) have no usable e-mail address" in first.stderr
    assert "3 of 4 affected member(s) notified" in first.stdout
    per = smtp_sink.per_recipient()
    assert per == {f"member{i}@example.test": 1 for i in (1, 2, 4)}
    msg = smtp_sink.messages[0]
    assert "개인정보 유출 사실 안내" in msg.subject
    expected = (
        "대금결제·공급 기록",
        "카드번호",
        "2026-11-01 00:00 ~ 2026-11-30 23:59",
        "결제 대행 연동",
        "이상 거래 알림",
        "즉시 차단",
        "개인정보보호팀",
        "privacy.kisa.or.kr",
    )
    for item in expected:
        assert item in msg.body, item

    again = primary_env.run("incident", "notify", "1", "--wait", "--timeout", "60")
    assert "resumed" in again.stdout, again.stderr
    time.sleep(1)  # a stray second copy would need a moment to arrive
    assert smtp_sink.per_recipient() == per

    shown = json.loads(primary_env.run("incident", "show", "1", "--json").stdout)
    n = shown["notices"]
    assert (n["sent"], n["no_address"], n["unsent"], n["pending"]) == (3, 1, 1, 0)
    members = primary_env.run("incident", "show", "1", "--members")
    assert "member 6: not_sent (NoAddress)" in members.stdout
    assert "member 1: sent" in members.stdout

    out = tmp_path / "report.txt"
    rep = primary_env.run("incident", "report", "1", "--output", str(out))
    assert rep.returncode == 0, rep.stderr
    body = out.read_text(encoding="utf-8")
    expected = (
        "개인정보 유출등 신고서",
        "영향받은 회원: 4명",
        "전자우편 발송 완료 3명",
        "주소 없음 1명",
        "분리보관 데이터베이스에 있는 전 회원: 1명",
        "결제 대행 연동",
    )
    for item in expected:
        assert item in body, item

    # Still open with one member unreached: attention until closed.
    code, report = _status(primary_env)
    assert code == 1 and report["incidents"][0]["notices"]["unsent"] == 1

    record = _write(tmp_path, "record.txt", "주소 없는 회원 1명: 홈페이지에 30일 게시.\n")
    closed = primary_env.run("incident", "close", "1", "--record-file", str(record))
    assert closed.returncode == 0, closed.stderr
    assert _rows("SELECT state, closing_record FROM lifecycle_incidents WHERE id = 1") == [
        ("closed", "주소 없는 회원 1명: 홈페이지에 30일 게시.\n")
    ]
    code, report = _status(primary_env)
    assert report["incidents"] == [] and not any("incident" in a for a in report["attention"])
    twice = primary_env.run("incident", "close", "1", "--record-file", str(record))
    assert twice.returncode == 2 and "incident 1 is closed" in twice.stderr

    from models.archive import LedgerEntry
    from models.guards import AccessLogEntry

    with session("archive") as a:
        entries = a.execute(
            select(LedgerEntry.action, LedgerEntry.subjects, LedgerEntry.categories)
            .where(LedgerEntry.action.like("incident_%"))
            .order_by(LedgerEntry.seq)
        ).all()
        logged = a.scalars(
            select(AccessLogEntry.action).where(AccessLogEntry.action.like("incident %"))
        ).all()
    # One entry per step, even though notify ran twice.
    assert [e[0] for e in entries] == [
        "incident_open", "incident_notify", "incident_report", "incident_close"
    ]  # fmt: skip
    assert all(e[1] == 4 and e[2] == ["payment"] for e in entries)
    assert {"incident open", "incident notify", "incident report", "incident close"} <= set(logged)
    # No address reached the incident tables or the ledger.
    assert "@example.test" not in table_dump(eng, "lifecycle_incident")


def test_overdue_incident_and_whole_tables(primary_env: LifecycleEnv, tmp_path: Path) -> None:
    eng = create_demo_schema()
    add_members(eng, 3)
    with eng.begin() as conn:
        conn.execute(
            insert(demo_site.counselling_records),
            [
                {
                    "member_id": 2,
                    "session_at": datetime(2020, 1, 1, tzinfo=UTC),
                    "counsellor": "c",
                    "notes": "n",
                }
            ],
        )
    desc = _write(tmp_path, "desc.txt", DESCRIPTION)
    r = primary_env.run(
        "incident", "open", "--categories", "counselling", "--tables", "counselling_records",
        *WINDOW, "--detected-at", (datetime.now(UTC) - timedelta(hours=80)).isoformat(),
        "--description-file", str(desc),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # No record date in the map: every row counts, however old, and the command says so.
    assert "1 member(s) affected" in r.stdout
    assert "counselling_records: no record date in the data map: every row" in r.stdout
    # 민감정보: a report is due whatever the number (시행령 제40조①2호).
    assert "report to the regulator due" in r.stdout and "2호" in r.stdout
    code, report = _status(primary_env)
    assert code == 1
    (inc,) = report["incidents"]
    assert inc["overdue"] and inc["seconds_left"] < -7 * 3600
    line = next(a for a in report["attention"] if a.startswith("incident 1:"))
    assert "72-hour deadline passed 8h" in line and "1 of 1 member(s) not notified" in line
    assert "report to the regulator not drafted" in line
    assert "OVERDUE" in primary_env.run("status").stdout
    # Drafted is not reported: the late line says the report is not submitted, until it is.
    rep = primary_env.run("incident", "report", "1", "--output", str(tmp_path / "r.txt"))
    assert rep.returncode == 0, rep.stderr
    line = next(a for a in _attention(primary_env) if "72-hour deadline passed" in a)
    assert "report not submitted" in line and "not drafted" not in line
    sub = primary_env.run("incident", "submitted", "1", "--to", "pipc")
    assert sub.returncode == 0, sub.stderr
    line = next(a for a in _attention(primary_env) if "72-hour deadline passed" in a)
    assert "report" not in line and "1 of 1 member(s) not notified" in line
    # Beat's hourly deadline check fails on it, naming the incident: Flower shows the clock.
    from tasks.deadlines import OverdueRequests, check_deadlines

    with pytest.raises(OverdueRequests, match="incident 1: 72-hour deadline passed"):
        check_deadlines()


def test_bad_input_is_one_line_and_changes_nothing(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    eng = create_demo_schema()
    add_members(eng, 2)
    good = _write(tmp_path, "desc.txt", DESCRIPTION)
    partial = _write(tmp_path, "partial.txt", "[how]\n경위\n[advice]\n조치\n")
    now = datetime.now(UTC).isoformat()
    entries_before = _count("SELECT count(*) FROM ledger_entries", "archive")
    base = ["incident", "open", "--detected-at", now, "--description-file", str(good)]
    cases = [
        ([*base, "--categories", "nope", *WINDOW], "unknown category nope"),
        ([*base, "--categories", "payment", "--tables", "members", *WINDOW],
         "table members holds none of the categories payment"),
        ([*base, "--categories", "payment", "--from", "2026-12-01T00:00", "--to",
          "2026-11-01T00:00"], "--from must not be after --to"),
        ([*base, "--categories", "payment", "--from", "yesterday", "--to", "2026-11-01T00:00"],
         "--from must be a date-time"),
        (["incident", "open", "--categories", "payment", *WINDOW, "--detected-at", now,
          "--description-file", str(partial)], "missing or empty section(s) [measures], [contact]"),
        (["incident", "open", "--categories", "payment", *WINDOW, "--detected-at", now,
          "--description-file", str(tmp_path / "missing.txt")], "does not exist"),
        (["incident", "show", "7"], "incident 7 does not exist"),
        (["incident", "report", "7", "--output", str(tmp_path / "r.txt")],
         "incident 7 does not exist"),
        (["incident", "close", "x", "--record-file", str(good)], "ID must be a positive integer"),
    ]  # fmt: skip
    for args, fragment in cases:
        r = primary_env.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, r.stderr)
    assert _count("SELECT count(*) FROM lifecycle_incidents") == 0
    assert _count("SELECT count(*) FROM lifecycle_incident_members") == 0
    assert not (tmp_path / "r.txt").exists()
    assert _count("SELECT count(*) FROM ledger_entries", "archive") == entries_before


def _rows(sql: str) -> list[tuple[Any, ...]]:
    from lifecycle.core.db import engine

    with engine("primary").connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _counselling(env: LifecycleEnv, tmp_path: Path, *extra: str, hours_ago: float = 1) -> Any:
    """Member 2's counselling record: 민감정보, so a report is due (시행령 제40조①2호)."""
    eng = create_demo_schema()
    add_members(eng, 3)
    with eng.begin() as conn:
        conn.execute(
            insert(demo_site.counselling_records),
            [{"member_id": 2, "session_at": datetime(2020, 1, 1, tzinfo=UTC), "counsellor": "c",
              "notes": "n"}],
        )  # fmt: skip
    desc = _write(tmp_path, "desc.txt", DESCRIPTION)
    detected = datetime.now(UTC) - timedelta(hours=hours_ago)
    return env.run(
        "--operator", "privacy-officer", "incident", "open", "--categories", "counselling",
        "--tables", "counselling_records", *WINDOW, "--detected-at", detected.isoformat(),
        "--description-file", str(desc), *extra,
    )  # fmt: skip


def _submission() -> tuple[Any, ...]:
    return _rows(
        "SELECT submitted_at, submitted_to, submission_receipt, submitted_by, "
        "submission_revision FROM lifecycle_incidents WHERE id = 1"
    )[0]


def _ledger(action: str) -> list[Any]:
    from lifecycle.core.db import session
    from models.archive import LedgerEntry

    with session("archive") as a:
        return list(
            a.scalars(
                select(LedgerEntry).where(LedgerEntry.action == action).order_by(LedgerEntry.seq)
            )
        )


def _attention(env: LifecycleEnv, iid: int = 1) -> list[str]:
    _code, report = _status(env)
    return [a for a in report["attention"] if a.startswith(f"incident {iid}:")]


def test_the_report_is_drafted_then_recorded_as_submitted(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    env = primary_env
    opened = _counselling(env, tmp_path)
    assert opened.returncode == 0 and "report to the regulator due" in opened.stdout, opened.stderr
    record = _write(tmp_path, "record.txt", "조치를 마쳤습니다.\n")
    seoul = ZoneInfo("Asia/Seoul")
    now = datetime.now(seoul).strftime("%Y-%m-%d %H:%M")

    # Before the draft: submitting and closing are refused, each in one line.
    early = [
        (["incident", "submitted", "1", "--to", "pipc"],
         "incident 1: no report drafted yet; run `lifecycle incident report 1` first"),
        (["incident", "close", "1", "--record-file", str(record)],
         "incident 1: the report to the regulator is due (시행령 제40조①) and not drafted"),
    ]  # fmt: skip
    for args, fragment in early:
        r = env.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and fragment in r.stderr
    assert any("report to the regulator due (시행령 제40조)" in a for a in _attention(env))

    rep = env.run("incident", "report", "1", "--output", str(tmp_path / "report.txt"))
    assert rep.returncode == 0 and "incident submitted 1" in rep.stdout, rep.stderr
    # Drafted is not submitted: status, show and list say so; attention stays.
    assert any("report to the regulator drafted but not submitted" in a for a in _attention(env))
    _code, report = _status(env)
    (inc,) = report["incidents"]
    assert (inc["report_state"], inc["report_outstanding"], inc["submitted_at"]) == (
        "drafted", True, None
    )  # fmt: skip
    assert "NOT submitted" in env.run("status").stdout
    assert "(due, not submitted)" in env.run("incident", "show", "1").stdout
    assert "report drafted" in env.run("incident", "list").stdout

    entries_before = _count("SELECT count(*) FROM ledger_entries", "archive")
    before = _submission()
    refusals = [
        (["--to", "fss"], "--to must be one of pipc, kisa, not 'fss'"),
        (["--to", "pipc", "--at", "2099-01-01 00:00"], "--at 2099-01-01 00:00 is in the future"),
        (["--to", "pipc", "--at", "2026-01-01 09:00"], "is before incident 1 was opened"),
        (["--to", "pipc", "--at", "tomorrow"], "--at must be a date-time"),
        (["--to", "kisa", "--receipt", "접수 번호 12"], "--receipt must be the 접수번호 only"),
        (["--to", "kisa", "--receipt", "9" * 41], "--receipt must be the 접수번호 only"),
        (["--to", "kisa", "--receipt", "010-1234-5678"], "--receipt looks like a phone"),
        (["--at", now], "--to is required"),
    ]  # fmt: skip
    for opts, fragment in refusals:
        r = env.run("incident", "submitted", "1", *opts)
        assert r.returncode == 2, (opts, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (opts, r.stderr)
    r = env.run("incident", "submitted", "7", "--to", "pipc")
    assert r.returncode == 2 and "incident 7 does not exist" in r.stderr, r.stderr
    assert _submission() == before == (None, None, None, None, 0)
    assert _count("SELECT count(*) FROM ledger_entries", "archive") == entries_before

    # Recorded; the same values again change nothing; other values need --correct.
    args = ["--operator", "privacy-officer", "incident", "submitted", "1", "--at", now]
    first = env.run(*args, "--to", "PIPC", "--receipt", "2026-0001234")
    assert first.returncode == 0, first.stderr
    assert f"recorded: report submitted to pipc at {now}, 접수번호 2026-0001234" in first.stdout
    at, to, receipt, by, revision = _submission()
    local = datetime.strptime(now, "%Y-%m-%d %H:%M").replace(tzinfo=seoul)
    assert _utc(at) == local.astimezone(UTC) and (to, receipt, by, revision) == (
        "pipc", "2026-0001234", "privacy-officer", 0
    )  # fmt: skip
    again = env.run(*args, "--to", "pipc", "--receipt", "2026-0001234")
    assert again.returncode == 0 and "already recorded" in again.stdout, again.stderr
    assert len(_ledger("incident_submit")) == 1
    other = env.run(*args, "--to", "kisa", "--receipt", "2026-0001234")
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert (
        f"already recorded as submitted to pipc at {now}, 접수번호 2026-0001234; to replace it "
        "with these values add --correct" in other.stderr
    )
    no_receipt = env.run(*args, "--to", "pipc")
    assert no_receipt.returncode == 2 and "add --correct" in no_receipt.stderr
    assert _submission()[1:3] == ("pipc", "2026-0001234")
    fixed = env.run(*args, "--to", "kisa", "--receipt", "2026-0001234", "--correct")
    assert fixed.returncode == 0, fixed.stderr
    assert "corrected to report submitted to kisa" in fixed.stdout and "was to pipc" in fixed.stdout
    assert _submission()[1:] == ("kisa", "2026-0001234", "privacy-officer", 1)
    # Both versions are in the ledger, each its own entry.
    entries = _ledger("incident_submit")
    assert [(e.details["to"], e.details["revision"]) for e in entries] == [("pipc", 0), ("kisa", 1)]
    assert entries[1].details["replaces"]["to"] == "pipc"
    assert all(e.subjects == 1 and e.categories == ["counselling"] for e in entries)

    # Submitted: nothing about the report needs attention any more, and status says to whom.
    assert not any("report" in a for a in _attention(env))
    _code, report = _status(env)
    (inc,) = report["incidents"]
    assert (inc["report_state"], inc["submitted_to"], inc["report_outstanding"]) == (
        "submitted", "kisa", False
    )  # fmt: skip
    assert f"submitted {now[5:]} to kisa" in env.run("status").stdout
    shown = env.run("incident", "show", "1")
    assert f"report: submitted {now} to kisa, 접수번호 2026-0001234" in shown.stdout
    assert "corrected 1 time(s)" in shown.stdout
    assert f"report submitted {now} to kisa" in env.run("incident", "list").stdout

    closed = env.run("incident", "close", "1", "--record-file", str(record))
    assert closed.returncode == 0, closed.stderr
    (close_entry,) = _ledger("incident_close")
    assert close_entry.details["report"] == "submitted"
    late = env.run(*args, "--to", "kisa", "--receipt", "2026-0001234")
    assert late.returncode == 2 and "incident 1 is closed" in late.stderr

    from lifecycle.core.db import session
    from models.guards import AccessLogEntry

    with session("archive") as a:
        logged = a.scalars(
            select(AccessLogEntry.details).where(AccessLogEntry.action == "incident submitted")
        ).all()
    assert [d["outcome"] for d in logged] == ["recorded", "unchanged", "corrected"]


def test_closing_with_a_due_report_unsubmitted_needs_a_reason(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    env = primary_env
    assert _counselling(env, tmp_path).returncode == 0
    record = _write(tmp_path, "record.txt", "조치를 마쳤습니다.\n")
    rep = env.run("incident", "report", "1", "--output", str(tmp_path / "report.txt"))
    assert rep.returncode == 0, rep.stderr
    refused = env.run("incident", "close", "1", "--record-file", str(record))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        "lifecycle: error: incident 1: the report to the regulator is due (시행령 제40조①) "
        "and drafted but not recorded as submitted; record it with `lifecycle incident "
        "submitted 1`, or close with --no-report-reason TEXT"
    )
    empty = env.run("incident", "close", "1", "--record-file", str(record), "--no-report-reason",
                    " ")  # fmt: skip
    assert empty.returncode == 2 and "--no-report-reason is empty" in empty.stderr
    assert _rows("SELECT state FROM lifecycle_incidents") == [("open",)]
    assert _ledger("incident_close") == []

    reason = "보호위원회 상담 결과 신고 대상이 아니라는 답변을 받음 (2026-12-08)"
    closed = env.run(
        "incident", "close", "1", "--record-file", str(record), "--no-report-reason", reason
    )
    assert closed.returncode == 0, closed.stderr
    assert _rows("SELECT state, no_report_reason, submitted_at FROM lifecycle_incidents") == [
        ("closed", reason, None)
    ]
    (entry,) = _ledger("incident_close")
    assert entry.details["report"] == "drafted" and entry.details["no_report_reason_given"]
    assert f"closed without a submitted report: {reason}" in env.run("incident", "show", "1").stdout


def _utc(value: datetime) -> datetime:
    # MariaDB hands back a naive UTC time, PostgreSQL an aware one.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
