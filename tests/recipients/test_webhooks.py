"""Signed webhooks, the retry schedule, SMTP sending and the global rate limit, against real
servers: loopback HTTP receivers that verify signatures, aiosmtpd, Redis."""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from lifecycle.core.errors import SettingsError, UserError
from tests.helpers import (
    LifecycleEnv,
    SmtpSink,
    add_members,
    create_demo_schema,
    free_port,
    set_env,
    wait_error_line,
    wait_until,
)

# -- signing -------------------------------------------------------------------------------------


def test_signature_verifies_with_the_reference_library_and_fails_when_tampered() -> None:
    from standardwebhooks import Webhook, WebhookVerificationError

    from lifecycle.channels.webhooks import encode_body, generate_secret, sign_headers

    secret = generate_secret()
    body = encode_body({"type": "t", "data": {"이름": "값"}})
    headers = sign_headers(secret, "msg_1", body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"type": "t", "data": {"이름": "값"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("값", "갑"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    # The id is part of what is signed: a replay under another id is rejected.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_2"})


@pytest.mark.parametrize(
    ("secret", "fragment"),
    [
        ("abc", "must start with 'whsec_'"),
        ("whsec_!!!notbase64", "not valid base64"),
        ("whsec_c2hvcnQ=", "must decode to 24-64 bytes"),
    ],
)
def test_bad_secrets_are_refused(secret: str, fragment: str) -> None:
    from lifecycle.channels.webhooks import validate_secret

    with pytest.raises(UserError, match=fragment):
        validate_secret(secret)


@pytest.mark.parametrize(
    "url",
    ["ftp://x.example/h", "http://hooks.example.com/x", "https://user:pw@x.example/h", "nonsense"],
)
def test_bad_urls_are_refused(url: str) -> None:
    from lifecycle.channels.webhooks import validate_url

    with pytest.raises(UserError):
        validate_url(url)


def test_https_and_loopback_http_are_accepted() -> None:
    from lifecycle.channels.webhooks import validate_url

    for url in ("https://hooks.example.com/pipa", "http://127.0.0.1:8080/x", "http://localhost/x"):
        assert validate_url(url) == url


# -- one attempt against a real receiver ----------------------------------------------------------


def test_deliver_outcomes_against_a_verifying_receiver(receivers) -> None:
    from lifecycle.channels.webhooks import deliver_webhook

    ok = receivers(default=200)
    out = deliver_webhook(ok.url, ok.secret, "msg_a", {"data": {"x": 1}}, timeout=5)
    assert (out.outcome, out.status_code) == ("delivered", 200)
    assert ok.hits[0].verified and ok.hits[0].msg_id == "msg_a"
    assert ok.hits[0].payload == {"data": {"x": 1}}

    gone = receivers(default=410)
    assert deliver_webhook(gone.url, gone.secret, "m", {}, timeout=5).outcome == "gone"

    broken = receivers(default=503)
    out = deliver_webhook(broken.url, broken.secret, "m", {}, timeout=5)
    assert (out.outcome, out.status_code) == ("retry", 503)

    # Signed with the wrong secret: the receiver refuses (401), which is a retry for us.
    other = receivers(default=200)
    out = deliver_webhook(other.url, ok.secret, "m", {}, timeout=5)
    assert (out.outcome, out.status_code) == ("retry", 401)
    assert not other.hits[0].verified

    slow = receivers(default=200, delay=2.0)
    out = deliver_webhook(slow.url, slow.secret, "m", {}, timeout=0.5)
    assert out.outcome == "retry" and out.status_code is None
    assert out.error_class == "ReadTimeout"

    closed = f"http://127.0.0.1:{free_port()}/nobody"
    out = deliver_webhook(closed, ok.secret, "m", {}, timeout=2)
    assert out.outcome == "retry" and out.error_class == "ConnectError"


# -- retry schedule ------------------------------------------------------------------------------


def test_default_schedule_spans_about_a_day_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.core.settings import reset_settings_cache
    from lifecycle.recipients import retry_schedule as rs

    monkeypatch.delenv("LIFECYCLE_RETRY_SCHEDULE", raising=False)
    reset_settings_cache()
    assert rs.schedule() == rs.DEFAULT_SCHEDULE
    assert 24 * 3600 <= rs.total_span() <= 36 * 3600
    rng = random.Random(7)
    assert rs.delay_before(1, rng) == 0.0
    for n, base in enumerate(rs.DEFAULT_SCHEDULE[1:], start=2):
        d = rs.delay_before(n, rng)
        assert d is not None and base * 0.8 <= d <= base * 1.2
    assert rs.delay_before(len(rs.DEFAULT_SCHEDULE) + 1) is None


def test_schedule_override_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.core.settings import reset_settings_cache
    from lifecycle.recipients import retry_schedule as rs

    monkeypatch.setenv("LIFECYCLE_RETRY_SCHEDULE", "0,1,2")
    reset_settings_cache()
    assert rs.schedule() == (0, 1, 2) and rs.max_attempts() == 3
    for bad in ("a,b", "1,-1", ","):
        with pytest.raises(SettingsError):
            rs.parse_schedule(bad)
    reset_settings_cache()


# -- SMTP ----------------------------------------------------------------------------------------


def test_smtp_urls() -> None:
    from lifecycle.channels.mailer import parse_smtp_url

    # Plain SMTP only to loopback (a local MTA); elsewhere TLS is required (tests/channels).
    c = parse_smtp_url("smtp://localhost")
    assert (c.host, c.port, c.security, c.username) == ("localhost", 25, "plain", None)
    c = parse_smtp_url("smtps://user%40x:p%3Ass@mail.example:465")
    assert (c.security, c.username, c.password, c.port) == ("ssl", "user@x", "p:ss", 465)
    c = parse_smtp_url("smtp+starttls://u:p@mail.example")
    assert (c.security, c.port) == ("starttls", 587)
    for bad in ("http://x", "smtp://", "smtp://host:notaport"):
        with pytest.raises(SettingsError):
            parse_smtp_url(bad)


def test_mailer_reuses_one_connection_and_classifies_refusals(smtp_sink: SmtpSink) -> None:
    from lifecycle.channels.mailer import Mailer, MessageBuilder, parse_smtp_url

    smtp_sink.refuse.add("gone@example.test")
    smtp_sink.defer.add("later@example.test")
    b = MessageBuilder("privacy@maumteo.example", "[마음터] 안내", "안녕하세요.\n본문입니다.")
    with Mailer(parse_smtp_url(smtp_sink.url)) as m:
        results = [
            m.send(
                "privacy@maumteo.example",
                f"m{i}@example.test",
                b.build(f"m{i}@example.test", f"id{i}@x"),
            )
            for i in range(5)
        ]
        refused = m.send("privacy@maumteo.example", "gone@example.test", b.build("g", "g@x"))
        deferred = m.send("privacy@maumteo.example", "later@example.test", b.build("l", "l@x"))
        injected = m.send("privacy@maumteo.example", "a@b.c\r\nBcc: x@y.z", b"x")
        after = m.send("privacy@maumteo.example", "m9@example.test", b.build("m9", "id9@x"))
        assert m.connections == 1
    assert [r.status for r in results] == ["sent"] * 5
    assert (refused.status, refused.code) == ("rejected", 550)
    assert (deferred.status, deferred.code) == ("retry", 451)
    assert injected.status == "rejected" and injected.error_class == "InvalidAddress"
    assert after.status == "sent"
    got = smtp_sink.messages
    assert len(got) == 6
    assert got[0].subject == "[마음터] 안내" and "본문입니다." in got[0].body
    assert got[0].message_id == "<id0@x>"


def test_mailer_reports_an_unreachable_server_as_retry() -> None:
    from lifecycle.channels.mailer import Mailer, parse_smtp_url

    with Mailer(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}")) as m:
        r = m.send("a@b.example", "c@d.example", b"Subject: x\r\n\r\nx")
    assert r.status == "retry" and r.error_class == "ConnectionRefusedError"


# -- global rate limit ---------------------------------------------------------------------------


def _spread(limiters: list, n: int) -> list[float]:
    """Reserve n slots round-robin across limiters (as separate workers would); returns when
    each slot may be used (the clock at the call plus the wait), so a test process that is
    descheduled between two calls on a loaded machine does not shift the schedule it reads."""
    due = []
    for i in range(n):
        asked = time.time()
        due.append(asked + limiters[i % len(limiters)].reserve(1))
    return due


def test_redis_rate_limit_is_shared_by_every_limiter_instance(redis_url: str) -> None:
    from lifecycle.channels.ratelimit import RedisRateLimiter

    a = RedisRateLimiter(redis_url, rate=10, key="test:rl")
    b = RedisRateLimiter(redis_url, rate=10, key="test:rl")
    waits = _spread([a, b], 6)
    # One shared schedule: each reservation lands 0.1 s after the previous one, whoever asks.
    for earlier, later in itertools.pairwise(waits):
        assert later - earlier == pytest.approx(0.1, abs=0.03)


def test_redis_rate_limit_holds_across_threads(redis_url: str) -> None:
    from lifecycle.channels.ratelimit import RedisRateLimiter

    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        lim = RedisRateLimiter(redis_url, rate=20, key="test:rl2")
        for _ in range(8):
            lim.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    # 24 sends at 20/s: the first is free, the other 23 are spaced 50 ms apart.
    assert stamps[-1] - stamps[0] >= 23 / 20 * 0.9


def test_file_rate_limit_for_the_embedded_mode(tmp_path) -> None:
    from lifecycle.channels.ratelimit import FileRateLimiter

    a = FileRateLimiter(tmp_path / "rl", rate=10)
    b = FileRateLimiter(tmp_path / "rl", rate=10)
    waits = _spread([a, b], 5)
    for earlier, later in itertools.pairwise(waits):
        assert later - earlier == pytest.approx(0.1, abs=0.03)


def test_rate_limit_off_by_default(
    lifecycle_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.channels.ratelimit import NoLimit, RedisRateLimiter, notice_limiter

    assert isinstance(notice_limiter(), NoLimit)
    set_env(lifecycle_env, monkeypatch, LIFECYCLE_NOTICE_RATE_PER_SECOND="5")
    assert isinstance(notice_limiter(), RedisRateLimiter)


# -- deliveries through real workers ---------------------------------------------------------------


def _world(env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, receiver, schedule: str) -> None:
    set_env(env, monkeypatch, LIFECYCLE_RETRY_SCHEDULE=schedule)
    eng = create_demo_schema()
    add_members(eng, 3)
    r = env.run(
        "recipients", "add", "partner", "--webhook", receiver.url, "--secret", receiver.secret
    )
    assert r.returncode == 0, r.stderr
    r = env.run(
        "provide", "1", "--to", "partner", "--fields", "mobile,name", "--basis", "legal_request"
    )
    assert r.returncode == 0, r.stderr


def _delivery_task_states(redis_url: str) -> list[tuple[str, str]]:
    """(state, one-line reason) of every lifecycle.notify.deliver result Celery stored:
    what Flower shows for those tasks."""
    import json

    import redis

    client = redis.Redis.from_url(redis_url)
    out = []
    for key in client.scan_iter(match="celery-task-meta-*"):
        meta = json.loads(client.get(key) or b"{}")
        result = meta.get("result")
        if isinstance(result, dict) and "exc_message" in result:
            out.append((meta["status"], " ".join(map(str, result["exc_message"]))))
        elif isinstance(result, dict) and "outcome" in result:
            out.append((meta["status"], str(result["outcome"])))
    return out


def _deliveries() -> list:
    from lifecycle.core.db import session
    from models.recipients import Delivery, DeliveryAttempt

    with session("primary") as s:
        ds = list(s.scalars(select(Delivery).order_by(Delivery.id)))
        atts = list(s.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))
        for x in (*ds, *atts):
            s.expunge(x)
        return [ds, atts]


def test_failing_then_recovering_endpoint_gets_the_message_once(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    start_worker,
) -> None:
    receiver = receivers(script=[503, 500], default=200)
    _world(primary_env, monkeypatch, receiver, "0,1,1,1,1")
    start_worker(primary_env, queues=["requests", "notify"])
    r = primary_env.run(
        "correct", "1", "--set", "mobile=010-7777-1234", "--wait", "--timeout", "90"
    )
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout
    # Three requests, one message: the same webhook-id every time, accepted once.
    assert [h.status for h in receiver.hits] == [503, 500, 200]
    assert len({h.msg_id for h in receiver.hits}) == 1
    assert all(h.verified for h in receiver.hits)
    (hit,) = receiver.accepted()
    assert hit.payload["data"]["fields"] == {"mobile": "010-7777-1234"}
    assert hit.payload["data"]["member_id"] == 1
    ds, atts = _deliveries()
    (d,) = ds
    assert (d.state, d.attempts, d.payload, d.last_status) == ("delivered", 3, None, "200")
    assert [(a.number, a.outcome, a.status_code) for a in atts] == [
        (1, "retry", 503),
        (2, "retry", 500),
        (3, "delivered", 200),
    ]
    # The attempts that did not deliver are RETRY tasks in Flower, with their reason.
    states = _delivery_task_states(primary_env.vars["LIFECYCLE_BROKER_URL"])
    retried = sorted(reason for state, reason in states if state == "RETRY")
    assert len(retried) == 2, states
    assert retried[0].startswith("delivery 1 attempt 1: HTTP 503, not delivered; next attempt in")
    assert retried[1].startswith("delivery 1 attempt 2: HTTP 500, not delivered; next attempt in")
    assert ("SUCCESS", "delivered") in states
    # Delivered is final: another attempt (a duplicate task, or beat) sends nothing.
    from lifecycle.recipients.deliveries import attempt, due_deliveries

    assert attempt(d.id) == "not_due"
    assert due_deliveries() == []
    # attempt() sends in this thread and the receiver records a request before answering it:
    # had it sent anything, the hit would be here already.
    assert len(receiver.hits) == 3


def test_410_disables_the_endpoint_and_replay_after_enable(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    start_worker,
) -> None:
    receiver = receivers(script=[410], default=200)
    _world(primary_env, monkeypatch, receiver, "0,1,1")
    start_worker(primary_env, queues=["requests", "notify"])
    r = primary_env.run("correct", "1", "--set", "name=김정정", "--wait", "--timeout", "60")
    assert r.returncode == 1
    # One line says why it failed, after --wait's progress lines (all about this request).
    assert "needs attention" in wait_error_line(r), r.stderr
    assert all(line.startswith("request 1 (") for line in r.stderr.strip().splitlines()[:-1])
    ds, atts = _deliveries()
    assert ds[0].state == "disabled" and ds[0].payload == {"name": "김정정"}
    assert [a.outcome for a in atts] == ["gone"]
    # A failed task in Flower, with its one-line reason.
    states = _delivery_task_states(primary_env.vars["LIFECYCLE_BROKER_URL"])
    assert (
        "FAILURE",
        f"delivery {ds[0].id} attempt 1: HTTP 410, not delivered: recipient disabled (410 Gone)",
    ) in states, states
    listing = primary_env.run("recipients", "list")
    assert "(disabled)" in listing.stdout
    failing = primary_env.run("deliveries", "list", "--failing")
    assert "disabled" in failing.stdout and "partner" in failing.stdout
    # Replaying to a disabled endpoint is refused until an operator re-enables it.
    refused = primary_env.run("deliveries", "replay", str(ds[0].id))
    assert refused.returncode == 2 and "recipients enable partner" in refused.stderr
    assert primary_env.run("recipients", "enable", "partner").returncode == 0
    ok = primary_env.run("deliveries", "replay", str(ds[0].id))
    assert ok.returncode == 0, ok.stderr

    from lifecycle.core.db import session
    from models.requests import LifecycleRequest

    def done() -> bool:
        with session("primary") as s:
            return s.scalar(select(LifecycleRequest.state)) == "completed"

    wait_until(done, 60, "request completed after replay")
    assert [h.status for h in receiver.hits] == [410, 200]
    ds, _ = _deliveries()
    assert ds[0].state == "delivered" and ds[0].payload is None
    # Two tries in all: the replay started a new round of the schedule, not a new history.
    listed = primary_env.run("deliveries", "list")
    (row,) = [ln.split() for ln in listed.stdout.splitlines()[1:]]
    assert row[0] == str(ds[0].id) and row[3:5] == ["delivered", "2"], listed.stdout
    again = primary_env.run("deliveries", "replay", str(ds[0].id))
    assert again.returncode == 2 and "already delivered" in again.stderr


def test_exhausted_retries_need_attention(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    start_worker,
) -> None:
    receiver = receivers(default=500)
    _world(primary_env, monkeypatch, receiver, "0,1")
    start_worker(primary_env, queues=["requests", "notify"])
    r = primary_env.run(
        "correct", "1", "--set", "mobile=010-5555-0000", "--wait", "--timeout", "60"
    )
    assert r.returncode == 1 and "needs attention" in r.stderr
    ds, _ = _deliveries()
    assert ds[0].state == "failed" and ds[0].attempts == 2
    assert len(receiver.hits) == 2
    from lifecycle.core.db import session
    from lifecycle.recipients.deliveries import failing_deliveries

    with session("primary") as s:
        (f,) = failing_deliveries(s)
    assert f["recipient"] == "partner" and f["state"] == "failed" and f["last_status"] == "500"
    assert "member_id" not in f and "payload" not in f


def test_crash_after_sending_resends_with_the_same_webhook_id(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
) -> None:
    """A worker that dies between the POST and recording the answer leaves an in_flight
    attempt; once its lease runs out the next attempt marks it interrupted and sends again
    with the same id, which a Standard Webhooks receiver drops as a duplicate."""
    from lifecycle.channels.webhooks import deliver_webhook
    from lifecycle.core.db import session
    from lifecycle.recipients import deliveries as delivery
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from models.recipients import Delivery

    receiver = receivers(default=200)
    _world(primary_env, monkeypatch, receiver, "0,1")
    with session("primary") as s:
        rid = submit(s, "correction", 1, {"mobile": "010-3333-4444"})
    run_correction(rid)
    ds, _ = _deliveries()
    d_id = ds[0].id
    # The first attempt: claimed and sent, then the "worker dies" before recording.
    claimed = delivery._claim(d_id, delivery.utcnow(), delivery.timedelta(seconds=600))
    assert not isinstance(claimed, str)
    d, r = claimed
    deliver_webhook(r.endpoint, r.secret, d.message_id, delivery.webhook_payload(d), timeout=5)
    # While the lease runs, nobody else sends it.
    assert delivery.attempt(d_id) == "not_due"
    assert delivery.due_deliveries() == []
    with session("primary") as s:  # the lease runs out
        s.get(Delivery, d_id).next_attempt_at = delivery.utcnow() - delivery.timedelta(seconds=1)
    assert delivery.attempt(d_id) == "delivered"
    ds, atts = _deliveries()
    assert [a.outcome for a in atts] == ["interrupted", "delivered"]
    assert len(receiver.hits) == 2 and len(receiver.unique_accepted()) == 1
    assert ds[0].state == "delivered"


def test_resend_due_finds_what_a_lost_broker_message_left(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    start_worker,
) -> None:
    """Deliveries are scheduled in the database: with every broker message gone (a Redis
    restart without persistence), the beat job finds the due delivery and it is sent."""
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from tasks.notify import resend_due

    receiver = receivers(default=200)
    _world(primary_env, monkeypatch, receiver, "0,1")
    with session("primary") as s:
        rid = submit(s, "correction", 1, {"mobile": "010-2222-9999"})
    # Run the job without a broker hand-off (enqueue callbacks dropped = messages lost).
    run_correction(rid, send=lambda *_msg: None)
    assert receiver.hits == []
    ds, _ = _deliveries()
    with session("primary") as s:  # pretend the lost message was enqueued long ago
        from models.recipients import Delivery

        s.get(Delivery, ds[0].id).enqueued_at = datetime(2020, 1, 1, tzinfo=UTC)
    start_worker(primary_env, queues=["requests", "notify"])
    assert resend_due() == {"enqueued": 1, "ledger": 0}
    wait_until(lambda: receiver.accepted(), 30, "delivery after resend_due")
    assert len(receiver.hits) == 1
