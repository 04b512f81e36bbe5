"""Real servers for the notification tests: an SMTP sink (aiosmtpd) and webhook receivers
(http.server) that verify the Standard Webhooks signature like a real third party would."""

from __future__ import annotations

import asyncio
import email
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, insert, text
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import LifecycleEnv, free_port

# -- SMTP ----------------------------------------------------------------------------------------


@dataclass
class Received:
    rcpt: str
    message_id: str
    subject: str
    body: str
    raw: bytes


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.sink.refuse:
            return "550 5.1.1 no such user"
        if address in self.sink.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_content() if not msg.is_multipart() else ""
        with self.sink.lock:
            for rcpt in envelope.rcpt_tos:
                self.sink.messages.append(
                    Received(
                        rcpt, str(msg["Message-ID"]), str(msg["Subject"]), body, envelope.content
                    )
                )
        return "250 OK"


class SmtpSink:
    """aiosmtpd on a free loopback port; collects every accepted message."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self.refuse: set[str] = set()
        self.defer: set[str] = set()
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(m.rcpt for m in self.messages)

    def distinct_ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self.lock:
            for m in self.messages:
                out.setdefault(m.rcpt, set()).add(m.message_id)
        return out

    def write_mail_log(self, path: Path, aborted: tuple[str, ...] = ()) -> Path:
        """What Postfix would have logged for the accepted messages, as an MTA log.

        Per accepted message, cleanup's ``message-id=<...>`` line and qmgr's ``from=<...>``
        line (queued) under one queue id, with unrelated lines between, as in a real maillog.
        ``aborted`` Message-IDs get only the cleanup line: Postfix logs that while the message
        is still arriving, so a message dropped before the end of DATA has one too.
        """
        with self.lock:
            ids = [m.message_id.strip("<>") for m in self.messages]
        lines = ["Jan  1 09:00:00 mx postfix/master[100]: daemon started -- version 3.8.6"]
        for n, mid in enumerate(ids, start=1):
            qid = f"4F{n:08X}"
            lines += [
                f"Jan  1 09:00:01 mx postfix/smtpd[201]: {qid}: client=localhost[127.0.0.1]",
                f"Jan  1 09:00:01 mx postfix/cleanup[202]: {qid}: message-id=<{mid}>",
                f"Jan  1 09:00:01 mx postfix/qmgr[103]: {qid}: from=<privacy@maumteo.example>, "
                "size=1234, nrcpt=1 (queue active)",
                f"Jan  1 09:00:02 mx postfix/smtp[204]: {qid}: to=<redacted>, "
                "relay=none, delay=0.1, status=sent (250 2.0.0 Ok)",
            ]
        for n, mid in enumerate(aborted, start=1):
            qid = f"5A{n:08X}"
            lines += [
                f"Jan  1 09:00:03 mx postfix/cleanup[202]: {qid}: message-id=<{mid}>",
                "Jan  1 09:00:03 mx postfix/smtpd[201]: lost connection after DATA "
                "(512 bytes) from localhost[127.0.0.1]",
            ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def wait_count(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= n:
                return
            time.sleep(0.05)
        raise TimeoutError(f"SMTP sink got {len(self.messages)} of {n} messages")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


# -- webhooks ------------------------------------------------------------------------------------


@dataclass
class Hit:
    msg_id: str
    verified: bool
    status: int
    payload: Any
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """A third party's endpoint. ``script`` gives the status of each successive request
    (then ``default``); the signature is verified with the shared secret on every request."""

    secret: str
    script: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = None, False
                with receiver._lock:
                    n = len(receiver.hits)
                    status = receiver.script[n] if n < len(receiver.script) else receiver.default
                    if not verified:
                        status = 401
                    receiver.hits.append(
                        Hit(headers.get("webhook-id", ""), verified, status, payload, body, headers)
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/pipa"

    def accepted(self) -> list[Hit]:
        """Requests the receiver processed (verified and answered 2xx)."""
        return [h for h in self.hits if h.verified and 200 <= h.status < 300]

    def unique_accepted(self) -> dict[str, Hit]:
        """What a receiver that dedupes by webhook-id (as the spec asks) acts on."""
        out: dict[str, Hit] = {}
        for h in self.accepted():
            out.setdefault(h.msg_id, h)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., WebhookReceiver]]:
    made: list[WebhookReceiver] = []

    def make(**kw: Any) -> WebhookReceiver:
        from lifecycle.channels.webhooks import generate_secret

        kw.setdefault("secret", generate_secret())
        r = WebhookReceiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- environment and demo data -------------------------------------------------------------------


def set_env(env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Add LIFECYCLE_* settings for the CLI, the workers and this process alike."""
    from workers.app import reconfigure

    for k, v in values.items():
        env.vars[k] = v
        monkeypatch.setenv(k, v)
    reconfigure()


def create_demo_schema() -> Engine:
    from lifecycle.core.db import engine
    from models.demo_site import metadata

    eng = engine("primary")
    metadata.create_all(eng)
    return eng


def add_members(
    eng: Engine, count: int, *, start: int = 1, status: str = "active", **overrides: Any
) -> list[int]:
    from models.demo_site import members

    rows = []
    for i in range(start, start + count):
        row = {
            "id": i,
            "login_id": f"user{i:06d}",
            "password_hash": "argon2$demo",
            "name": f"회원{i}",
            "birth_date": date(1985, 1, 1),
            "sex": "F" if i % 2 else "M",
            "mobile": f"010-0000-{i:04d}",
            "email": f"member{i}@example.test",
            "status": status,
            "joined_at": datetime(2020, 1, 1, tzinfo=UTC),
            "marketing_consent": False,
        }
        row.update(overrides)
        rows.append(row)
    with eng.begin() as conn:
        conn.execute(insert(members), rows)
        if eng.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('members','id'), "
                    "(SELECT max(id) FROM members))"
                )
            )
    return [r["id"] for r in rows]


def table_dump(eng: Engine, prefix: str = "lifecycle_") -> str:
    """Every row of every table starting with ``prefix``, as text (to search for old values)."""
    from sqlalchemy import inspect

    out = []
    with eng.connect() as conn:
        for name in sorted(inspect(eng).get_table_names()):
            if not name.startswith(prefix):
                continue
            for row in conn.execute(text(f'SELECT * FROM "{name}"')):
                out.append(f"{name}: {json.dumps(list(row), default=str, ensure_ascii=False)}")
    return "\n".join(out)


def redis_dump(url: str) -> str:
    """Every key and value in the broker/result Redis, decoded as far as possible."""
    import redis

    r = redis.Redis.from_url(url)
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            val: Any = r.get(key)
        elif kind == "list":
            val = r.lrange(key, 0, -1)
        elif kind == "hash":
            val = r.hgetall(key)
        elif kind == "set":
            val = r.smembers(key)
        elif kind == "zset":
            val = r.zrange(key, 0, -1, withscores=True)
        else:
            val = kind
        out.append(f"{key!r} {val!r}")
    return "\n".join(out)


def env_has(name: str) -> bool:
    return bool(os.environ.get(name))
