"""Error reports to a real HTTP endpoint speaking Sentry's envelope protocol, from real workers."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lifecycle.core import error_reports
from tests.helpers import LifecycleEnv, WorkerProc, free_port, wait_until
from tests.jobs import SECRET_EMAIL, SECRET_PHONE


class SentryIngest:
    """Accepts envelopes at /api/<project>/envelope/ and keeps their decoded bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                enc = (self.headers.get("content-encoding") or "").lower()
                if enc == "gzip":
                    raw = gzip.decompress(raw)
                elif enc == "deflate":
                    raw = zlib.decompress(raw)
                elif enc:
                    raise AssertionError(f"unexpected encoding {enc}")
                ingest.bodies.append(raw)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/7"

    def events(self) -> list[dict[str, Any]]:
        out = []
        for body in self.bodies:
            lines = body.split(b"\n")
            for header, item in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    out.append(json.loads(item))
        return out


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    s = SentryIngest()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_task_failures_reach_sentry_without_a_members_data(
    lifecycle_env: LifecycleEnv, start_worker: Callable[..., WorkerProc], ingest: SentryIngest
) -> None:
    from workers.app import app

    start_worker(
        lifecycle_env,
        queues=["testjobs"],
        extra_args=["--include", "tests.jobs"],
        LIFECYCLE_SENTRY_DSN=ingest.dsn,
        LIFECYCLE_SENTRY_ENVIRONMENT="ci",
    )
    sent = {
        name: app.send_task(f"lifecycle.testjobs.{name}", args=[77], queue="testjobs").id
        for name in ("leaky_failure", "db_failure", "safe_failure")
    }
    events = wait_until(lambda: len(ingest.events()) >= 3 and ingest.events(), 90, "3 reports")
    by_task = {e["tags"]["task_id"]: e for e in events}
    assert set(by_task) == set(sent.values())

    leaky = by_task[sent["leaky_failure"]]["exception"]["values"][0]
    assert leaky["type"] == "RedactedError"
    assert leaky["value"].startswith("ValueError (details in worker log, ref=")
    assert by_task[sent["db_failure"]]["exception"]["values"][0]["type"] == "RedactedError"
    safe = by_task[sent["safe_failure"]]
    assert safe["exception"]["values"][0]["value"] == "request 77 refused: member is restricted"
    assert safe["tags"]["task"] == "lifecycle.testjobs.safe_failure"
    assert safe["environment"] == "ci" and safe["release"].startswith("pipa-lifecycle@")
    for e in events:
        assert set(e) <= error_reports._KEYS, set(e) - error_reports._KEYS
        frames = e["exception"]["values"][0]["stacktrace"]["frames"]
        assert frames and all(
            set(f) == {"filename", "function", "lineno", "in_app"} for f in frames
        )
    everything = b"".join(ingest.bodies)
    for secret in (SECRET_EMAIL, SECRET_PHONE, "hong.gildong"):
        assert secret.encode() not in everything


def test_events_not_built_here_are_never_sent() -> None:
    assert error_reports.only_ours({"message": "x", "extra": {"sys.argv": ["a"]}}) is None
    try:
        raise KeyError(SECRET_EMAIL)
    except KeyError as exc:
        event = error_reports.build_event(exc, task="t", task_id="1")
    event["extra"] = {"leak": SECRET_EMAIL}
    kept = error_reports.only_ours(event)
    assert kept is not None and "extra" not in kept
    assert SECRET_EMAIL not in json.dumps(kept)
    assert kept["exception"]["values"][0]["value"].startswith("KeyError (details in worker log")
