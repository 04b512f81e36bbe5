"""Notices to members through a real SMTP server (aiosmtpd) and real workers: policy fan-out,
exactly one notice per member even across a SIGKILLed worker, member notices, dormancy."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from tests.conftest import LifecycleEnv

# The helpers hold fixtures too: rewrite their asserts, then load them as a plugin.
pytest.register_assert_rewrite("tests.notify_support")
from tests.notify_support import (  # noqa: E402
    SmtpSink,
    add_members,
    create_demo_schema,
    set_env,
    table_dump,
    wait_until,
)

pytest_plugins = ["tests.notify_support"]

BODY = (
    "제3조(처리하는 개인정보의 항목)이 변경됩니다.\n"
    "상담 예약 시 수집 항목에서 '직장'을 삭제합니다.\n"
)


def _body_file(tmp_path: Path, text_: str = BODY) -> Path:
    p = tmp_path / "policy.txt"
    p.write_text(text_, encoding="utf-8")
    return p


def _policy(env: LifecycleEnv, body: Path, *extra: str, version: str = "2.0"):  # type: ignore[no-untyped-def]
    return env.run(
        "notice", "policy", "--version", version, "--title", "상담기록 보존기간 변경",
        "--body-file", str(body), "--effective-date", "2026-12-01", *extra,
    )  # fmt: skip


def _count(table: str) -> int:
    from lifecycle.db import engine

    with engine("primary").connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0


def test_notice_cli_bad_input_changes_nothing(lifecycle_env: LifecycleEnv, tmp_path: Path) -> None:
    eng = create_demo_schema()
    add_members(eng, 3)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("정책".encode("euc-kr"))
    good = _body_file(tmp_path)
    cases = [
        (["--body-file", str(tmp_path / "missing.txt")], "does not exist"),
        (["--body-file", str(empty)], "is empty"),
        (["--body-file", str(tmp_path)], "is a directory"),
        (["--body-file", str(latin)], "not UTF-8"),
        (["--body-file", str(good), "--effective-date", "12/01/2026"], "YYYY-MM-DD"),
        (["--body-file", str(good), "--title", "   "], "--title must not be empty"),
        (["--body-file", str(good), "--title", "a\nb"], "one line"),
        (["--body-file", str(good), "--version", ""], "--version must not be empty"),
    ]
    for extra, fragment in cases:
        args = ["notice", "policy", "--version", "3.0", "--title", "t", *extra]
        r = lifecycle_env.run(*args)
        assert r.returncode == 2, (extra, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (extra, r.stderr)
    assert _count("lifecycle_notices") == 0
    assert _count("lifecycle_notice_recipients") == 0


def test_policy_notice_reaches_every_active_member_exactly_once(
    lifecycle_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    set_env(
        lifecycle_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url,
        LIFECYCLE_NOTICE_BATCH_SIZE="7",
    )  # fmt: skip
    eng = create_demo_schema()
    add_members(eng, 30)
    add_members(eng, 1, start=31, status="withdrawn")
    add_members(eng, 1, start=32, status="dormant")
    add_members(eng, 1, start=33, email=None)
    smtp_sink.refuse.add("member5@example.test")
    start_worker(lifecycle_env, queues=["notify"])
    body = _body_file(tmp_path)
    r = _policy(lifecycle_env, body, "--wait", "--timeout", "120")
    assert r.returncode == 1, r.stderr  # one address was refused by the server
    assert "1 address(es) refused" in r.stderr
    assert "29 sent, 1 not sent, 1 failed of 31" in r.stdout
    per = smtp_sink.per_recipient()
    expected = {f"member{i}@example.test" for i in range(1, 31)} - {"member5@example.test"}
    assert set(per) == expected and set(per.values()) == {1}
    msg = next(m for m in smtp_sink.messages if m.rcpt == "member7@example.test")
    assert "개인정보처리방침 변경 안내 (버전 2.0)" in msg.subject
    assert "2026년 12월 1일" in msg.body and "상담기록 보존기간 변경" in msg.body
    assert "'직장'을 삭제합니다" in msg.body
    assert msg.message_id.startswith("<notice-1-7@")
    # The same command again resumes the same notice: nobody gets a second copy.
    again = _policy(lifecycle_env, body, "--wait", "--timeout", "60")
    assert "resumed" in again.stdout
    time.sleep(1)
    assert smtp_sink.per_recipient() == per
    # Same version, different text: refused, because members were told something else.
    other = _policy(lifecycle_env, _body_file(tmp_path, "다른 본문"))
    assert other.returncode == 2 and "already exists" in other.stderr
    from lifecycle.db import session
    from models.notify import Notice

    with session("primary") as s:
        n = s.scalar(select(Notice))
        assert (n.state, n.total, n.sent, n.not_sent, n.failed) == ("completed", 31, 29, 1, 1)
    # Addresses are not copied into the notice rows (they are read from the members table).
    assert "member7@example.test" not in table_dump(eng, "lifecycle_")


def test_without_smtp_notices_are_recorded_as_not_sent(
    lifecycle_env: LifecycleEnv, start_worker, tmp_path: Path
) -> None:
    eng = create_demo_schema()
    add_members(eng, 4)
    worker = start_worker(lifecycle_env, queues=["notify"])
    r = _policy(lifecycle_env, _body_file(tmp_path), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "0 sent, 4 not sent" in r.stdout
    assert "warning" in r.stderr and "LIFECYCLE_SMTP_URL" in r.stderr
    wait_until(lambda: "LIFECYCLE_SMTP_URL is not set" in worker.output(), 10, "warning logged")
    from lifecycle.db import session
    from models.notify import NoticeRecipient

    with session("primary") as s:
        states = s.execute(select(NoticeRecipient.state, NoticeRecipient.error_class)).all()
    assert set(states) == {("not_sent", "SmtpNotConfigured")}


def test_a_worker_killed_mid_fanout_sends_each_member_one_notice(
    lifecycle_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    start_worker,
    tmp_path: Path,
) -> None:
    """SIGKILL the worker (process group) while batches are sending, start another, resume.

    Every member ends with exactly one distinct notice (one Message-ID). Rows recorded as sent
    are never sent again; the only possible repeats are messages the server accepted in the
    instant before the killed process had recorded them: at most two per killed connection (the
    one in flight and the one whose pipelined mark was unconfirmed), each with the same
    Message-ID so the member's mail client shows it once.
    """
    members = 300
    concurrency = 2
    sink = SmtpSink(delay=0.01).start()
    try:
        set_env(
            lifecycle_env, monkeypatch, LIFECYCLE_SMTP_URL=sink.url,
            LIFECYCLE_NOTICE_BATCH_SIZE="40",
        )  # fmt: skip
        eng = create_demo_schema()
        add_members(eng, members)
        body = _body_file(tmp_path)
        first = start_worker(lifecycle_env, queues=["notify"], concurrency=concurrency)
        r = _policy(lifecycle_env, body)
        assert r.returncode == 0, r.stderr
        sink.wait_count(60, timeout=60)
        first.kill()
        at_kill = len(sink.messages)
        assert at_kill < members, "the fan-out finished before the kill; nothing was tested"
        start_worker(lifecycle_env, queues=["notify"], concurrency=concurrency)
        # The operator (or beat's resume job) runs the same notice again.
        r = _policy(lifecycle_env, body, "--wait", "--timeout", "180")
        assert r.returncode == 0, r.stderr
        assert f"{members} sent" in r.stdout
        ids = sink.distinct_ids()
        assert len(ids) == members
        assert all(len(v) == 1 for v in ids.values()), "a member got two different notices"
        raw = Counter(m.rcpt for m in sink.messages)
        repeats = sum(raw.values()) - members
        assert repeats <= 2 * concurrency, f"{repeats} repeats, {concurrency} killed connections"
        from lifecycle.db import session
        from models.notify import NoticeRecipient

        with session("primary") as s:
            states = Counter(s.scalars(select(NoticeRecipient.state)))
        assert states == Counter({"sent": members})
    finally:
        sink.stop()


def test_overlapping_batches_never_send_a_row_twice(
    lifecycle_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    """Two batches over overlapping ranges at once (a redelivered message next to a resume)."""
    import threading

    from lifecycle import notices

    set_env(lifecycle_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    smtp_sink.delay = 0.002
    eng = create_demo_schema()
    add_members(eng, 120)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    results: list[notices.BatchResult] = []
    threads = [
        threading.Thread(target=lambda a=a, b=b: results.append(notices.send_batch(nid, a, b)))
        for a, b in [(1, 120), (30, 90), (1, 60)]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.sent for r in results) == 120
    assert set(smtp_sink.per_recipient().values()) == {1}
    assert len(smtp_sink.messages) == 120


def test_withdrawal_notice_uses_the_address_captured_before_destruction(
    lifecycle_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink,
    start_worker,
) -> None:  # fmt: skip
    from lifecycle import notices
    from lifecycle.db import session
    from models.notify import NoticeRecipient

    set_env(lifecycle_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 2)
    with session("primary") as s:
        nid = notices.capture_withdrawal_notice(s, 2, request_id=77)
        # capturing twice (a re-run of the withdrawal job) keeps one row
        assert notices.capture_withdrawal_notice(s, 2, request_id=77) == nid
    with session("primary") as s:
        (row,) = s.scalars(select(NoticeRecipient))
        assert (row.state, row.address) == ("held", "member2@example.test")
    # The withdrawal destroys the member row...
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM members WHERE id = 2"))
    # ...and a re-run of the capture after that must not lose the address.
    with session("primary") as s:
        notices.capture_withdrawal_notice(s, 2, request_id=77)
    start_worker(lifecycle_env, queues=["notify"])
    assert notices.send_member_notice("withdrawal_completed", 2, {"request_id": 77}) == nid
    smtp_sink.wait_count(1, timeout=30)
    (msg,) = smtp_sink.messages
    assert msg.rcpt == "member2@example.test"
    assert "회원탈퇴 처리 완료 안내" in msg.subject and "접수번호 77" in msg.body

    def sent() -> bool:
        with session("primary") as s:
            r = s.scalar(select(NoticeRecipient))
            return r.state == "sent" and r.address is None

    wait_until(sent, 30, "address blanked after sending")
    notices.send_member_notice("withdrawal_completed", 2, {"request_id": 77})
    time.sleep(2)
    assert len(smtp_sink.messages) == 1


def test_global_rate_limit_spaces_sends_across_workers(
    lifecycle_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    """Two worker processes, 4 batches, one shared limit of 10/s: 30 messages need ~3 s."""
    set_env(
        lifecycle_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url,
        LIFECYCLE_NOTICE_BATCH_SIZE="8", LIFECYCLE_NOTICE_RATE_PER_SECOND="10",
    )  # fmt: skip
    stamps: list[float] = []
    handler = smtp_sink.controller.handler
    original = handler.handle_DATA

    async def stamped(server, session, envelope):  # type: ignore[no-untyped-def]
        stamps.append(time.monotonic())
        return await original(server, session, envelope)

    handler.handle_DATA = stamped
    eng = create_demo_schema()
    add_members(eng, 30)
    start_worker(lifecycle_env, queues=["notify"], concurrency=2)
    r = _policy(lifecycle_env, _body_file(tmp_path), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert len(stamps) == 30
    # 30 sends at 10/s: 29 intervals of 0.1 s whichever process sends (some slack for jitter).
    assert stamps[-1] - stamps[0] >= 2.9 * 0.9


def test_dormancy_advance_notice_only_when_enabled(
    lifecycle_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lifecycle import notices
    from lifecycle.datamap import SHIPPED_DEMO_MAP
    from lifecycle.db import session
    from lifecycle.member_table import clear_cache
    from models.notify import Notice, NoticeRecipient

    eng = create_demo_schema()
    now = datetime.now(UTC)
    add_members(eng, 1, start=1, last_login_at=now - timedelta(days=340))  # due in ~25 days
    add_members(eng, 1, start=2, last_login_at=now - timedelta(days=100))  # not yet
    add_members(eng, 1, start=3, last_login_at=None)  # never logged in: no basis
    add_members(eng, 1, start=4, status="withdrawn", last_login_at=now - timedelta(days=400))
    # Shipped map: dormancy is off (the 1-year rule was repealed in 2023).
    assert notices.dormancy_advance() is None
    assert _count("lifecycle_notices") == 0
    enabled = tmp_path / "map.yaml"
    enabled.write_text(
        SHIPPED_DEMO_MAP.read_text(encoding="utf-8").replace("enabled: false", "enabled: true"),
        encoding="utf-8",
    )
    set_env(lifecycle_env, monkeypatch, LIFECYCLE_DATA_MAP=str(enabled))
    clear_cache()
    nid = notices.dormancy_advance()
    assert nid is not None
    with session("primary") as s:
        assert list(s.scalars(select(NoticeRecipient.member_id))) == [1]
        n = s.get(Notice, nid)
        assert "휴면 계정 전환 사전 안내" in n.title and "365일" in n.body
    # Run again (beat twice, or the next night): member 1 is not noticed a second time...
    with session("primary") as s:
        s.execute(update(Notice).where(Notice.id == nid).values(dedup_key="dormancy_advance:d1"))
    nid2 = notices.dormancy_advance()
    assert nid2 is not None and nid2 != nid
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(NoticeRecipient)) == 1
    # ...until, after that notice, they log in and go quiet again (shift the clock back).
    with session("primary") as s:
        s.execute(update(NoticeRecipient).values(created_at=now - timedelta(days=400)))
    with eng.begin() as conn:
        conn.execute(
            text("UPDATE members SET last_login_at = :t WHERE id = 1"),
            {"t": now - timedelta(days=339)},
        )
    with session("primary") as s:
        s.execute(update(Notice).where(Notice.id == nid2).values(dedup_key="dormancy_advance:d2"))
    notices.dormancy_advance()
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(NoticeRecipient)) == 2


def test_embedded_mode_sends_notices_and_corrections_without_redis_or_postgres(
    embedded_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    receivers,
    start_worker,
    tmp_path: Path,
) -> None:
    """The no-configuration default (SQLite + filesystem broker): same commands, same result."""
    env = embedded_env
    assert env.run("db", "upgrade").returncode == 0
    set_env(env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url, LIFECYCLE_NOTICE_BATCH_SIZE="4")
    eng = create_demo_schema()
    add_members(eng, 10)
    hook = receivers(default=200)
    assert env.run("recipients", "add", "p", "--webhook", hook.url, "--secret",
                   hook.secret).returncode == 0  # fmt: skip
    assert env.run("provide", "3", "--to", "p", "--fields", "mobile").returncode == 0
    start_worker(env, queues=["requests", "notify"])
    r = _policy(env, _body_file(tmp_path), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert "10 sent" in r.stdout
    assert set(smtp_sink.per_recipient().values()) == {1} and len(smtp_sink.messages) == 10
    r = env.run("correct", "3", "--set", "mobile=010-1357-2468", "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    (hit,) = hook.accepted()
    assert hit.payload["data"]["fields"] == {"mobile": "010-1357-2468"}


def test_a_held_withdrawal_notice_is_released_once_the_withdrawal_completed(
    lifecycle_env: LifecycleEnv,
) -> None:
    """The withdrawal job releases its notice itself; if it died in between, beat does."""
    from lifecycle import notices
    from lifecycle.db import session
    from lifecycle.requests import submit
    from models.notify import NoticeRecipient
    from models.requests import LifecycleRequest

    eng = create_demo_schema()
    add_members(eng, 2)
    with session("primary") as s:
        done = submit(s, "withdrawal", 1)
        running = submit(s, "withdrawal", 2)
    with session("primary") as s:
        notices.capture_withdrawal_notice(s, 1, done)
        notices.capture_withdrawal_notice(s, 2, running)
        s.get(LifecycleRequest, done).state = "completed"
    assert notices.release_held_for_completed() == 1
    with session("primary") as s:
        states = dict(s.execute(select(NoticeRecipient.member_id, NoticeRecipient.state)).all())
    assert states == {1: "pending", 2: "held"}
    assert len(notices.stale_notices()) == 1
    assert notices.release_held_for_completed() == 0
