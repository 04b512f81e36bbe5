"""Failures and waiting, as an operator sees them: `--wait` says what a request waits for,
retries log their cause at WARNING (class and safe reason, never values), and Flower keeps
that reason instead of ``Exception(<redacted>)``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.helpers import (
    LifecycleEnv,
    WorkerProc,
    add_members,
    create_demo_schema,
    free_port,
    set_env,
    wait_until,
)

NEW_MOBILE = "010-5555-1234"
MEMBER_EMAIL = "member1@example.test"
CLINIC_EMAIL = "privacy@clinic.example"


def _warnings(worker: WorkerProc) -> list[str]:
    out = []
    for line in worker.output().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("level") == "WARNING":
            out.append(str(rec.get("message", "")))
    return out


def _ok(env: LifecycleEnv, *args: str) -> None:
    r = env.run(*args)
    assert r.returncode == 0, (args, r.stderr)


def test_wait_says_what_a_correction_waits_for_and_retries_warn_with_their_cause(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    start_worker,
    tmp_path: Path,
) -> None:
    env = primary_env
    smtp_port = free_port()  # nothing listens: connection refused
    set_env(
        env,
        monkeypatch,
        LIFECYCLE_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        LIFECYCLE_RETRY_SCHEDULE="0,300,300",
    )
    eng = create_demo_schema()
    add_members(eng, 2, email=MEMBER_EMAIL)
    crm = receivers(default=500)
    _ok(env, "recipients", "add", "crm", "--webhook", crm.url, "--secret", crm.secret)
    _ok(env, "recipients", "add", "clinic", "--email", CLINIC_EMAIL)
    _ok(env, "provide", "1", "--to", "crm", "--fields", "mobile", "--basis", "legal_request")
    _ok(env, "provide", "1", "--to", "clinic", "--fields", "mobile", "--basis", "legal_request")
    worker = start_worker(env, queues=["requests", "notify"])

    r = env.run("correct", "1", "--set", f"mobile={NEW_MOBILE}", "--wait", "--timeout", "20")
    assert r.returncode == 1, r.stdout + r.stderr
    # What it waits for, named (not "is a worker running?"), printed while waiting and in the
    # final line.
    assert "is a worker running" not in r.stderr
    assert "waiting for delivery to recipient 'crm' (HTTP 500, attempt 1 of 3, next in" in r.stderr
    assert "recipient 'clinic' (ConnectionRefusedError, attempt 1 of 3" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "still 'notifying' after 20s: waiting for delivery to recipient 'crm'" in last

    # The worker says why each attempt failed at WARNING: class and a safe reason.
    def both() -> list[str]:
        w = _warnings(worker)
        http = [m for m in w if "recipient 'crm'" in m and "HTTP 500" in m]
        smtp = [m for m in w if f"connection refused 127.0.0.1:{smtp_port}" in m]
        return http and smtp and w  # type: ignore[return-value]

    warned = wait_until(both, 30, "retry warnings with their causes")
    assert any("ConnectionRefusedError" in m for m in warned)
    # ... and never the values or addresses it carries.
    log = worker.output()
    for value in (NEW_MOBILE, MEMBER_EMAIL, CLINIC_EMAIL):
        assert value not in log

    # A member notice whose batch cannot reach the server retries with its cause too.
    body = tmp_path / "policy.txt"
    body.write_text("개인정보 처리방침이 변경됩니다.", encoding="utf-8")
    _ok(env, "notice", "policy", "--version", "2.0", "--title", "처리방침 변경",
        "--body-file", str(body), "--effective-date", "2026-12-01")  # fmt: skip
    retry = wait_until(
        lambda: [m for m in _warnings(worker) if "lifecycle.notice.send_batch" in m and
                 "retry in" in m],
        60,
        "the notice batch's retry warning",
    )  # fmt: skip
    assert "JobDeferred" in retry[0] and f"connection refused 127.0.0.1:{smtp_port}" in retry[0]
    assert MEMBER_EMAIL not in worker.output()


def test_wait_names_the_legal_hold_that_stops_a_withdrawal(
    primary_env: LifecycleEnv, start_worker
) -> None:
    env = primary_env
    eng = create_demo_schema()
    add_members(eng, 2)
    until = (date.today() + timedelta(days=30)).isoformat()
    _ok(env, "hold", "add", "--member", "1", "--until", until,
        "--reason", "서울중앙지검 수사협조 요청 2026-123")  # fmt: skip
    start_worker(env, queues=["requests"])
    r = env.run("withdraw", "1", "--wait", "--timeout", "15")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "is a worker running" not in r.stderr
    assert "held by legal hold 1 (until " in r.stderr
    assert "reason: 서울중앙지검 수사협조 요청 2026-123" in r.stderr
    assert "still 'restricted' after 15s: held by legal hold 1" in r.stderr.splitlines()[-1]


def test_embedded_wait_stops_at_once_when_no_smtp_can_send_to_an_email_recipient(
    embedded_env: LifecycleEnv, start_worker
) -> None:
    env = embedded_env
    _ok(env, "db", "upgrade")
    add_members(create_demo_schema(), 1)
    _ok(env, "recipients", "add", "clinic", "--email", CLINIC_EMAIL)
    _ok(env, "provide", "1", "--to", "clinic", "--fields", "mobile", "--basis", "legal_request")
    start_worker(env, queues=["requests", "notify"], concurrency=1)
    r = env.run("correct", "1", "--set", f"mobile={NEW_MOBILE}", "--wait", "--timeout", "300",
                timeout=240)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "cannot complete (notifying): no SMTP configured: email to recipient 'clinic'" in last


def test_flower_keeps_the_class_and_reason_of_retries() -> None:
    """In the Flower process (which imports none of the task modules)."""
    code = (
        "from workers.flower_hardening import redact_exception as r\n"
        "print(r(\"NotDelivered('delivery 3 attempt 2: HTTP 500, not delivered; next attempt"
        " in 300 s')\"))\n"
        "print(r(\"JobDeferred('notice 1 members 1..9: 2 not sent yet (ConnectionRefusedError:"
        " connection refused 127.0.0.1:25)')\"))\n"
        "print(r('None'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith("NotDelivered('delivery 3 attempt 2: HTTP 500")
    assert "connection refused 127.0.0.1:25" in out[1] and out[1].startswith("JobDeferred(")
    assert "<redacted>" not in out[2]
