"""Notices to members through a real SMTP server (aiosmtpd) and real workers: policy fan-out,
exactly one notice per member even across a SIGKILLed worker, member notices, dormancy."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from tests.helpers import (
    LifecycleEnv,
    SmtpSink,
    add_members,
    create_demo_schema,
    redis_dump_repr,
    set_env,
    table_dump,
    wait_until,
)

BODY = (
    "제3조(처리하는 개인정보의 항목)이 변경됩니다.\n"
    "상담 예약 시 수집 항목에서 '직장'을 삭제합니다.\n"
)


def _body_file(tmp_path: Path, text_: str = BODY) -> Path:
    p = tmp_path / "policy.txt"
    p.write_text(text_, encoding="utf-8")
    return p


def _policy(env: LifecycleEnv, body: Path, *extra: str, version: str = "2.0", **more: str):  # type: ignore[no-untyped-def]
    return env.run(
        "notice", "policy", "--version", version, "--title", "상담기록 보존기간 변경",
        "--body-file", str(body), "--effective-date", "2026-12-01", *extra, **more,
    )  # fmt: skip


def _count(table: str) -> int:
    from lifecycle.core.db import engine

    with engine("primary").connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0


def test_notice_cli_bad_input_changes_nothing(primary_env: LifecycleEnv, tmp_path: Path) -> None:
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
        r = primary_env.run(*args)
        assert r.returncode == 2, (extra, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (extra, r.stderr)
    assert _count("lifecycle_notices") == 0
    assert _count("lifecycle_notice_recipients") == 0


def test_policy_notice_reaches_every_active_member_exactly_once(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    set_env(
        primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url,
        LIFECYCLE_NOTICE_BATCH_SIZE="7",
    )  # fmt: skip
    eng = create_demo_schema()
    add_members(eng, 30)
    add_members(eng, 1, start=31, status="withdrawn")
    add_members(eng, 1, start=32, status="dormant")
    add_members(eng, 1, start=33, email=None)
    smtp_sink.refuse.add("member5@example.test")
    start_worker(primary_env, queues=["notify"])
    body = _body_file(tmp_path)
    r = _policy(primary_env, body, "--wait", "--timeout", "120")
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
    again = _policy(primary_env, body, "--wait", "--timeout", "60")
    assert "resumed" in again.stdout
    # Nothing to wait for: a second copy would come from a stray task, if at all. A second is
    # many sends' time on loopback; the check that nothing more arrived needs some window.
    time.sleep(1)
    assert smtp_sink.per_recipient() == per
    # Same version, different text: refused, because members were told something else.
    other = _policy(primary_env, _body_file(tmp_path, "다른 본문"))
    assert other.returncode == 2 and "already exists" in other.stderr
    from lifecycle.core.db import session
    from models.notices import Notice

    with session("primary") as s:
        n = s.scalar(select(Notice))
        assert (n.state, n.total, n.sent, n.not_sent, n.failed) == ("completed", 31, 29, 1, 1)
    # Addresses are not copied into the notice rows (they are read from the members table).
    assert "member7@example.test" not in table_dump(eng, "lifecycle_")


def test_without_smtp_a_notice_run_fails_loudly_unless_record_only(
    primary_env: LifecycleEnv, start_worker, tmp_path: Path
) -> None:
    eng = create_demo_schema()
    add_members(eng, 4)
    worker = start_worker(primary_env, queues=["notify"])
    refused = _policy(primary_env, _body_file(tmp_path), "--wait", "--timeout", "60")
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "LIFECYCLE_SMTP_URL is not set" in lines[0]
    assert "--record-only" in lines[0]
    assert _count("lifecycle_notices") == 0
    r = _policy(primary_env, _body_file(tmp_path), "--record-only", "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "0 sent, 4 not sent" in r.stdout
    assert "warning" in r.stderr and "LIFECYCLE_SMTP_URL" in r.stderr
    wait_until(lambda: "LIFECYCLE_SMTP_URL is not set" in worker.output(), 10, "warning logged")
    from lifecycle.core.db import session
    from models.notices import NoticeRecipient

    with session("primary") as s:
        states = s.execute(select(NoticeRecipient.state, NoticeRecipient.error_class)).all()
    assert set(states) == {("not_sent", "SmtpNotConfigured")}


def test_not_sent_notices_reach_the_server_once_it_is_configured_exactly_once(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.notices.identity import install_label
    from models.notices import NoticeRecipient

    eng = create_demo_schema()
    add_members(eng, 4)
    everyone = {f"member{i}@example.test" for i in range(1, 5)}
    body = _body_file(tmp_path)
    bare = start_worker(primary_env, queues=["notify"])  # a worker with no mail server
    r = _policy(primary_env, body, "--record-only", "--wait", "--timeout", "60")
    assert r.returncode == 0 and "0 sent, 4 not sent" in r.stdout, r.stderr
    # The CLI has a server but the worker has none: --wait must not call that a success.
    r = _policy(
        primary_env, body, "--wait", "--timeout", "60", version="2.1",
        LIFECYCLE_SMTP_URL=smtp_sink.url,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "4 not sent because the worker has no mail server" in line
    assert "lifecycle notice resend 2 --not-sent" in line
    assert smtp_sink.messages == []

    # The operator configures SMTP and restarts the worker.
    bare.stop()
    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    start_worker(primary_env, queues=["notify"])
    # Notice 1: the same command again resumes it, and now it sends.
    r = _policy(primary_env, body, "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout and "4 sent, 0 not sent, 0 failed of 4" in r.stdout
    assert smtp_sink.per_recipient() == Counter({a: 1 for a in everyone})
    label = install_label()
    assert len(label) == 16
    ids = {m.message_id for m in smtp_sink.messages}
    assert ids == {f"<notice-1-{i}@{label}.maumteo.example>" for i in range(1, 5)}
    # Notice 2: the explicit resend.
    bad = primary_env.run("notice", "resend", "2")
    assert bad.returncode == 2 and "--not-sent" in bad.stderr
    missing = primary_env.run("notice", "resend", "99", "--not-sent")
    assert missing.returncode == 2 and "notice 99 does not exist" in missing.stderr
    r = primary_env.run("notice", "resend", "2", "--not-sent", "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "4 not-sent row(s) queued again" in r.stdout
    assert "4 sent, 0 not sent, 0 failed of 4" in r.stdout
    assert smtp_sink.per_recipient() == Counter({a: 2 for a in everyone})
    # Again: nothing left to send, nobody gets a third copy.
    r = primary_env.run("notice", "resend", "2", "--not-sent", "--wait", "--timeout", "30")
    assert r.returncode == 0 and "0 not-sent row(s) queued again" in r.stdout, r.stderr
    r = _policy(primary_env, body, "--wait", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    # Nothing to wait for: a second copy would come from a stray task, if at all. A second is
    # many sends' time on loopback; the check that nothing more arrived needs some window.
    time.sleep(1)
    assert smtp_sink.per_recipient() == Counter({a: 2 for a in everyone})

    # Beat's resume job sends rows left "not sent" for want of a server on its own.
    with session("primary") as s:
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.notice_id == 2, NoticeRecipient.member_id.in_([1, 2]))
            .values(state="not_sent", error_class="SmtpNotConfigured", sent_at=None)
        )
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.notice_id == 2, NoticeRecipient.member_id == 3)
            .values(state="not_sent", error_class="Discarded", sent_at=None)
        )
    from tasks.notice import resume_stale

    assert resume_stale.apply().get() == 1
    smtp_sink.wait_count(10)
    # Ten arrived; the check is that no eleventh follows (nothing to wait for but a window).
    time.sleep(1)
    per = smtp_sink.per_recipient()
    assert (per["member1@example.test"], per["member2@example.test"]) == (3, 3)
    assert (per["member3@example.test"], per["member4@example.test"]) == (2, 2)


def test_a_worker_killed_mid_fanout_sends_each_member_one_notice(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    start_worker,
    tmp_path: Path,
) -> None:
    """SIGKILL the worker (process group) while batches are sending, start another, resume,
    reconcile against the MTA's log: every member ends with exactly one message.

    Rows recorded as sent are never sent again; a row whose message may have been accepted in
    the instant before the kill (its end of DATA written, the 250 not yet recorded) is in
    doubt, not resent: at most one per killed connection. The mail log then says which of
    those the server accepted; only the others are sent.
    """
    from lifecycle.core.db import session
    from models.notices import NoticeRecipient

    members = 300
    concurrency = 2
    sink = SmtpSink(delay=0.01).start()
    try:
        set_env(
            primary_env, monkeypatch, LIFECYCLE_SMTP_URL=sink.url,
            LIFECYCLE_NOTICE_BATCH_SIZE="40",
        )  # fmt: skip
        eng = create_demo_schema()
        add_members(eng, members)
        body = _body_file(tmp_path)
        first = start_worker(primary_env, queues=["notify"], concurrency=concurrency)
        r = _policy(primary_env, body)
        assert r.returncode == 0, r.stderr
        sink.wait_count(60, timeout=60)
        first.kill()
        at_kill = len(sink.messages)
        assert at_kill < members, "the fan-out finished before the kill; nothing was tested"
        start_worker(primary_env, queues=["notify"], concurrency=concurrency)
        # The operator (or beat's resume job) runs the same notice again.
        r = _policy(primary_env, body, "--wait", "--timeout", "180")
        with session("primary") as s:
            states = Counter(s.scalars(select(NoticeRecipient.state)))
            doubtful = set(
                s.scalars(
                    select(NoticeRecipient.member_id).where(NoticeRecipient.state == "in_doubt")
                )
            )
        assert states["sent"] + states["in_doubt"] == members, states
        assert len(doubtful) <= concurrency, f"{len(doubtful)} in doubt, {concurrency} killed"
        if doubtful:
            assert r.returncode == 1 and f"{len(doubtful)} in doubt" in r.stdout, r.stdout
            assert "lifecycle notice reconcile 1 --mail-log" in r.stdout
        else:
            assert r.returncode == 0, r.stderr
        # Nobody got a second copy, in doubt or not.
        per = sink.per_recipient()
        assert max(per.values()) == 1, [a for a, n in per.items() if n > 1]
        assert len(per) == members - len(
            [m for m in doubtful if f"member{m}@example.test" not in per]
        )
        log = sink.write_mail_log(tmp_path / "maillog")
        r = primary_env.run(
            "notice", "reconcile", "1", "--mail-log", str(log), "--wait", "--timeout", "120"
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{len(doubtful)} in doubt" in r.stdout or not doubtful
        # Raw messages per recipient, not distinct Message-IDs: exactly one each.
        expected = Counter({f"member{i}@example.test": 1 for i in range(1, members + 1)})
        assert sink.per_recipient() == expected
        with session("primary") as s:
            states = Counter(s.scalars(select(NoticeRecipient.state)))
        assert states == Counter({"sent": members})
    finally:
        sink.stop()


class _HangUpServer:
    """A minimal SMTP server that hangs up at a chosen point: right after reading the end of
    DATA (without answering it), or on RCPT."""

    def __init__(self, at: str) -> None:
        import socket
        import threading

        self.at = at
        self.got_end_of_data = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as f:
            conn.sendall(b"220 hangup ESMTP\r\n")
            while line := f.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 hangup\r\n")
                elif verb == b"RCPT" and self.at == "rcpt":
                    return
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    conn.sendall(b"250 OK\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while (data := f.readline()) not in (b".\r\n", b""):
                        pass
                    self.got_end_of_data = data == b".\r\n"
                    return  # accepted or not: the client will never know

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_a_failing_before_commit_sends_nothing(smtp_sink: SmtpSink) -> None:
    """The intent hook runs after the body and before the end of DATA; if it raises, the
    connection is dropped unterminated and the server keeps nothing."""
    from lifecycle.channels.mailer import Mailer, MessageBuilder, parse_smtp_url

    b = MessageBuilder("privacy@maumteo.example", "안내", "본문")
    seen_at_commit: list[int] = []

    def journal_down() -> None:
        seen_at_commit.append(len(smtp_sink.messages))
        raise ConnectionError("journal unreachable")

    def recorded() -> None:
        seen_at_commit.append(len(smtp_sink.messages))

    with Mailer(parse_smtp_url(smtp_sink.url)) as m:
        r1 = m.send(
            "privacy@maumteo.example", "m1@example.test",
            b.build("m1@example.test", "notice-1-1@maumteo.example"), before_commit=journal_down,
        )  # fmt: skip
        r2 = m.send(
            "privacy@maumteo.example", "m2@example.test",
            b.build("m2@example.test", "notice-1-2@maumteo.example"), before_commit=recorded,
        )  # fmt: skip
        assert m.connections == 2  # the first session was dropped mid-DATA
    assert (r1.status, r1.error_class) == ("retry", "ConnectionError")
    assert r2.status == "sent"
    # The dropped session must never surface as a message: a window, as there is no event.
    time.sleep(0.5)
    assert [x.rcpt for x in smtp_sink.messages] == ["m2@example.test"]
    # Both hooks ran before the server had anything: the end of DATA was not yet written.
    assert seen_at_commit == [0, 0]

    # Lines starting with "." are dot-stuffed by hand now that smtplib's data() is not used.
    raw = b"Subject: x\r\nMessage-ID: <d@x>\r\n\r\n.one\r\n..two\r\n.\r\nend"
    with Mailer(parse_smtp_url(smtp_sink.url)) as m:
        assert m.send("privacy@maumteo.example", "m3@example.test", raw, recorded).status == "sent"
    smtp_sink.wait_count(2, timeout=10)
    assert smtp_sink.messages[1].raw.endswith(b"\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n")


@pytest.mark.integration  # starts its own SMTP servers that hang up
def test_a_session_lost_after_the_end_of_data_is_unknown_not_retry() -> None:
    from lifecycle.channels.mailer import Mailer, MessageBuilder, parse_smtp_url

    b = MessageBuilder("privacy@maumteo.example", "안내", "본문")
    raw = b.build("m1@example.test", "notice-1-1@maumteo.example")
    after = _HangUpServer("end_of_data")
    try:
        with Mailer(parse_smtp_url(f"smtp://127.0.0.1:{after.port}")) as m:
            r = m.send(
                "privacy@maumteo.example", "m1@example.test", raw, before_commit=lambda: None
            )
        assert after.got_end_of_data
        assert r.status == "unknown" and r.error_class == "SMTPServerDisconnected"
    finally:
        after.close()
    before = _HangUpServer("rcpt")
    try:
        with Mailer(parse_smtp_url(f"smtp://127.0.0.1:{before.port}")) as m:
            r = m.send(
                "privacy@maumteo.example", "m1@example.test", raw, before_commit=lambda: None
            )
        assert r.status == "retry"  # lost before DATA: certainly not accepted
    finally:
        before.close()


def _states() -> dict[int, str]:
    from lifecycle.core.db import session
    from models.notices import NoticeRecipient

    with session("primary") as s:
        return dict(s.execute(select(NoticeRecipient.member_id, NoticeRecipient.state)).all())


def _set_state(state: str, *member_ids: int) -> None:
    from lifecycle.core.db import session
    from models.notices import NoticeRecipient

    with session("primary") as s:
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.member_id.in_(member_ids))
            .values(state=state)
        )


def test_the_intent_is_recorded_before_the_end_of_data(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    """When the server reads the end of DATA, the row is already in the journal's in-flight
    set, and the set is empty again once the batch is done."""
    import redis

    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from models.notices import NoticeRecipient

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 5)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    with session("primary") as s:
        row_of = dict(s.execute(select(NoticeRecipient.member_id, NoticeRecipient.id)).all())
    client = redis.Redis.from_url(primary_env.vars["LIFECYCLE_BROKER_URL"])
    key = f"lifecycle:notice:{nid}:inflight"
    in_flight_at_data: list[bool] = []
    handler = smtp_sink.controller.handler
    original = handler.handle_DATA

    async def check(server, session_, envelope):  # type: ignore[no-untyped-def]
        member = int(envelope.rcpt_tos[0].removeprefix("member").split("@")[0])
        in_flight_at_data.append(bool(client.sismember(key, row_of[member])))
        return await original(server, session_, envelope)

    handler.handle_DATA = check
    result = notice_sending.send_batch(nid, 1, 5)
    assert result.sent == 5 and in_flight_at_data == [True] * 5
    assert client.exists(key, f"lifecycle:notice:{nid}:sent") == 0
    assert "member" not in redis_dump_text(primary_env)


def redis_dump_text(env: LifecycleEnv) -> str:
    return redis_dump_repr(env.vars["LIFECYCLE_BROKER_URL"])


def test_reconcile_settles_in_doubt_rows_and_refuses_bad_input(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 6)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    assert notice_sending.send_batch(nid, 1, 6).sent == 6
    # As after two killed sessions: the server accepted 2 and 3 (unrecorded), never got 1,
    # and dropped 4 before its end of DATA (Postfix still logged its Message-ID).
    _set_state("in_doubt", 1, 2, 3, 4)
    with smtp_sink.lock:
        smtp_sink.messages[:] = [
            m for m in smtp_sink.messages if m.rcpt not in ("member1@example.test",
                                                            "member4@example.test")
        ]  # fmt: skip
    from lifecycle.notices.identity import message_id_domain

    log = smtp_sink.write_mail_log(
        tmp_path / "maillog", aborted=(f"notice-{nid}-4@{message_id_domain()}",)
    )
    # Another install (or this site's previous, re-created database) shares the MTA log: its
    # messages carry the same notice and member numbers, and must not settle our rows.
    with log.open("a", encoding="utf-8") as f:
        f.write(
            f"Jan  1 09:00:09 mx postfix/qmgr[103]: 7F00000001: from=<x@maumteo.example>\n"
            f"Jan  1 09:00:09 mx postfix/cleanup[202]: 7F00000001: "
            f"message-id=<notice-{nid}-1@0123456789abcdef.maumteo.example>\n"
        )
    notices.refresh_counts(nid)
    before = _states()
    assert Counter(before.values()) == Counter({"in_doubt": 4, "sent": 2})

    # Status and --wait show the rows as needing attention, with the command that settles them.
    st = primary_env.run("status", "--json")
    import json

    doubt = json.loads(st.stdout)["notices"]
    assert doubt["in_doubt_total"] == 4
    assert doubt["in_doubt"] == [
        {"notice_id": nid, "kind": "policy", "in_doubt": 4,
         "resolve": f"lifecycle notice reconcile {nid} --mail-log FILE"}
    ]  # fmt: skip
    text_ = primary_env.run("status").stdout
    assert "Notices IN DOUBT" in text_ and f"lifecycle notice reconcile {nid}" in text_
    # Complete-with-attention, not stuck: neither beat's resume nor a re-run resends them.
    assert nid not in notices.stale_notices() and notices.resume_ranges(nid) == []
    from lifecycle.cli.notice import NoticeFailed, _wait_notice

    with pytest.raises(NoticeFailed, match="4 notice\\(s\\) in doubt"):
        _wait_notice(nid, 5, poll=0.1)

    missing = tmp_path / "nope.log"
    cases = [
        (["999", "--assume-delivered"], "notice 999 does not exist"),
        ([str(nid)], "exactly one of"),
        ([str(nid), "--assume-delivered", "--resend"], "exactly one of"),
        ([str(nid), "--mail-log", str(log), "--resend"], "exactly one of"),
        ([str(nid), "--mail-log", str(missing)], "does not exist"),
        ([str(nid), "--mail-log", str(tmp_path)], "is a directory"),
        (["x", "--resend"], "notice_id"),
    ]
    for args, fragment in cases:
        r = primary_env.run("notice", "reconcile", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, r.stderr)
    assert _states() == before
    assert len(smtp_sink.messages) == 4

    start_worker(primary_env, queues=["notify"])
    r = primary_env.run(
        "notice", "reconcile", str(nid), "--mail-log", str(log), "--wait", "--timeout", "60"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 in doubt: 2 marked sent, 2 to be sent again" in r.stdout
    assert "6 sent, 0 not sent, 0 failed of 6" in r.stdout
    per = smtp_sink.per_recipient()
    assert per == Counter({f"member{i}@example.test": 1 for i in range(1, 7)})
    assert set(_states().values()) == {"sent"}
    again = primary_env.run("notice", "reconcile", str(nid), "--resend")
    assert again.returncode == 0 and "nothing in doubt" in again.stdout

    # Without a log, the operator decides: delivered...
    _set_state("in_doubt", 5)
    r = primary_env.run("notice", "reconcile", str(nid), "--assume-delivered", "--wait")
    assert r.returncode == 0 and "1 in doubt: 1 marked sent, 0 to be sent again" in r.stdout
    # ...or sent again (a member whose copy was accepted gets a second one).
    _set_state("in_doubt", 6)
    r = primary_env.run("notice", "reconcile", str(nid), "--resend", "--wait", "--timeout", "60")
    assert r.returncode == 0 and "1 in doubt: 0 marked sent, 1 to be sent again" in r.stdout
    assert smtp_sink.per_recipient()["member5@example.test"] == 1
    assert smtp_sink.per_recipient()["member6@example.test"] == 2
    assert set(_states().values()) == {"sent"}
    from lifecycle.core.db import session
    from models.notices import Notice

    with session("primary") as s:
        n = s.get(Notice, nid)
        assert (n.state, n.sent, n.total) == ("completed", 6, 6)


def test_mail_log_parsing_needs_postfix_to_have_queued_the_message() -> None:
    from lifecycle.notices.reconcile import accepted_in_mail_log

    d = "a1b2c3d4e5f60718.maumteo.example"
    lines = [
        f"Jan 1 mx postfix/cleanup[2]: AB12: message-id=<notice-7-1@{d}>",
        "Jan 1 mx postfix/qmgr[3]: AB12: from=<privacy@maumteo.example>, size=9, nrcpt=1",
        f"Jan 1 mx postfix/cleanup[2]: CD34: message-id=<notice-7-2@{d}>",
        "Jan 1 mx postfix/smtpd[1]: lost connection after DATA from localhost[127.0.0.1]",
        f"2026-01-01 exim: 1abc <= privacy@maumteo.example id=notice-7-3@{d}",
        f"Jan 1 mx postfix/cleanup[2]: EF56: message-id=<notice-8-4@{d}>",
        "Jan 1 mx postfix/qmgr[3]: EF56: from=<privacy@maumteo.example>, size=9, nrcpt=1",
        f"unrelated: xnotice-7-5@{d} notice-70-6@{d}",
        # Other installs' Message-IDs (another label, or none): the domain must be ours.
        "2026-01-01 exim: 1abd <= x@maumteo.example id=notice-7-8@maumteo.example",
        "2026-01-01 exim: 1abe <= x@maumteo.example id=notice-7-9@ffffffffffffffff.maumteo.example",
        f"2026-01-01 exim: 1abf <= x@maumteo.example id=notice-7-10@x{d}",
    ]
    assert accepted_in_mail_log(7, [ln.encode() for ln in lines], "a1b2c3d4e5f60718") == {1, 3}


def test_embedded_mode_a_row_left_sending_is_in_doubt_not_resent(
    embedded_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    """Without Redis the intent is the row's ``sending`` state, written before the end of
    DATA; a batch that finds a row still ``sending`` knows its owner died mid-send."""
    import sqlite3

    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending

    env = embedded_env
    assert env.run("db", "upgrade").returncode == 0
    set_env(env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 5)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    db_file = eng.url.database
    state_at_data: list[str] = []
    handler = smtp_sink.controller.handler
    original = handler.handle_DATA

    async def check(server, session_, envelope):  # type: ignore[no-untyped-def]
        member = int(envelope.rcpt_tos[0].removeprefix("member").split("@")[0])
        with contextlib.closing(sqlite3.connect(db_file)) as c:
            (st,) = c.execute(
                "SELECT state FROM lifecycle_notice_recipients WHERE member_id = ?", (member,)
            ).fetchone()
        state_at_data.append(st)
        return await original(server, session_, envelope)

    handler.handle_DATA = check
    _set_state("sending", 3)  # a batch was killed with member 3's end of DATA maybe written
    result = notice_sending.send_batch(nid, 1, 5)
    assert (result.sent, result.in_doubt) == (4, 1)
    assert state_at_data == ["sending"] * 4
    assert set(smtp_sink.per_recipient()) == {f"member{i}@example.test" for i in (1, 2, 4, 5)}
    assert _states() == {1: "sent", 2: "sent", 3: "in_doubt", 4: "sent", 5: "sent"}
    # Complete with attention: nothing left to send, nothing resumed.
    assert notices.progress(nid)["state"] == "completed"
    assert notices.pending_ranges(nid) == [] and notices.stale_notices() == []
    assert notice_sending.send_batch(nid, 1, 5).sent == 0
    # The operator chose to resend (no mail log in this setup).
    from lifecycle.notices.reconcile import reconcile

    r = reconcile(nid, resend=True, enqueue=lambda n, a, b: notice_sending.send_batch(n, a, b))
    assert (r.in_doubt, r.resend, r.batches) == (1, 1, 1)
    assert smtp_sink.per_recipient() == Counter({f"member{i}@example.test": 1 for i in range(1, 6)})
    assert set(_states().values()) == {"sent"}


def test_overlapping_batches_never_send_a_row_twice(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    """Two batches over overlapping ranges at once (a redelivered message next to a resume)."""
    import threading

    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    smtp_sink.delay = 0.002
    eng = create_demo_schema()
    add_members(eng, 120)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    results: list[notice_sending.BatchResult] = []
    threads = [
        threading.Thread(
            target=lambda a=a, b=b: results.append(notice_sending.send_batch(nid, a, b))
        )
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
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink,
    start_worker,
) -> None:  # fmt: skip
    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from models.notices import NoticeRecipient

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
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
    worker = start_worker(primary_env, queues=["notify"])
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

    def batches_done() -> int:
        return sum(
            "lifecycle.notice.send_batch[" in line and " succeeded in " in line
            for line in worker.output().splitlines()
        )

    # The worker has run the second call's batch too: had it sent again, the sink would have it.
    wait_until(lambda: batches_done() >= 2, 30, "the second batch run")
    assert len(smtp_sink.messages) == 1


def test_global_rate_limit_spaces_sends_across_workers(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    """Two worker processes, 4 batches, one shared limit of 10/s: 30 messages need ~3 s."""
    set_env(
        primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url,
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
    start_worker(primary_env, queues=["notify"], concurrency=2)
    r = _policy(primary_env, _body_file(tmp_path), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert len(stamps) == 30
    # 30 sends at 10/s: 29 intervals of 0.1 s whichever process sends (some slack for jitter).
    assert stamps[-1] - stamps[0] >= 2.9 * 0.9


def test_dormancy_advance_notice_only_when_enabled(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from lifecycle.datamap.member_table import clear_cache
    from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
    from lifecycle.notices import members as notices
    from models.notices import Notice, NoticeRecipient

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
    set_env(primary_env, monkeypatch, LIFECYCLE_DATA_MAP=str(enabled))
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
    assert (
        env.run(
            "provide", "3", "--to", "p", "--fields", "mobile", "--basis", "legal_request"
        ).returncode
        == 0
    )
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
    primary_env: LifecycleEnv,
) -> None:
    """The withdrawal job releases its notice itself; if it died in between, beat does."""
    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from lifecycle.requests.outbox import submit
    from models.notices import NoticeRecipient
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


def test_a_groups_member_notices_go_in_one_task_each_with_its_own_outcome(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
) -> None:
    """A withdrawal group's completion notices: one task sends them all, each notice its own
    row and state; one the server refuses fails alone, one it defers goes on as its own
    batch (its own retries, in the worker log); the same task again sends nothing twice."""
    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from models.notices import Notice, NoticeRecipient

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 6)
    members = list(range(1, 7))
    with session("primary") as s:
        nids = [notices.capture_withdrawal_notice(s, m, request_id=80 + m) for m in members]
    for m, nid in zip(members, nids, strict=True):
        assert (
            notices.prepare_member_notice("withdrawal_completed", m, {"request_id": 80 + m}) == nid
        )
    smtp_sink.refuse.add("member2@example.test")
    smtp_sink.defer.add("member3@example.test")
    worker = start_worker(primary_env, queues=["notify"])
    notices.enqueue_each(nids, members)

    def states() -> dict[int, str]:
        with session("primary") as s:
            return dict(s.execute(select(NoticeRecipient.member_id, NoticeRecipient.state)).all())

    def done(n: int) -> bool:
        lines = worker.output().splitlines()
        return sum("lifecycle.notice.send_each[" in x and " succeeded in " in x for x in lines) >= n

    wait_until(lambda: done(1), 60, "the group's notice task")
    assert states() == {1: "sent", 2: "failed", 3: "pending", 4: "sent", 5: "sent", 6: "sent"}
    assert sorted(smtp_sink.per_recipient()) == [f"member{m}@example.test" for m in (1, 4, 5, 6)]
    # The deferred one goes on alone, as its own batch task (due after the first retry's wait).
    assert "lifecycle.notice.send_batch[" in worker.output()
    assert "member3@example.test" not in worker.output()
    with session("primary") as s:
        own = dict(s.execute(select(Notice.id, Notice.state).where(Notice.id.in_(nids))).all())
    # Each notice is completed on its own totals; the deferred one stays open.
    assert [own[n] == "completed" for n in nids] == [True, True, False, True, True, True]
    notices.enqueue_each(nids, members)
    wait_until(lambda: done(2), 60, "the same task again")
    assert len(smtp_sink.messages) == 4
    assert states()[3] == "pending"


@pytest.mark.parametrize("journal", ["redis", "database"])
def test_a_groups_pass_sends_each_notice_once_whatever_a_dead_pass_or_a_live_batch_left(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    journal: str,
    tmp_path: Path,
) -> None:
    """The group's one sending pass keeps each notice's exactly-once guarantee: a row a dead
    pass left ``sending`` is in doubt, one it recorded as sent in the journal is marked sent,
    neither is sent again; a notice whose claim a live batch holds is that batch's (busy, not
    sent, not handed on); every notice gets its own row state and its own totals."""
    from lifecycle.core.db import engine, session
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from lifecycle.notices.journal import Journal
    from models.notices import Notice, NoticeRecipient

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    if journal == "database":
        set_env(primary_env, monkeypatch, LIFECYCLE_BROKER_URL=f"filesystem://{tmp_path / 'b'}")
    eng = create_demo_schema()
    add_members(eng, 6)
    members = list(range(1, 7))
    with session("primary") as s:
        nids = [notices.capture_withdrawal_notice(s, m, request_id=90 + m) for m in members]
    for m in members:
        notices.prepare_member_notice("withdrawal_completed", m, {"request_id": 90 + m})
    with session("primary") as s:
        row_of = dict(s.execute(select(NoticeRecipient.member_id, NoticeRecipient.id)).all())
        # Member 1: a dead pass had made its intent durable (no journal: the row's state).
        s.execute(update(NoticeRecipient).where(NoticeRecipient.member_id == 1).values(
            state="sending"))  # fmt: skip
    if journal == "redis":
        # Member 2: a dead pass had its 250 recorded in the journal, not yet in the database.
        j = Journal(primary_env.vars["LIFECYCLE_BROKER_URL"], nids[1])
        j.add(row_of[2])
        j.close()
    with (
        engine("primary").connect().execution_options(isolation_level="AUTOCOMMIT") as other,
        notice_sending._Claims(other, nids[2]) as live,
    ):
        live.claim([(row_of[3], 3, None, "pending")])
        first = notice_sending.send_group(nids, members)
    got = {nid: r for nid, r in first.results.items()}
    assert got[nids[0]].in_doubt == 1 and got[nids[0]].sent == 0
    assert got[nids[2]].busy == 1 and got[nids[2]].sent == 0
    assert first.alone == []
    states = _states()
    assert states[1] == "in_doubt" and states[3] == "pending"
    assert {states[m] for m in (2, 4, 5, 6)} == {"sent"}
    sent_to = {m for m in (2, 4, 5, 6) if journal == "database" or m != 2}
    assert smtp_sink.per_recipient() == Counter({f"member{m}@example.test": 1 for m in sent_to})
    if journal == "redis":
        assert got[nids[1]].recovered == 1 and got[nids[1]].sent == 0
    # The live batch let go without sending: the next pass sends member 3, and nothing twice.
    again = notice_sending.send_group(nids, members)
    assert again.sent == 1 and _states()[3] == "sent"
    assert notice_sending.send_group(nids, members).sent == 0
    assert smtp_sink.per_recipient() == Counter(
        {f"member{m}@example.test": 1 for m in sent_to | {3}}
    )
    with session("primary") as s:
        own = {n.id: (n.state, n.sent, n.total) for n in s.scalars(select(Notice))}
    assert {nid: own[nid] for nid in nids[2:]} == {nid: ("completed", 1, 1) for nid in nids[2:]}
    assert own[nids[0]] == ("completed", 0, 1)  # in doubt: listed by `lifecycle status`


def test_a_groups_pass_without_a_mail_server_keeps_each_address_for_later(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mail server: the group's rows are recorded ``not_sent`` (no channel) with their
    captured addresses kept, so they go out once one is configured, as a batch leaves them."""
    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from models.notices import NoticeRecipient

    monkeypatch.delenv("LIFECYCLE_SMTP_URL", raising=False)
    eng = create_demo_schema()
    add_members(eng, 3)
    with session("primary") as s:
        nids = [notices.capture_withdrawal_notice(s, m, request_id=70 + m) for m in (1, 2, 3)]
    for m in (1, 2, 3):
        notices.prepare_member_notice("withdrawal_completed", m, {"request_id": 70 + m})
    out = notice_sending.send_group(nids, [1, 2, 3])
    assert [r.not_sent for r in out.results.values()] == [1, 1, 1] and out.alone == []
    with session("primary") as s:
        rows = s.execute(
            select(NoticeRecipient.state, NoticeRecipient.error_class, NoticeRecipient.address)
        ).all()
    assert sorted((r[0], r[1]) for r in rows) == [("not_sent", notices.NO_CHANNEL)] * 3
    assert all(r[2] for r in rows)


def test_a_restricted_member_gets_the_policy_notice_only_after_the_restriction_lifts(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
) -> None:
    """처리정지: while a correction is open (the address itself may be under correction) the
    member is not written to; the row waits, and goes out once, after the lift."""
    from lifecycle.core.db import session
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from lifecycle.requests.use_block import lift, restrict

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    add_members(eng, 5)
    with session("primary") as s:
        restrict(s, 3, "correction", None)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    first = notice_sending.send_batch(nid, 1, 5)
    assert (first.sent, first.restricted, first.left) == (4, 1, 1)
    assert "member3@example.test" not in smtp_sink.per_recipient()
    assert _states()[3] == "pending" and notices.progress(nid)["state"] != "completed"
    with session("primary") as s:
        lift(s, 3)
    again = notice_sending.send_batch(nid, 1, 5)
    assert (again.sent, again.restricted) == (1, 0)
    assert smtp_sink.per_recipient() == Counter({f"member{i}@example.test": 1 for i in range(1, 6)})
    assert notices.progress(nid)["state"] == "completed"


@pytest.mark.parametrize("journal", ["redis", "database"])
def test_a_batch_sends_and_marks_every_row_on_either_primary(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    journal: str,
    tmp_path: Path,
) -> None:
    """A batch on MariaDB once died on a PRAGMA meant for SQLite before sending anything (and
    was re-sent every 5 minutes). Without Redis the marks go straight to the database: the
    intent (``sending``) must be there when the server reads the end of DATA, on every server."""
    from lifecycle.core.db import engine, session
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from models.notices import NoticeRecipient

    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    if journal == "database":
        # The filesystem broker (no Redis): no journal, each mark is a statement of its own.
        broker = f"filesystem://{tmp_path / 'broker'}"
        set_env(primary_env, monkeypatch, LIFECYCLE_BROKER_URL=broker)
        assert notice_sending.journal_for(1) is None
    eng = create_demo_schema()
    add_members(eng, 6)
    nid, _ = notices.create_policy_notice("9", "t", "b", datetime.now(UTC).date())
    notices.fanout(nid)
    state_at_data: list[str] = []
    handler = smtp_sink.controller.handler
    original = handler.handle_DATA

    async def check(server, session_, envelope):  # type: ignore[no-untyped-def]
        member = int(envelope.rcpt_tos[0].removeprefix("member").split("@")[0])
        with engine("primary").connect() as c:
            state_at_data.append(
                c.execute(
                    select(NoticeRecipient.state).where(NoticeRecipient.member_id == member)
                ).scalar_one()
            )
        return await original(server, session_, envelope)

    handler.handle_DATA = check
    result = notice_sending.send_batch(nid, 1, 6)
    assert (result.sent, result.left, result.in_doubt, result.not_sent) == (6, 0, 0, 0)
    assert smtp_sink.per_recipient() == Counter({f"member{i}@example.test": 1 for i in range(1, 7)})
    # With the journal the database is marked once per chunk; without it, before each end of DATA.
    assert state_at_data == ["pending" if journal == "redis" else "sending"] * 6
    with session("primary") as s:
        rows = s.execute(select(NoticeRecipient.state, NoticeRecipient.sent_at)).all()
    assert {r[0] for r in rows} == {"sent"} and all(r[1] is not None for r in rows)
    assert notices.progress(nid)["state"] == "completed"
    assert notice_sending.send_batch(nid, 1, 6).sent == 0
    assert len(smtp_sink.messages) == 6


def test_a_captured_address_is_destroyed_once_sent_or_after_the_limit_with_a_ledger_entry(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, smtp_sink: SmtpSink
) -> None:
    """A withdrawn member's address waits in the notice row only while the notice can still go
    out: sent → gone at once; unsendable (no mail server) → gone at the nightly job after
    LIFECYCLE_NOTICE_ADDRESS_DAYS. Every destruction gets a ledger entry, never the value;
    `lifecycle status` shows the addresses still kept; a re-run (or one after a crash between
    the ledger and the rows) records nothing twice."""
    import json

    from lifecycle.core.db import session
    from lifecycle.core.timeutil import as_utc
    from lifecycle.notices import members as notices
    from lifecycle.notices import sending as notice_sending
    from lifecycle.notices.addresses import waiting_addresses
    from models.archive import LedgerEntry
    from models.notices import NoticeRecipient
    from tasks.notice import dormancy_advance

    eng = create_demo_schema()
    add_members(eng, 4)
    with session("primary") as s:
        nids = {m: notices.capture_withdrawal_notice(s, m, request_id=70 + m) for m in range(1, 5)}
    with eng.begin() as conn:  # three withdrawals destroyed the member rows; 4's is on hold
        conn.execute(text("DELETE FROM members WHERE id < 4"))
    # No mail server for members 1 and 2: recorded not sent, their addresses kept for later.
    for m in (1, 2):
        notices.prepare_member_notice("withdrawal_completed", m, {"request_id": 70 + m})
        assert notice_sending.send_batch(nids[m], m, m).not_sent == 1
    set_env(primary_env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    notices.prepare_member_notice("withdrawal_completed", 3, {"request_id": 73})
    assert notice_sending.send_batch(nids[3], 3, 3).sent == 1
    assert [m.rcpt for m in smtp_sink.messages] == ["member3@example.test"]

    def rows() -> dict[int, tuple]:  # type: ignore[type-arg]
        with session("primary") as s:
            return {
                r[0]: tuple(r[1:])
                for r in s.execute(
                    select(
                        NoticeRecipient.member_id,
                        NoticeRecipient.state,
                        NoticeRecipient.error_class,
                        NoticeRecipient.address,
                        NoticeRecipient.address_captured_at.is_not(None),
                    )
                )
            }

    assert rows() == {
        1: ("not_sent", "SmtpNotConfigured", "member1@example.test", True),
        2: ("not_sent", "SmtpNotConfigured", "member2@example.test", True),
        3: ("sent", None, None, True),  # sent: gone at once, its destruction not yet recorded
        4: ("held", None, "member4@example.test", True),  # its withdrawal is still open
    }
    # Member 1's notice became due 6 days ago (past the default 5), member 2's yesterday;
    # member 4's address was captured 10 days ago, but a held row waits for its withdrawal.
    now = datetime.now(UTC)
    with session("primary") as s:
        for m, age in ((1, 6), (2, 1), (4, 10)):
            s.execute(
                update(NoticeRecipient)
                .where(NoticeRecipient.member_id == m)
                .values(address_captured_at=now - timedelta(days=age))
            )
    st = json.loads(primary_env.run("status", "--json").stdout)["notices"]["captured_addresses"]
    assert (st["waiting"], st["unrecorded"], st["destroy_after_days"]) == (3, 1, 5)
    assert 9.9 < st["oldest_days"] < 10.1
    assert "notice addresses kept: 3" in primary_env.run("status").stdout

    # The nightly notice job (beat's notice-dormancy-advance entry).
    out = dormancy_advance.apply().get()
    assert out["addresses"] == {"expired": 1, "recorded": 2, "waiting": 2}
    after = rows()
    assert after == {
        1: ("not_sent", "AddressExpired", None, False),
        2: ("not_sent", "SmtpNotConfigured", "member2@example.test", True),
        3: ("sent", None, None, False),
        4: ("held", None, "member4@example.test", True),
    }

    def entries() -> list[LedgerEntry]:
        with session("archive") as a:
            found = list(
                a.scalars(
                    select(LedgerEntry)
                    .where(LedgerEntry.actor == "lifecycle.notices.addresses")
                    .order_by(LedgerEntry.seq)
                )
            )
            a.expunge_all()
            return found

    got = entries()
    assert [(e.action, e.request_id, e.subjects, e.rows) for e in got] == [
        ("destroy", 71, 1, 1),
        ("destroy", 73, 1, 1),
    ]
    assert [e.details["outcome"] for e in got] == ["expired", "sent"]
    assert all(e.tables == ["lifecycle_notice_recipients"] and e.subject_ref for e in got)
    assert "5일" in got[0].reason and "발송 완료" in got[1].reason
    dumped = json.dumps([[e.reason, e.details, e.dedup_key, e.categories] for e in got])
    assert "@" not in dumped and "member" not in dumped
    # The notice of member 1 is finished (its only row can no longer be sent).
    assert notices.progress(nids[1])["state"] == "completed"

    # Idempotent: again, nothing to do; after a crash between the ledger's commit and the
    # rows' (member 3's row still marked), the entry is not written twice.
    assert dormancy_advance.apply().get()["addresses"] == {
        "expired": 0, "recorded": 0, "waiting": 2,
    }  # fmt: skip
    with session("primary") as s:
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.member_id == 3)
            .values(address_captured_at=now)
        )
    assert dormancy_advance.apply().get()["addresses"]["recorded"] == 0
    assert rows() == after and len(entries()) == 2
    with session("primary") as s:
        st = waiting_addresses(s)
    assert (st["waiting"], st["unrecorded"]) == (2, 0)
    # A mail server now: member 2's notice goes out, and its address is gone with the send.
    notices.requeue_not_sent(nids[2])
    assert notice_sending.send_batch(nids[2], 2, 2).sent == 1
    assert rows()[2] == ("sent", None, None, True)
    assert dormancy_advance.apply().get()["addresses"] == {
        "expired": 0, "recorded": 1, "waiting": 1,
    }  # fmt: skip
    # Member 4's withdrawal completes: the notice is due from now, so its clock starts now.
    notices.prepare_member_notice("withdrawal_completed", 4, {"request_id": 74})
    with session("primary") as s:
        started = s.scalar(
            select(NoticeRecipient.address_captured_at).where(NoticeRecipient.member_id == 4)
        )
    assert abs((as_utc(started) - datetime.now(UTC)).total_seconds()) < 60
    assert dormancy_advance.apply().get()["addresses"]["expired"] == 0
    assert notice_sending.send_batch(nids[4], 4, 4).sent == 1
    assert dormancy_advance.apply().get()["addresses"] == {
        "expired": 0, "recorded": 1, "waiting": 0,
    }  # fmt: skip
    assert [e.request_id for e in entries()] == [71, 73, 72, 74]
    assert "notice addresses kept" not in primary_env.run("status").stdout
