"""The submit path the website runs (`lifecycle withdraw MEMBER_ID`, the rights' commands, no
--wait) on a PostgreSQL and a MariaDB primary: it imports neither the engine nor Celery (the
relay sends the request) nor other modules it does not use, and still refuses bad input in one
line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import LifecycleEnv, seed_site, site_engine, sql_rows, table_dump

# Runs the console script's entry point in a fresh interpreter, then reports which of the
# heavy modules it imported (on stdout's last line) and exits with the command's own status.
PROBE = """
import json, sys
from lifecycle.cli.main import run

code = 0
try:
    run(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("celery", "kombu", "workers", "tasks")
    or m.startswith(("lifecycle.engine", "lifecycle.rights.withdrawal"))
    # Start-up cost a submit does not need: legal holds (the vault's archive models), the
    # mailer, the ledger (an access-log entry needs only the keystore).
    or m.startswith(("lifecycle.requests.holds", "lifecycle.channels", "lifecycle.vault.ledger"))
)
print(json.dumps(heavy))
sys.exit(code)
"""


def _probe(env: LifecycleEnv, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env.environ(),
        cwd=env.var_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def site(primary_env: LifecycleEnv) -> LifecycleEnv:
    seed_site(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 12)
    return primary_env


def _active(primary: str) -> int:
    return int(sql_rows(primary, "SELECT min(id) FROM members WHERE status = 'active'")[0][0])


def _snapshot(primary: str) -> str:
    eng = site_engine(primary)
    try:
        return table_dump(eng, "members") + "\n" + table_dump(eng, "lifecycle_requests")
    finally:
        eng.dispose()


def test_withdraw_submits_without_the_engine_or_celery(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    mid = _active(primary)
    r, heavy = _probe(site, "withdraw", str(mid))
    assert r.returncode == 0, r.stderr
    assert heavy == [], heavy
    assert f"for member {mid} submitted" in r.stdout
    # Committed for the relay to send; the member is marked withdrawn with it.
    assert sql_rows(
        primary, "SELECT kind, state, requester_kind FROM lifecycle_requests WHERE member_id = :m",
        m=mid,
    ) == [("withdrawal", "received", "member")]  # fmt: skip
    assert sql_rows(primary, "SELECT status FROM members WHERE id = :m", m=mid) == [("withdrawn",)]


def test_withdraw_refuses_bad_input_without_the_engine_and_writes_nothing(
    site: LifecycleEnv,
) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    mid = _active(primary)
    r, _ = _probe(site, "withdraw", str(mid))
    assert r.returncode == 0, r.stderr
    before = _snapshot(primary)
    cases = [
        (["withdraw", "987654"], "unknown member 987654"),
        (["withdraw", "abc"], "MEMBER_ID must be a positive integer"),
        (["withdraw", "0"], "MEMBER_ID must be a positive integer"),
        (["withdraw", str(mid)], "already has withdrawal request"),
        (["withdraw", "1", "--requester", "boss"], "--requester must be"),
    ]
    for args, fragment in cases:
        r, heavy = _probe(site, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lifecycle: error: "), (args, r.stderr)
        assert fragment in lines[0], (args, lines)
        assert heavy == [], (args, heavy)
    assert _snapshot(primary) == before


def test_rights_commands_submit_without_celery(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    mid = _active(primary)
    r, heavy = _probe(site, "suspend", str(mid), "--reason", "분쟁 중")
    assert r.returncode == 0, r.stderr
    # The rights' own checks still read the reflected member table (the engine's context), but
    # nothing that talks to the broker is imported.
    assert not [m for m in heavy if m.split(".")[0] in ("celery", "kombu", "workers", "tasks")]
    assert sql_rows(
        primary, "SELECT kind, state FROM lifecycle_requests WHERE member_id = :m", m=mid
    ) == [("suspension", "received")]
    before = _snapshot(primary)
    r, _ = _probe(site, "suspend", str(mid), "--reason", "다시")
    assert r.returncode == 2 and "already has suspension request" in r.stderr, r.stderr
    assert _snapshot(primary) == before
