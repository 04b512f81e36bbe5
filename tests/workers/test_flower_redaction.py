"""What Flower is allowed to show of a task (workers/flower_hardening.py), field by field."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workers.flower_hardening import (
    REDACTED,
    format_task,
    redact_args,
    redact_exception,
    redact_fields,
    redact_result,
    redact_traceback,
)


@pytest.mark.parametrize(
    "shown",
    [
        "",
        "request=42",
        "run=7 ids=1001..2000",
        "ids=[5,9,2]",
        "ids=7 ids in 1..50",
        "dry_run=True",
        "member=<redacted>",
        "(42,)",
        "[1, 2, 3]",
        "{'dry_run': False}",
        "()",
    ],
)
def test_id_only_args_are_kept(shown: str) -> None:
    assert redact_args(shown) == shown


@pytest.mark.parametrize(
    "shown",
    [
        "('hong@example.com',)",
        "{'phone': '010-1234-5678'}",
        "phone=010-1234-5678",
        "rrn=900101-1234567",
        "('홍길동', 3)",
        "[{'name': 'Kim Minji'}]",
        "<object at 0x7f>",
        "('truncated...",
    ],
)
def test_anything_else_in_args_is_redacted(shown: str) -> None:
    assert redact_args(shown) == REDACTED


def test_results_keep_numbers_and_short_ids_only() -> None:
    assert redact_result("{'archived': 10, 'failed': 0}") == "{'archived': 10, 'failed': 0}"
    assert redact_result("{'pong': 'ok'}") == "{'pong': 'ok'}"
    assert redact_result("None") == "None"
    assert redact_result("{'archived': 3, 'email': 'a@b.example'}") == (
        "{'archived': 3, 'email': '<redacted>'}"
    )
    assert redact_result("<Member 'Kim'>") == REDACTED
    assert redact_result("{'job': 5, 'skipped': 'unknown job'}") == (
        "{'job': 5, 'skipped': 'unknown job'}"
    )
    assert redact_result("{'job': 5, 'owner': 'Kim Minji'}") == (
        "{'job': 5, 'owner': '<redacted>'}"
    )


def test_exceptions_keep_only_operator_safe_messages() -> None:
    safe = "RedactedError('IntegrityError (details in worker log, ref=1a2b3c4d)')"
    assert redact_exception(safe) == safe
    assert redact_exception("UserError('member id must be a positive integer')").startswith(
        "UserError('member"
    )
    assert redact_exception("SoftTimeLimitExceeded()") == "SoftTimeLimitExceeded()"
    assert redact_exception("ValueError('bad email a@b.example')") == f"ValueError({REDACTED})"
    assert redact_exception("garbage a@b.example") == f"Exception({REDACTED})"


def test_tracebacks_keep_frames_not_messages() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/app/lifecycle/engine/mover.py", line 10, in move\n'
        "    conn.execute(stmt)\n"
        "psycopg.errors.UniqueViolation: duplicate key value\n"
        "DETAIL:  Key (email)=(a@b.example) already exists.\n"
        "    indented (a@b.example) continuation\n"
    )
    out = redact_traceback(tb, "UniqueViolation('duplicate key ... a@b.example')")
    assert "mover.py" in out and "conn.execute(stmt)" in out
    assert "a@b.example" not in out
    assert out.endswith(f"UniqueViolation({REDACTED}) (details in the worker log)")


def test_events_and_ui_tasks_are_redacted_alike() -> None:
    event = {
        "type": "task-failed",
        "args": "('a@b.example',)",
        "kwargs": "{}",
        "exception": "KeyError('a@b.example')",
        "traceback": "Traceback (most recent call last):\nKeyError: 'a@b.example'",
    }
    redacted = redact_fields(dict(event))
    assert "a@b.example" not in repr(redacted)
    task = SimpleNamespace(
        args="('a@b.example',)", kwargs="{}", result=None, exception=None, traceback=None
    )
    shown = format_task(task)
    assert shown.args == REDACTED and shown.kwargs == "{}"
