"""`lifecycle withdraw MEMBER_ID` the short way (lifecycle/cli/submit_plan.py), on a PostgreSQL
and a MariaDB primary: after one full run leaves its plan, the console script submits on the
plain drivers without SQLAlchemy, pydantic, Typer, Celery or kombu, writes the same request row
and the same kind of access-log entry (on the same chain) as the full command, and hands every
other case to the full command before writing anything: bad input, a repeated withdrawal, an
edited map, changed settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from tests.helpers import LifecycleEnv, seed_site, site_engine, sql_rows, table_dump

# The console script's entry point in a fresh interpreter; on the short way it returns and the
# probe prints which libraries the process loaded (the full command leaves with os._exit, so no
# line means the full command ran).
PROBE = """
import json, sys
from lifecycle.cli.entry import main

sys.argv[0] = "lifecycle"
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
loaded = sorted(
    {m.split(".")[0] for m in sys.modules}
    & {"sqlalchemy", "celery", "kombu", "pydantic", "pydantic_settings", "typer", "click"}
)
print(json.dumps(loaded))
sys.exit(code)
"""
# The full command's columns that differ between two requests by nature.
OWN = ("id", "member_id", "created_at", "updated_at", "due_at")


def _run(
    env: LifecycleEnv, *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str] | None]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env.environ(),
        cwd=env.var_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = r.stdout.strip().splitlines()
    try:
        loaded = json.loads(lines[-1]) if lines else None
    except ValueError:
        loaded = None
    return r, loaded if isinstance(loaded, list) else None


@pytest.fixture
def site(primary_env: LifecycleEnv) -> LifecycleEnv:
    seed_site(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 12)
    # A map of the site's own, so a test can edit it (the shipped one is the package's).
    path = primary_env.var_dir.parent / "site-map.yaml"
    path.write_bytes(SHIPPED_DEMO_MAP.read_bytes())
    primary_env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    return primary_env


def _active(primary: str, n: int) -> list[int]:
    rows = sql_rows(primary, "SELECT id FROM members WHERE status = 'active' ORDER BY id")
    return [int(r[0]) for r in rows[:n]]


def _request(primary: str, member_id: int) -> dict[str, object]:
    eng = site_engine(primary)
    try:
        with eng.connect() as c:
            row = c.execute(
                text("SELECT * FROM lifecycle_requests WHERE member_id = :m"), {"m": member_id}
            ).one()
            return dict(row._mapping)
    finally:
        eng.dispose()


def _snapshot(env: LifecycleEnv) -> str:
    out = []
    for name in ("PRIMARY", "ARCHIVE"):
        eng = site_engine(env.vars[f"LIFECYCLE_{name}_DATABASE_URL"])
        try:
            out.append(table_dump(eng, "members") + table_dump(eng, "lifecycle_requests"))
            out.append(table_dump(eng, "access_log"))
        finally:
            eng.dispose()
    return "\n".join(out)


def _submitted(r: subprocess.CompletedProcess[str], member_id: int) -> None:
    assert r.returncode == 0, r.stderr
    assert f"for member {member_id} submitted" in r.stdout, r.stdout
    assert r.stderr == "", r.stderr


def test_short_way_writes_what_the_full_command_writes(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = site.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    full_mid, short_mid, again_mid = _active(primary, 3)
    # No plan yet: the full command runs (and leaves the plan).
    r, loaded = _run(site, "withdraw", str(full_mid))
    _submitted(r, full_mid)
    assert loaded is None
    assert (site.var_dir / "cache" / "submit-plan.json").stat().st_mode & 0o077 == 0
    r, loaded = _run(site, "--operator", "김담당", "withdraw", str(short_mid))
    _submitted(r, short_mid)
    assert loaded == [], loaded
    r, loaded = _run(site, "withdraw", str(again_mid))
    _submitted(r, again_mid)
    assert loaded == [], loaded

    full, short = _request(primary, full_mid), _request(primary, short_mid)
    assert {k: v for k, v in short.items() if k not in (*OWN, "actor")} == {
        k: v for k, v in full.items() if k not in (*OWN, "actor")
    }
    assert short["actor"] == "김담당" and full["actor"] == _request(primary, again_mid)["actor"]
    for row in (full, short):
        assert row["state"] == "received" and row["requester_kind"] == "member"
        assert row["updated_at"] == row["created_at"]
    assert short["due_at"] - short["created_at"] == full["due_at"] - full["created_at"]  # type: ignore[operator]
    assert sql_rows(
        primary, "SELECT id, status FROM members WHERE id IN (:a, :b) ORDER BY id",
        a=full_mid, b=short_mid,
    ) == sorted([(full_mid, "withdrawn"), (short_mid, "withdrawn")])  # fmt: skip
    assert (
        sql_rows(
            primary,
            "SELECT count(*) FROM members WHERE id IN (:a, :b) AND withdrawn_at IS NOT NULL",
            a=full_mid,
            b=short_mid,
        )[0][0]
        == 2
    )

    # The access log: one entry per submit, each naming its request and the member's keyed
    # pseudonym, on one chain that still verifies.
    entries = sql_rows(
        archive,
        "SELECT kind, action, operator, request_id, subject_ref FROM access_log ORDER BY seq",
    )
    by_request = {e[3]: e for e in entries}
    from lifecycle.core import db
    from lifecycle.vault import keystore

    with db.session("archive") as a:
        refs = {m: keystore.subject_ref(a, m) for m in (full_mid, short_mid)}
    f, s = by_request[full["id"]], by_request[short["id"]]
    assert f[:2] == s[:2] == ("destroy", "withdraw (request)")
    assert (f[4], s[4]) == (refs[full_mid], refs[short_mid])
    assert s[2] == "김담당"
    r = site.run("accesslog", "verify")
    assert r.returncode == 0, r.stdout + r.stderr


def test_short_way_refuses_as_the_full_command_and_writes_nothing(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    first, second = _active(primary, 2)
    for mid in (first, second):
        r, _ = _run(site, "withdraw", str(mid))
        _submitted(r, mid)
    before = _snapshot(site)
    cases = [
        (["withdraw", "987654"], "unknown member 987654"),
        (["withdraw", "abc"], "MEMBER_ID must be a positive integer"),
        (["withdraw", "0"], "MEMBER_ID must be a positive integer"),
        # Idempotent: the same withdrawal again is refused, the first request stands.
        (["withdraw", str(second)], "already has withdrawal request"),
        (["withdraw", "1", "--requester", "boss"], "--requester must be"),
    ]
    for args, fragment in cases:
        r, loaded = _run(site, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert loaded is None, (args, loaded)  # the full command answered
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lifecycle: error: "), (args, r.stderr)
        assert fragment in lines[0], (args, lines)
    assert _snapshot(site) == before
    assert sql_rows(
        primary, "SELECT count(*) FROM lifecycle_requests WHERE member_id = :m", m=second
    ) == [(1,)]


def test_an_edited_map_or_changed_settings_take_the_full_command(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    mids = iter(_active(primary, 5))
    mid = next(mids)
    _submitted(_run(site, "withdraw", str(mid))[0], mid)
    mid = next(mids)
    r, loaded = _run(site, "withdraw", str(mid))
    _submitted(r, mid)
    assert loaded == []
    # The map's bytes changed: the plan is not trusted, the full command runs and makes a new one.
    path = Path(site.vars["LIFECYCLE_DATA_MAP"])
    path.write_text(path.read_text() + "\n# edited\n")
    mid = next(mids)
    r, loaded = _run(site, "withdraw", str(mid))
    _submitted(r, mid)
    assert loaded is None
    mid = next(mids)
    r, loaded = _run(site, "withdraw", str(mid))
    _submitted(r, mid)
    assert loaded == []
    # Another setting (here one the submit does not even read): the full command again.
    site.vars["LIFECYCLE_NOTICE_BATCH_SIZE"] = "400"
    mid = next(mids)
    r, loaded = _run(site, "withdraw", str(mid))
    _submitted(r, mid)
    assert loaded is None


def test_a_plan_someone_else_could_write_is_not_used(site: LifecycleEnv) -> None:
    primary = site.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    a, b = _active(primary, 2)
    _submitted(_run(site, "withdraw", str(a))[0], a)
    plan = site.var_dir / "cache" / "submit-plan.json"
    plan.chmod(0o666)
    r, loaded = _run(site, "withdraw", str(b))
    _submitted(r, b)
    assert loaded is None
