"""The monthly access-log review (안전성 확보조치 기준 제8조②): the pure review, and
`lifecycle accesslog review --month` against the real archive, itself logged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.vault import accesslog
from lifecycle.vault.accessreview import Thresholds, month_bounds, review, volume
from tests.helpers import LifecycleEnv, table_dump

T = Thresholds(bulk_rows=100, bulk_subjects=10, office_start=8, office_end=20, repeat=3)


def _kst(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """A time in Asia/Seoul, as UTC (what the access log stores)."""
    return datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo("Asia/Seoul")).astimezone(UTC)


def _e(seq: int, at: datetime, kind: str = "read", **kw: object) -> dict[str, object]:
    return {
        "seq": seq, "occurred_at": at, "operator": kw.get("operator", "clerk-park"),
        "kind": kind, "action": kw.get("action", "archive retrieve"),
        "subject_ref": kw.get("ref"), "details": kw.get("details", {"origin": "tty:/dev/pts/1@h"}),
    }  # fmt: skip


def test_the_review_flags_bulk_off_hours_and_repeats_only() -> None:
    entries = [
        _e(1, _kst(3, 10), ref="a" * 64, details={"records": 3, "origin": "ssh:10.0.0.5@h"}),
        _e(2, _kst(4, 23, 30), "export", action="access package", ref="a" * 64),
        _e(3, _kst(5, 11), ref="a" * 64),
        _e(4, _kst(6, 14), "export", action="ledger export", details={"entries": 5000}),
        _e(5, _kst(6, 15), "read", action="incident show --members", details={"members": [1] * 12}),
        # Saturday 03:00, but a worker's automated job: not a person's off-hours use.
        _e(
            6,
            _kst(7, 3),
            "destroy",
            action="withdrawal",
            operator="website",
            details={"origin": "worker@host", "rows": 5000},
        ),
        # A person on a Saturday afternoon is off hours.
        _e(7, _kst(7, 14), "change", action="correct (request)", ref="b" * 64),
        _e(8, _kst(9, 19, 59), ref="b" * 64),  # the last office minute
    ]
    r = review(entries, "2026-11", T)
    got = {(f.kind, f.seqs) for f in r.flags}
    assert got == {
        ("off_hours", (2,)), ("bulk", (4,)), ("bulk", (5,)), ("off_hours", (7,)),
        ("repeated", (1, 2, 3)),
    }  # fmt: skip
    assert r.entries == 8 and r.by_operator["clerk-park"] == 7 and r.reads == 6
    assert r.rows_read == 3 + 5000
    d = r.as_dict()
    assert d["flag_counts"] == {"off_hours": 2, "bulk": 2, "repeated": 1}
    json.dumps(d, default=str)  # what --json prints
    assert any("repeated" in line and "3 times" in line for line in r.lines())
    # Nothing flagged in a quiet month.
    assert review([_e(1, _kst(3, 10))], "2026-11", T).flags == []
    assert volume({"rows": 7, "members": [1, 2]}) == (7, 2)


def test_a_month_is_its_korean_days_and_bad_months_are_refused() -> None:
    start, end = month_bounds("2026-11", "Asia/Seoul")
    assert start == datetime(2026, 10, 31, 15, tzinfo=UTC)
    assert end == datetime(2026, 11, 30, 15, tzinfo=UTC)
    assert month_bounds("2026-12", "Asia/Seoul")[1] == datetime(2026, 12, 31, 15, tzinfo=UTC)
    for bad in ("2026-13", "2026-1", "11-2026", "", "2026-00"):
        with pytest.raises(UserError, match="--month must be YYYY-MM"):
            month_bounds(bad, "Asia/Seoul")


def test_the_review_command_reads_the_month_and_is_logged(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = primary_env
    url = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    eng = create_engine(url)
    times = [_kst(4, 23, 30), _kst(5, 10), _kst(6, 11), _kst(6, 12), _kst(1, 10, month=12)]
    for at in times:
        monkeypatch.setattr(accesslog, "utcnow", lambda at=at: at)
        with Session(eng) as s, s.begin():
            accesslog.record(s, operator="clerk-park", kind="export", action="access package",
                             member_id=7, details={"rows": 12})  # fmt: skip
    monkeypatch.undo()

    before = table_dump(eng, "access_log")
    r = env.run("accesslog", "review", "--month", "2026-13")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--month" in r.stderr
    assert table_dump(eng, "access_log") == before

    r = env.run("--operator", "officer-kim", "accesslog", "review", "--month", "2026-11",
                "--json")  # fmt: skip
    assert r.returncode == 1, r.stderr  # flagged: to be checked with the operator
    assert "2 flag(s) to check" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["entries"] == 4 and doc["flag_counts"] == {"off_hours": 1, "repeated": 1}
    [repeat] = [f for f in doc["flags"] if f["kind"] == "repeated"]
    assert len(repeat["seqs"]) == 4 and repeat["operator"] == "clerk-park"

    # The review is itself an entry naming the reviewer, the month and what it found.
    with eng.connect() as c:
        op, action, details = c.execute(
            text("SELECT operator, action, details FROM access_log ORDER BY seq DESC LIMIT 1")
        ).one()
    details = json.loads(details) if isinstance(details, str) else details
    assert (op, action) == ("officer-kim", "accesslog review")
    assert (details["month"], details["entries"], details["flags"]) == ("2026-11", 4, 2)

    # A quiet month (October: nothing; the December entry is not November's): text, exit 0.
    r = env.run("accesslog", "review", "--month", "2026-10")
    assert r.returncode == 0, r.stderr
    assert "0 entries" in r.stdout and "flags: none" in r.stdout
    assert env.run("accesslog", "verify").returncode == 0
    eng.dispose()
